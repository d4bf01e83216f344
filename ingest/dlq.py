"""Dead-letter queue: every rejected record goes to `<topic>.dlq` with its reason code and original bytes.

Each DLQ message is JSON, keyed with the original key:
    {"reason", "detail", "topic", "partition", "offset", "timestamp_ms", "key_b64", "value_b64", "rejected_at"}
`key_b64` is null when the original message had no key; `rejected_at` is epoch seconds.

The producer is anything with `send(topic, key, value) -> future|None` and `flush()`, normally an
`ingest.producer.EventProducer`. `flush()` raises `DeadLetterFailed` (retriable) when some
dead letters could not be delivered; those stay buffered and are sent again by the next
`flush()`, so the caller must not commit the offsets of that batch until a flush succeeds.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from ingest.decode import Reject
from ingest.errors import DeadLetterFailed
from ingest.schemas import DLQ_SUFFIX


class DeadLetter(msgspec.Struct, frozen=True):
    """The DLQ message body."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key_b64: str | None
    value_b64: str
    rejected_at: float

    @property
    def key(self) -> bytes | None:
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)

    @property
    def value(self) -> bytes:
        return base64.b64decode(self.value_b64)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(DeadLetter).decode


def encode_dead_letter(reject: Reject, rejected_at: float) -> bytes:
    rec = reject.record
    value = rec.value if isinstance(rec.value, bytes) else b"" if rec.value is None else bytes(rec.value)
    return _encode(
        DeadLetter(
            reason=reject.reason.value,
            detail=reject.detail,
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            timestamp_ms=rec.timestamp_ms,
            key_b64=None if rec.key is None else base64.b64encode(rec.key).decode("ascii"),
            value_b64=base64.b64encode(value).decode("ascii"),
            rejected_at=rejected_at,
        )
    )


def decode_dead_letter(data: bytes) -> DeadLetter:
    """Parse a DLQ message body (raises msgspec errors on a malformed one)."""
    return _decode(data)


def _failed(future: Any) -> bool:
    if future is None:
        return False
    failed = getattr(future, "failed", None)
    return bool(failed()) if callable(failed) else False


class DeadLetterQueue:
    """Buffers rejects into a producer; `counts` = {reason: number of rejects added} since creation."""

    def __init__(
        self, producer: Any, suffix: str = DLQ_SUFFIX, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.producer = producer
        self.suffix = suffix
        self.clock = clock
        self.counts: dict[str, int] = {}
        self.delivered = 0
        self._pending: list[tuple[Reject, bytes, Any]] = []  # sent, awaiting flush
        self._retry: list[tuple[Reject, bytes]] = []  # failed delivery, sent again on the next flush

    def topic_for(self, topic: str) -> str:
        return f"{topic}{self.suffix}"

    @property
    def pending(self) -> int:
        """Dead letters not yet confirmed delivered."""
        return len(self._pending) + len(self._retry)

    def add(self, rejects: Iterable[Reject]) -> None:
        now = self.clock()
        counts = self.counts
        for reject in rejects:
            counts[reject.reason.value] = counts.get(reject.reason.value, 0) + 1
            self._send(reject, encode_dead_letter(reject, now))

    def _send(self, reject: Reject, body: bytes) -> None:
        try:
            future = self.producer.send(self.topic_for(reject.record.topic), reject.record.key, body)
        except Exception:  # buffer full, broker gone: keep it for the next flush
            self._retry.append((reject, body))
            return
        self._pending.append((reject, body, future))

    def flush(self, timeout: float | None = None) -> None:
        """Deliver everything added so far; raise DeadLetterFailed (retriable) if some could not be."""
        retry, self._retry = self._retry, []
        for reject, body in retry:
            self._send(reject, body)
        flush_error: Exception | None = None
        if self._pending or self._retry:
            try:
                self.producer.flush(timeout) if timeout is not None else self.producer.flush()
            except Exception as e:  # timeout: futures left unresolved count as failed below
                flush_error = e
        pending, self._pending = self._pending, []
        for reject, body, future in pending:
            if future is None or (getattr(future, "is_done", True) and not _failed(future)):
                self.delivered += 1
            elif _failed(future):
                self._retry.append((reject, body))
            else:  # still in flight after a timed-out flush: wait for it rather than send it twice
                self._pending.append((reject, body, future))
        if self._retry or self._pending:
            raise DeadLetterFailed(
                f"{self.pending} dead letter(s) not confirmed delivered"
                + (f": {flush_error}" if flush_error else "")
                + "; they are kept and retried on the next flush"
            )
