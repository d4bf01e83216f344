"""Per-card and per-terminal streaming features for payment transactions.

The first 15 features are the Fraud Detection Handbook's (amount, weekend, night, card counts and
mean amounts over 1/7/30 days, terminal counts and fraud risk over 1/7/30 days ending `label_delay`
before the transaction). Then come extra features: the card's amount profile (mean, std, z-score,
ratio of the previous 30 days), time since the card's last transaction, how often the card used
this terminal before, the card's revealed frauds, hour/weekday, and fraud-run features of the
terminal built from revealed labels only. Last come the declared event attributes (`attributes`): a numeric one
as its value, a categorical one hashed into `buckets` one-hot columns, and for either per-card aggregates over
`per_card_days` windows: how many of the card's transactions had the same value (categorical) and their mean
amount, or the value's z-score against the card's recent values (numeric).

A batch gives exactly the features of one-by-one processing: the batch is cut into "waves" in which
each card (or terminal) appears once, so repeated cards see their earlier events of the same batch.
Labels enter through `observe_labels`; a label only counts for events at or after its reveal time,
and an unlabelled transaction counts as genuine once the label delay has passed.

>>> from types import SimpleNamespace as Tx
>>> f = TransactionFeatures()
>>> keys, X = f.update_many([Tx(event_id="1", ts=0.0, card_id="c", terminal_id="t", amount=10.0),
...                          Tx(event_id="2", ts=60.0, card_id="c", terminal_id="t", amount=30.0)])
>>> keys, X.shape[0], float(X[1, f.feature_names.index("CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW")])
(['c', 'c'], 2, 20.0)
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from stream_models.entity_store import EntityHistory, partition_of
from stream_models.feature_kernels import card_sequences, card_window_features, terminal_window_features

DAY = 86_400.0
OUTLIER_Z = 4.0  # an amount this many standard deviations above its card's mean stays out of its statistics


@dataclass(frozen=True)
class AttributeSpec:
    """A declared event attribute (the transaction's `attributes` object, or its currency/channel/merchant_category
    field of the same name) and how it becomes features."""

    name: str
    kind: str = "categorical"  # or "numeric"
    buckets: int = 16  # categorical: hashing one-hot columns (0: none, only the per-card aggregates)
    per_card_days: tuple[int, ...] = ()  # per-card aggregates over these windows

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "numeric"):
            raise ValueError(f"attribute {self.name!r}: kind must be categorical or numeric, got {self.kind!r}")
        if self.buckets < 0 or any(d <= 0 for d in self.per_card_days):
            raise ValueError(f"attribute {self.name!r}: buckets must be >= 0 and per_card_days positive")
        object.__setattr__(self, "per_card_days", tuple(self.per_card_days))

    @property
    def column(self) -> str:
        """Its field in the card history."""
        return f"attr:{self.name}"

    def feature_names(self) -> list[str]:
        tag = self.name.upper()
        if self.kind == "numeric":
            return [f"ATTR_{tag}", *(f"CARD_{tag}_ZSCORE_{d}DAY_WINDOW" for d in self.per_card_days)]
        names = [f"ATTR_{tag}_H{b}" for b in range(self.buckets)]
        for d in self.per_card_days:
            names += [f"CARD_SAME_{tag}_NB_TX_{d}DAY_WINDOW", f"CARD_SAME_{tag}_AVG_AMOUNT_{d}DAY_WINDOW"]
        return names


BUILT_IN_ATTRIBUTES = ("currency", "channel", "merchant_category")  # Transaction fields usable as attributes


@dataclass(frozen=True)
class TransactionFeaturesConfig:
    windows_days: tuple[int, ...] = (1, 7, 30)
    label_delay_days: float = 7.0
    profile_days: int = 30  # card amount profile and terminal-visit look-back
    card_fraud_days: int = 14  # look-back for the card's revealed frauds
    sequence_length: int = 5  # per-card sequence kept for sequence models; 0 disables it
    max_cards: int = 2_000_000  # LRU bound on card states
    max_terminals: int = 2_000_000  # LRU bound on terminal states
    initial_capacity: int = 32  # events kept per entity; grows by half when a window needs more
    time_cap_days: float = 30.0  # cap for "time since" features
    attributes: tuple[AttributeSpec, ...] = ()

    def __post_init__(self) -> None:
        specs = tuple(a if isinstance(a, AttributeSpec) else AttributeSpec(**a) for a in self.attributes)
        object.__setattr__(self, "attributes", specs)
        if len({a.name for a in specs}) != len(specs):
            raise ValueError("attribute names must be unique")
        if not self.windows_days or min(self.windows_days) <= 0:
            raise ValueError("windows_days must be positive")
        if self.label_delay_days < 0 or self.sequence_length < 0:
            raise ValueError("label_delay_days and sequence_length must be >= 0")
        if self.max_cards < 2 or self.max_terminals < 2 or self.initial_capacity < 1:
            raise ValueError("max_cards/max_terminals must be >= 2 and initial_capacity >= 1")


def _ranks(slots: np.ndarray) -> np.ndarray:
    """Rank of each event among the earlier events of the batch with the same slot."""
    order = np.argsort(slots, kind="stable")
    s = slots[order]
    start = np.r_[0, np.nonzero(np.diff(s))[0] + 1]
    group_start = np.repeat(start, np.diff(np.r_[start, len(s)]))
    rank = np.empty(len(slots), np.int64)
    rank[order] = np.arange(len(s)) - group_start
    return rank


def _waves(slots: np.ndarray) -> list[np.ndarray]:
    rank = _ranks(slots)
    return [np.nonzero(rank == w)[0] for w in range(int(rank.max()) + 1)] if len(slots) else []


def _attribute(event: Any, name: str) -> Any:
    """The event's value of attribute `name`: from its `attributes` object, else a built-in field of that name."""
    attributes = getattr(event, "attributes", None)
    if attributes and name in attributes:
        return attributes[name]
    return getattr(event, name, None) if name in BUILT_IN_ATTRIBUTES else None


def _number(x: Any) -> float:
    try:
        return float(x) if x is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _hash_ids(ids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit ids (the built-in hash() is salted per process and would break restores)."""
    blake = hashlib.blake2b
    return np.fromiter((int.from_bytes(blake(x.encode(), digest_size=8).digest(), "little", signed=True)
                        for x in ids), np.int64, len(ids))


class TransactionFeatures:
    """Streaming feature state; `update_many(events) -> (card keys, X (B, F) float32)`."""

    def __init__(self, config: TransactionFeaturesConfig | None = None):
        self.config = config or TransactionFeaturesConfig()
        c = self.config
        self._delay = c.label_delay_days * DAY
        self._card_horizon = max(max(c.windows_days), c.profile_days, c.card_fraud_days,
                                 *(d for a in c.attributes for d in a.per_card_days)) * DAY
        self._tracked = [a for a in c.attributes if a.per_card_days]  # kept in the card history
        self._term_horizon = max(c.windows_days) * DAY + self._delay
        self._windows_s = np.asarray(c.windows_days, np.float64) * DAY
        self._extra = 3 + 4 * len(c.windows_days)  # the first column after the book's features
        self._label_horizon = max(self._card_horizon, self._term_horizon)  # older labels are ignored
        self._latest_ts = -np.inf
        label_fields = {"seq": (np.dtype(np.int64), -1), "fraud": (np.dtype(np.int8), 0),
                        "label_ts": (np.dtype(np.float64), np.inf)}
        self._cards = EntityHistory(
            {"ts": (np.dtype(np.float64), -np.inf), "amount": (np.dtype(np.float64), 0.0),
             "terminal": (np.dtype(np.int64), 0), "outlier": (np.dtype(np.int8), 0), **label_fields,
             **{a.column: (np.dtype(np.float64), np.nan) for a in self._tracked}},
            c.max_cards, c.initial_capacity)
        self._terms = EntityHistory({"ts": (np.dtype(np.float64), -np.inf), **label_fields},
                               c.max_terminals, c.initial_capacity)
        self.feature_names = self._names()
        n_feat = len(self.feature_names)
        self._attribute_columns: list[tuple[AttributeSpec, int]] = []  # each attribute and its first column
        first = n_feat - sum(len(a.feature_names()) for a in c.attributes)
        for a in c.attributes:
            self._attribute_columns.append((a, first))
            first += len(a.feature_names())
        # per card slot: its previous T-1 feature rows (the newest last) and how many are real (not padding)
        self._seq = np.zeros((0, max(c.sequence_length - 1, 0), n_feat), np.float32)
        self._seq_count = np.zeros(0, np.min_scalar_type(c.sequence_length))
        # event id -> seq; per-seq (card slot, card index, terminal slot, terminal index, ts)
        self._event_seq: dict[str, int] = {}
        self._event_batches: deque[tuple[float, list[str]]] = deque()
        self._ev = np.zeros((1024, 5), np.float64)
        self._next_seq = 0
        self._terminal_hash: dict[str, int] = {}  # terminal id -> _hash_ids value
        self.last_sequences: np.ndarray | None = None  # (B, T, F) of the last batch

    # ---- names -------------------------------------------------------------------------------
    def _names(self) -> list[str]:
        w = self.config.windows_days
        names = ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
        for d in w:
            names += [f"CUSTOMER_ID_NB_TX_{d}DAY_WINDOW", f"CUSTOMER_ID_AVG_AMOUNT_{d}DAY_WINDOW"]
        for d in w:
            names += [f"TERMINAL_ID_NB_TX_{d}DAY_WINDOW", f"TERMINAL_ID_RISK_{d}DAY_WINDOW"]
        names += ["CARD_AMOUNT_MEAN_PREV", "CARD_AMOUNT_STD_PREV", "CARD_AMOUNT_ZSCORE",
                  "CARD_AMOUNT_RATIO", "CARD_LOG_SECONDS_SINCE_LAST", "CARD_TERMINAL_VISITS",
                  "CARD_REVEALED_FRAUDS", "HOUR_SIN", "HOUR_COS", "WEEKDAY",
                  "TERMINAL_FRAUD_RUN_LENGTH", "TERMINAL_FRAUD_RUN_AGE_DAYS",
                  "TERMINAL_DAYS_SINCE_REVEALED_FRAUD", "TERMINAL_LAST_LABEL_FRAUD",
                  "CARD_AMOUNT_MEDIAN_RATIO", "LOG_AMOUNT"]
        for attribute in self.config.attributes:
            names += attribute.feature_names()
        return names

    @property
    def book_feature_names(self) -> list[str]:
        return self.feature_names[: self._extra]

    # ---- update ------------------------------------------------------------------------------
    def update_many(self, events: Sequence[Any]) -> tuple[list[str], np.ndarray]:
        """Features of each event (state updated in arrival order). X: (B, F) float32."""
        ids = [str(e.event_id) for e in events]
        cards = [str(e.card_id) for e in events]
        terms = [str(e.terminal_id) for e in events]
        ts = np.fromiter((e.ts for e in events), np.float64, len(events))
        amount = np.fromiter((e.amount for e in events), np.float64, len(events))
        values = {a.name: [_attribute(e, a.name) for e in events] for a in self.config.attributes}
        return cards, self.update_arrays(ids, ts, cards, terms, amount, values)

    def update_arrays(self, event_ids: Sequence[str], ts: np.ndarray, card_ids: Sequence[str],
                      terminal_ids: Sequence[str], amount: np.ndarray,
                      attributes: dict[str, Sequence[Any]] | None = None) -> np.ndarray:
        """Column form of `update_many` (`attributes`: name -> one value per event, None where missing): returns
        X (B, F) float32."""
        B = len(event_ids)
        c = self.config
        X = np.zeros((B, len(self.feature_names)), np.float64)
        if B == 0:
            self.last_sequences = np.zeros((0, c.sequence_length, X.shape[1]), np.float32)
            return X.astype(np.float32)
        ts = np.asarray(ts, np.float64)
        amount = np.asarray(amount, np.float64)
        seq = np.arange(self._next_seq, self._next_seq + B)
        self._next_seq += B
        t_min = float(ts.min())
        card_slot = self._cards.slots(card_ids)
        term_slot = self._terms.slots(terminal_ids)
        self._fit_seq_store()
        term_hash = self._terminal_hashes(terminal_ids)

        sec = np.mod(ts, DAY)
        weekday = np.mod(np.floor(ts / DAY) + 3, 7)  # 1970-01-01 was a Thursday (Monday = 0)
        X[:, 0] = amount
        X[:, 1] = weekday >= 5
        X[:, 2] = np.floor(sec / 3600) <= 6
        extra = self._extra
        X[:, extra + 7] = np.sin(2 * np.pi * sec / DAY)
        X[:, extra + 8] = np.cos(2 * np.pi * sec / DAY)
        X[:, extra + 9] = weekday
        X[:, extra + 15] = np.log1p(np.maximum(amount, 0.0))
        coded = self._encode_attributes(X, attributes or {}, B)  # column name -> (B,) value codes

        card_k = np.zeros(B, np.int64)
        for idx in _waves(card_slot):
            s = card_slot[idx]
            outlier = self._card_features(X, idx, s, ts[idx], amount[idx], term_hash[idx])
            if self._tracked:
                self._card_attribute_features(X, idx, self._cards.gather(s), ts[idx], amount[idx], coded)
            card_k[idx] = self._cards.append(
                s, {"ts": ts[idx], "amount": amount[idx], "terminal": term_hash[idx], "outlier": outlier, "seq": seq[idx],
                    "fraud": 0, "label_ts": np.inf, **{k: v[idx] for k, v in coded.items()}},
                keep_after=t_min - self._card_horizon)
        term_k = np.zeros(B, np.int64)
        for idx in _waves(term_slot):
            s = term_slot[idx]
            self._terminal_features(X, idx, s, ts[idx])
            term_k[idx] = self._terms.append(
                s, {"ts": ts[idx], "seq": seq[idx], "fraud": 0, "label_ts": np.inf},
                keep_after=t_min - self._term_horizon)
        X32 = X.astype(np.float32)
        self._remember(event_ids, seq, card_slot, card_k, term_slot, term_k, ts)
        if c.sequence_length:
            self.last_sequences = self._sequences(card_slot, X32)
        return X32

    def _terminal_hashes(self, terminal_ids: Sequence[str]) -> np.ndarray:
        """`_hash_ids` of the terminals, each distinct one hashed once (bounded like the terminal state)."""
        cache = self._terminal_hash
        new = [k for k in dict.fromkeys(terminal_ids) if k not in cache]
        if new:
            if len(cache) + len(new) > self.config.max_terminals:
                cache.clear()
                new = list(dict.fromkeys(terminal_ids))
            cache.update(zip(new, _hash_ids(new).tolist(), strict=True))
        return np.fromiter(map(cache.__getitem__, terminal_ids), np.int64, len(terminal_ids))

    def _card_features(self, X: np.ndarray, idx: np.ndarray, slots: np.ndarray, t: np.ndarray, a: np.ndarray,
                       term: np.ndarray) -> np.ndarray:
        """Write the card columns of rows `idx` (cards `slots`, each once); returns whether each amount is an outlier
        for its card (kept out of the card's later amount statistics while outliers are the minority of its
        window)."""
        c, H = self.config, self._cards.data
        return card_window_features(
            X, idx, slots, self._cards.head, H["ts"], H["amount"], H["terminal"], H["outlier"], H["fraud"],
            H["label_ts"], t, a, term, self._windows_s, c.profile_days * DAY, c.card_fraud_days * DAY,
            c.time_cap_days * DAY, OUTLIER_Z, self._extra)

    def _encode_attributes(self, X: np.ndarray, values: dict[str, Sequence[Any]], B: int) -> dict[str, np.ndarray]:
        """Write each declared attribute's own columns; returns the codes the card history keeps (a categorical's
        hash as a float, a numeric value; NaN where missing)."""
        coded: dict[str, np.ndarray] = {}
        for a, col in self._attribute_columns:
            raw = values.get(a.name, [None] * B)
            if a.kind == "numeric":
                v = np.array([_number(x) for x in raw], np.float64)
                X[:, col] = np.nan_to_num(v)
                code = v
            else:
                known = np.array([x is not None for x in raw])
                h = _hash_ids([f"{a.name}={x}" for x in raw])
                if a.buckets:
                    bucket = np.mod(h, a.buckets)
                    rows = np.flatnonzero(known)
                    X[rows, col + bucket[rows]] = 1.0
                code = np.where(known, (h >> 11).astype(np.float64), np.nan)  # 53 bits: exact in a float64
            if a.per_card_days:
                coded[a.column] = code
        return coded

    def _card_attribute_features(self, X: np.ndarray, idx: np.ndarray, H: dict[str, np.ndarray], t: np.ndarray,
                                 amount: np.ndarray, coded: dict[str, np.ndarray]) -> None:
        """Per-card aggregates of the tracked attributes over their windows (the card's earlier transactions)."""
        hts, tc = H["ts"], t[:, None]
        for a, col in self._attribute_columns:
            if not a.per_card_days:
                continue
            start = col + (1 if a.kind == "numeric" else a.buckets)  # the aggregates follow its own columns
            past, now = H[a.column], coded[a.column][idx]
            for j, d in enumerate(a.per_card_days):
                window = (hts > tc - d * DAY) & ~np.isnan(past)
                if a.kind == "numeric":
                    n = window.sum(1)
                    mean = np.where(window, past, 0.0).sum(1) / np.maximum(n, 1)
                    var = np.where(window, (past - mean[:, None]) ** 2, 0.0).sum(1) / np.maximum(n - 1, 1)
                    z = (now - mean) / np.maximum(np.sqrt(var), 1e-6)
                    X[idx, start + j] = np.where((n >= 2) & ~np.isnan(now), np.clip(z, -50, 50), 0.0)
                    continue
                same = window & (past == now[:, None])
                nb = same.sum(1)
                X[idx, start + 2 * j] = nb
                X[idx, start + 2 * j + 1] = np.where(nb > 0, np.where(same, H["amount"], 0.0).sum(1) / np.maximum(nb, 1),
                                                     amount)

    def _terminal_features(self, X: np.ndarray, idx: np.ndarray, slots: np.ndarray, t: np.ndarray) -> None:
        c, H = self.config, self._terms.data
        terminal_window_features(
            X, idx, slots, self._terms.head, H["ts"], H["seq"], H["fraud"], H["label_ts"], t,
            self._windows_s, self._delay, self._term_horizon, float(c.time_cap_days), DAY,
            3 + 2 * len(c.windows_days), self._extra)

    # ---- sequences ---------------------------------------------------------------------------
    def _fit_seq_store(self) -> None:
        n = self._cards.n_slots
        T = self.config.sequence_length
        if T and self._seq.shape[0] < n:
            pad = n - self._seq.shape[0]
            self._seq = np.concatenate([self._seq, np.zeros((pad, *self._seq.shape[1:]), np.float32)])
            self._seq_count = np.concatenate([self._seq_count, np.zeros(pad, self._seq_count.dtype)])
        if T and self._cards.evictions:  # cleared card slots start a fresh sequence
            fresh = self._cards.head[: len(self._seq_count)] == 0
            self._seq_count[fresh] = 0

    def _sequences(self, card_slot: np.ndarray, X: np.ndarray) -> np.ndarray:
        """(B, T, F): the card's last T feature rows ending with this event; padded with the oldest."""
        return card_sequences(self._seq, self._seq_count, card_slot, X, self.config.sequence_length)

    # ---- labels ------------------------------------------------------------------------------
    def _remember(self, ids: Sequence[str], seq: np.ndarray, cs: np.ndarray, ck: np.ndarray,
                  tsl: np.ndarray, tk: np.ndarray, ts: np.ndarray) -> None:
        while self._next_seq - self._oldest_live_seq() > len(self._ev):
            self._grow_event_ring()
        rows = seq % len(self._ev)
        self._ev[rows] = np.stack([cs, ck, tsl, tk, ts], axis=1)
        self._event_seq.update(zip(ids, seq.tolist(), strict=True))
        self._event_batches.append((float(ts.max()), list(ids)))
        self._latest_ts = max(self._latest_ts, float(ts.max()))
        horizon = self._latest_ts - self._label_horizon - DAY
        while self._event_batches and self._event_batches[0][0] < horizon:
            for i in self._event_batches.popleft()[1]:
                self._event_seq.pop(i, None)

    def _oldest_live_seq(self) -> int:
        if not self._event_batches:
            return self._next_seq
        first = self._event_batches[0][1]
        return self._event_seq.get(first[0], self._next_seq) if first else self._next_seq

    def _grow_event_ring(self) -> None:
        G = len(self._ev)
        new = np.zeros((2 * G, 5), np.float64)
        lo = max(self._next_seq - G, 0)
        s = np.arange(lo, self._next_seq)
        new[s % (2 * G)] = self._ev[s % G]
        self._ev = new

    def observe_labels(self, event_ids: Sequence[str], labels: Sequence[int] | np.ndarray,
                       label_ts: Sequence[float] | np.ndarray | float) -> int:
        """Record delayed labels (1 = fraud); each counts only for events at or after `label_ts`.

        Returns how many labels matched a remembered event (older events are forgotten).
        """
        labels = np.asarray(labels, np.int8).reshape(-1)
        lts = np.broadcast_to(np.asarray(label_ts, np.float64), labels.shape)
        seqs = np.fromiter((self._event_seq.get(str(i), -1) for i in event_ids), np.int64, len(labels))
        ok = seqs >= 0
        ev = self._ev[seqs % len(self._ev)]
        ok &= ev[:, 4] >= self._latest_ts - self._label_horizon  # same rule however the stream was batched
        seqs, labels, lts, ev = seqs[ok], labels[ok], lts[ok], ev[ok]
        for store, col in ((self._cards, 0), (self._terms, 2)):
            slot = ev[:, col].astype(np.int64)
            pos = store.position(slot, ev[:, col + 1].astype(np.int64))
            same = store.data["seq"][slot, pos] == seqs  # still stored (not evicted or overwritten)
            store.data["fraud"][slot[same], pos[same]] = labels[same]
            store.data["label_ts"][slot[same], pos[same]] = lts[same]
        return int(ok.sum())

    # ---- state -------------------------------------------------------------------------------
    def card_ids(self, partitions: Collection[int] | None = None, n_partitions: int | None = None) -> list[str]:
        """Cards held in state; with `partitions`, only those Kafka's default partitioner (murmur2
        of the card id, the topic key) puts in one of `partitions` out of `n_partitions`."""
        keys = list(self._cards.slot_of)
        if partitions is None:
            return keys
        if not n_partitions:
            raise ValueError("n_partitions is needed with partitions")
        wanted = set(partitions)
        return [k for k in keys if partition_of(k, n_partitions) in wanted]

    def drop_cards(self, card_ids: Collection[str]) -> None:
        """Forget cards (e.g. when their partition moves to another worker)."""
        slots = [self._cards.slot_of[k] for k in card_ids if k in self._cards.slot_of]
        self._cards.drop(card_ids)
        if slots and self.config.sequence_length:
            self._seq_count[slots] = 0

    def snapshot(self, card_ids: Collection[str] | None = None) -> dict[str, Any]:
        """State as tensors/lists (loadable with torch.load(weights_only=True)).

        With `card_ids`, only those cards (e.g. one Kafka partition's) plus all terminals.
        """
        cards = None
        if card_ids is not None:
            cards = np.asarray([self._cards.slot_of[k] for k in card_ids if k in self._cards.slot_of],
                               np.int64)
        card_state = self._cards.state(cards)
        sel = np.asarray([self._cards.slot_of[k] for k in card_state["keys"]], np.int64)
        state: dict[str, Any] = {
            "config": {k: list(v) if isinstance(v, tuple) and k != "attributes" else v
                       for k, v in asdict(self.config).items()},
            "cards": card_state,
            "terminals": self._terms.state(),
            "next_seq": self._next_seq,
            "latest_ts": float(self._latest_ts),
        }
        if card_ids is None:  # label bookkeeping: which stored event each recent event id is
            ids = [i for _, batch in self._event_batches for i in batch if i in self._event_seq]
            seqs = np.asarray([self._event_seq[i] for i in ids], np.int64)
            state["events"] = {"ids": ids, "seq": torch.from_numpy(seqs),
                               "rows": torch.from_numpy(self._ev[seqs % len(self._ev)])}
        if self.config.sequence_length:
            state["seq"] = torch.from_numpy(self._seq[sel].copy())
            state["seq_count"] = torch.from_numpy(self._seq_count[sel].copy())
        return state

    def restore(self, state: dict[str, Any], merge_cards: bool = False) -> None:
        """Load a snapshot; with `merge_cards`, add its cards to the current state instead."""
        if not merge_cards:
            self.__init__(TransactionFeaturesConfig(**{  # type: ignore[misc]
                k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()}))
            self._terms.load(state["terminals"])
        slot_map = self._cards.load(state["cards"], merge=merge_cards)
        self._next_seq = max(self._next_seq, int(state["next_seq"]))
        self._latest_ts = max(self._latest_ts, float(state["latest_ts"]))
        self._fit_seq_store()
        if self.config.sequence_length and slot_map:
            new = np.asarray(list(slot_map.values()), np.int64)
            rows = state["seq"].numpy()  # checkpoints before 2026-12-07 hold T rows: their oldest is dropped
            self._seq[new] = rows[:, rows.shape[1] - self._seq.shape[1]:]
            self._seq_count[new] = np.minimum(state["seq_count"].numpy(), self.config.sequence_length)
        if not merge_cards and "events" in state:
            self._load_events(state)

    def _load_events(self, state: dict[str, Any]) -> None:
        maps = []
        for store, part in ((self._cards, state["cards"]), (self._terms, state["terminals"])):
            old = part["slots"].numpy()
            lut = np.full(int(old.max()) + 1 if len(old) else 1, -1, np.int64)
            lut[old] = [store.slot_of[k] for k in part["keys"]]
            maps.append(lut)
        ids, seqs, rows = state["events"]["ids"], state["events"]["seq"].numpy(), state["events"]["rows"].numpy()
        if not ids:
            return
        rows = rows.copy()
        for col, lut in ((0, maps[0]), (2, maps[1])):
            old = rows[:, col].astype(np.int64)
            rows[:, col] = np.where(old < len(lut), lut[np.minimum(old, len(lut) - 1)], -1)
        keep = (rows[:, 0] >= 0) & (rows[:, 2] >= 0)
        while self._next_seq - int(seqs.min()) > len(self._ev):
            self._grow_event_ring()
        self._ev[seqs[keep] % len(self._ev)] = rows[keep]
        kept = [i for i, k in zip(ids, keep, strict=True) if k]
        self._event_seq.update(zip(kept, seqs[keep].tolist(), strict=True))
        self._event_batches.append((float(rows[:, 4].max()), kept))


def compile_kernels() -> None:
    """Compile the Numba kernels into their on-disk cache (a fresh install pays this once, ~15 s on 2 cores;
    `make install` does it), by computing the features of two transactions."""
    TransactionFeatures().update_arrays(["1", "2"], np.array([0.0, 60.0]), ["card", "card"], ["t", "t"],
                                        np.array([10.0, 30.0]))


if __name__ == "__main__":
    compile_kernels()
