"""Replay sources with `BatchConsumer`'s poll interface: a CSV/Parquet file, or a Kafka range.

Both yield `Record`s of wire bytes, so the runner decodes and validates replayed events exactly
as live ones. Both end: `poll()` returns `[]` once everything is read and `.exhausted` is True.
`commit()` is a no-op: a replay never moves a consumer group.

`FileSource` orders rows by event time (stable, so ties keep file order; rows without a time go
last) and gives them synthetic coordinates: topic = `topic` (default: the domain), partition 0,
offset = position in that order. Column mapping: `{wire_field: file_column}`; fields not named
map to a column of the same name when there is one. Sensors take `readings` from a list of
channel columns, `{channel: column}`, or a column-name prefix (stripped to name the channel);
by default from every other numeric column. Records (ready-made feature vectors) take `features` the same
ways, but only as named: no column becomes a feature unless listed. Without a `ts` column or mapping, the one
column named time, timestamp, datetime or event_time (any case) is the time. A missing `event_id` becomes
`<file stem>-<row>`, a missing sensor `device_id` / record `entity_id` the file stem. `ts` may be epoch seconds,
epoch milliseconds (values above 1e11) or date-times (naive ones are UTC); with `time_origin`, numbers are
seconds since that origin (a relative time column). With a `label` column (mapped or given as `labels`; for
transactions and sensors also one named `label`; `labels=False`: none), labels are available per offset
(`labels`) and per event id (`labels_by_event_id`). Transactions take `attributes` from the columns listed (or
`{attribute: column}`); numeric columns give numbers, others text.

`KafkaRangeSource` selects by offsets, by the events' own time (`ts`, read from the wire JSON) or by
the broker's record timestamps; see its doc.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from ingest.errors import IngestError, ReplaySourceError, kafka_bootstrap
from ingest.records import Record
from ingest.schemas import KEY_FIELDS, SCHEMA_VERSION, VECTOR_FIELDS, check_domain

Columns = Mapping[str, Any] | str | Path | None

_WIRE_FIELDS = {
    "transactions": (
        "event_id",
        "ts",
        "card_id",
        "terminal_id",
        "amount",
        "currency",
        "channel",
        "merchant_category",
        "attributes",
    ),
    "sensors": ("event_id", "ts", "device_id", "readings"),
    "records": ("event_id", "ts", "entity_id", "features"),
    "labels": ("event_id", "label", "ts"),
}
_TIME_NAMES = {"time", "timestamp", "datetime", "event_time", "time_s"}  # a time column found without a mapping
_ENTITY_FIELDS = {"sensors": "device_id", "records": "entity_id"}  # default: the file's stem
_STRING_FIELDS = {
    "event_id",
    "card_id",
    "terminal_id",
    "device_id",
    "entity_id",
    "currency",
    "channel",
    "merchant_category",
}
_NOT_READINGS = {
    "label",
    "anomaly",
    "changepoint",
    "scenario",
    "is_fraud",
    "fraud",
    "tx_fraud",
    "tx_fraud_scenario",
}


def expand_columns(text: str) -> list[str]:
    """Column names from a comma-separated list where `V1..V28` stands for V1, V2, ..., V28.

    >>> expand_columns("V1..V3, Amount")
    ['V1', 'V2', 'V3', 'Amount']
    """
    import re

    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        span = re.fullmatch(r"(\D*)(\d+)\.\.(\D*)(\d+)", part)
        if span and span.group(1) == span.group(3) and int(span.group(2)) <= int(span.group(4)):
            names += [f"{span.group(1)}{i}" for i in range(int(span.group(2)), int(span.group(4)) + 1)]
        elif span:
            raise ReplaySourceError(f"cannot expand {part!r}: write a range as V1..V28")
        elif part:
            names.append(part)
    return names


def load_columns(columns: Columns, domain: str | None = None) -> dict[str, Any]:
    """A column mapping from a dict, or from a YAML file holding one (optionally under the domain's name)."""
    if columns is None:
        return {}
    if isinstance(columns, (str, Path)):
        import yaml

        try:
            loaded = yaml.safe_load(Path(columns).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ReplaySourceError(f"cannot read the column mapping {columns}: {e}") from e
        if domain is not None and isinstance(loaded, dict) and isinstance(loaded.get(domain), dict):
            loaded = loaded[domain]
        if not isinstance(loaded, dict):
            raise ReplaySourceError(f"{columns} must hold a mapping of wire field -> file column")
        columns = loaded
    return dict(columns)


# Floats must read back exactly as written; pandas 3 does so by default and deprecates the option.
_ROUND_TRIP: dict[str, Any] = (
    {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
)


def read_frame(path: str | Path, string_columns: Iterable[str] = ()) -> pd.DataFrame:
    """Read a CSV (comma, semicolon or tab separated; may be gzipped) or Parquet file."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        sep = _sniff_separator(path)
        header = pd.read_csv(path, sep=sep, nrows=0).columns
        dtypes = {c: str for c in string_columns if c in header}
        return pd.read_csv(path, sep=sep, dtype=dtypes, **_ROUND_TRIP)
    except (OSError, ValueError, ImportError) as e:
        raise ReplaySourceError(f"cannot read {path}: {e}") from e


def _sniff_separator(path: Path) -> str:
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        first = f.readline()
    counts = {sep: first.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda s: counts[s])
    if counts[best] == 0:
        try:
            return csv.Sniffer().sniff(first).delimiter
        except csv.Error:
            return ","
    return best


def to_epoch_seconds(col: pd.Series) -> np.ndarray:
    """Event times as float epoch seconds (NaN where missing)."""
    if pd.api.types.is_bool_dtype(col):
        raise ReplaySourceError(f"time column {col.name!r} holds booleans")
    if pd.api.types.is_numeric_dtype(col):
        ts = col.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = ts[np.isfinite(ts)]
        if finite.size and np.median(np.abs(finite)) > 1e11:  # epoch milliseconds
            ts = ts / 1000.0
        return ts
    stamps = pd.to_datetime(col, utc=True, errors="coerce")
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
    ns[stamps.isna().to_numpy()] = np.nan
    return ns / 1e9


def _strings(col: pd.Series) -> list[str | None]:
    """Cell values as strings (ints without a trailing .0), None where missing."""
    out: list[str | None] = []
    for v in col.tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            out.append(None)
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return out


def _numbers(col: pd.Series) -> list[float | None]:
    arr = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return [None if math.isnan(x) else x for x in arr.tolist()]


class FileSource:
    """Replay a CSV or Parquet file as a stream of records (see the module doc for the column rules)."""

    def __init__(
        self,
        path: str | Path,
        domain: str,
        columns: Columns = None,
        speedup: float | None = None,
        *,
        topic: str | None = None,
        label_column: str | None = None,
        labels: bool = True,
        time_origin: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        self._clock, self._sleep = clock, sleep
        self.domain = check_domain(domain)
        if speedup is not None and speedup <= 0:
            raise ValueError("speedup must be > 0 (or None for as fast as possible)")
        self.speedup = speedup
        self.topic = topic or domain
        mapping = load_columns(columns, domain)
        if label_column is not None:
            mapping["label"] = label_column
        self._use_labels = labels
        self.time_origin = time_origin
        strings = [mapping.get(f, f) for f in _STRING_FIELDS if isinstance(mapping.get(f, f), str)]
        frame = read_frame(self.path, strings)
        self._build(frame, mapping)
        self._pos = 0
        self._paused = False
        self._wall0: float | None = None

    # ------------------------------------------------------------------ loading
    def _column(
        self, frame: pd.DataFrame, mapping: Mapping[str, Any], field: str, required: bool
    ) -> pd.Series | None:
        name = mapping.get(field, field)
        if name in frame.columns:
            return frame[name]
        if field in mapping or required:
            raise ReplaySourceError(
                f"{self.path.name}: no column {name!r} for {field!r} (columns: {', '.join(map(str, frame.columns))})"
            )
        return None

    def _build(self, frame: pd.DataFrame, mapping: Mapping[str, Any]) -> None:
        if self.domain == "sensors" and "features" in mapping:  # --features names a sensor file's reading columns
            mapping = {("readings" if k == "features" else k): v for k, v in mapping.items()}
        unknown = set(mapping) - set(_WIRE_FIELDS[self.domain]) - {"label"}
        if unknown:
            raise ReplaySourceError(
                f"unknown wire field(s) in the column mapping for {self.domain}: {sorted(unknown)}"
            )
        if "ts" not in mapping and "ts" not in frame.columns:
            named = [c for c in frame.columns if str(c).lower() in _TIME_NAMES]
            if len(named) == 1:
                mapping = {**mapping, "ts": named[0]}
        ts_col = self._column(frame, mapping, "ts", required=True)
        ts = self._times(ts_col)
        order = np.argsort(np.where(np.isnan(ts), np.inf, ts), kind="stable")
        frame = frame.iloc[order].reset_index(drop=True)
        self._ts = ts[order]
        n = len(frame)
        used: set[str] = {str(mapping.get("ts", "ts"))}

        fields: dict[str, list[Any]] = {}
        vector = VECTOR_FIELDS.get(self.domain)
        for field in _WIRE_FIELDS[self.domain]:
            if field in ("ts", vector, "attributes"):
                continue
            required = field in ("card_id", "terminal_id", "amount") or (
                self.domain == "labels" and field == "label"
            )
            col = self._column(frame, mapping, field, required)
            if col is None:
                continue
            used.add(str(col.name))
            fields[field] = _strings(col) if field in _STRING_FIELDS else _numbers(col)
        if "event_id" not in fields:
            fields["event_id"] = [f"{self.path.stem}-{i}" for i in order.tolist()]
        entity = _ENTITY_FIELDS.get(self.domain)
        if entity and entity not in fields:
            fields[entity] = [self.path.stem] * n
        if self.domain == "labels":
            fields["label"] = [
                None if x is None else int(x) if float(x).is_integer() else x for x in fields["label"]
            ]

        label_col = None
        if self.domain != "labels" and self._use_labels and (self.domain != "records" or "label" in mapping):
            label_col = self._column(frame, mapping, "label", required=False)
        if label_col is not None:
            used.add(str(label_col.name))
            values = pd.to_numeric(label_col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            self.labels: np.ndarray | None = np.where(np.isnan(values), -1, values).astype(np.int8)
        else:
            self.labels = None

        self._attributes = self._attribute_columns(frame, mapping.get("attributes"), used)
        if vector:
            if self.domain == "records" and not mapping.get("features"):
                raise ReplaySourceError(f"{self.path.name}: name the feature columns of the records (--features "
                                        f"V1..V28,Amount); columns: {', '.join(map(str, frame.columns))}")
            channel_names, matrix = self._readings(frame, mapping, used, vector)
            self._channels = channel_names
            self._matrix = matrix
        self._fields = fields
        self._n = n
        self.event_ids: list[str] = fields["event_id"]

    def _attribute_columns(self, frame: pd.DataFrame, spec: Any, used: set[str]) -> dict[str, list[Any]]:
        """Transactions' `attributes` from named columns (a list, or {attribute: column}): numbers stay numbers."""
        if not spec:
            return {}
        pairs = [(str(n), c) for n, c in spec.items()] if isinstance(spec, Mapping) else [(str(c), c) for c in spec]
        missing = [c for _, c in pairs if c not in frame.columns]
        if missing:
            raise ReplaySourceError(f"{self.path.name}: attribute columns not found: {missing}")
        used.update(str(c) for _, c in pairs)
        return {name: _numbers(frame[col]) if pd.api.types.is_numeric_dtype(frame[col])
                and not pd.api.types.is_bool_dtype(frame[col]) else _strings(frame[col]) for name, col in pairs}

    def _times(self, col: pd.Series) -> np.ndarray:
        """Epoch seconds of the time column; numbers count from `time_origin` when one is given."""
        if self.time_origin is None:
            ts = to_epoch_seconds(col)
            finite = ts[np.isfinite(ts)]
            if finite.size and pd.api.types.is_numeric_dtype(col) and float(np.max(finite)) < 1e8:
                raise ReplaySourceError(
                    f"{self.path.name}: time column {col.name!r} looks relative (largest value {np.max(finite):g}, "
                    "before 1973 as epoch seconds): give the time it counts from (--time-origin 2024-01-01)")
            return ts
        if not pd.api.types.is_numeric_dtype(col):
            raise ReplaySourceError(f"{self.path.name}: --time-origin needs a numeric time column "
                                    f"(seconds since the origin), {col.name!r} is not")
        return self.time_origin + col.to_numpy(dtype=np.float64, na_value=np.nan)

    def _readings(
        self, frame: pd.DataFrame, mapping: Mapping[str, Any], used: set[str], vector: str = "readings"
    ) -> tuple[list[str], np.ndarray]:
        spec = mapping.get(vector)
        if spec is None:
            cols = [
                c
                for c in frame.columns
                if str(c) not in used
                and str(c).lower() not in _NOT_READINGS
                and pd.api.types.is_numeric_dtype(frame[c])
                and not pd.api.types.is_bool_dtype(frame[c])
            ]
            pairs = [(str(c), c) for c in cols]
        elif isinstance(spec, str):
            pairs = [
                (str(c)[len(spec) :], c) for c in frame.columns if str(c).startswith(spec) and str(c) != spec
            ]
        elif isinstance(spec, Mapping):
            pairs = [(str(ch), col) for ch, col in spec.items()]
        elif isinstance(spec, Sequence):
            pairs = [(str(c), c) for c in spec]
        else:
            raise ReplaySourceError(
                f"{vector} must map to a list of columns, {{name: column}} or a column prefix"
            )
        missing = [col for _, col in pairs if col not in frame.columns]
        if missing or not pairs:
            raise ReplaySourceError(f"{self.path.name}: {vector} columns not found: {missing or spec!r}")
        if "label" in mapping and mapping["label"] in {col for _, col in pairs}:
            raise ReplaySourceError(f"{self.path.name}: the label column {mapping['label']!r} is also a feature")
        matrix = np.column_stack(
            [
                pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                for _, col in pairs
            ]
        )
        return [ch for ch, _ in pairs], matrix

    # ------------------------------------------------------------------ records
    def __len__(self) -> int:
        return self._n

    @property
    def exhausted(self) -> bool:
        return self._pos >= self._n

    @property
    def labels_by_event_id(self) -> dict[str, int]:
        """{event_id: label} for rows with a known label (empty without a label column)."""
        if self.labels is None:
            return {}
        return {eid: int(y) for eid, y in zip(self.event_ids, self.labels.tolist(), strict=True) if y >= 0}

    def label_of(self, record: Record) -> int | None:
        if self.labels is None or not 0 <= record.offset < self._n:
            return None
        y = int(self.labels[record.offset])
        return None if y < 0 else y

    def _payloads(self, start: int, stop: int) -> list[dict[str, Any]]:
        names = list(self._fields)
        columns = [self._fields[f][start:stop] for f in names]
        ts = self._ts[start:stop].tolist()
        rows = []
        for i, values in enumerate(zip(*columns, strict=True)):
            row: dict[str, Any] = {"v": SCHEMA_VERSION}
            t = ts[i]
            if not math.isnan(t):
                row["ts"] = t
            for name, value in zip(names, values, strict=True):
                if value is not None:
                    row[name] = value
            rows.append(row)
        if self._attributes:
            picked = {name: values[start:stop] for name, values in self._attributes.items()}
            for i, row in enumerate(rows):
                present = {name: values[i] for name, values in picked.items() if values[i] is not None}
                if present:
                    row["attributes"] = present
        field = VECTOR_FIELDS.get(self.domain)
        if field:
            channels = self._channels
            for row, vector in zip(rows, self._matrix[start:stop].tolist(), strict=True):
                row[field] = {
                    ch: x for ch, x in zip(channels, vector, strict=True) if x == x
                }  # x == x: not NaN
        return rows

    def _records(self, start: int, stop: int) -> list[Record]:
        encode = msgspec.json.encode
        key_field = KEY_FIELDS[self.domain]
        ts = self._ts[start:stop].tolist()
        out = []
        for i, row in enumerate(self._payloads(start, stop)):
            key = row.get(key_field)
            t = ts[i]
            out.append(
                Record(
                    self.topic,
                    0,
                    start + i,
                    -1 if math.isnan(t) else int(round(t * 1000)),
                    None if key is None else str(key).encode(),
                    encode(row),
                )
            )
        return out

    def poll(self, max_records: int = 500, timeout_ms: int = 1000) -> list[Record]:
        """The next rows as records: all due ones (up to max_records) when paced, else simply the next ones."""
        if self._paused or self.exhausted:
            if self._paused and timeout_ms > 0:
                self._sleep(timeout_ms / 1000.0)
            return []
        start = self._pos
        stop = min(self._n, start + max(1, int(max_records)))
        if self.speedup is not None:
            stop = min(stop, self._due(timeout_ms))
            if stop <= start:
                return []
        self._pos = stop
        return self._records(start, stop)

    def _due(self, timeout_ms: int) -> int:
        """End (exclusive) of the rows whose paced wall time has come, waiting up to timeout_ms for the next one."""
        finite = self._ts[np.isfinite(self._ts)]
        if finite.size == 0:
            return self._n
        if self._wall0 is None:
            self._wall0 = self._clock()
            self._ts0 = float(finite[0])
        deadline = self._clock() + max(0, timeout_ms) / 1000.0
        while True:
            now = self._clock()
            horizon = self._ts0 + (now - self._wall0) * self.speedup  # type: ignore[operator]
            due = int(np.searchsorted(self._ts, horizon, side="right"))
            if due >= finite.size:  # past the last timed row: rows without a time follow at once
                return self._n
            if due > self._pos or now >= deadline:
                return due
            wait = (self._ts[self._pos] - horizon) / self.speedup
            self._sleep(max(0.0, min(wait, deadline - now)))

    def commit(self, offsets: Mapping[tuple[str, int], int] | None = None) -> None:
        """No-op: a replay has no consumer group."""

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Continue from the given next offset (e.g. a checkpoint's)."""
        for (_topic, _partition), offset in offsets.items():
            self._pos = max(0, min(self._n, int(offset)))

    def positions(self) -> dict[tuple[str, int], int]:
        return {(self.topic, 0): self._pos}

    def end_offsets(self) -> dict[tuple[str, int], int]:
        return {(self.topic, 0): self._n}

    def assignment(self) -> set[tuple[str, int]]:
        return {(self.topic, 0)}

    def pause(self, partitions: Iterable[tuple[str, int]] = ()) -> None:
        self._paused = True

    def resume(self, partitions: Iterable[tuple[str, int]] = ()) -> None:
        self._paused = False

    def close(self) -> None:
        """Nothing to release: the file was read at construction."""


class _Ts(msgspec.Struct):
    ts: float = math.nan


_ts_decoder = msgspec.json.Decoder(_Ts)


def _within(value: bytes | None, lo: float, hi: float) -> bool:
    """False only when `value` has a numeric `ts` outside [lo, hi) (epoch seconds)."""
    try:
        ts = _ts_decoder.decode(value).ts  # type: ignore[arg-type]
    except Exception:  # not JSON, not an object, ts not a number, no value: the decoder rejects it
        return True
    return math.isnan(ts) or lo <= ts < hi


class KafkaRangeSource:
    """Read a topic between two bounds without joining a group: assigned partitions, never commits.

    `start` / `end` are, by `by`:
    - "offset": offsets (an int for every partition, or {partition: offset});
    - "event_time": epoch milliseconds compared with each event's own `ts` (epoch seconds on the
      wire). Every partition is read from its beginning to its end offset and records with
      start <= ts * 1000 < end are kept; records without a readable numeric `ts` are kept too, so the
      decoder rejects them as it would live (they are not silently lost). `skipped` counts the
      records left out for their `ts`;
    - "timestamp": epoch milliseconds of the broker's record timestamps (resolved with
      `offsets_for_times`); records whose own timestamp falls outside [start, end) are dropped too,
      so a partition with out-of-order timestamps never leaks records from outside.
    `start=None` is the beginning, `end=None` the end offsets at construction time; the range is
    [start, end).
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        topic: str,
        start: int | Mapping[int, int] | None = None,
        end: int | Mapping[int, int] | None = None,
        *,
        by: str = "offset",
        partitions: Sequence[int] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        from kafka import KafkaConsumer
        from kafka.structs import TopicPartition

        if by not in ("offset", "event_time", "timestamp"):
            raise ValueError("by must be 'offset', 'event_time' or 'timestamp'")
        self.topic = topic
        self.by = by
        self.skipped = 0
        self._event_bounds: tuple[float, float] | None = None
        if by == "event_time":  # any offset may hold any event time: read everything, filter in poll
            if isinstance(start, Mapping) or isinstance(end, Mapping):
                raise ValueError("event-time bounds are one epoch-ms value each, not per partition")
            self._event_bounds = (-math.inf if start is None else start / 1000.0,
                                  math.inf if end is None else end / 1000.0)
            start = end = None
        settings = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "allow_auto_create_topics": False,  # replaying a topic that does not exist must not create it
            "client_id": "streamwarden-replay",
        }
        settings.update(config or {})
        with kafka_bootstrap(bootstrap_servers, settings.get("bootstrap_timeout_ms", 30_000)):
            self._consumer = KafkaConsumer(**settings)
        known = self._consumer.partitions_for_topic(topic)
        if not known:
            self._consumer.close()
            raise ReplaySourceError(f"topic {topic!r} does not exist or has no partitions")
        numbers = sorted(known) if partitions is None else sorted(partitions)
        tps = [TopicPartition(topic, p) for p in numbers]
        begin = self._consumer.beginning_offsets(tps)
        last = self._consumer.end_offsets(tps)
        self._ts_bounds = (
            (start if isinstance(start, int) else None, end if isinstance(end, int) else None)
            if by == "timestamp"
            else (None, None)
        )
        self._start = self._resolve(tps, start, begin, last, default=begin)
        self._end = self._resolve(tps, end, begin, last, default=last)
        self._consumer.assign(tps)
        self._done: set[Any] = set()
        for tp in tps:
            self._start[tp] = max(self._start[tp], begin[tp])
            self._end[tp] = min(self._end[tp], last[tp])
            if self._start[tp] >= self._end[tp]:
                self._done.add(tp)
            else:
                self._consumer.seek(tp, self._start[tp])
        self._tps = tps
        self._paused = False
        if self._done:
            self._consumer.pause(*self._done)

    def _resolve(
        self, tps: list[Any], bound: Any, begin: dict[Any, int], last: dict[Any, int], default: dict[Any, int]
    ) -> dict[Any, int]:
        if bound is None:
            return dict(default)
        if self.by == "offset":
            if isinstance(bound, Mapping):
                return {tp: int(bound.get(tp.partition, default[tp])) for tp in tps}
            return {tp: int(bound) for tp in tps}
        if isinstance(bound, Mapping):
            stamps = {tp: int(bound[tp.partition]) for tp in tps if tp.partition in bound}
        else:
            stamps = {tp: int(bound) for tp in tps}
        found = self._consumer.offsets_for_times(stamps) if stamps else {}
        out = {}
        for tp in tps:
            hit = found.get(tp)
            # No record at or after the time: the bound is the partition's end.
            out[tp] = (
                last[tp] if tp in stamps and hit is None else hit.offset if hit is not None else default[tp]
            )
        return out

    @property
    def exhausted(self) -> bool:
        return len(self._done) == len(self._tps)

    def bounds(self) -> dict[tuple[str, int], tuple[int, int]]:
        """{(topic, partition): (first offset, end offset exclusive)} being replayed."""
        return {tp: (self._start[tp], self._end[tp]) for tp in self._tps}

    def poll(self, max_records: int = 500, timeout_ms: int = 1000) -> list[Record]:
        if self.exhausted or self._paused:
            return []
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except Exception as e:
            raise IngestError(f"replay poll of {self.topic} failed: {e}", retriable=True) from e
        lo_ts, hi_ts = self._ts_bounds
        event_bounds = self._event_bounds
        out: list[Record] = []
        for tp, messages in batches.items():
            if tp in self._done:
                continue
            end = self._end[tp]
            for m in messages:
                if m.offset >= end:
                    break
                if (lo_ts is not None and m.timestamp < lo_ts) or (
                    hi_ts is not None and m.timestamp >= hi_ts
                ):
                    continue
                if event_bounds is not None and not _within(m.value, *event_bounds):
                    self.skipped += 1
                    continue
                out.append(Record.from_kafka(m))
        for tp in self._tps:
            if tp not in self._done and self._consumer.position(tp) >= self._end[tp]:
                self._done.add(tp)
                self._consumer.pause(tp)
        return out

    def commit(self, offsets: Mapping[tuple[str, int], int] | None = None) -> None:
        """No-op: a replay never commits."""

    def positions(self) -> dict[tuple[str, int], int]:
        return {tp: min(self._consumer.position(tp), self._end[tp]) for tp in self._tps}

    def end_offsets(self) -> dict[tuple[str, int], int]:
        return {tp: self._end[tp] for tp in self._tps}

    def assignment(self) -> set[tuple[str, int]]:
        return set(self._tps)

    def pause(self, partitions: Iterable[tuple[str, int]] = ()) -> None:
        self._paused = True

    def resume(self, partitions: Iterable[tuple[str, int]] = ()) -> None:
        self._paused = False

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    def __enter__(self) -> KafkaRangeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
