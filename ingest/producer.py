"""`EventProducer`: a thin KafkaProducer with idempotent delivery by default and delivery counters."""

from __future__ import annotations

import threading
from typing import Any

from ingest.errors import BrokerUnavailable, ProduceFailed, kafka_bootstrap

DEFAULT_PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    "retries": 2**31 - 1,
}


class EventProducer:
    """Send raw key/value bytes; count deliveries (`sent`) and failures (`failed`) from the futures' callbacks.

    `config` passes straight through to `kafka.KafkaProducer` (SASL/SSL settings, batch_size...),
    overriding the defaults above. `compression_type` may be None, "gzip", "snappy", "lz4" or "zstd".
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        *,
        client_id: str = "streamwarden-producer",
        compression_type: str | None = None,
        linger_ms: int | None = None,
        config: dict[str, Any] | None = None,
        producer: Any = None,
    ) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.last_error: BaseException | None = None
        if producer is not None:  # an already built KafkaProducer-like object (tests, custom clients)
            self._producer = producer
            return
        from kafka import KafkaProducer

        settings = dict(DEFAULT_PRODUCER_CONFIG, bootstrap_servers=bootstrap_servers, client_id=client_id)
        if compression_type is not None:
            settings["compression_type"] = compression_type
        if linger_ms is not None:
            settings["linger_ms"] = linger_ms
        settings.update(config or {})
        with kafka_bootstrap(bootstrap_servers, settings.get("bootstrap_timeout_ms", 30_000)):
            self._producer = KafkaProducer(**settings)

    def _on_success(self, _metadata: Any) -> None:
        with self._lock:
            self.sent += 1

    def _on_error(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            self.last_error = exc

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Queue one message; returns kafka-python's future (resolved on delivery or failure).

        Raises BrokerUnavailable (retriable) when the producer's buffer stays full for max_block_ms
        because the broker cannot be reached.
        """
        from kafka.errors import KafkaTimeoutError

        try:
            future = self._producer.send(
                topic, value=value, key=key, partition=partition, timestamp_ms=timestamp_ms, headers=headers
            )
        except KafkaTimeoutError as e:
            raise BrokerUnavailable(f"could not queue a message for {topic}: {e}") from e
        future.add_callback(self._on_success)
        future.add_errback(self._on_error)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued message is delivered or failed. Raises ProduceFailed on timeout."""
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=timeout)
        except KafkaTimeoutError as e:
            raise ProduceFailed(f"flush timed out: {e}") from e

    def close(self, timeout: float | None = None) -> None:
        self._producer.close(timeout=timeout)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
