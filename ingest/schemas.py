"""Versioned wire schemas of the event domains, and how they are encoded and keyed.

Wire format: one JSON object per Kafka message, UTF-8. `ts` is event time in epoch seconds
(UTC, float). `v` is the schema version; unknown extra fields are ignored (forward
compatible), an unknown `v` is rejected by `ingest.decode`.

The field constraints below are what the fast decode path enforces in C (msgspec): finite
numbers, non-negative amounts, non-empty ids. Bounds that depend on configuration or on the
clock (how old or how far in the future `ts` may be, the largest amount) are checked by
`ingest.decode` after decoding.

>>> tx = Transaction(event_id="e1", ts=1.7e9, card_id="c1", terminal_id="t1", amount=12.5)
>>> encode_event(tx)
b'{"v":1,"event_id":"e1","ts":1700000000.0,"card_id":"c1","terminal_id":"t1","amount":12.5}'
>>> event_key("transactions", tx)
b'c1'
"""

from __future__ import annotations

import sys
from typing import Annotated, Literal, get_args

import msgspec

SCHEMA_VERSION = 1

Domain = Literal["transactions", "sensors", "records", "labels"]
DOMAINS: tuple[str, ...] = get_args(Domain)

# Topic names used when the settings name none.
DEFAULT_TOPICS: dict[str, str] = {"transactions": "transactions", "sensors": "sensors", "records": "records",
                                  "labels": "labels"}
DLQ_SUFFIX = ".dlq"

MAX_ID_LENGTH = 256
MAX_CHANNEL_NAME_LENGTH = 128
MAX_CHANNELS = 4096

_FLOAT_MAX = sys.float_info.max
# A float that is neither NaN nor +-inf (msgspec rejects NaN for any bound, and inf by the bounds).
FiniteFloat = Annotated[float, msgspec.Meta(ge=-_FLOAT_MAX, le=_FLOAT_MAX)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0.0, le=_FLOAT_MAX)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
ChannelName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CHANNEL_NAME_LENGTH)]
Readings = Annotated[dict[ChannelName, FiniteFloat], msgspec.Meta(min_length=1, max_length=MAX_CHANNELS)]
MAX_ATTRIBUTES = 256
AttributeValue = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)] | FiniteFloat
Attributes = Annotated[dict[ChannelName, AttributeValue], msgspec.Meta(max_length=MAX_ATTRIBUTES)]


class _Event(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Common base: immutable, no GC tracking (events hold no reference cycles)."""


class Transaction(_Event, frozen=True):
    """A card payment. Key = card_id, so one card's events stay in order on one partition."""

    event_id: Id
    ts: FiniteFloat
    card_id: Id
    terminal_id: Id
    amount: NonNegativeFloat
    currency: str | None = None
    channel: str | None = None
    merchant_category: str | None = None
    attributes: Attributes | None = None  # more fields of the team's own: numbers or strings (settings say which count)
    v: Literal[1] = 1


class SensorReading(_Event, frozen=True):
    """One timestamped vector of channel readings from one device. Key = device_id."""

    event_id: Id
    ts: FiniteFloat
    device_id: Id
    readings: Readings
    v: Literal[1] = 1


class FeatureRecord(_Event, frozen=True):
    """A ready-made feature vector (the records domain): numbers computed upstream, scored row by row. Key = entity_id
    (use one id for a stream without entities)."""

    event_id: Id
    ts: FiniteFloat
    entity_id: Id
    features: Readings
    v: Literal[1] = 1


class Label(_Event, frozen=True):
    """A late ground-truth label (1 = fraud / anomaly) for an earlier event. Key = event_id."""

    event_id: Id
    label: Literal[0, 1]
    ts: FiniteFloat
    v: Literal[1] = 1


Event = Transaction | SensorReading | FeatureRecord | Label

SCHEMAS: dict[str, type[Transaction] | type[SensorReading] | type[FeatureRecord] | type[Label]] = {
    "transactions": Transaction,
    "sensors": SensorReading,
    "records": FeatureRecord,
    "labels": Label,
}
KEY_FIELDS: dict[str, str] = {"transactions": "card_id", "sensors": "device_id", "records": "entity_id",
                              "labels": "event_id"}
# The field holding an event's vector of named numbers, in the domains that have one.
VECTOR_FIELDS: dict[str, str] = {"sensors": "readings", "records": "features"}
# Wire fields every message of a domain must carry (`v` may be left out: it defaults to 1).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    name: s.__struct_fields__[: len(s.__struct_fields__) - len(s.__struct_defaults__)]
    for name, s in SCHEMAS.items()
}


def check_domain(domain: str) -> str:
    """`domain` itself, or ValueError naming the known domains."""
    if domain not in SCHEMAS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    return domain


def schema_for(domain: str) -> type[Transaction] | type[SensorReading] | type[FeatureRecord] | type[Label]:
    return SCHEMAS[check_domain(domain)]


def dlq_topic(topic: str, suffix: str = DLQ_SUFFIX) -> str:
    """The dead-letter topic of `topic`: `<topic>.dlq`."""
    return f"{topic}{suffix}"


_encoder = msgspec.json.Encoder()
_V1_PREFIX = b'{"v":1,'


def encode_event(event: Event) -> bytes:
    """The event as wire JSON. Optional fields left at None are omitted; `v` is always written first."""
    body = _encoder.encode(event)
    if (
        event.v == SCHEMA_VERSION
    ):  # omitted by omit_defaults; every event has required fields, so body != b"{}"
        return _V1_PREFIX + body[1:]
    return body


def event_key(domain: str, event: Event) -> bytes:
    """The Kafka key of an event: card_id (transactions), device_id (sensors), entity_id (records), event_id
    (labels)."""
    return getattr(event, KEY_FIELDS[check_domain(domain)]).encode()
