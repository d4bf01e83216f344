"""DeadLetterQueue: message format, counts, retries on failed delivery."""

from __future__ import annotations

import base64

import pytest

from ingest.decode import decode_batch
from ingest.dlq import DeadLetterQueue, decode_dead_letter
from ingest.errors import DeadLetterFailed
from ingest.records import Record
from streamwarden.errors import StreamwardenError


class FakeFuture:
    def __init__(self, fail: bool) -> None:
        self.is_done = True
        self._fail = fail

    def failed(self) -> bool:
        return self._fail


class FakeProducer:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes | None, bytes]] = []
        self.fail_next = 0
        self.flushes = 0

    def send(self, topic: str, key: bytes | None, value: bytes) -> FakeFuture:
        fail = self.fail_next > 0
        self.fail_next -= 1
        if not fail:
            self.messages.append((topic, key, value))
        return FakeFuture(fail)

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1


def rejects() -> list:
    records = [
        Record("transactions", 2, 41, 1700000000123, b"card-1", b"\xff\x00not json"),
        Record("transactions", 0, 7, 1700000000456, None, b"[1]"),
        Record("transactions", 1, 9, -1, b"k", b'{"v":1}'),
    ]
    return decode_batch(records, "transactions").rejects


def test_dead_letters_carry_reason_origin_and_original_bytes() -> None:
    producer = FakeProducer()
    dlq = DeadLetterQueue(producer, clock=lambda: 1234.5)
    dlq.add(rejects())
    dlq.flush()
    assert [m[0] for m in producer.messages] == ["transactions.dlq"] * 3
    assert [m[1] for m in producer.messages] == [b"card-1", None, b"k"]  # original keys
    first = decode_dead_letter(producer.messages[0][2])
    assert first.reason == "not_utf8" and first.detail
    assert (first.topic, first.partition, first.offset, first.timestamp_ms) == (
        "transactions",
        2,
        41,
        1700000000123,
    )
    assert first.value == b"\xff\x00not json" and first.key == b"card-1"
    assert base64.b64decode(first.value_b64) == b"\xff\x00not json"
    assert first.rejected_at == 1234.5
    second = decode_dead_letter(producer.messages[1][2])
    assert second.key_b64 is None and second.reason == "not_object"
    assert dlq.counts == {"not_utf8": 1, "not_object": 1, "missing_field": 1}
    assert dlq.delivered == 3 and dlq.pending == 0


def test_custom_suffix() -> None:
    producer = FakeProducer()
    dlq = DeadLetterQueue(producer, suffix="-dead")
    dlq.add(rejects()[:1])
    dlq.flush()
    assert producer.messages[0][0] == "transactions-dead"


def test_failed_deliveries_raise_retriable_and_are_resent_on_next_flush() -> None:
    producer = FakeProducer()
    producer.fail_next = 2
    dlq = DeadLetterQueue(producer)
    dlq.add(rejects())
    with pytest.raises(DeadLetterFailed) as info:
        dlq.flush()
    assert isinstance(info.value, StreamwardenError) and info.value.retriable
    assert dlq.pending == 2 and len(producer.messages) == 1
    dlq.flush()
    assert dlq.pending == 0 and len(producer.messages) == 3
    assert sorted(decode_dead_letter(m[2]).offset for m in producer.messages) == [7, 9, 41]
    assert dlq.counts == {"not_utf8": 1, "not_object": 1, "missing_field": 1}  # counted once each


def test_send_that_raises_is_kept_for_the_next_flush() -> None:
    class Down(FakeProducer):
        down = True

        def send(self, topic, key, value):  # type: ignore[no-untyped-def]
            if self.down:
                raise RuntimeError("buffer full")
            return super().send(topic, key, value)

    producer = Down()
    dlq = DeadLetterQueue(producer)
    dlq.add(rejects())
    with pytest.raises(DeadLetterFailed):
        dlq.flush()
    producer.down = False
    dlq.flush()
    assert len(producer.messages) == 3


def test_reasons_are_strings_in_counts() -> None:
    dlq = DeadLetterQueue(FakeProducer())
    dlq.add(rejects())
    assert all(type(k) is str for k in dlq.counts)  # plain strings, ready to be metric labels
    assert sum(dlq.counts.values()) == 3


def test_a_huge_reject_becomes_a_bounded_dead_letter_with_the_size_and_digest_of_the_original() -> None:
    import hashlib

    from ingest.dlq import MAX_KEY_BYTES, MAX_VALUE_BYTES

    value = b'{"v":1,"memo":"' + b"x" * 900_000 + b'"}'
    record = Record("transactions", 0, 5, -1, b"k" * 5000, value)
    (reject,) = decode_batch([record], "transactions").rejects
    producer = FakeProducer()
    dlq = DeadLetterQueue(producer)
    dlq.add([reject])
    dlq.flush()
    (_, key, body) = producer.messages[0]
    assert len(body) < 64 * 1024 and len(key) == MAX_KEY_BYTES  # fits any Kafka request
    letter = decode_dead_letter(body)
    assert letter.reason == "oversized" and letter.truncated
    assert letter.value == value[:MAX_VALUE_BYTES] and letter.value_size == len(value)
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest() and (letter.partition, letter.offset) == (0, 5)


class RefusingProducer(FakeProducer):
    """Refuses every send for good (kafka-python's non-retriable errors), or fails retriably."""

    def __init__(self, retriable: bool) -> None:
        super().__init__()
        self.retriable = retriable

    def send(self, topic: str, key: bytes | None, value: bytes) -> FakeFuture:
        error = StreamwardenError("refused", retriable=self.retriable)
        if self.retriable:
            raise error
        future = FakeFuture(fail=True)
        future.exception = error  # type: ignore[attr-defined]
        return future


def test_a_dead_letter_refused_for_good_is_counted_and_dropped_but_a_retriable_failure_is_kept() -> None:
    dlq = DeadLetterQueue(RefusingProducer(retriable=False))
    dlq.add(rejects())
    dlq.flush()  # does not raise: nothing left to retry, the offsets may be committed
    assert dlq.undeliverable == 3 and dlq.pending == 0

    dlq = DeadLetterQueue(RefusingProducer(retriable=True))
    dlq.add(rejects())
    with pytest.raises(DeadLetterFailed):
        dlq.flush()
    assert dlq.undeliverable == 0 and dlq.pending == 3
