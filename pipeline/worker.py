"""The live worker as `streamwarden run` builds it: BatchConsumer + engines + RedisAlertSink + DeadLetterQueue.

The CLI, the demo and the benchmarks import it from here, so all of them run the same worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipeline.errors import ConfigError
from pipeline.settings import Settings

log = logging.getLogger("pipeline.worker")


def build_live_runner(settings: Settings, *, idle_timeout_s: float | None = None, max_events: int | None = None) -> tuple[Any, Callable[[], None]]:
    """The worker: BatchConsumer + RedisAlertSink + DeadLetterQueue around the runner. Returns (runner, close).

    Fails within the start-up timeouts when Redis (SinkUnavailable) or Kafka (BrokerUnavailable) does not answer.
    """
    # Services first, before torch is imported and models are built: an unreachable one fails in seconds.
    from sinks.connection import probe as probe_redis

    probe_redis(settings.redis.connection(), settings.redis.startup_timeout_s)
    from stream_models.checkpoint import small_pages_for_forks

    small_pages_for_forks()
    topics = [*(settings.topics.for_domain(d) for d in settings.domains()), settings.topics.labels]
    holder: dict[str, Any] = {}
    security = settings.kafka.client_config()
    security.pop("bootstrap_servers")
    security.pop("client_id")
    group_settings = settings.kafka.consumer_config()
    consumer = consumer_class(settings)(  # bootstraps within kafka.startup_timeout_s (bootstrap_timeout_ms)
        group_settings.pop("bootstrap_servers"), topics, group_settings.pop("group_id"),
        on_assign=lambda parts: holder["runner"].on_assign(parts),
        on_revoke=lambda parts: holder["runner"].on_revoke(parts),
        on_lost=lambda parts: holder["runner"].on_lost(parts),
        client_id=group_settings.pop("client_id"), auto_offset_reset=group_settings.pop("auto_offset_reset"),
        config=group_settings,
    )
    from ingest.dlq import DeadLetterQueue
    from ingest.producer import EventProducer
    from pipeline import promotion
    from pipeline.domains import build_processors
    from pipeline.observability import RunnerMetrics
    from pipeline.runner import Runner, RunnerConfig
    from sinks.redis_sink import RedisAlertSink
    from stream_models import checkpoint
    from stream_models.device import pick_device, set_torch_threads

    set_torch_threads(settings.runner.torch_threads)
    processors = build_processors(settings)
    producer = EventProducer(settings.kafka.bootstrap_servers, client_id=f"{settings.kafka.client_id}-dlq", config=security)
    sink = RedisAlertSink(connection=settings.redis.connection(), config=settings.redis.sink_config())
    metrics = RunnerMetrics()
    device = pick_device(None if settings.runner.device == "auto" else settings.runner.device)
    metrics.device.labels(device=str(device)).set(1)
    state_dir = settings.runner.state_dir
    r = settings.runner
    checkpoint_path, checkpoint_lock = checkpoint.claim(
        state_dir / f"{settings.kafka.group_id}-{'+'.join(settings.domains())}.ckpt")
    log.info("checkpoint file claimed: %s", checkpoint_path)
    store = open_partition_store(settings)
    runner = Runner(
        consumer, sink, DeadLetterQueue(producer), processors, labels_topic=settings.topics.labels,
        config=RunnerConfig(
            max_records=r.max_records, poll_timeout_ms=r.poll_timeout_ms, commit_interval_s=r.commit_interval_s,
            checkpoint_interval_s=r.checkpoint_interval_s, backoff_initial_s=r.backoff_initial_s,
            backoff_max_s=r.backoff_max_s, idle_timeout_s=idle_timeout_s, max_events=max_events,
            flush_alerts_every_batch=r.flush_alerts_every_batch,
            checkpoint_path=checkpoint_path,
        ),
        metrics=metrics, checkpoint_meta={"config": settings.masked()},
        partition_store=store,
        partition_count=(lambda topic: settings.state.partitions or _partition_count(consumer, topic)) if store else None,
    )

    runner.checkpoint_hooks.append(promotion.checkpoint_hook(state_dir))
    closers: list[Callable[[], None]] = [consumer.close, producer.close, sink.close, checkpoint_lock.close]
    if settings.model_sync.enabled:
        from pipeline.model_sync import WorkerModelSync, WorkerModelSyncConfig

        ms = settings.model_sync
        sync = WorkerModelSync(settings.kafka.bootstrap_servers, WorkerModelSyncConfig(
            topic=ms.topic, interval_s=ms.interval_s, timeout_s=ms.timeout_s,
            **({"worker_id": ms.worker_id} if ms.worker_id else {})), client_config=security)
        runner.start_hooks.append(sync.start)
        runner.checkpoint_hooks.append(sync)
        closers.append(sync.close)
    if store is not None and hasattr(store, "close"):
        closers.append(store.close)
    holder["runner"] = runner

    def close() -> None:
        for closer in closers:
            try:
                closer()
            except Exception as exc:  # closing must not hide the run's own outcome
                log.warning("close failed", extra={"error": str(exc)})

    return runner, close


def consumer_class(settings: Settings) -> type:
    """BatchConsumer (kafka-python), or with `kafka.client: confluent` its librdkafka twin."""
    if settings.kafka.client == "kafka-python":
        from ingest.consumer import BatchConsumer

        return BatchConsumer
    try:
        import confluent_kafka  # noqa: F401 - the optional package itself
    except ImportError as exc:
        raise ConfigError("kafka.client confluent needs confluent-kafka: pip install 'streamwarden[fast]'") from exc
    from ingest.confluent_consumer import ConfluentBatchConsumer

    return ConfluentBatchConsumer


def open_partition_store(settings: Settings) -> Any:
    """The partition-state store `state.store` names (None when partition handover is off)."""
    from pipeline.partition_state import RedisPartitionStateConfig, RedisPartitionStateStore, open_store

    location = settings.state.store
    if not location:
        return None
    group = settings.kafka.group_id
    if location == "redis" or location.startswith(("redis://", "rediss://", "unix://")):
        config = RedisPartitionStateConfig(prefix=f"{settings.redis.prefix}partition-state:", ttl_s=settings.state.ttl_s)
        url = None if location == "redis" else location
        return RedisPartitionStateStore(url, group, connection=settings.redis.connection(), config=config)
    return open_store(location, group)


def _partition_count(consumer: Any, topic: str) -> int:
    """Partitions of `topic` from the consumer's cluster metadata (known once partitions are assigned)."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise ConfigError(f"topic {topic!r} has no partitions in the cluster metadata; set state.partitions")
    return len(parts)
