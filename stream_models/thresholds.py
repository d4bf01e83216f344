"""Alert thresholds that learn the score distribution online.

Both thresholds share one small API: `classify_many(scores) -> bool array` (score >= threshold),
`update_many(scores, flags=None)`, the `threshold` property, `state_dict()/load_state_dict()` and
`reset()`. Until `warmup` scores have been seen the threshold is +inf: nothing is flagged.

Protection: a flagged score (`flags`, usually the output of `classify_many`) counts as "above
the threshold", but its magnitude is never used, so a few extreme anomalies cannot inflate the
threshold and hide the next ones. (Leaving flagged scores out altogether is not an option:
the threshold would only ever move down.) The detector itself should learn only from
`normal_mask(flags, labels)` rows; `protect(X, flags, labels)` does the indexing. After a
lasting change of the score distribution, `reset()` re-learns it quickly: the drift monitor's
`reset_threshold` action exists for that.

The threshold is the smallest float above the learned quantile, so a stream of identical
scores raises no alerts.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> t = QuantileThreshold(q=0.99, warmup=1000)
>>> bool(t.classify_many(np.array([1e9]))[0])   # still warming up: nothing is flagged
False
>>> scores = rng.normal(size=20_000)
>>> t.update_many(scores, t.classify_many(scores))
>>> round(float(t.classify_many(rng.normal(size=100_000)).mean()), 2)
0.01
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize

from stream_models.errors import ModelError


def normal_mask(flags: np.ndarray | None, labels: np.ndarray | None = None) -> np.ndarray | None:
    """Rows a detector may learn from: not flagged and not labelled anomalous (None = all rows)."""
    mask = None if flags is None else ~np.asarray(flags, dtype=bool)
    if labels is not None:
        known_normal = np.asarray(labels) != 1
        mask = known_normal if mask is None else mask & known_normal
    return mask


def protect(X: np.ndarray, flags: np.ndarray | None, labels: np.ndarray | None = None) -> np.ndarray:
    """The rows of `X` (B, ...) that are safe to learn from (see `normal_mask`)."""
    mask = normal_mask(flags, labels)
    return X if mask is None else X[mask]


def _as_scores(scores: np.ndarray) -> np.ndarray:
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def _as_flags(flags: np.ndarray | None, n: int) -> np.ndarray:
    if flags is None:
        return np.zeros(n, dtype=bool)
    flags = np.asarray(flags, dtype=bool).reshape(-1)
    if flags.shape[0] != n:
        raise ModelError(f"got {flags.shape[0]} flags for {n} scores")
    return flags


def _classify(scores: np.ndarray, threshold: float) -> np.ndarray:
    scores = _as_scores(scores)
    if threshold == math.inf:  # warming up: even +inf scores are not flagged
        return np.zeros(scores.shape[0], dtype=bool)
    return scores >= threshold


def _above(value: float) -> float:
    return float(np.nextafter(value, np.inf))


class QuantileThreshold:
    """Flags the scores above a running quantile of the recent scores.

    The last `window` scores are kept in a ring buffer and the quantile is recomputed with numpy
    every `refresh_every` scores (vectorised; no per-item work). An empirical quantile only
    counts the scores above it, whatever their size, so flagged scores are learned like the
    others: they move the threshold only by their number (an alert budget of `1 - q`).

    Parameters
    ----------
    q
        Quantile of the score distribution to use as threshold (0.99 -> ~1% alert rate).
    target_alert_rate
        Alternative to `q`: `q = 1 - target_alert_rate`.
    warmup
        Scores to see before the first threshold; until then nothing is flagged.
    window
        Number of recent scores the quantile is computed over.
    refresh_every
        Recompute the quantile after this many new scores.
    ceiling
        Once armed, the threshold is never above this (a classifier's fraud probability, e.g. 0.5: every event
        more likely fraud than not is flagged, however many there are); None = the quantile alone. `set_ceiling`
        sets it later (once a classifier's probabilities mean something).
    """

    def __init__(
        self,
        q: float | None = None,
        *,
        target_alert_rate: float | None = None,
        warmup: int = 1000,
        window: int = 50_000,
        refresh_every: int = 5000,
        ceiling: float | None = None,
    ) -> None:
        if q is not None and target_alert_rate is not None:
            raise ModelError("give q or target_alert_rate, not both")
        if q is None:
            q = 0.99 if target_alert_rate is None else 1.0 - target_alert_rate
        if not 0.0 < q < 1.0:
            raise ModelError(f"q must be in (0, 1), got {q}")
        if window < 1 or warmup < 1 or refresh_every < 1:
            raise ModelError("window, warmup and refresh_every must be >= 1")
        self.q = float(q)
        self.warmup = int(warmup)
        self.window = int(window)
        self.refresh_every = int(refresh_every)
        self.ceiling = None if ceiling is None else float(ceiling)
        self.reset()

    @property
    def threshold(self) -> float:
        return self._threshold

    def reset(self, keep_threshold: bool = False) -> None:
        """Forget the learned scores; with `keep_threshold` the old value holds until warm-up ends."""
        self._buffer = np.empty(self.window, dtype=np.float64)  # ring buffer of recent scores
        self._pos = 0  # next write position
        self._filled = 0
        self._n_seen = 0
        self._since_refresh = 0
        if not keep_threshold:
            self._threshold = math.inf

    def set_ceiling(self, ceiling: float) -> None:
        self.ceiling = float(ceiling)
        if math.isfinite(self._threshold):
            self._threshold = min(self._threshold, self.ceiling)

    def classify_many(self, scores: np.ndarray) -> np.ndarray:
        """(B,) scores -> (B,) bool: True where score >= threshold (NaN scores are never flagged)."""
        return _classify(scores, self._threshold)

    def update_many(self, scores: np.ndarray, flags: np.ndarray | None = None) -> None:
        """Learn from a batch of scores (NaN is skipped); `flags` are checked but change nothing here."""
        scores = _as_scores(scores)
        _as_flags(flags, scores.shape[0])
        values = scores[~np.isnan(scores)]
        self._push(values)
        self._n_seen += values.shape[0]
        self._since_refresh += values.shape[0]
        if self._n_seen >= self.warmup and (self._since_refresh >= self.refresh_every or self._is_warming()):
            self._refresh()

    def fit(self, scores: np.ndarray) -> None:
        """Set the threshold from `scores` now (a warm-up fit), even when they are fewer than `warmup`."""
        self.update_many(scores)
        if not math.isfinite(self._threshold):
            self._refresh()

    def _is_warming(self) -> bool:
        return self._n_seen - self._since_refresh < self.warmup

    def _push(self, values: np.ndarray) -> None:
        n = values.shape[0]
        if n >= self.window:
            self._buffer[:] = values[-self.window :]
            self._pos, self._filled = 0, self.window
            return
        end = self._pos + n
        if end <= self.window:
            self._buffer[self._pos : end] = values
        else:
            split = self.window - self._pos
            self._buffer[self._pos :] = values[:split]
            self._buffer[: n - split] = values[split:]
        self._pos = end % self.window
        self._filled = min(self.window, self._filled + n)

    def _refresh(self) -> None:
        self._since_refresh = 0
        if self._filled == 0:
            return
        value = float(np.quantile(self._buffer[: self._filled], self.q, method="higher"))
        if math.isfinite(value):
            self._threshold = _above(value) if self.ceiling is None else min(_above(value), self.ceiling)

    def _ordered(self) -> np.ndarray:
        if self._filled < self.window:
            return self._buffer[: self._filled].copy()
        return np.concatenate([self._buffer[self._pos :], self._buffer[: self._pos]])

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "quantile",
            "params": {
                "q": self.q,
                "warmup": self.warmup,
                "window": self.window,
                "refresh_every": self.refresh_every,
                "ceiling": self.ceiling,
            },
            "scores": self._ordered(),  # oldest first
            "n_seen": self._n_seen,
            "since_refresh": self._since_refresh,
            "threshold": self._threshold,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "quantile":
            raise ModelError(f"not a QuantileThreshold state: kind={state.get('kind')!r}")
        params = state["params"]
        self.__dict__.update(QuantileThreshold(**params).__dict__)
        self._push(np.asarray(state["scores"], dtype=np.float64))
        self._n_seen = int(state["n_seen"])
        self._since_refresh = int(state["since_refresh"])
        self._threshold = float(state["threshold"])


class PeaksOverThreshold:
    """SPOT: an extreme-value threshold for a target alert rate (Siffer et al., KDD 2017).

    After `warmup` scores, `t` = their `initial_quantile`; the excesses over `t` are fitted with
    a generalised Pareto distribution (GPD) and the threshold is the score exceeded with
    probability `target_alert_rate`: `z = t + sigma / gamma * ((rate * n / n_peaks) ** -gamma - 1)`.
    Afterwards every score above `t` adds an excess (the last `max_peaks` are kept) and the fit
    is refreshed once `refit_every` new excesses have arrived (checked once per batch).

    Flagged scores (or, without `flags`, scores >= the threshold) are right-censored: they count
    as "above the threshold of the time", their magnitude is never used, so extreme anomalies
    cannot inflate the tail. Dropping them instead (as the SPOT paper does) biases the fit
    towards a light tail: 3-5x the target alert rate in our tests. `estimator="mle"` fits the GPD by
    censored maximum likelihood (Nelder-Mead, warm-started; a few ms per fit) and holds the
    target rate; `"moments"` is closed-form and ~10x faster but treats censored excesses as
    equal to their cap, which overshoots the alert rate by roughly 1.5x.

    Parameters
    ----------
    target_alert_rate
        Wanted fraction of flagged scores (the tail probability of the threshold).
    initial_quantile
        Level of the initial threshold `t`; must leave enough excesses to fit.
    warmup
        Scores used for the initial fit; until then nothing is flagged.
    max_peaks
        Excesses kept for fitting (the most recent ones).
    estimator
        "mle" (censored maximum likelihood) or "moments" (method of moments).
    min_peaks
        Fewer excesses than this: the threshold is t + the largest excess seen.
    refit_every
        New excesses between two fits (~ refit_every / (1 - initial_quantile) scores).
    """

    def __init__(
        self,
        target_alert_rate: float = 1e-3,
        *,
        initial_quantile: float = 0.98,
        warmup: int = 2000,
        max_peaks: int = 10_000,
        estimator: str = "mle",
        min_peaks: int = 10,
        refit_every: int = 50,
    ) -> None:
        if not 0.0 < target_alert_rate < 1.0 - initial_quantile:
            raise ModelError("target_alert_rate must be in (0, 1 - initial_quantile)")
        if estimator not in ("moments", "mle"):
            raise ModelError(f"estimator must be 'moments' or 'mle', got {estimator!r}")
        if warmup < 1 or max_peaks < 1 or min_peaks < 2 or refit_every < 1:
            raise ModelError("warmup, max_peaks, refit_every >= 1 and min_peaks >= 2 are required")
        self.target_alert_rate = float(target_alert_rate)
        self.initial_quantile = float(initial_quantile)
        self.warmup = int(warmup)
        self.max_peaks = int(max_peaks)
        self.estimator = estimator
        self.min_peaks = int(min_peaks)
        self.refit_every = int(refit_every)
        self.reset()

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def gpd(self) -> tuple[float, float]:
        """Fitted (gamma, sigma) of the generalised Pareto excess distribution (nan before the fit)."""
        return self._gamma, self._sigma

    def reset(self, keep_threshold: bool = False) -> None:
        """Forget the fit; with `keep_threshold` the old value holds until the new warm-up ends."""
        self._init_scores: list[np.ndarray] = []
        self._n_init = 0
        self._calibrated = False
        self._t = math.nan  # initial threshold
        # excesses over t, oldest first (a censored excess holds its cap: the threshold of its time - t)
        self._peaks = np.empty(0, dtype=np.float64)
        self._censored = np.empty(0, dtype=bool)
        self._n = 0  # scores seen since the initial fit began (for the tail probability)
        self._n_peaks = 0
        self._since_fit = 0  # excesses added since the last fit
        self._gamma = math.nan
        self._sigma = math.nan
        if not keep_threshold:
            self._threshold = math.inf

    def classify_many(self, scores: np.ndarray) -> np.ndarray:
        """(B,) scores -> (B,) bool: True where score >= threshold (NaN scores are never flagged)."""
        return _classify(scores, self._threshold)

    def update_many(self, scores: np.ndarray, flags: np.ndarray | None = None) -> None:
        """Learn from a batch: normal scores are used as they are, flagged ones as censored."""
        scores = _as_scores(scores)
        if flags is None:
            flags = self.classify_many(scores) if self._calibrated else np.zeros(scores.shape[0], dtype=bool)
        flags = _as_flags(flags, scores.shape[0])
        if not self._calibrated:
            normal = scores[~flags & np.isfinite(scores)]
            need = self.warmup - self._n_init
            self._init_scores.append(normal[:need])
            self._n_init += min(need, normal.shape[0])
            if self._n_init < self.warmup:
                return
            self._initial_fit(np.concatenate(self._init_scores))
            self._init_scores = []
            rest = np.flatnonzero(~flags & np.isfinite(scores))[need:]
            scores, flags = scores[rest], flags[rest]
        valid = np.isfinite(scores) | flags
        scores, flags = scores[valid], flags[valid]
        if scores.shape[0] == 0:
            return
        cap = self._threshold - self._t
        above = flags | (scores > self._t)
        excess = np.where(flags, cap, scores - self._t)[above]
        self._n += scores.shape[0]
        if excess.shape[0]:
            self._n_peaks += excess.shape[0]
            self._peaks = np.concatenate([self._peaks, excess])[-self.max_peaks :]
            self._censored = np.concatenate([self._censored, flags[above]])[-self.max_peaks :]
            self._since_fit += excess.shape[0]
            if self._since_fit >= self.refit_every:
                self._fit()

    def _initial_fit(self, init: np.ndarray) -> None:
        self._t = float(np.quantile(init, self.initial_quantile))
        above = init > self._t
        self._peaks = (init[above] - self._t)[-self.max_peaks :]
        self._censored = np.zeros(self._peaks.shape[0], dtype=bool)
        self._n = init.shape[0]
        self._n_peaks = int(np.count_nonzero(above))
        self._calibrated = True
        self._fit()

    def _fit(self) -> None:
        self._since_fit = 0
        peaks = self._peaks
        if peaks.shape[0] < self.min_peaks or float(np.var(peaks)) <= 0.0:
            self._gamma = self._sigma = math.nan
            self._threshold = _above(self._t + (float(peaks.max()) if peaks.shape[0] else 0.0))
            return
        mean, var = float(np.mean(peaks)), float(np.var(peaks))
        gamma = 0.5 * (1.0 - mean * mean / var)
        sigma = 0.5 * mean * (mean * mean / var + 1.0)
        if self.estimator == "mle":
            start = (self._gamma, self._sigma) if math.isfinite(self._gamma) else (gamma, sigma)
            gamma, sigma = _censored_gpd_mle(peaks[~self._censored], peaks[self._censored], start)
        self._gamma, self._sigma = float(gamma), float(sigma)
        ratio = self.target_alert_rate * self._n / self._n_peaks
        if ratio >= 1.0:  # the target rate is above the tail mass: the initial threshold is enough
            z = self._t
        elif abs(gamma) < 1e-8:
            z = self._t - sigma * math.log(ratio)
        else:
            z = self._t + sigma / gamma * (ratio ** (-gamma) - 1.0)
        self._threshold = _above(z)

    def state_dict(self) -> dict[str, Any]:
        pending = np.concatenate(self._init_scores) if self._init_scores else np.empty(0, dtype=np.float64)
        return {
            "kind": "pot",
            "params": {
                "target_alert_rate": self.target_alert_rate,
                "initial_quantile": self.initial_quantile,
                "warmup": self.warmup,
                "max_peaks": self.max_peaks,
                "estimator": self.estimator,
                "min_peaks": self.min_peaks,
                "refit_every": self.refit_every,
            },
            "init_scores": pending,
            "calibrated": self._calibrated,
            "t": self._t,
            "peaks": self._peaks.copy(),
            "censored": self._censored.copy(),
            "n": self._n,
            "n_peaks": self._n_peaks,
            "since_fit": self._since_fit,
            "gamma": self._gamma,
            "sigma": self._sigma,
            "threshold": self._threshold,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "pot":
            raise ModelError(f"not a PeaksOverThreshold state: kind={state.get('kind')!r}")
        self.__dict__.update(PeaksOverThreshold(**state["params"]).__dict__)
        pending = np.asarray(state["init_scores"], dtype=np.float64)
        self._init_scores = [pending] if pending.shape[0] else []
        self._n_init = pending.shape[0]
        self._calibrated = bool(state["calibrated"])
        self._t = float(state["t"])
        self._peaks = np.asarray(state["peaks"], dtype=np.float64).copy()
        self._censored = np.asarray(state["censored"], dtype=bool).copy()
        self._n = int(state["n"])
        self._n_peaks = int(state["n_peaks"])
        self._since_fit = int(state["since_fit"])
        self._gamma = float(state["gamma"])
        self._sigma = float(state["sigma"])
        self._threshold = float(state["threshold"])


def _censored_gpd_mle(exact: np.ndarray, caps: np.ndarray, start: tuple[float, float]) -> tuple[float, float]:
    """(gamma, sigma) maximising the GPD likelihood of `exact` excesses and right-censored `caps`."""

    def nll(params: np.ndarray) -> float:
        gamma, log_sigma = float(params[0]), float(params[1])
        sigma = math.exp(log_sigma)
        zy = 1.0 + gamma * exact / sigma
        zc = 1.0 + gamma * caps / sigma
        if (zy.size and zy.min() <= 0.0) or (zc.size and zc.min() <= 0.0):
            return math.inf
        if abs(gamma) < 1e-9:
            return exact.shape[0] * log_sigma + (exact.sum() + caps.sum()) / sigma
        return (
            exact.shape[0] * log_sigma
            + (1.0 + 1.0 / gamma) * float(np.log(zy).sum())
            + float(np.log(zc).sum()) / gamma
        )

    x0 = np.array([start[0], math.log(max(start[1], 1e-12))])
    if not math.isfinite(nll(x0)):
        x0 = np.array([0.0, math.log(max(float(np.mean(exact)) if exact.size else 1.0, 1e-12))])
    result = optimize.minimize(nll, x0, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6})
    return float(result.x[0]), math.exp(float(result.x[1]))
