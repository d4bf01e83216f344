"""`ConfluentBatchConsumer`: `BatchConsumer`'s interface over confluent-kafka (librdkafka), the optional fast client.

Selected with `kafka.client: confluent` and installed with `pip install 'streamwarden[fast]'`. It takes the same
kafka-python style settings as `BatchConsumer` (translated to librdkafka's names; an unknown one is refused by
name), commits only what the caller marks durable, and runs the caller's rebalance callbacks on the polling
thread (librdkafka calls them from inside `consume`), where they may flush, commit and seek.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ingest.errors import BrokerUnavailable, CommitFailed, IngestError, kafka_bootstrap
from ingest.records import Record

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
PartitionsCallback = Callable[[list[TopicPartitionKey]], None]

# kafka-python setting -> librdkafka property (values pass through unless converted below)
_NAMES = {
    "client_id": "client.id",
    "group_id": "group.id",
    "auto_offset_reset": "auto.offset.reset",
    "enable_auto_commit": "enable.auto.commit",
    "session_timeout_ms": "session.timeout.ms",
    "heartbeat_interval_ms": "heartbeat.interval.ms",
    "max_poll_interval_ms": "max.poll.interval.ms",
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "sasl_kerberos_service_name": "sasl.kerberos.service.name",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
    "fetch_max_bytes": "fetch.max.bytes",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "fetch_min_bytes": "fetch.min.bytes",
    "max_partition_fetch_bytes": "max.partition.fetch.bytes",
    "request_timeout_ms": "socket.timeout.ms",
}
_UNUSED = {"max_poll_records", "bootstrap_timeout_ms"}  # per poll call here / the metadata probe's timeout
_REBALANCING = {"REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "_ASSIGNMENT_LOST", "_STATE"}


def librdkafka_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """kafka-python style consumer settings as librdkafka properties."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key in _UNUSED:
            continue
        if key == "bootstrap_servers":
            out["bootstrap.servers"] = value if isinstance(value, str) else ",".join(value)
        elif key == "ssl_check_hostname":
            out["ssl.endpoint.identification.algorithm"] = "https" if value else "none"
        elif key in _NAMES:
            out[_NAMES[key]] = value
        else:
            raise ValueError(f"kafka setting {key!r} has no confluent-kafka equivalent here; use kafka.client "
                             "kafka-python or leave it out")
    return out


def _key(tp: Any) -> TopicPartitionKey:
    return (str(tp.topic), int(tp.partition))


class ConfluentBatchConsumer:
    """Poll batches of `Record`s from a consumer group over librdkafka; the same methods as `BatchConsumer`."""

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        topics: str | Iterable[str],
        group_id: str,
        *,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        on_lost: PartitionsCallback | None = None,
        client_id: str = "streamwarden",
        auto_offset_reset: str = "earliest",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        from confluent_kafka import Consumer, KafkaException

        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.group_id = group_id
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self.rebalances = 0
        settings = {"bootstrap_servers": bootstrap_servers, "group_id": group_id, "client_id": client_id,
                    "auto_offset_reset": auto_offset_reset, "enable_auto_commit": False, **(config or {})}
        timeout_s = float(settings.get("bootstrap_timeout_ms", 30_000)) / 1000
        # librdkafka's own log lines go to a third-party logger (WARNING and up, repeats limited)
        self._consumer = Consumer({**librdkafka_config(settings), "logger": logging.getLogger("kafka.librdkafka")})
        # librdkafka connects lazily: ask for metadata so an unreachable broker fails here, quietly
        with kafka_bootstrap(bootstrap_servers, int(timeout_s * 1000)):
            try:
                self._consumer.list_topics(timeout=timeout_s)
            except KafkaException as e:
                self._consumer.close()
                raise BrokerUnavailable(
                    f"no Kafka broker answers at {bootstrap_servers} within {timeout_s:g} s") from e
        self._seeks: dict[TopicPartitionKey, int] | None = None  # collected while an assignment is in progress
        self._paused: set[TopicPartitionKey] = set()
        self._from_earliest = settings["auto_offset_reset"] == "earliest"
        self._consumer.subscribe(self.topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)
        self._closed = False

    # -------------------------------------------------------------- rebalances (run inside consume)
    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_INVALID, TopicPartition

        self.rebalances += 1
        self._seeks = {}
        try:
            if self._on_assign is not None:
                self._on_assign(sorted(_key(tp) for tp in partitions))
        finally:
            seeks, self._seeks = self._seeks, None
        consumer.assign([TopicPartition(tp.topic, tp.partition, seeks.get(_key(tp), OFFSET_INVALID))
                         for tp in partitions])

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        if partitions and self._on_revoke is not None:
            self._on_revoke(sorted(_key(tp) for tp in partitions))
        consumer.unassign()

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        if partitions:
            log.warning("partitions %s lost (membership expired): uncommitted work on them is redelivered",
                        sorted(_key(tp) for tp in partitions))
            if self._on_lost is not None:
                self._on_lost(sorted(_key(tp) for tp in partitions))
        consumer.unassign()

    # -------------------------------------------------------------- consuming
    def poll(self, max_records: int = 500, timeout_ms: int = 1000) -> list[Record]:
        """Up to `max_records` records (in offset order within each partition); [] when none came in time."""
        from confluent_kafka import KafkaException

        try:
            messages = self._consumer.consume(num_messages=max_records, timeout=timeout_ms / 1000)
        except KafkaException as e:
            raise _wrap(e, "poll failed") from e
        out: list[Record] = []
        for m in messages:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise IngestError(f"poll failed: {error.str()}")
                log.warning("consumer error: %s", error.str())
                continue
            out.append(Record(m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value() or b""))
        return out

    def commit(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Commit `{(topic, partition): next offset to read}`; CommitFailed when the group took them away."""
        from confluent_kafka import KafkaException, TopicPartition

        if not offsets:
            return
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, int(o)) for (t, p), o in offsets.items()],
                                  asynchronous=False)
        except KafkaException as e:
            raise _wrap(e, f"commit of {dict(offsets)} failed") from e

    def committed(self) -> dict[TopicPartitionKey, int | None]:
        parts = self._consumer.committed(sorted(self._consumer.assignment(), key=_key), timeout=10)
        return {_key(tp): (tp.offset if tp.offset >= 0 else None) for tp in parts}

    # -------------------------------------------------------------- flow control and introspection
    def pause(self, partitions: Iterable[TopicPartitionKey]) -> None:
        parts = list(partitions)
        self._consumer.pause(self._tps(parts))
        self._paused.update((str(t), int(p)) for t, p in parts)

    def resume(self, partitions: Iterable[TopicPartitionKey]) -> None:
        parts = list(partitions)
        self._consumer.resume(self._tps(parts))
        self._paused.difference_update((str(t), int(p)) for t, p in parts)

    def paused(self) -> set[TopicPartitionKey]:
        return self._paused & self.assignment()

    def assignment(self) -> set[TopicPartitionKey]:
        return {_key(tp) for tp in self._consumer.assignment()}

    def positions(self) -> dict[TopicPartitionKey, int]:
        """Next offset to be fetched per assigned partition; before its first fetch, the committed offset or
        (none committed) where `auto_offset_reset` starts."""
        parts = sorted(self._consumer.assignment(), key=_key)
        known = {_key(tp): tp.offset for tp in self._consumer.position(parts) if tp.offset >= 0}
        if len(known) < len(parts):
            known.update({k: v for k, v in self.committed().items() if k not in known and v is not None})
        for tp in parts:
            if _key(tp) not in known:
                low, high = self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                known[_key(tp)] = low if self._from_earliest else high
        return known

    def end_offsets(self) -> dict[TopicPartitionKey, int]:
        from confluent_kafka import TopicPartition

        return {k: self._consumer.get_watermark_offsets(TopicPartition(*k), timeout=10, cached=False)[1]
                for k in sorted(self.assignment())}

    def lag(self) -> dict[TopicPartitionKey, int]:
        ends = self.end_offsets()
        return {tp: max(0, ends[tp] - pos) for tp, pos in self.positions().items() if tp in ends}

    def partitions_for_topic(self, topic: str) -> set[int]:
        meta = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
        return set(meta.partitions) if meta is not None and meta.error is None else set()

    def seek(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Move partitions to the given next offsets before the next poll (inside an assignment: its start)."""
        from confluent_kafka import TopicPartition

        if self._seeks is not None:
            self._seeks.update({(str(t), int(p)): int(o) for (t, p), o in offsets.items()})
            return
        for (t, p), o in offsets.items():
            self._consumer.seek(TopicPartition(t, p, int(o)))

    def close(self) -> None:
        """Leave the group (the revoke callback runs first); commits nothing by itself."""
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> ConfluentBatchConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _tps(partitions: Iterable[TopicPartitionKey]) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition(str(t), int(p)) for t, p in partitions]


def _wrap(e: Any, what: str) -> IngestError:
    error = e.args[0] if e.args else None
    name = error.name() if error is not None else ""
    text = error.str() if error is not None else str(e)
    if name in _REBALANCING:
        return CommitFailed(f"{what}: {text}")
    if name in ("_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT"):
        return BrokerUnavailable(f"{what}: {text}")
    return IngestError(f"{what}: {text}", retriable=bool(error is not None and error.retriable()))
