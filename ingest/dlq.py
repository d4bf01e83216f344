"""Dead-letter queue: every rejected record goes to `<topic>.dlq` with its reason code and original bytes.

Each DLQ message is JSON, keyed with the original key (its first 1 KiB):
    {"reason", "detail", "topic", "partition", "offset", "timestamp_ms", "key_b64", "value_b64",
     "value_size", "value_sha256", "rejected_at"}
`key_b64` is null when the original message had no key; `rejected_at` is epoch seconds. A dead letter always
fits a Kafka request: `value_b64` holds at most the first `MAX_VALUE_BYTES` of the original value, whose full
length and SHA-256 are `value_size` / `value_sha256` (the whole message stays in the source topic at
`partition`/`offset`).

The producer is anything with `send(topic, key, value) -> future|None` and `flush()`, normally an
`ingest.producer.EventProducer`. `flush()` raises `DeadLetterFailed` (retriable) when some
dead letters could not be delivered for a reason that may pass (broker unreachable); those stay buffered
and are sent again by the next `flush()`, so the caller must not commit the offsets of that batch until a
flush succeeds. A dead letter the broker refuses for good (a non-retriable error) is counted in
`undeliverable`, logged once and dropped, so one poison message never stops its partition.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from ingest.decode import Reject
from ingest.errors import DeadLetterFailed
from ingest.schemas import DLQ_SUFFIX

log = logging.getLogger("ingest.dlq")
MAX_VALUE_BYTES = 16 * 1024  # of the original value kept in a dead letter
MAX_KEY_BYTES = 1024
MAX_DETAIL_CHARS = 1000


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
    value_size: int = -1  # bytes of the original value (value_b64 may hold only its prefix)
    value_sha256: str = ""

    @property
    def truncated(self) -> bool:
        return self.value_size > len(self.value)

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
            detail=reject.detail[:MAX_DETAIL_CHARS],
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            timestamp_ms=rec.timestamp_ms,
            key_b64=None if rec.key is None else base64.b64encode(rec.key[:MAX_KEY_BYTES]).decode("ascii"),
            value_b64=base64.b64encode(value[:MAX_VALUE_BYTES]).decode("ascii"),
            rejected_at=rejected_at,
            value_size=len(value),
            value_sha256=hashlib.sha256(value).hexdigest(),
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


def _permanent(error: BaseException | None) -> bool:
    """A failure that sending again cannot fix (kafka-python and our errors mark the others `retriable`)."""
    return error is not None and not getattr(error, "retriable", True)


class DeadLetterQueue:
    """Buffers rejects into a producer; `counts` = {reason: number of rejects added} since creation,
    `delivered` / `undeliverable` = dead letters the broker took / refused for good."""

    def __init__(
        self, producer: Any, suffix: str = DLQ_SUFFIX, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.producer = producer
        self.suffix = suffix
        self.clock = clock
        self.counts: dict[str, int] = {}
        self.delivered = 0
        self.undeliverable = 0  # dead letters the broker refused for good (dropped, logged)
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
        key = None if reject.record.key is None else reject.record.key[:MAX_KEY_BYTES]
        try:
            future = self.producer.send(self.topic_for(reject.record.topic), key, body)
        except Exception as error:
            if _permanent(error):
                self._drop(reject, error)
            else:  # buffer full, broker gone: keep it for the next flush
                self._retry.append((reject, body))
            return
        self._pending.append((reject, body, future))

    def _drop(self, reject: Reject, error: BaseException | None) -> None:
        self.undeliverable += 1
        rec = reject.record
        log.error("dead letter refused for good, dropped (the record stays in its topic at its offset)",
                  extra={"topic": rec.topic, "partition": rec.partition, "offset": rec.offset,
                         "reason": reject.reason.value, "error": repr(error)})

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
                error = getattr(future, "exception", None)
                if _permanent(error):
                    self._drop(reject, error)
                else:
                    self._retry.append((reject, body))
            else:  # still in flight after a timed-out flush: wait for it rather than send it twice
                self._pending.append((reject, body, future))
        if self._retry or self._pending:
            raise DeadLetterFailed(
                f"{self.pending} dead letter(s) not confirmed delivered"
                + (f": {flush_error}" if flush_error else "")
                + "; they are kept and retried on the next flush"
            )
