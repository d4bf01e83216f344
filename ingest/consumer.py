"""`BatchConsumer`: a consumer-group member over kafka-python 3.x with manual, caller-driven commits.

Offsets are committed only when the caller says a batch is durable (`commit(next_offsets)`),
never automatically. Rebalances call the caller's `on_revoke(partitions)` first (flush sinks and
the DLQ, then `commit` there: the partitions are still ours) and `on_assign(partitions)` after.

kafka-python 3 runs rebalance listeners on its IO thread, where a blocking client call (such as
`commit`) is refused. The listener here is the async kind: it runs the caller's callback on a
short-lived worker thread and yields to the IO loop until it returns, so the callback may flush,
commit and seek, and heartbeats keep flowing meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ingest.errors import BrokerUnavailable, CommitFailed, IngestError, kafka_bootstrap
from ingest.records import Record

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
PartitionsCallback = Callable[[list[TopicPartitionKey]], None]

DEFAULT_CONSUMER_CONFIG: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "max_poll_records": 500,
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
}


def _tp(partition: Iterable[Any]) -> Any:
    from kafka.structs import TopicPartition

    topic, number = partition  # a TopicPartition or a plain (topic, partition) tuple
    return TopicPartition(topic, int(number))


def _wrap_kafka_error(e: Exception, what: str) -> IngestError:
    from kafka.errors import CommitFailedError, KafkaConnectionError, KafkaError, KafkaTimeoutError

    if isinstance(e, CommitFailedError):
        return CommitFailed(f"{what}: {e}")
    if isinstance(e, (KafkaTimeoutError, KafkaConnectionError)):
        return BrokerUnavailable(f"{what}: {e}")
    retriable = bool(getattr(e, "retriable", False)) if isinstance(e, KafkaError) else False
    return IngestError(f"{what}: {e}", retriable=retriable)


def _listener_class() -> type:
    from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

    class _Listener(AsyncConsumerRebalanceListener):
        def __init__(self, owner: BatchConsumer) -> None:
            self.owner = owner

        async def on_partitions_revoked(self, revoked: Any) -> None:
            if revoked:  # kafka-python also calls it with nothing to revoke (first join)
                await self.owner._run_callback(self.owner._on_revoke, revoked)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            self.owner.rebalances += 1
            await self.owner._run_callback(self.owner._on_assign, assigned)

        async def on_partitions_lost(self, lost: Any) -> None:
            if lost:
                log.warning(
                    "partitions %s lost (membership expired): uncommitted work on them is redelivered", lost
                )
                await self.owner._run_callback(self.owner._on_lost, lost)

    return _Listener


class BatchConsumer:
    """Poll batches of `Record`s from a consumer group; commit only what the caller marks durable.

    `config` passes straight through to `kafka.KafkaConsumer` (security_protocol, sasl_*, ssl_*,
    session_timeout_ms...), overriding the defaults; auto commit stays off unless it names it.
    Partitions given to and by the callbacks are `(topic, partition)` tuples (kafka's
    TopicPartition namedtuples, which compare equal to plain tuples).
    """

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
        from kafka import KafkaConsumer

        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.group_id = group_id
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self.rebalances = 0  # completed assignments, the first one included
        settings = dict(
            DEFAULT_CONSUMER_CONFIG,
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            auto_offset_reset=auto_offset_reset,
        )
        settings.update(config or {})
        with kafka_bootstrap(bootstrap_servers, settings.get("bootstrap_timeout_ms", 30_000)):
            self._consumer = KafkaConsumer(**settings)
        self._consumer.subscribe(self.topics, listener=_listener_class()(self))
        self._closed = False

    # -------------------------------------------------------------- rebalances
    async def _run_callback(self, callback: PartitionsCallback | None, partitions: Any) -> None:
        if callback is None:
            return
        arg = sorted(_tp(p) for p in partitions)
        sleep = getattr(getattr(self._consumer, "_net", None), "sleep", None)
        if sleep is None:  # a kafka-python without the IO-loop sleep: run inline (callbacks must not block)
            callback(arg)
            return
        outcome: dict[str, BaseException] = {}

        def work() -> None:
            try:
                callback(arg)
            except BaseException as e:  # surfaced by kafka-python from poll()
                outcome["error"] = e

        worker = threading.Thread(target=work, name=f"streamwarden-rebalance-{self.group_id}", daemon=True)
        worker.start()
        while worker.is_alive():
            await sleep(0.002)
        if "error" in outcome:
            raise outcome["error"]

    # -------------------------------------------------------------- consuming
    def poll(self, max_records: int = 500, timeout_ms: int = 1000) -> list[Record]:
        """Up to `max_records` records (in offset order within each partition); [] when none came in time."""
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except Exception as e:
            raise _wrap_kafka_error(e, "poll failed") from e
        out: list[Record] = []
        for messages in batches.values():
            out.extend([Record.from_kafka(m) for m in messages])
        return out

    def commit(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Commit `{(topic, partition): next offset to read}` (last processed offset + 1) for the group.

        Raises CommitFailed when the group took the partitions away meanwhile (their records will
        be redelivered to the new owner), IngestError (retriable when worth retrying) otherwise.
        """
        if not offsets:
            return
        from kafka.structs import OffsetAndMetadata

        # kafka-python 3: OffsetAndMetadata(offset, metadata, leader_epoch); -1 = leader epoch unknown.
        to_commit = {_tp(tp): OffsetAndMetadata(int(off), "", -1) for tp, off in offsets.items()}
        try:
            self._consumer.commit(offsets=to_commit)
        except Exception as e:
            raise _wrap_kafka_error(e, f"commit of {dict(offsets)} failed") from e

    def committed(self) -> dict[TopicPartitionKey, int | None]:
        """The group's committed offset of each assigned partition (None where nothing is committed)."""
        return {tp: self._consumer.committed(tp) for tp in sorted(self._consumer.assignment())}

    # -------------------------------------------------------------- flow control and introspection
    def pause(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Stop fetching from `partitions` (backpressure); the consumer stays in the group."""
        self._consumer.pause(*[_tp(p) for p in partitions])

    def resume(self, partitions: Iterable[TopicPartitionKey]) -> None:
        self._consumer.resume(*[_tp(p) for p in partitions])

    def paused(self) -> set[TopicPartitionKey]:
        return set(self._consumer.paused())

    def assignment(self) -> set[TopicPartitionKey]:
        return set(self._consumer.assignment())

    def positions(self) -> dict[TopicPartitionKey, int]:
        """Next offset to be fetched per assigned partition."""
        return {tp: self._consumer.position(tp) for tp in sorted(self._consumer.assignment())}

    def end_offsets(self) -> dict[TopicPartitionKey, int]:
        """High watermark per assigned partition."""
        assigned = sorted(self._consumer.assignment())
        return dict(self._consumer.end_offsets(assigned)) if assigned else {}

    def lag(self) -> dict[TopicPartitionKey, int]:
        """Records between the position and the end, per assigned partition."""
        ends = self.end_offsets()
        return {tp: max(0, ends[tp] - pos) for tp, pos in self.positions().items() if tp in ends}

    def partitions_for_topic(self, topic: str) -> set[int]:
        """The topic's partition numbers from the cluster metadata (empty when unknown)."""
        return set(self._consumer.partitions_for_topic(topic) or ())

    def seek(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Move assigned partitions to the given next offsets (e.g. a checkpoint's) before the next poll."""
        for tp, off in offsets.items():
            self._consumer.seek(_tp(tp), int(off))

    def close(self) -> None:
        """Leave the group (the revoke callback runs first); commits nothing by itself."""
        if self._closed:
            return
        self._closed = True
        self._consumer.close(autocommit=False)

    def __enter__(self) -> BatchConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_topics(
    bootstrap_servers: str | list[str],
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    topic_configs: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    timeout_ms: int = 30000,
) -> list[str]:
    """Create `{name: partitions}` topics; existing ones are left as they are. Returns the names it created."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError, for_code

    with kafka_bootstrap(bootstrap_servers, (config or {}).get("bootstrap_timeout_ms", 30_000)):
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers, client_id="streamwarden-admin", **(config or {})
        )
    try:
        request = {
            name: {
                "num_partitions": int(partitions),
                "replication_factor": replication_factor,
                "configs": dict(topic_configs or {}),
            }
            for name, partitions in topics.items()
        }
        if not request:
            return []
        response = admin.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
        created: list[str] = []
        for entry in response.get("topics", []):
            name, code = entry.get("name"), entry.get("error_code", 0)
            if code == 0:
                created.append(name)
            elif for_code(code) is not TopicAlreadyExistsError:
                raise IngestError(
                    f"could not create topic {name}: {for_code(code).__name__} {entry.get('error_message')}"
                )
        if created:
            admin.wait_for_topics(created, timeout_ms=timeout_ms)
        return created
    finally:
        admin.close()
