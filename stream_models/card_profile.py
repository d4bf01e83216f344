"""Cold-start score of a card transaction: how rare its amount, terminal and pace are for this card.

Learned models need history and labels; this score works from a card's second transaction. It
compares each transaction with the card's own statistics (the transaction features' 30-day
profile), shrunk towards the population's while the card has few transactions, and turns each
comparison into a tail probability p, and combines the four p's of three parts with Fisher's method
(assuming they are independent) into one tail probability P; the score is -log10 P:

- amount: the one-sided normal tail of the amount's z-score against the card's median and spread;
- terminal: a terminal the card never used, with probability 2 / (n + 2) after n transactions;
- pace: the gap since the card's previous transaction and the day's count under the card's Poisson
  rate (the rate shrinks towards one a day over the card's first day).

So a score of 3.5 reads "as rare as 1 in 3,000 under these assumptions", the same for every card;
the engine alerts above `profile_threshold` whatever the models' warm-up, and each alert says why.

>>> import numpy as np
>>> def card(amounts):  # transactions of cards with 20 earlier purchases of about 27, 2 today
...     k = len(amounts)
...     return {"TX_AMOUNT": amounts, "CARD_AMOUNT_MEDIAN_RATIO": np.divide(amounts, 27.0),
...             "CARD_AMOUNT_STD_PREV": [9.0] * k, "CUSTOMER_ID_NB_TX_30DAY_WINDOW": [21] * k,
...             "CUSTOMER_ID_NB_TX_1DAY_WINDOW": [2] * k, "CARD_LOG_SECONDS_SINCE_LAST": [np.log1p(86400.0)] * k,
...             "CARD_TERMINAL_VISITS": [3] * k}
>>> p = CardProfile()
>>> scores, reasons = p.score(card(np.full(40, 27.0)), ts=np.full(40, 1e6))
>>> scores, reasons = p.score(card([2700.0, 30.0]), ts=np.array([2e6, 2e6]))
>>> bool(scores[0] > 3.5 > scores[1]), reasons[0], 1 in reasons
(True, "amount 2700.00 is 100.0x the card's usual 27.00", False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import special

DAY = 86_400.0
LN10 = math.log(10.0)
PRIOR_WEIGHT = 3.0  # pseudo-transactions of population behaviour in each card's amount statistics
PRIOR_RATE_PER_DAY = 1.0
MIN_POPULATION = 30  # transactions seen before amounts are judged
NEEDED = ("TX_AMOUNT", "CARD_AMOUNT_MEDIAN_RATIO", "CARD_AMOUNT_STD_PREV", "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
          "CUSTOMER_ID_NB_TX_1DAY_WINDOW", "CARD_LOG_SECONDS_SINCE_LAST", "CARD_TERMINAL_VISITS")


def _normal_surprise(z: np.ndarray) -> np.ndarray:
    """-log10 P(Z >= z) for a standard normal, accurate far into the tail."""
    return -special.log_ndtr(-z) / LN10


def _fisher(total: np.ndarray, parts: int) -> np.ndarray:
    """-log10 of Fisher's combined p of `parts` independent tail probabilities whose -log10 sum to `total`:
    P(chi2 with 2 * parts dof >= 2x) = exp(-x) * sum_{j < parts} x^j / j!, with x = total * ln 10."""
    x = np.maximum(np.asarray(total, np.float64), 0.0) * LN10
    terms = np.stack([j * np.log(np.maximum(x, 1e-300)) - special.gammaln(j + 1) for j in range(parts)])
    return np.maximum((x - special.logsumexp(terms, axis=0)) / LN10, 0.0)


def _poisson_surprise(k: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """-log10 P(N >= k) for N ~ Poisson(rate) (0 where k <= 0)."""
    p = special.gammainc(np.maximum(k, 1.0), np.maximum(rate, 1e-9))  # regularised P(N >= k)
    return np.where(k > 0, -np.log10(np.maximum(p, 1e-300)), 0.0)


class CardProfile:
    """Population statistics of amounts and the score. Each event is compared with the population of the
    events before it: the sums as of the last chunk end (`end_chunk`, called by the engine) plus a running sum
    over the current chunk, recomputed from the chunk's start, so scores are the same bit for bit whatever
    the batches the chunk arrived in."""

    name = "card_profile"
    consumes = "rows"  # the transaction feature rows

    def __init__(self) -> None:
        self.n = 0
        self.ref = math.nan  # the first amount: sums are kept relative to it, for precision
        self.s1 = 0.0
        self.s2 = 0.0
        self.first_ts = math.nan
        self._chunk = np.zeros(0)  # this chunk's amounts so far
        self._chunk_keep = np.zeros(0, bool)  # and whether each one counts in the population

    def _population(self, a: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, mean, variance) of the kept amounts before each event of `a` (the state is not changed)."""
        if math.isnan(self.ref):
            self.ref = float(a[0])
        every = np.concatenate([self._chunk, a])
        kept = np.concatenate([self._chunk_keep, keep])
        d = np.where(kept, every - self.ref, 0.0)

        def before(values: np.ndarray) -> np.ndarray:
            return np.concatenate([[0.0], np.cumsum(values)[:-1]])[len(self._chunk) :]

        n = self.n + before(kept.astype(np.float64))
        mean = (self.s1 + before(d)) / np.maximum(n, 1.0)
        var = (self.s2 + before(d * d) - n * mean**2) / np.maximum(n - 1.0, 1.0)
        return n, mean + self.ref, np.maximum(var, 0.0)

    def _remember(self, a: np.ndarray, keep: np.ndarray) -> None:
        self._chunk = np.concatenate([self._chunk, a])
        self._chunk_keep = np.concatenate([self._chunk_keep, keep])

    def end_chunk(self) -> None:
        """Fold the chunk's kept amounts into the population sums."""
        d = self._chunk[self._chunk_keep] - self.ref
        self.n += len(d)
        self.s1 += float(d.sum())
        self.s2 += float((d * d).sum())
        self._chunk, self._chunk_keep = np.zeros(0), np.zeros(0, bool)

    def score(self, X: Mapping[str, Any], ts: np.ndarray, explain_at: float = 1.0,
              exclude_at: float = math.inf) -> tuple[np.ndarray, dict[int, str]]:
        """(scores (B,), row -> reason for rows scoring >= `explain_at`) for feature columns `X` (name -> (B,))
        of transactions at `ts`, in stream order. Amounts scoring >= `exclude_at` (the alerts) stay out of the
        population, so a storm of large amounts cannot widen the spread that judges the next ones."""
        col = {name: np.asarray(X[name], np.float64) for name in NEEDED}
        a = col["TX_AMOUNT"]
        median = a / np.maximum(col["CARD_AMOUNT_MEDIAN_RATIO"], 1e-12)
        # an earlier outlier must not hide the next one: the card's spread is capped at twice its median
        own_spread = np.minimum(col["CARD_AMOUNT_STD_PREV"], 2.0 * np.maximum(median, 1.0))
        n = col["CUSTOMER_ID_NB_TX_30DAY_WINDOW"] - 1.0  # the card's earlier transactions in the profile window
        if not len(a):
            return np.zeros(0), {}
        dof = np.maximum(n - 1.0, 0.0)

        def amount_surprise(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pop_n, pop_mean, pop_var = self._population(a, keep)
            # the population pulls a young card's usual amount and spread towards its own
            usual = (n * median + PRIOR_WEIGHT * pop_mean) / (n + PRIOR_WEIGHT)
            spread = np.sqrt((dof * own_spread**2 + PRIOR_WEIGHT * pop_var) / (dof + PRIOR_WEIGHT))
            z = (a - usual) / np.maximum(spread, 1.0)
            known = (n >= 1) & (pop_n >= MIN_POPULATION)
            return np.where(known, np.maximum(_normal_surprise(z), 0.0), 0.0), usual

        new_terminal = (col["CARD_TERMINAL_VISITS"] == 0) & (n >= 1)
        terminal = np.where(new_terminal, -np.log10(2.0 / (n + 2.0)), 0.0)

        ts = np.asarray(ts, np.float64)
        if math.isnan(self.first_ts) and len(ts):  # the stream's first event: its age counts from here
            self.first_ts = float(ts[0])
        age = np.clip(ts - self.first_ts, 0.0, 30 * DAY)
        rate_s = (n + PRIOR_RATE_PER_DAY) / (age + DAY)  # transactions per second
        gap = np.expm1(col["CARD_LOG_SECONDS_SINCE_LAST"])
        gap_p = -np.expm1(-rate_s * gap)  # P(a gap this short)
        quick = np.where(n >= 1, -np.log10(np.maximum(gap_p, 1e-300)), 0.0)
        today = col["CUSTOMER_ID_NB_TX_1DAY_WINDOW"]  # including this one
        busy = _poisson_surprise(today - 1.0, rate_s * DAY)
        others = terminal + quick + busy
        keep = np.ones(len(a), bool)
        amount, usual = amount_surprise(keep)
        scores = _fisher(amount + others, parts=4)
        start = 0
        while True:  # each alert leaves the population; only later events' scores change
            hits = np.flatnonzero(scores[start:] >= exclude_at)
            if not len(hits):
                break
            k = start + int(hits[0])
            keep[k] = False
            start = k + 1
            later_amount, later_usual = amount_surprise(keep)
            amount[start:], usual[start:] = later_amount[start:], later_usual[start:]
            scores[start:] = _fisher(amount[start:] + others[start:], parts=4)
        self._remember(a, keep)

        reasons = {}
        for i in np.flatnonzero(scores >= explain_at).tolist():
            parts = []
            if amount[i] >= 1.0:
                ratio = a[i] / max(usual[i], 0.01)
                parts.append(f"amount {a[i]:.2f} is {ratio:.1f}x the card's usual {usual[i]:.2f}")
            if terminal[i] >= 1.0:
                parts.append(f"first use of this terminal after {int(n[i])} transactions")
            if quick[i] + busy[i] >= 1.0:
                parts.append(f"{int(today[i])} transactions in 24 h ({gap[i]:.0f} s after the last), "
                             f"usually {rate_s[i] * DAY:.1f} a day")
            reasons[i] = "; ".join(parts)
        return scores, reasons

    def score_rows(self, X: np.ndarray, names: list[str], ts: np.ndarray, explain_at: float = 1.0,
                   exclude_at: float = math.inf) -> tuple[np.ndarray, dict[int, str]]:
        """`score` of transaction feature rows X (B, F) named `names`."""
        return self.score({name: X[:, names.index(name)] for name in NEEDED}, ts, explain_at, exclude_at)

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "ref": self.ref, "s1": self.s1, "s2": self.s2, "first_ts": self.first_ts,
                "chunk": self._chunk.tolist(), "chunk_keep": self._chunk_keep.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n, self.ref, self.s1, self.s2 = int(state["n"]), float(state["ref"]), float(state["s1"]), float(state["s2"])
        self.first_ts = float(state["first_ts"])
        self._chunk = np.asarray(state["chunk"], np.float64)
        self._chunk_keep = np.asarray(state["chunk_keep"], bool)
