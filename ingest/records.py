"""The message unit every source yields: Kafka consumers and replay sources alike."""

from __future__ import annotations

from typing import Any, NamedTuple


class Record(NamedTuple):
    """One message as it arrived: where it came from, and its raw bytes (immutable; a tuple, which a worker
    builds for every polled message at half the cost of a frozen dataclass).

    Replay sources fill `topic`/`partition`/`offset` with synthetic values (partition 0,
    offset = position in the replay) so downstream code treats them like Kafka records.
    `timestamp_ms` is the Kafka message timestamp (-1 when the broker gave none).
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes

    @property
    def topic_partition(self) -> tuple[str, int]:
        return (self.topic, self.partition)

    @classmethod
    def from_kafka(cls, m: Any) -> Record:
        """From a kafka-python ConsumerRecord (a tombstone's None value becomes b"")."""
        return cls(m.topic, m.partition, m.offset, m.timestamp, m.key, b"" if m.value is None else m.value)


def next_offsets(records: list[Record]) -> dict[tuple[str, int], int]:
    """{(topic, partition): last offset + 1} over `records`: what to commit once they are durable."""
    out: dict[tuple[str, int], int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        nxt = r.offset + 1
        if out.get(tp, -1) < nxt:
            out[tp] = nxt
    return out
