"""decode_batch: every reject reason has a test; any bytes in, never an exception out; valid events round-trip."""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.decode import BatchDecoder, DecodeConfig, DecodeResult, RejectReason, decode_batch
from ingest.records import Record
from ingest.schemas import Label, SensorReading, Transaction, encode_event

NOW = 1_700_000_000.0
R = RejectReason

TX = {"v": 1, "event_id": "e1", "ts": NOW - 60, "card_id": "c1", "terminal_id": "t1", "amount": 12.5}
SENSOR = {
    "v": 1,
    "event_id": "s1",
    "ts": NOW - 60,
    "device_id": "d1",
    "readings": {"temp": 21.5, "rpm": 1200},
}
LABEL = {"v": 1, "event_id": "e1", "label": 1, "ts": NOW}
VALID = {"transactions": TX, "sensors": SENSOR, "labels": LABEL}


def rec(value: object, offset: int = 0) -> Record:
    return Record("topic", 0, offset, 0, b"k", value)  # type: ignore[arg-type]


def decoder(domain: str = "transactions", **kw: object) -> BatchDecoder:
    return BatchDecoder(domain, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def reason_of(value: object, domain: str = "transactions", **kw: object) -> RejectReason | None:
    result = decoder(domain, **kw).decode([rec(value)])
    assert len(result.events) + len(result.rejects) == 1
    # the slow path's classifier agrees with the batch decoder
    classified = decoder(domain, **kw).classify(value)
    got = result.rejects[0].reason if result.rejects else None
    assert (classified[0] if classified else None) == got
    return got


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


def with_(base: dict, **changes: object) -> bytes:
    out = dict(base)
    for k, v in changes.items():
        if v is _DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return dumps(out)


_DROP = object()


@pytest.mark.parametrize("domain", ["transactions", "sensors", "labels"])
def test_valid_events_decode(domain: str) -> None:
    result = decoder(domain).decode([rec(dumps(VALID[domain]))])
    assert result.rejects == [] and len(result.events) == 1
    assert result.events[0].event_id == VALID[domain]["event_id"]


def test_missing_v_defaults_to_1_and_extra_fields_are_ignored() -> None:
    result = decoder().decode([rec(with_(TX, v=_DROP, extra={"x": [1, 2]}, note="hi"))])
    assert result.rejects == [] and result.events[0].v == 1


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, R.EMPTY),
        (b"", R.EMPTY),
        (b"\xff\xfe{}", R.NOT_UTF8),
        (b'{"event_id":"\xc3\x28"}', R.NOT_UTF8),
        (
            with_(TX, note="cafe").replace(b'"cafe"', b'"caf\xe9"'),
            R.NOT_UTF8,
        ),  # latin-1 byte in an ignored field
        (b"not json at all", R.NOT_JSON),
        (b'{"event_id": "e1",', R.NOT_JSON),
        (b"\xef\xbb\xbf" + dumps(TX), R.NOT_JSON),  # a BOM is not JSON
        (dumps(TX) + b" trailing", R.NOT_JSON),
        (b"[1, 2, 3]", R.NOT_OBJECT),
        (b'"a string"', R.NOT_OBJECT),
        (b"42", R.NOT_OBJECT),
        (b"null", R.NOT_OBJECT),
        (with_(TX, v=2), R.UNKNOWN_SCHEMA_VERSION),
        (with_(TX, v=0), R.UNKNOWN_SCHEMA_VERSION),
        (with_(TX, v="1"), R.WRONG_TYPE),
        (with_(TX, amount=_DROP), R.MISSING_FIELD),
        (with_(TX, card_id=None), R.MISSING_FIELD),
        (with_(TX, ts=_DROP, event_id=_DROP), R.MISSING_FIELD),
        (b"{}", R.MISSING_FIELD),
        (with_(TX, amount="12.5"), R.WRONG_TYPE),
        (with_(TX, amount=True), R.WRONG_TYPE),
        (with_(TX, card_id=123), R.WRONG_TYPE),
        (with_(TX, ts="2024-01-01T00:00:00Z"), R.WRONG_TYPE),
        (with_(TX, currency=5), R.WRONG_TYPE),
        (with_(TX, amount=float("nan")), R.NON_FINITE),  # json.dumps writes NaN
        (with_(TX, amount=float("inf")), R.NON_FINITE),
        (with_(TX, ts=float("-inf")), R.NON_FINITE),
        (with_(TX).replace(b'"amount": 12.5', b'"amount": 1e400'), R.NON_FINITE),
        (with_(TX).replace(b'"amount": 12.5', b'"amount": ' + b"9" * 400), R.NON_FINITE),
        (with_(TX, amount=-0.01), R.OUT_OF_RANGE),
        (with_(TX, amount=2e9), R.OUT_OF_RANGE),
        (with_(TX, ts=100.0), R.OUT_OF_RANGE),  # 1970
        (with_(TX, ts=NOW + 2 * 86400), R.OUT_OF_RANGE),  # two days ahead
        (with_(TX, ts=-5), R.OUT_OF_RANGE),
        (with_(TX, card_id=""), R.OUT_OF_RANGE),
        (with_(TX, event_id="x" * 300), R.OUT_OF_RANGE),
        (b"[" * 40 + b"]" * 40, R.TOO_DEEP),
        (with_(TX, nested=json.loads("[" * 40 + "]" * 40)), R.TOO_DEEP),
        (b"[" * 60_000, R.TOO_DEEP),
        (b"{" * 5000, R.TOO_DEEP),
    ],
)
def test_transaction_reject_reasons(value: bytes | None, reason: RejectReason) -> None:
    assert reason_of(value) is reason


def test_oversized_uses_the_configured_limit() -> None:
    big = with_(TX, note="x" * 70_000)
    assert reason_of(big) is R.OVERSIZED  # default 64 KiB
    assert reason_of(big, max_bytes=128 * 1024) is None
    assert reason_of(dumps(TX), max_bytes=50) is R.OVERSIZED


def test_depth_limit_counts_structure_not_brackets_in_strings() -> None:
    assert reason_of(with_(TX, note="[" * 100 + "{" * 100)) is None
    assert reason_of(with_(TX, many=[[1]] * 100)) is None  # many brackets, depth 3
    assert reason_of(with_(TX, nested=json.loads("[" * 10 + "]" * 10)), max_depth=8) is R.TOO_DEEP


@pytest.mark.parametrize(
    "value, reason",
    [
        (with_(SENSOR, readings=_DROP), R.MISSING_FIELD),
        (with_(SENSOR, device_id=_DROP), R.MISSING_FIELD),
        (with_(SENSOR, readings=[1.0, 2.0]), R.WRONG_TYPE),
        (with_(SENSOR, readings={"temp": "hot"}), R.WRONG_TYPE),
        (with_(SENSOR, readings={"temp": None}), R.WRONG_TYPE),
        (with_(SENSOR, readings={"temp": float("nan")}), R.NON_FINITE),
        (with_(SENSOR, readings={"temp": float("-inf")}), R.NON_FINITE),
        (with_(SENSOR, readings={}), R.OUT_OF_RANGE),
        (with_(SENSOR, readings={"": 1.0}), R.OUT_OF_RANGE),
        (with_(SENSOR, ts=NOW + 10 * 86400), R.OUT_OF_RANGE),
        (with_(SENSOR, v=3), R.UNKNOWN_SCHEMA_VERSION),
    ],
)
def test_sensor_reject_reasons(value: bytes, reason: RejectReason) -> None:
    assert reason_of(value, "sensors") is reason


@pytest.mark.parametrize(
    "value, reason",
    [
        (with_(LABEL, label=_DROP), R.MISSING_FIELD),
        (with_(LABEL, label=2), R.OUT_OF_RANGE),
        (with_(LABEL, label=-1), R.OUT_OF_RANGE),
        (with_(LABEL, label=True), R.WRONG_TYPE),
        (with_(LABEL, label="1"), R.WRONG_TYPE),
        (with_(LABEL, label=1.0), R.WRONG_TYPE),
        (with_(LABEL, event_id=7), R.WRONG_TYPE),
    ],
)
def test_label_reject_reasons(value: bytes, reason: RejectReason) -> None:
    assert reason_of(value, "labels") is reason


def test_every_reason_code_is_covered_by_a_test() -> None:
    covered = {
        R.EMPTY, R.OVERSIZED, R.NOT_UTF8, R.TOO_DEEP, R.NOT_JSON, R.NOT_OBJECT, R.UNKNOWN_SCHEMA_VERSION,
        R.MISSING_FIELD, R.WRONG_TYPE, R.NON_FINITE, R.OUT_OF_RANGE,
    }  # fmt: skip
    assert covered == set(RejectReason)


def test_batch_keeps_order_and_pairs_events_with_their_records() -> None:
    values = [dumps({**TX, "event_id": f"e{i}"}) if i % 3 else b"garbage" for i in range(30)]
    result = decoder().decode([rec(v, offset=i) for i, v in enumerate(values)])
    assert [r.offset for r in result.records] == [i for i in range(30) if i % 3]
    assert [e.event_id for e in result.events] == [f"e{r.offset}" for r in result.records]
    assert [r.record.offset for r in result.rejects] == list(range(0, 30, 3))
    assert result.reject_counts() == {"not_json": 10}
    assert all(r.detail for r in result.rejects)


def test_reject_reason_is_a_str_enum() -> None:
    assert R.NOT_JSON == "not_json" and isinstance(R.NOT_JSON, str) and f"{R.OUT_OF_RANGE}" == "out_of_range"


def test_decode_batch_options_and_default_clock() -> None:
    now_tx = with_(TX, ts=time.time())
    assert decode_batch([rec(now_tx)], "transactions").rejects == []
    assert decode_batch([rec(now_tx)], "transactions", max_bytes=10).rejects[0].reason is R.OVERSIZED
    with pytest.raises(ValueError):
        decode_batch([], "payments")


def test_decode_config_object() -> None:
    config = DecodeConfig(max_bytes=10)
    assert decode_batch([rec(dumps(TX))], "transactions", config).rejects[0].reason is R.OVERSIZED
    strict = BatchDecoder("transactions", DecodeConfig(max_amount=5.0), clock=lambda: NOW)
    assert strict.decode([rec(dumps(TX))]).rejects[0].detail == "amount 12.5 is above the maximum 5"
    assert BatchDecoder("labels", config, max_bytes=99).config.max_bytes == 99
    with pytest.raises(ValueError):
        DecodeConfig(max_depth=1)


def test_result_is_empty_for_no_records() -> None:
    assert decode_batch([], "sensors") == DecodeResult()


# ---------------------------------------------------------------- properties

_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
_ids = st.text(min_size=1, max_size=40)
_ts = st.floats(min_value=946684800.0, max_value=NOW + 86400, allow_nan=False)
_transactions = st.builds(
    Transaction,
    event_id=_ids,
    ts=_ts,
    card_id=_ids,
    terminal_id=_ids,
    amount=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    currency=st.none() | st.text(max_size=5),
    channel=st.none() | st.sampled_from(["pos", "ecom"]),
    merchant_category=st.none() | st.text(max_size=12),
)
_sensors = st.builds(
    SensorReading,
    event_id=_ids,
    ts=_ts,
    device_id=_ids,
    readings=st.dictionaries(st.text(min_size=1, max_size=20), _finite, min_size=1, max_size=10),
)
_labels = st.builds(Label, event_id=_ids, label=st.sampled_from([0, 1]), ts=_ts)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(event=st.one_of(_transactions.map(lambda e: ("transactions", e)), _sensors.map(lambda e: ("sensors", e)),
                       _labels.map(lambda e: ("labels", e))))  # fmt: skip
def test_valid_events_round_trip(event: tuple[str, object]) -> None:
    domain, ev = event
    result = decoder(domain).decode([rec(encode_event(ev))])  # type: ignore[arg-type]
    assert result.rejects == []
    assert result.events == [ev]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.binary(max_size=2048), domain=st.sampled_from(["transactions", "sensors", "labels"]))
def test_any_bytes_never_raise(value: bytes, domain: str) -> None:
    result = decoder(domain).decode([rec(value), rec(value[::-1], 1)])
    assert len(result.events) + len(result.rejects) == 2
    for reject in result.rejects:
        assert isinstance(reject.reason, RejectReason) and reject.detail


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_json, domain=st.sampled_from(["transactions", "sensors", "labels"]))
def test_any_json_never_raises(doc: object, domain: str) -> None:
    value = json.dumps(doc).encode()
    result = decoder(domain).decode([rec(value)])
    assert len(result.events) + len(result.rejects) == 1


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(["transactions", "sensors", "labels"]),
    field=st.sampled_from(
        ["event_id", "ts", "card_id", "terminal_id", "amount", "device_id", "readings", "label", "v"]
    ),
    value=_json,
)
def test_mutated_valid_events_are_decoded_or_explained(base: str, field: str, value: object) -> None:
    doc = dict(VALID[base])
    doc[field] = value
    result = decoder(base).decode([rec(json.dumps(doc).encode())])
    if result.rejects:
        assert result.rejects[0].reason in set(RejectReason)
    else:  # accepted: the event carries exactly what was sent, within the rules
        event = result.events[0]
        assert math.isfinite(event.ts) and 946684800.0 <= event.ts <= NOW + 86400
        if field in type(event).__struct_fields__:
            assert getattr(event, field) == value
