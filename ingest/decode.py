"""Decode and validate a batch of records. Bad input is a value (a `Reject`), never an exception.

Fast path: one typed `msgspec.json.Decoder` per domain decodes and checks each value in C,
after three cheap byte checks (size, ASCII-or-UTF-8, an upper bound on nesting). Only the
values that fail go through the slow path, which works out the exact reason:

    empty -> oversized -> not_utf8 -> too_deep -> not_json / non_finite -> not_object
    -> unknown_schema_version -> missing_field -> wrong_type -> non_finite -> out_of_range

The checks that depend on configuration or on the clock (ts within [min_ts, now +
max_future_s], amount <= max_amount) run on each decoded event, before it is accepted.

>>> from ingest.records import Record
>>> good = Record("transactions", 0, 7, 0, b"c1",
...     b'{"v":1,"event_id":"e1","ts":1.7e9,"card_id":"c1","terminal_id":"t1","amount":3.5}')
>>> bad = Record("transactions", 0, 8, 0, b"c1", b'{"v":1,"event_id":"e2","ts":1.7e9}')
>>> result = decode_batch([good, bad], "transactions")
>>> [e.event_id for e in result.events], [r.offset for r in result.records]
(['e1'], [7])
>>> result.rejects[0].reason, result.rejects[0].detail
(<RejectReason.MISSING_FIELD: 'missing_field'>, 'missing required field(s): card_id, terminal_id, amount')
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec
import numpy as np

from ingest.records import Record
from ingest.schemas import (
    MAX_ATTRIBUTES,
    MAX_CHANNEL_NAME_LENGTH,
    MAX_CHANNELS,
    MAX_ID_LENGTH,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
    SCHEMAS,
    VECTOR_FIELDS,
    check_domain,
)

DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_MAX_DEPTH = 32
MIN_TS = 946684800.0  # 2000-01-01T00:00:00Z
DEFAULT_MAX_FUTURE_S = 86400.0
DEFAULT_MAX_AMOUNT = 1e9


class RejectReason(StrEnum):
    """Why a record was not turned into an event. The value is what the DLQ message and metrics carry."""

    EMPTY = "empty"  # no value at all (tombstone) or zero bytes
    OVERSIZED = "oversized"  # more bytes than max_bytes
    NOT_UTF8 = "not_utf8"
    TOO_DEEP = "too_deep"  # JSON nested deeper than max_depth
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"  # valid JSON, but not an object
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    MISSING_FIELD = "missing_field"  # a required field absent or null
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"  # NaN, Infinity, or a number beyond float range
    OUT_OF_RANGE = "out_of_range"  # negative amount, ts far from now, empty id, label not 0/1...


@dataclass(frozen=True, slots=True)
class Reject:
    record: Record
    reason: RejectReason
    detail: str


@dataclass(slots=True)
class DecodeResult:
    """`events[i]` was decoded from `records[i]`; every other input record is in `rejects`, in input order."""

    events: list[Any] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    def reject_counts(self) -> dict[str, int]:
        return dict(Counter(r.reason.value for r in self.rejects))


_STR_FIELDS = {
    "transactions": ("event_id", "card_id", "terminal_id"),
    "sensors": ("event_id", "device_id"),
    "records": ("event_id", "entity_id"),
    "labels": ("event_id",),
}
_OPTIONAL_STR_FIELDS = {
    "transactions": ("currency", "channel", "merchant_category"),
    "sensors": (),
    "records": (),
    "labels": (),
}
_NUMBER_FIELDS = {"transactions": ("ts", "amount"), "sensors": ("ts",), "records": ("ts",), "labels": ("ts",)}
_BRACKETS = np.zeros(256, dtype=np.int8)
_BRACKETS[[ord("["), ord("{")]] = 1
_BRACKETS[[ord("]"), ord("}")]] = -1


def _is_number(x: object) -> bool:
    return type(x) is float or type(x) is int  # bool is not a number on the wire


def _describe(x: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(x), "number" if _is_number(x) else type(x).__name__
    )


def _depth_upper_bound(value: bytes) -> int:
    """Deepest bracket nesting, counting brackets inside strings too: >= the true JSON depth."""
    steps = _BRACKETS[np.frombuffer(value, dtype=np.uint8)]
    nz = steps[steps != 0]
    return int(np.cumsum(nz, dtype=np.int64).max()) if nz.size else 0


def _object_depth(obj: object) -> int:
    """Nesting depth of decoded JSON (a scalar is 0, `[]` is 1), without recursion."""
    depth = 0
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            depth = max(depth, d)
            stack.extend((child, d + 1) for child in node.values())
        elif isinstance(node, list):
            depth = max(depth, d)
            stack.extend((child, d + 1) for child in node)
    return depth


def _reason_from_msgspec(message: str) -> RejectReason:
    """Last-resort mapping of a msgspec error the slow-path checks did not foresee."""
    if "missing required field" in message:
        return RejectReason.MISSING_FIELD
    if "out of range" in message:
        return RejectReason.NON_FINITE
    if message.startswith("Expected `") and "got `" in message:
        return RejectReason.WRONG_TYPE
    if any(s in message for s in (">=", "<=", "length", "Invalid enum value")):
        return RejectReason.OUT_OF_RANGE
    if "malformed" in message or "truncated" in message:
        return RejectReason.NOT_JSON
    return RejectReason.WRONG_TYPE


@dataclass(frozen=True)
class DecodeConfig:
    """Validation limits (the schema's own constraints are fixed; these are the configurable ones)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    min_ts: float = MIN_TS  # earliest accepted event time, epoch seconds
    max_future_s: float = DEFAULT_MAX_FUTURE_S  # how far past "now" an event time may be
    max_amount: float = DEFAULT_MAX_AMOUNT

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_depth < 2:
            raise ValueError("max_bytes must be > 0 and max_depth >= 2 (sensor readings nest two deep)")


class BatchDecoder:
    """Decoder + validator for one domain; build one per worker and call `decode(records)` per batch.

    Keyword overrides replace fields of `config` (`BatchDecoder("sensors", max_bytes=1024)`).
    `clock` returns epoch seconds; it sets the upper bound of `ts` (now + max_future_s).
    """

    def __init__(
        self,
        domain: str,
        config: DecodeConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        **overrides: Any,
    ) -> None:
        self.domain = check_domain(domain)
        self.config = cfg = dataclasses.replace(config or DecodeConfig(), **overrides)
        self.max_bytes = cfg.max_bytes
        self.max_depth = cfg.max_depth
        self.min_ts = cfg.min_ts
        self.max_future_s = cfg.max_future_s
        self.max_amount = cfg.max_amount
        self.clock = clock
        self.schema = SCHEMAS[domain]
        self._decoder = msgspec.json.Decoder(self.schema)

    # ---------------------------------------------------------------- fast path
    def decode(self, records: Iterable[Record]) -> DecodeResult:
        events: list[Any] = []
        good: list[Record] = []
        rejects: list[Reject] = []
        decode = self._decoder.decode
        max_bytes = self.max_bytes
        max_depth = self.max_depth
        lo, hi = self.min_ts, self.clock() + self.max_future_s
        max_amount = self.max_amount if self.domain == "transactions" else None
        for rec in records:
            value = rec.value
            try:
                if (
                    not value
                    or len(value) > max_bytes
                    or value.count(b"{") + value.count(b"[") > max_depth
                    or (not value.isascii() and not value.decode("utf-8"))  # raises when not UTF-8
                ):
                    event = None
                else:
                    event = decode(value)
                    if not lo <= event.ts <= hi or (max_amount is not None and event.amount > max_amount):  # type: ignore[union-attr]
                        event = None
            except Exception:  # DecodeError, ValidationError, UnicodeDecodeError, RecursionError, odd types
                event = None
            if event is None:  # slow path: the exact reason, or (rarely) a valid event after all
                outcome = self._check(value, lo, hi)
                if isinstance(outcome, tuple):
                    rejects.append(Reject(rec, outcome[0], outcome[1]))
                    continue
                event = outcome
            events.append(event)
            good.append(rec)
        return DecodeResult(events, good, rejects)

    def _bounds_problem(self, ev: Any, lo: float, hi: float) -> str | None:
        """Checks that depend on configuration or on the clock, run on a decoded event."""
        if ev.ts < lo:
            return f"ts {ev.ts!r} is before the earliest accepted time {lo!r}"
        if ev.ts > hi:
            return f"ts {ev.ts!r} is more than {self.max_future_s:g} s in the future"
        if self.domain == "transactions" and ev.amount > self.max_amount:
            return f"amount {ev.amount!r} is above the maximum {self.max_amount:g}"
        return None

    # ---------------------------------------------------------------- slow path
    def classify(self, value: object) -> tuple[RejectReason, str] | None:
        """The reason `value` is rejected, or None when it decodes into a valid event."""
        outcome = self._check(value, self.min_ts, self.clock() + self.max_future_s)
        return outcome if isinstance(outcome, tuple) else None

    def _check(self, value: object, lo: float, hi: float) -> tuple[RejectReason, str] | Any:
        R = RejectReason
        if value is None or (isinstance(value, (bytes, bytearray, memoryview, str)) and len(value) == 0):
            return R.EMPTY, "the message has no value"
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, str):
            data = value.encode("utf-8", "surrogatepass")
        else:
            try:
                data = bytes(value)  # type: ignore[call-overload]
            except Exception:
                return R.WRONG_TYPE, f"value is a {type(value).__name__}, not bytes"
        return self._check_bytes(data, lo, hi)

    def _check_bytes(self, value: bytes, lo: float, hi: float) -> tuple[RejectReason, str] | Any:
        R = RejectReason
        if len(value) > self.max_bytes:
            return R.OVERSIZED, f"{len(value)} bytes > max {self.max_bytes}"
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as e:
            return R.NOT_UTF8, f"invalid UTF-8 at byte {e.start}: {e.reason}"
        bound = _depth_upper_bound(value)
        if bound > self.max_depth and value.count(b'"') == 0:
            return R.TOO_DEEP, f"nested {bound} deep > max {self.max_depth}"
        try:
            obj = msgspec.json.decode(value)
        except RecursionError:
            return R.TOO_DEEP, f"nested deeper than the parser allows (max {self.max_depth})"
        except msgspec.ValidationError as e:
            return R.NON_FINITE, f"number beyond float range ({e})"
        except msgspec.DecodeError as e:
            if _has_nan_or_infinity(value):
                return R.NON_FINITE, "NaN or Infinity literal (not JSON)"
            return R.NOT_JSON, str(e)
        if bound > self.max_depth:
            depth = _object_depth(obj)
            if depth > self.max_depth:
                return R.TOO_DEEP, f"nested {depth} deep > max {self.max_depth}"
        if not isinstance(obj, dict):
            return R.NOT_OBJECT, f"top-level JSON is {_describe(obj)}, not an object"
        problem = self._check_fields(obj)
        if problem is not None:
            return problem
        try:
            event = self._decoder.decode(value)
        except Exception as e:  # a case the field checks above did not foresee
            message = str(e)
            return _reason_from_msgspec(message), message
        problem_text = self._bounds_problem(event, lo, hi)
        if problem_text is not None:
            return R.OUT_OF_RANGE, problem_text
        return event

    def _check_fields(self, obj: dict[str, Any]) -> tuple[RejectReason, str] | None:
        R = RejectReason
        domain = self.domain
        if "v" in obj:
            v = obj["v"]
            if type(v) is not int:
                return R.WRONG_TYPE, f"v is {_describe(v)}, expected an integer"
            if v != SCHEMA_VERSION:
                return R.UNKNOWN_SCHEMA_VERSION, f"v={v} (this reader knows v={SCHEMA_VERSION})"
        missing = [f for f in REQUIRED_FIELDS[domain] if obj.get(f) is None]
        if missing:
            nulls = [f for f in missing if f in obj]
            detail = "missing required field(s): " + ", ".join(missing)
            if nulls:
                detail += " (null: " + ", ".join(nulls) + ")"
            return R.MISSING_FIELD, detail
        # types
        for f in _STR_FIELDS[domain]:
            if type(obj[f]) is not str:
                return R.WRONG_TYPE, f"{f} is {_describe(obj[f])}, expected a string"
        for f in _OPTIONAL_STR_FIELDS[domain]:
            if obj.get(f) is not None and type(obj[f]) is not str:
                return R.WRONG_TYPE, f"{f} is {_describe(obj[f])}, expected a string or null"
        for f in _NUMBER_FIELDS[domain]:
            if not _is_number(obj[f]):
                return R.WRONG_TYPE, f"{f} is {_describe(obj[f])}, expected a number"
        attributes = obj.get("attributes") if domain == "transactions" else None
        if attributes is not None:
            if not isinstance(attributes, dict):
                return R.WRONG_TYPE, f"attributes is {_describe(attributes)}, expected an object"
            if len(attributes) > MAX_ATTRIBUTES:
                return R.OUT_OF_RANGE, f"attributes must have at most {MAX_ATTRIBUTES} entries, has {len(attributes)}"
            for name, x in attributes.items():
                if not (type(x) is str or _is_number(x)):
                    return R.WRONG_TYPE, f"attributes[{name!r}] is {_describe(x)}, expected a string or a number"
                if _is_number(x) and not _finite(x):
                    return R.NON_FINITE, f"attributes[{name!r}] is not a finite number"
                if not 1 <= len(name) <= MAX_CHANNEL_NAME_LENGTH or (type(x) is str and len(x) > MAX_ID_LENGTH):
                    return R.OUT_OF_RANGE, f"attributes[{name[:40]!r}]: names 1..{MAX_CHANNEL_NAME_LENGTH} and " \
                                           f"text values up to {MAX_ID_LENGTH} characters"
        if domain == "labels" and type(obj["label"]) is not int:
            return R.WRONG_TYPE, f"label is {_describe(obj['label'])}, expected 0 or 1"
        vector = VECTOR_FIELDS.get(domain)
        readings = obj.get(vector) if vector else None
        if vector:
            if not isinstance(readings, dict):
                return R.WRONG_TYPE, f"{vector} is {_describe(readings)}, expected an object"
            for ch, x in readings.items():
                if not _is_number(x):
                    return R.WRONG_TYPE, f"{vector}[{ch!r}] is {_describe(x)}, expected a number"
        # finiteness (JSON parsing leaves only huge integers to catch here)
        for f in _NUMBER_FIELDS[domain]:
            if not _finite(obj[f]):
                return R.NON_FINITE, f"{f} is not a finite number"
        if vector:
            for ch, x in readings.items():  # type: ignore[union-attr]
                if not _finite(x):
                    return R.NON_FINITE, f"{vector}[{ch!r}] is not a finite number"
        # ranges
        for f in _STR_FIELDS[domain]:
            if not 1 <= len(obj[f]) <= MAX_ID_LENGTH:
                return R.OUT_OF_RANGE, f"{f} must have 1..{MAX_ID_LENGTH} characters, has {len(obj[f])}"
        if domain == "transactions" and obj["amount"] < 0:
            return R.OUT_OF_RANGE, f"amount {obj['amount']!r} is negative"
        if domain == "labels" and obj["label"] not in (0, 1):
            return R.OUT_OF_RANGE, f"label is {obj['label']!r}, expected 0 or 1"
        if vector:
            if not 1 <= len(readings) <= MAX_CHANNELS:  # type: ignore[arg-type]
                return R.OUT_OF_RANGE, f"{vector} must have 1..{MAX_CHANNELS} entries, has {len(readings)}"  # type: ignore[arg-type]
            for ch in readings:  # type: ignore[union-attr]
                if not 1 <= len(ch) <= MAX_CHANNEL_NAME_LENGTH:
                    return R.OUT_OF_RANGE, f"{vector} names must have 1..{MAX_CHANNEL_NAME_LENGTH} characters"
        return None


def _finite(x: int | float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def _has_nan_or_infinity(value: bytes) -> bool:
    """True when `value` parses as JSON only thanks to NaN / Infinity literals (as Python's json.dumps writes)."""
    if b"NaN" not in value and b"Infinity" not in value:
        return False
    seen: list[str] = []

    def constant(name: str) -> float:
        seen.append(name)
        return math.nan

    try:
        json.loads(value.decode("utf-8"), parse_constant=constant)
    except Exception:  # JSONDecodeError, RecursionError, ValueError (too many digits)
        return False
    return bool(seen)


_DEFAULT_DECODERS: dict[str, BatchDecoder] = {}


def decode_batch(
    records: Iterable[Record], domain: str, config: DecodeConfig | None = None, **overrides: Any
) -> DecodeResult:
    """Decode + validate `records` as events of `domain`; never raises per record.

    `config` / keyword overrides (max_bytes, max_depth, min_ts, max_future_s, max_amount, clock) as
    for `BatchDecoder`. Hot loops should build one `BatchDecoder` and call `.decode()`.
    """
    if config is not None or overrides:
        return BatchDecoder(domain, config, **overrides).decode(records)
    decoder = _DEFAULT_DECODERS.get(domain)
    if decoder is None:
        decoder = _DEFAULT_DECODERS[domain] = BatchDecoder(domain)
    return decoder.decode(records)
