"""Deterministic, labelled simulators of card transactions and multichannel sensor streams.

Everything is drawn from one seeded `numpy.random.Generator` with vectorised numpy, so the
same arguments (`run` included) always give the same events (100k transactions take well under a second).

`TransactionSimulator`: customers with a home location and a spending profile use terminals
near home, mostly around midday. Fraud patterns, each labelled 1 with its scenario name:
- `compromised_terminal`: every transaction at a terminal during some days;
- `card_testing`: a burst of many small amounts on one card, seconds apart, online;
- `amount_spike`: one purchase many times the card's usual amount;
- `account_takeover`: for some days a card also buys at unfamiliar terminals, mostly online,
  at several times its usual amounts.

`SensorSimulator`: devices with correlated channels (a shared latent signal), daily-like
seasonality, noise and slow drift. Anomalies, labelled per (device, step):
`spike`, `level_shift`, `stuck` (a channel repeats one value), `collective` (the shared
signal flips sign on a group of channels: each channel looks normal alone, their
correlation breaks).

Both have `events()` (time order), `labels()`, `to_frame()` and `write(path)` (CSV or Parquet),
whose files `ingest.replay.FileSource` reads back into the same events.

Event ids are `<id_prefix>-s<seed>-<run>-<n:09d>`: `run` is random per simulator unless given, so two runs
never share ids (alerts are deduplicated by event id); pass `run` for reproducible ids. A simulator's
labels carry its events' ids.

>>> sim = TransactionSimulator(seed=1, n_customers=50, n_terminals=40, days=3, run="r1")
>>> events = list(sim.events())
>>> all(a.ts <= b.ts for a, b in zip(events, events[1:]))
True
>>> events[0].event_id
'tx-s1-r1-000000000'
>>> events[0] == next(TransactionSimulator(seed=1, n_customers=50, n_terminals=40, days=3, run="r1").events())
True
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pandas as pd

from ingest.schemas import FeatureRecord, Label, SensorReading, Transaction

DAY_S = 86400.0

TX_SCENARIOS = ("genuine", "compromised_terminal", "card_testing", "amount_spike", "account_takeover")
SENSOR_SCENARIOS = ("normal", "spike", "level_shift", "stuck", "collective")
CHANNELS = ("pos", "ecom", "atm")
MERCHANT_CATEGORIES = (
    "grocery",
    "fuel",
    "restaurant",
    "retail",
    "electronics",
    "travel",
    "pharmacy",
    "digital",
)
DEFAULT_SENSOR_CHANNELS = (
    "temperature",
    "pressure",
    "vibration",
    "current",
    "voltage",
    "flow",
    "rpm",
    "humidity",
)


def to_epoch(start: str | float | int) -> float:
    """Epoch seconds of `start` (a number is taken as epoch seconds, a string as an ISO date/time in UTC)."""
    if isinstance(start, (int, float)):
        return float(start)
    stamp = pd.Timestamp(start)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).timestamp()


def _write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        frame.to_parquet(path, index=False)
    elif name.endswith((".csv", ".csv.gz", ".txt")):
        frame.to_csv(path, index=False)
    else:
        raise ValueError(f"cannot tell the format of {path}: use .csv, .csv.gz or .parquet")
    return path


def new_run_id() -> str:
    """A short random run id for event ids (8 hex digits)."""
    return uuid.uuid4().hex[:8]


def _ids(prefix: str, n: int, width: int = 9) -> list[str]:
    return [f"{prefix}-{i:0{width}d}" for i in range(n)]


def _poisson_count(rng: np.random.Generator, rate_per_day: float, days: int) -> int:
    return int(rng.poisson(max(rate_per_day, 0.0) * days)) if rate_per_day > 0 else 0


@dataclass
class TransactionSimulator:
    """Card transactions with labelled fraud. Sizes: about n_customers * 2 * days transactions."""

    seed: int = 0
    n_customers: int = 1000
    n_terminals: int = 1000
    days: int = 30
    start: str | float = "2024-01-01"
    radius: float = 5.0  # customers use terminals within this distance (map is 100 x 100)
    compromised_terminals_per_day: float = 0.3
    compromise_days: int = 7
    card_testing_per_day: float = 0.5
    card_testing_size: tuple[int, int] = (5, 20)
    amount_spikes_per_day: float = 2.0
    takeovers_per_day: float = 0.3
    takeover_days: int = 3
    label_delay_s: float = 7 * DAY_S
    currency: str = "EUR"
    id_prefix: str = "tx"
    run: str | None = None  # in the event ids; None: new_run_id()

    def __post_init__(self) -> None:
        if self.n_customers < 1 or self.n_terminals < 1 or self.days < 1:
            raise ValueError("n_customers, n_terminals and days must be >= 1")
        self.run = self.run or new_run_id()
        self._data: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ generation
    def _generate(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        C, T, D = self.n_customers, self.n_terminals, self.days
        t0 = to_epoch(self.start)
        end = t0 + D * DAY_S

        cust_xy = rng.uniform(0, 100, (C, 2))
        cust_mean = rng.uniform(5, 100, C)
        cust_std = cust_mean / 2
        cust_rate = rng.uniform(0, 4, C)  # transactions per day
        term_xy = rng.uniform(0, 100, (T, 2))
        term_channel = rng.choice(len(CHANNELS), T, p=[0.7, 0.25, 0.05])
        term_category = rng.integers(0, len(MERCHANT_CATEGORIES), T)
        ecom_terminals = np.flatnonzero(term_channel == CHANNELS.index("ecom"))
        if ecom_terminals.size == 0:
            ecom_terminals = np.arange(T)

        # Terminals near each customer, as CSR (offsets + flat ids); the nearest one is always in.
        near_flat, near_count = [], np.zeros(C, dtype=np.int64)
        chunk = max(1, 2_000_000 // T)
        for lo in range(0, C, chunk):
            d2 = ((cust_xy[lo : lo + chunk, None, :] - term_xy[None, :, :]) ** 2).sum(-1)  # (c, T)
            mask = d2 < self.radius**2
            mask[np.arange(mask.shape[0]), d2.argmin(1)] = True
            rows, cols = np.nonzero(mask)
            near_flat.append(cols)
            near_count[lo : lo + chunk] = np.bincount(rows, minlength=mask.shape[0])
        near = np.concatenate(near_flat)
        near_start = np.concatenate([[0], np.cumsum(near_count)[:-1]])

        # Genuine transactions: Poisson count per customer-day, time of day around noon.
        counts = rng.poisson(np.repeat(cust_rate, D).reshape(C, D))  # (C, D)
        cell = np.repeat(np.arange(C * D), counts.ravel())
        cust, day = cell // D, cell % D
        n = cust.size
        tod = rng.normal(DAY_S / 2, 20000, n)
        for _ in range(10):  # resample times outside the day
            bad = (tod < 0) | (tod >= DAY_S)
            if not bad.any():
                break
            tod[bad] = rng.normal(DAY_S / 2, 20000, int(bad.sum()))
        tod = np.clip(tod, 0, DAY_S - 1)
        ts = t0 + day * DAY_S + tod
        amount = rng.normal(cust_mean[cust], cust_std[cust])
        neg = amount <= 0
        amount[neg] = rng.uniform(0, 2 * cust_mean[cust[neg]])
        term = near[near_start[cust] + (rng.random(n) * near_count[cust]).astype(np.int64)]
        scenario = np.zeros(n, dtype=np.int8)

        # Compromised terminals: all their transactions during compromise_days are fraud.
        compromised = np.zeros((T, D), dtype=bool)
        for _ in range(_poisson_count(rng, self.compromised_terminals_per_day, D)):
            t, d = int(rng.integers(T)), int(rng.integers(D))
            compromised[t, d : d + self.compromise_days] = True
        scenario[compromised[term, day]] = TX_SCENARIOS.index("compromised_terminal")

        # Amount spikes on genuine transactions.
        genuine = np.flatnonzero(scenario == 0)
        n_spikes = min(_poisson_count(rng, self.amount_spikes_per_day, D), genuine.size)
        if n_spikes:
            hit = rng.choice(genuine, n_spikes, replace=False)
            amount[hit] = cust_mean[cust[hit]] * rng.uniform(5, 15, n_spikes)
            scenario[hit] = TX_SCENARIOS.index("amount_spike")

        extra_cust, extra_ts, extra_amount, extra_term, extra_scenario = [], [], [], [], []

        # Card testing: many small online amounts on one card within minutes.
        lo_size, hi_size = self.card_testing_size
        for _ in range(_poisson_count(rng, self.card_testing_per_day, D)):
            c = int(rng.integers(C))
            m = int(rng.integers(lo_size, hi_size + 1))
            start = rng.uniform(t0, end - 3600)
            extra_cust.append(np.full(m, c))
            extra_ts.append(start + np.cumsum(rng.exponential(20.0, m)))
            extra_amount.append(rng.uniform(0.5, 5.0, m))
            extra_term.append(np.full(m, rng.choice(ecom_terminals)))
            extra_scenario.append(np.full(m, TX_SCENARIOS.index("card_testing")))

        # Account takeover: extra spending at unfamiliar (mostly online) terminals, higher amounts.
        for _ in range(_poisson_count(rng, self.takeovers_per_day, D)):
            c = int(rng.integers(C))
            duration = self.takeover_days * DAY_S
            start = rng.uniform(t0, max(t0, end - duration))
            m = int(min(50, 2 + rng.poisson(2 * cust_rate[c] * self.takeover_days)))
            online = rng.random(m) < 0.7
            terms = np.where(online, rng.choice(ecom_terminals, m), rng.integers(0, T, m))
            extra_cust.append(np.full(m, c))
            extra_ts.append(start + rng.uniform(0, duration, m))
            extra_amount.append(cust_mean[c] * rng.uniform(3, 8, m))
            extra_term.append(terms)
            extra_scenario.append(np.full(m, TX_SCENARIOS.index("account_takeover")))

        if extra_cust:
            cust = np.concatenate([cust, *extra_cust])
            ts = np.concatenate([ts, *extra_ts])
            amount = np.concatenate([amount, *extra_amount])
            term = np.concatenate([term, *extra_term])
            scenario = np.concatenate([scenario, *[s.astype(np.int8) for s in extra_scenario]])

        keep = ts < end
        ts = np.round(ts[keep], 3)
        order = np.argsort(ts, kind="stable")
        cust, term, scenario = cust[keep][order], term[keep][order], scenario[keep][order]
        return {
            "ts": ts[order],
            "card": cust.astype(np.int64),
            "terminal": term.astype(np.int64),
            "amount": np.maximum(np.round(amount[keep][order], 2), 0.01),
            "channel": term_channel[term],
            "category": term_category[term],
            "scenario": scenario,
        }

    @property
    def data(self) -> dict[str, np.ndarray]:
        """The generated columns (numpy arrays, time order), generated once."""
        if self._data is None:
            self._data = self._generate()
        return self._data

    def __len__(self) -> int:
        return int(self.data["ts"].size)

    def event_ids(self) -> list[str]:
        return _ids(f"{self.id_prefix}-s{self.seed}-{self.run}", len(self))

    @property
    def is_fraud(self) -> np.ndarray:
        return self.data["scenario"] != 0

    # ------------------------------------------------------------------ outputs
    def to_frame(self) -> pd.DataFrame:
        d = self.data
        return pd.DataFrame(
            {
                "event_id": self.event_ids(),
                "ts": d["ts"],
                "card_id": [f"card-{c:06d}" for c in d["card"].tolist()],
                "terminal_id": [f"term-{t:06d}" for t in d["terminal"].tolist()],
                "amount": d["amount"],
                "currency": self.currency,
                "channel": np.asarray(CHANNELS, dtype=object)[d["channel"]],
                "merchant_category": np.asarray(MERCHANT_CATEGORIES, dtype=object)[d["category"]],
                "label": self.is_fraud.astype(np.int8),
                "scenario": np.asarray(TX_SCENARIOS, dtype=object)[d["scenario"]],
            }
        )

    def events(self) -> Iterator[Transaction]:
        f = self.to_frame()
        for eid, ts, card, term, amount, channel, category in zip(
            f["event_id"].tolist(),
            f["ts"].tolist(),
            f["card_id"].tolist(),
            f["terminal_id"].tolist(),
            f["amount"].tolist(),
            f["channel"].tolist(),
            f["merchant_category"].tolist(),
            strict=True,
        ):
            yield Transaction(eid, ts, card, term, amount, self.currency, channel, category)

    def labels(self, include_genuine: bool = False) -> list[Label]:
        """Label events (ts = event ts + label_delay_s), in label time order.

        By default only frauds (chargebacks): after the delay an unlabelled transaction counts as genuine.
        """
        return _labels(
            self.event_ids(),
            self.data["ts"],
            self.is_fraud,
            self.label_delay_s,
            include_genuine,
        )

    def write(self, path: str | Path) -> Path:
        return _write_frame(self.to_frame(), path)


def _labels(
    event_ids: list[str], ts: np.ndarray, positive: np.ndarray, delay_s: float, include_negative: bool
) -> list[Label]:
    idx = np.arange(ts.size) if include_negative else np.flatnonzero(positive)
    label_ts = ts[idx] + delay_s
    order = np.argsort(label_ts, kind="stable")
    idx = idx[order]
    return [
        Label(event_ids[i], cast(Literal[0, 1], y), t)
        for i, y, t in zip(
            idx.tolist(), positive[idx].astype(int).tolist(), label_ts[order].tolist(), strict=True
        )
    ]


@dataclass
class SensorSimulator:
    """Multichannel device readings every `interval_s`, with labelled anomalies (rates per 1000 steps per device)."""

    seed: int = 0
    n_devices: int = 3
    channels: int | Sequence[str] = 6
    n_steps: int = 5000  # per device
    interval_s: float = 10.0
    start: str | float = "2024-01-01"
    period_steps: int = 360  # seasonality period (1 hour at 10 s)
    noise: float = 0.1
    drift: float = 0.002  # random-walk step of the slow drift, in channel scale units
    spikes_per_1000: float = 2.0
    level_shifts_per_1000: float = 0.5
    stuck_per_1000: float = 0.5
    collective_per_1000: float = 0.5
    segment_steps: tuple[int, int] = (20, 120)
    label_delay_s: float = 0.0
    id_prefix: str = "sr"
    run: str | None = None  # in the event ids; None: new_run_id()

    def __post_init__(self) -> None:
        if isinstance(self.channels, int):
            k = self.channels
            names = list(DEFAULT_SENSOR_CHANNELS[:k]) + [
                f"ch{i}" for i in range(len(DEFAULT_SENSOR_CHANNELS), k)
            ]
        else:
            names = list(self.channels)
        if not names or len(set(names)) != len(names):
            raise ValueError("channels must be a positive count or distinct names")
        if self.n_devices < 1 or self.n_steps < 1:
            raise ValueError("n_devices and n_steps must be >= 1")
        self.run = self.run or new_run_id()
        self.channel_names: list[str] = names
        self._data: dict[str, np.ndarray] | None = None

    def _generate(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        Dv, S, K = self.n_devices, self.n_steps, len(self.channel_names)
        t = np.arange(S, dtype=np.float64)
        P = float(self.period_steps)

        # Shared latent per device: seasonality + smooth noise (exponentially filtered white noise).
        phase = rng.uniform(0, 2 * np.pi, (Dv, 1))
        seasonal = np.sin(2 * np.pi * t / P + phase) + 0.3 * np.sin(6 * np.pi * t / P + 2 * phase)  # (Dv, S)
        tau = 20.0
        kernel = np.exp(-np.arange(int(5 * tau)) / tau)
        kernel /= np.sqrt((kernel**2).sum())
        white = rng.normal(0, 0.3, (Dv, S + kernel.size - 1))
        smooth = np.stack([np.convolve(w, kernel, mode="valid") for w in white])  # (Dv, S)
        latent = seasonal + smooth  # (Dv, S)

        base = rng.uniform(-5, 50, (Dv, 1, K))
        scale = rng.uniform(0.5, 5, (Dv, 1, K))
        load = rng.uniform(0.6, 1.0, (Dv, 1, K)) * rng.choice([-1.0, 1.0], (Dv, 1, K))
        own = 0.3 * np.sin(2 * np.pi * t[None, :, None] / (P * rng.uniform(0.3, 3, (Dv, 1, K))))
        drift = np.cumsum(rng.normal(0, self.drift, (Dv, S, K)), axis=1)
        noise = rng.normal(0, self.noise, (Dv, S, K))
        shared = load * latent[:, :, None]  # (Dv, S, K)
        x = base + scale * (shared + own + drift + noise)  # (Dv, S, K)
        channel_std = x.std(axis=1, keepdims=True)  # (Dv, 1, K)

        scenario = np.zeros((Dv, S), dtype=np.int8)
        lo_len, hi_len = self.segment_steps

        def count(rate: float) -> int:
            return int(rng.poisson(rate * S / 1000.0)) if rate > 0 else 0

        def segment() -> tuple[int, int]:
            length = int(rng.integers(lo_len, hi_len + 1))
            s0 = int(rng.integers(0, max(1, S - length)))
            return s0, min(S, s0 + length)

        for d in range(Dv):
            for _ in range(count(self.level_shifts_per_1000)):
                a, b = segment()
                k = int(rng.integers(K))
                x[d, a:b, k] += rng.choice([-1, 1]) * rng.uniform(3, 6) * channel_std[d, 0, k]
                scenario[d, a:b] = SENSOR_SCENARIOS.index("level_shift")
            for _ in range(count(self.stuck_per_1000)):
                a, b = segment()
                k = int(rng.integers(K))
                x[d, a:b, k] = x[d, a, k]
                scenario[d, a:b] = SENSOR_SCENARIOS.index("stuck")
            for _ in range(count(self.collective_per_1000)):
                if K < 2:
                    break
                a, b = segment()
                group = rng.choice(K, int(rng.integers(2, K + 1)), replace=False)
                seg = x[d, a:b]  # (L, K) view
                seg[:, group] -= 2 * scale[d, 0, group] * shared[d, a:b][:, group]
                scenario[d, a:b] = SENSOR_SCENARIOS.index("collective")
            for _ in range(count(self.spikes_per_1000)):
                s, k = int(rng.integers(S)), int(rng.integers(K))
                x[d, s, k] += rng.choice([-1, 1]) * rng.uniform(6, 10) * channel_std[d, 0, k]
                scenario[d, s] = SENSOR_SCENARIOS.index("spike")

        # Row order: time step, then device. (Dv, S, K) -> (S * Dv, K)
        values = np.round(x.transpose(1, 0, 2).reshape(S * Dv, K), 6)
        ts = np.round(to_epoch(self.start) + np.repeat(t, Dv) * self.interval_s, 3)
        return {
            "ts": ts,
            "device": np.tile(np.arange(Dv), S),
            "values": values,
            "scenario": scenario.T.reshape(S * Dv),
        }

    @property
    def data(self) -> dict[str, np.ndarray]:
        if self._data is None:
            self._data = self._generate()
        return self._data

    def __len__(self) -> int:
        return int(self.data["ts"].size)

    def event_ids(self) -> list[str]:
        return _ids(f"{self.id_prefix}-s{self.seed}-{self.run}", len(self))

    @property
    def is_anomaly(self) -> np.ndarray:
        return self.data["scenario"] != 0

    def device_ids(self) -> list[str]:
        return [f"dev-{d:03d}" for d in range(self.n_devices)]

    def to_frame(self) -> pd.DataFrame:
        d = self.data
        frame = pd.DataFrame(
            {
                "event_id": self.event_ids(),
                "ts": d["ts"],
                "device_id": np.asarray(self.device_ids(), dtype=object)[d["device"]],
            }
        )
        channels = pd.DataFrame(d["values"], columns=self.channel_names)
        frame = pd.concat([frame, channels], axis=1)
        frame["label"] = self.is_anomaly.astype(np.int8)
        frame["scenario"] = np.asarray(SENSOR_SCENARIOS, dtype=object)[d["scenario"]]
        return frame

    def events(self) -> Iterator[SensorReading]:
        d = self.data
        names = self.channel_names
        devices = self.device_ids()
        ids = self.event_ids()
        for eid, ts, dev, row in zip(
            ids, d["ts"].tolist(), d["device"].tolist(), d["values"].tolist(), strict=True
        ):
            yield SensorReading(eid, ts, devices[dev], dict(zip(names, row, strict=True)))

    def labels(self, include_normal: bool = False) -> list[Label]:
        """Label events (ts = event ts + label_delay_s); by default only the anomalous readings."""
        return _labels(
            self.event_ids(),
            self.data["ts"],
            self.is_anomaly,
            self.label_delay_s,
            include_normal,
        )

    def write(self, path: str | Path) -> Path:
        return _write_frame(self.to_frame(), path)


@dataclass
class FeatureVectorSimulator:
    """Ready-made, anonymised feature vectors like a public card-fraud set: one stream, no ids, a relative time.

    Genuine rows are correlated Gaussians (a random mixing of independent factors, so the columns look like PCA
    components) plus a log-normal `Amount`; frauds (`fraud_rate` of the rows, label 1) are drawn shifted along a
    few of the factors. `to_frame()` has the columns `Time` (seconds since the start, increasing), `V1..V{k}`,
    `Amount` and `Class`, like that set; `events()` gives the records domain's wire events (one entity).

    >>> frame = FeatureVectorSimulator(seed=0, n_rows=1000).to_frame()
    >>> list(frame.columns[:3]), list(frame.columns[-2:]), int(frame["Class"].sum())
    (['Time', 'V1', 'V2'], ['Amount', 'Class'], 5)
    """

    seed: int = 0
    n_rows: int = 20_000
    n_features: int = 28
    fraud_rate: float = 0.005
    fraud_shift: float = 2.5  # in standard deviations, along `shifted_factors` of the factors
    shifted_factors: int = 4
    start: str | float = "2024-01-01"
    mean_gap_s: float = 8.0
    entity: str = "all"
    run: str | None = None  # in the event ids; None: new_run_id()

    def __post_init__(self) -> None:
        if self.n_rows < 1 or self.n_features < 1:
            raise ValueError("n_rows and n_features must be >= 1")
        self.run = self.run or new_run_id()
        self._frame: pd.DataFrame | None = None

    def to_frame(self) -> pd.DataFrame:
        if self._frame is not None:
            return self._frame
        rng = np.random.default_rng(self.seed)
        n, k = self.n_rows, self.n_features
        fraud = np.zeros(n, dtype=bool)
        fraud[rng.choice(n, size=int(round(self.fraud_rate * n)), replace=False)] = True
        factors = rng.normal(size=(n, k))
        direction = np.zeros(k)
        direction[rng.choice(k, size=min(self.shifted_factors, k), replace=False)] = rng.choice([-1.0, 1.0], size=min(
            self.shifted_factors, k))
        factors[fraud] += self.fraud_shift * direction
        mixing = np.linalg.qr(rng.normal(size=(k, k)))[0] * rng.uniform(0.5, 2.0, size=k)
        columns = {"Time": np.cumsum(rng.exponential(self.mean_gap_s, size=n)).round(0)}
        columns.update({f"V{i + 1}": v for i, v in enumerate((factors @ mixing).T)})
        amount = rng.lognormal(3.0, 1.0, size=n)
        amount[fraud] *= rng.uniform(1.0, 4.0, size=int(fraud.sum()))
        columns["Amount"] = amount.round(2)
        columns["Class"] = fraud.astype(np.int8)
        self._frame = pd.DataFrame(columns)
        return self._frame

    def __len__(self) -> int:
        return self.n_rows

    def event_ids(self) -> list[str]:
        return _ids(f"fv-s{self.seed}-{self.run}", self.n_rows)

    @property
    def is_fraud(self) -> np.ndarray:
        return self.to_frame()["Class"].to_numpy() == 1

    def events(self) -> Iterator[FeatureRecord]:
        frame = self.to_frame()
        names = [c for c in frame.columns if c not in ("Time", "Class")]
        ts = (to_epoch(self.start) + frame["Time"].to_numpy()).tolist()
        values = frame[names].to_numpy().tolist()
        for eid, t, row in zip(self.event_ids(), ts, values, strict=True):
            yield FeatureRecord(eid, t, self.entity, dict(zip(names, row, strict=True)))

    def labels(self) -> list[Label]:
        """The frauds' labels (ts = the event's)."""
        ts = to_epoch(self.start) + self.to_frame()["Time"].to_numpy()
        return _labels(self.event_ids(), ts, self.is_fraud, 0.0, False)

    def write(self, path: str | Path) -> Path:
        return _write_frame(self.to_frame(), path)
