"""What `streamwarden produce` does: send events from a file or the simulator to a topic, at a chosen rate.

>>> class Fake:
...     def __init__(self): self.sent, self.failed, self.messages = 0, 0, []
...     def send(self, topic, key, value): self.messages.append((topic, key)); self.sent += 1
...     def flush(self, timeout=None): pass
>>> fake = Fake()
>>> events = events_from_simulator("transactions", limit=3, n_customers=20, n_terminals=20, days=2)
>>> report = produce_events(events, fake, "transactions", "transactions", progress=False)
>>> (report.sent, report.failed), fake.messages[0][0]
((3, 0), 'transactions')
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.decode import BatchDecoder
from ingest.replay import Columns, FileSource
from ingest.schemas import KEY_FIELDS, check_domain, encode_event

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProduceReport:
    sent: int  # delivered (acknowledged by Kafka)
    failed: int  # not delivered
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        """Events per second over the whole run."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


class RateLimiter:
    """Token bucket: `acquire()` blocks so that at most `rate` events pass per second (bursts up to `burst`)."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0 events/s")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate / 20)  # ~50 ms of events
        self.clock = clock
        self.sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    def acquire(self, n: int = 1) -> None:
        while True:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            need = min(n, self.burst)  # n > burst passes once the bucket is full
            if self._tokens >= need - 1e-9:  # tolerance: float refills land a hair short
                self._tokens -= n
                return
            self.sleep((need - self._tokens) / self.rate)


def _progress_bar(total: int | None, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ev", smoothing=0.1, dynamic_ncols=True)


def produce_events(
    events: Iterable[Any],
    producer: Any,
    topic: str,
    domain: str,
    rate: float | None = None,
    key_field: str | None = None,
    progress: bool = True,
    *,
    total: int | None = None,
    flush_every: int = 10_000,
    limiter: RateLimiter | None = None,
) -> ProduceReport:
    """Send every event (a schema Struct) to `topic`; return what Kafka acknowledged.

    Key = the domain's key field (card_id, device_id, event_id) unless `key_field` names another
    field ("" or "none" sends no key). `rate` paces to that many events per second (token
    bucket; or pass your own `limiter`); None sends as fast as the producer takes them. `producer` is an `EventProducer`
    (or anything with `send(topic, key, value)`, `flush()` and `sent`/`failed` counters).
    """
    check_domain(domain)
    if key_field is None:
        key_field = KEY_FIELDS[domain]
    no_key = key_field.lower() in ("", "none")
    if limiter is None and rate:
        limiter = RateLimiter(rate)
    if total is None and hasattr(events, "__len__"):
        total = len(events)  # type: ignore[arg-type]
    bar = _progress_bar(total, f"produce {topic}", progress)
    sent0, failed0 = getattr(producer, "sent", 0), getattr(producer, "failed", 0)
    started = time.monotonic()
    count = 0
    try:
        for event in events:
            if limiter is not None:
                limiter.acquire()
            key = None if no_key else _key(event, key_field)
            producer.send(topic, key, encode_event(event))
            count += 1
            if bar is not None and count % 256 == 0:
                bar.update(256)
            if count % flush_every == 0:
                producer.flush()
        producer.flush()
    finally:
        if bar is not None:
            bar.update(count % 256)
            bar.close()
    elapsed = time.monotonic() - started
    sent = getattr(producer, "sent", count) - sent0
    failed = getattr(producer, "failed", 0) - failed0
    return ProduceReport(sent=sent, failed=failed, elapsed_s=elapsed)


def produce_in_time_order(streams: Sequence[tuple[str, str, Iterable[Any]]], producer: Any, *,
                          flush_every: int = 10_000) -> dict[str, int]:
    """Send several streams, each `(topic, domain, events in time order)`, merged by event time: what a live system
    would see, e.g. chargeback labels arriving among the transactions of their reveal time, not all after them.
    Returns the events handed to the producer per topic.

    >>> class Fake:
    ...     def __init__(self): self.messages = []
    ...     def send(self, topic, key, value): self.messages.append(topic)
    ...     def flush(self, timeout=None): pass
    >>> from ingest.schemas import Label
    >>> fake = Fake()
    >>> events = list(events_from_simulator("transactions", limit=3, n_customers=20, n_terminals=20, days=2))
    >>> late = [Label(events[0].event_id, 1, events[1].ts)]  # revealed at the second event's time
    >>> produce_in_time_order([("tx", "transactions", events), ("labels", "labels", late)], fake)
    {'tx': 3, 'labels': 1}
    >>> fake.messages
    ['tx', 'tx', 'labels', 'tx']
    """
    counts = {topic: 0 for topic, _, _ in streams}

    def tagged(n: int, topic: str, domain: str, events: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
        for i, event in enumerate(events):  # ties: the earlier stream first, then each stream's own order
            yield event.ts, n, i, topic, domain, event

    merged = heapq.merge(*(tagged(n, *stream) for n, stream in enumerate(streams)))
    for sent, (*_, topic, domain, event) in enumerate(merged, 1):
        producer.send(topic, _key(event, KEY_FIELDS[domain]), encode_event(event))
        counts[topic] += 1
        if sent % flush_every == 0:
            producer.flush()
    producer.flush()
    return counts


def _key(event: Any, field: str) -> bytes | None:
    value = getattr(event, field, None)
    if value is None:
        return None
    return value if isinstance(value, bytes) else str(value).encode()


def events_from_file(path: str | Path, domain: str, columns: Columns = None, **options: Any) -> Iterator[Any]:
    """The valid events of a CSV/Parquet file in time order (see `FileSource` for `columns` and `options`:
    `labels`, `time_origin`).

    Rows that would not pass validation are skipped with a warning naming the reasons.
    """
    source = FileSource(path, domain, columns=columns, **options)
    decoder = BatchDecoder(domain)
    rejected: dict[str, int] = {}
    while not source.exhausted:
        result = decoder.decode(source.poll(5000, 0))
        for reason, n in result.reject_counts().items():
            rejected[reason] = rejected.get(reason, 0) + n
        yield from result.events
    if rejected:
        log.warning("%s: skipped %d invalid row(s): %s", path, sum(rejected.values()), rejected)


def events_from_simulator(
    domain: str, *, seed: int = 0, limit: int | None = None, **params: Any
) -> Iterator[Any]:
    """Simulated events: `transactions` / `sensors`, or `labels` (the transaction simulator's fraud labels).

    `params` go to `TransactionSimulator` / `SensorSimulator` (n_customers, days, n_devices...). Event ids
    carry the seed and a run id, random unless `run=` is given: labels carry the ids of the transactions
    simulated with the same seed, sizes and `run`.
    """
    from ingest.simulator import SensorSimulator, TransactionSimulator

    check_domain(domain)
    if domain == "sensors":
        events: Iterable[Any] = SensorSimulator(seed=seed, **params).events()
    elif domain == "transactions":
        events = TransactionSimulator(seed=seed, **params).events()
    else:
        events = TransactionSimulator(seed=seed, **params).labels()
    return itertools.islice(events, limit) if limit is not None else iter(events)
