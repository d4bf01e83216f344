"""Compiled (Numba) per-event loops of the transaction features.

The window aggregates over the per-entity ring buffers of `entity_store.EntityHistory`: for each event, one pass
over its card's (or terminal's) stored events, instead of NumPy's (events x capacity) temporaries for every mask,
sum and sort (the capacity is the busiest entity's, so most rows were mostly padding). Each kernel reads the
history rows in place (no gathered copies) and writes its columns of the feature matrix `X` at rows `idx`. Only the
first min(head, capacity) positions of a slot can hold events (see `EntityHistory.append`); padding (ts = -inf)
falls outside every window anyway. And the per-card sequences of feature rows the sequence models read.

Compiled on first use and cached beside this file (`cache=True`), so a process pays the compile once per install."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _select(values, n, k):
    """The k-th smallest of values[:n] (Hoare's quickselect; reorders values[:n] in place)."""
    lo, hi = 0, n - 1
    while lo < hi:
        pivot = values[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return values[k]
    return values[k]


@njit(cache=True, nogil=True)
def card_window_features(X, idx, slots, head, hts, hamt, hterm, hout, hfraud, hlabel_ts,  # noqa: PLR0913
                         t, a, term, windows_s, profile_s, fraud_s, cap_s, outlier_z, e):
    """Card columns of rows `idx`: counts and mean amounts per window (columns 3 + 2j, 4 + 2j), then from column
    `e`: the amount profile of the previous `profile_s` (mean, std, z-score, ratio, median ratio at e + 14; amounts
    flagged as outliers stay out while they are the minority), log seconds since the card's last event, visits to
    this terminal, and frauds revealed within `fraud_s`. Returns whether each amount is an outlier for its card."""
    n_rows, capacity, n_windows = idx.shape[0], hts.shape[1], windows_s.shape[0]
    outlier = np.zeros(n_rows, np.int8)
    usual_amounts = np.empty(capacity, np.float64)  # the profile window's amounts: not outliers / all
    all_amounts = np.empty(capacity, np.float64)
    counts = np.zeros(n_windows, np.int64)
    sums = np.zeros(n_windows, np.float64)
    for r in range(n_rows):
        s, row, tr, ar = slots[r], idx[r], t[r], a[r]
        counts[:] = 0
        sums[:] = 0.0
        n_usual, n_all, sum_usual, sum_all = 0, 0, 0.0, 0.0
        last, visits, frauds = -np.inf, 0, 0
        plo, flo = tr - profile_s, tr - fraud_s
        for p in range(min(head[s], capacity)):
            ht, amount = hts[s, p], hamt[s, p]
            last = max(last, ht)
            for j in range(n_windows):
                if ht > tr - windows_s[j]:
                    counts[j] += 1
                    sums[j] += amount
            if ht > plo:
                all_amounts[n_all] = amount
                sum_all += amount
                n_all += 1
                if hout[s, p] != 1:
                    usual_amounts[n_usual] = amount
                    sum_usual += amount
                    n_usual += 1
                if hterm[s, p] == term[r]:
                    visits += 1
            if ht > flo and hfraud[s, p] == 1 and hlabel_ts[s, p] <= tr:
                frauds += 1
        for j in range(n_windows):
            X[row, 3 + 2 * j] = counts[j] + 1
            X[row, 4 + 2 * j] = (sums[j] + ar) / (counts[j] + 1)
        # when the "outliers" are at least half of the window, they are the card's spending now: they count again
        if n_all - n_usual >= n_usual:
            amounts, n, tot = all_amounts, n_all, sum_all
        else:
            amounts, n, tot = usual_amounts, n_usual, sum_usual
        mean = tot / max(n, 1)
        var = 0.0
        for i in range(n):
            var += (amounts[i] - mean) ** 2
        std = np.sqrt(var / max(n - 1, 1))
        z = (ar - mean) / max(std, max(0.1 * abs(mean), 1.0)) if n >= 2 else 0.0
        X[row, e] = mean if n >= 1 else ar
        X[row, e + 1] = std
        X[row, e + 2] = z
        X[row, e + 3] = ar / max(mean, 1.0) if n >= 1 else 1.0
        if n >= 1:
            lower = _select(amounts, n, (n - 1) // 2)  # and values[(n - 1) // 2 + 1:n] are >= it
            median = lower if n % 2 else 0.5 * (lower + amounts[n // 2:n].min())
            X[row, e + 14] = ar / max(median, 1.0)
        else:
            X[row, e + 14] = 1.0
        # a late event (earlier than the card's last one) counts as 0 s since, not as a negative time
        since = min(max(tr - last, 0.0), cap_s) if np.isfinite(last) else cap_s
        X[row, e + 4] = np.log1p(since)
        X[row, e + 5] = visits
        X[row, e + 6] = frauds
        outlier[r] = 1 if (n >= 3 and z >= outlier_z) else 0
    return outlier


@njit(cache=True, nogil=True)
def _known_fraud(hts, hfraud, hlabel_ts, s, p, tr, horizon_s):
    """Whether stored event p of slot s is a fraud whose label was revealed by `tr`, within the horizon."""
    return hfraud[s, p] == 1 and hlabel_ts[s, p] <= tr and hts[s, p] > tr - horizon_s


@njit(cache=True, nogil=True)
def terminal_window_features(X, idx, slots, head, hts, hseq, hfraud, hlabel_ts,  # noqa: PLR0913
                             t, windows_s, delay_s, horizon_s, cap_days, day_s, off, e):
    """Terminal columns of rows `idx`: per window, transactions and known-fraud share of the window ending
    `delay_s` before the event (columns off + 2j, off + 2j + 1); then the current run of revealed frauds (length at
    e + 10, age in days at e + 11), days since the last revealed fraud (e + 12) and whether the last revealed
    transaction was a fraud (e + 13). A label counts from its reveal time on; an event counts as revealed
    genuine once `delay_s` has passed."""
    n_windows = windows_s.shape[0]
    capacity = hts.shape[1]
    nb = np.zeros(n_windows, np.int64)
    fr = np.zeros(n_windows, np.int64)
    for r in range(idx.shape[0]):
        s, row, tr = slots[r], idx[r], t[r]
        k = min(head[s], capacity)
        nb[:] = 0
        fr[:] = 0
        last_genuine, last_rev, last_fraud = -1, -1, -np.inf
        for p in range(k):
            ht = hts[s, p]
            in_horizon = ht > tr - horizon_s
            known = _known_fraud(hts, hfraud, hlabel_ts, s, p, tr, horizon_s)
            before_delay = ht <= tr - delay_s
            if before_delay:
                for j in range(n_windows):
                    if ht > tr - (windows_s[j] + delay_s):
                        nb[j] += 1
                        if known:
                            fr[j] += 1
            if (before_delay and in_horizon) or known:
                last_rev = max(last_rev, hseq[s, p])
                if not known:
                    last_genuine = max(last_genuine, hseq[s, p])
            if known:
                last_fraud = max(last_fraud, ht)
        for j in range(n_windows):
            X[row, off + 2 * j] = nb[j]
            X[row, off + 2 * j + 1] = fr[j] / nb[j] if nb[j] > 0 else 0.0
        run, run_start, last_was_fraud = 0, np.inf, False
        for p in range(k):
            if _known_fraud(hts, hfraud, hlabel_ts, s, p, tr, horizon_s):
                if hseq[s, p] > last_genuine:
                    run += 1
                    run_start = min(run_start, hts[s, p])
                if last_rev >= 0 and hseq[s, p] == last_rev:
                    last_was_fraud = True
        X[row, e + 10] = run
        X[row, e + 11] = min((tr - run_start) / day_s, cap_days) if np.isfinite(run_start) else 0.0
        X[row, e + 12] = min((tr - last_fraud) / day_s, cap_days) if np.isfinite(last_fraud) else cap_days
        X[row, e + 13] = 1.0 if last_was_fraud else 0.0


@njit(cache=True, nogil=True)
def card_sequences(store, count, slots, X, T):
    """(B, T, F): each event's card's last T feature rows ending with its own row `X[i]`, in arrival order; a card
    with fewer rows is padded with its oldest. `store` (cards, T - 1, F) holds each card's previous rows and
    `count` how many of them are real; both are updated."""
    B, F = X.shape
    out = np.empty((B, T, F), np.float32)
    for i in range(B):
        s = slots[i]
        real = min(count[s] + 1, T)
        first = T - real  # positions before `first` repeat the oldest real row
        for p in range(T):
            q = max(p, first)
            if q < T - 1:
                out[i, p, :] = store[s, q, :]
            else:
                out[i, p, :] = X[i, :]
        store[s, :, :] = out[i, 1:, :]
        count[s] = real
    return out
