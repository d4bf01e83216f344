"""Retry policy with exponential backoff, injected into sinks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from streamwarden.errors import StreamwardenError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Try up to `max_attempts` times, sleeping base_delay * 2**k (capped at max_delay) between tries.

    >>> list(RetryPolicy(max_attempts=5, base_delay=0.1, max_delay=0.5).delays())
    [0.1, 0.2, 0.4, 0.5]
    """

    max_attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")

    def delays(self) -> Iterator[float]:
        """The sleeps between attempts (max_attempts - 1 of them)."""
        for k in range(self.max_attempts - 1):
            yield min(self.max_delay, self.base_delay * (2**k))

    def call(
        self,
        fn: Callable[[], T],
        sleep: Callable[[float], None],
        on_retry: Callable[[int, StreamwardenError], None] | None = None,
    ) -> T:
        """Run `fn`, retrying on retriable StreamwardenErrors; the last error propagates."""
        delays = self.delays()
        attempt = 1
        while True:
            try:
                return fn()
            except StreamwardenError as exc:
                delay = next(delays, None)
                if not exc.retriable or delay is None:
                    raise
                if on_retry is not None:
                    on_retry(attempt, exc)
                sleep(delay)
                attempt += 1
