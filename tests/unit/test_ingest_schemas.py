"""Wire schemas: encoding, keys, topic names, records."""

from __future__ import annotations

import doctest
import importlib
import json

import msgspec
import pytest

from ingest.records import Record, next_offsets
from ingest.schemas import (
    DEFAULT_TOPICS,
    DOMAINS,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
    FeatureRecord,
    Label,
    SensorReading,
    Transaction,
    dlq_topic,
    encode_event,
    event_key,
    schema_for,
)


def test_encode_writes_v_and_omits_unset_optionals() -> None:
    tx = Transaction("e1", 1.7e9, "c1", "t1", 10.0, channel="ecom")
    doc = json.loads(encode_event(tx))
    assert doc == {"v": 1, "event_id": "e1", "ts": 1.7e9, "card_id": "c1", "terminal_id": "t1", "amount": 10.0,
                   "channel": "ecom"}  # fmt: skip
    assert encode_event(tx).startswith(b'{"v":1,')


@pytest.mark.parametrize(
    "domain, event, key",
    [
        ("transactions", Transaction("e1", 1.7e9, "card-9", "t1", 1.0), b"card-9"),
        ("sensors", SensorReading("s1", 1.7e9, "dev-1", {"a": 1.0}), b"dev-1"),
        ("labels", Label("e7", 1, 1.7e9), b"e7"),
    ],
)
def test_event_key_and_round_trip(domain: str, event: object, key: bytes) -> None:
    assert event_key(domain, event) == key  # type: ignore[arg-type]
    assert msgspec.json.decode(encode_event(event), type=schema_for(domain)) == event  # type: ignore[arg-type]


def test_topic_names_and_schema_metadata() -> None:
    assert DOMAINS == ("transactions", "sensors", "records", "labels")
    assert DEFAULT_TOPICS == {d: d for d in DOMAINS}
    assert dlq_topic("transactions") == "transactions.dlq"
    assert dlq_topic("x", suffix="-dead") == "x-dead"
    assert REQUIRED_FIELDS["labels"] == ("event_id", "label", "ts")
    assert SCHEMA_VERSION == 1
    assert REQUIRED_FIELDS["records"] == ("event_id", "ts", "entity_id", "features")
    for schema in (Transaction, SensorReading, FeatureRecord, Label):
        assert schema.__struct_fields__[-1] == "v"
    with pytest.raises(ValueError, match="unknown domain"):
        schema_for("payments")


def test_events_are_immutable() -> None:
    tx = Transaction("e1", 1.7e9, "c1", "t1", 1.0)
    with pytest.raises(AttributeError):
        tx.amount = 2.0  # type: ignore[misc]


def test_record_is_frozen_slotted_and_next_offsets_is_last_plus_one() -> None:
    r = Record("t", 1, 5, 123, None, b"x")
    with pytest.raises(AttributeError):
        r.offset = 6  # type: ignore[misc]
    assert not hasattr(r, "__dict__")
    records = [
        Record("t", 0, 3, 0, None, b""),
        Record("t", 1, 9, 0, None, b""),
        Record("t", 0, 4, 0, None, b""),
    ]
    assert next_offsets(records) == {("t", 0): 5, ("t", 1): 10}


@pytest.mark.parametrize(
    "module", ["ingest.schemas", "ingest.decode", "ingest.simulator", "ingest.produce", "ingest.records"]
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0
