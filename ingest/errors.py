"""Error types of the ingest package."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from streamwarden.errors import StreamwardenError


class IngestError(StreamwardenError):
    """Kafka in/out or replay failed."""


class BrokerUnavailable(IngestError):
    """The Kafka broker cannot be reached right now."""

    retriable = True


class ProduceFailed(IngestError):
    """Messages could not be delivered to Kafka (after the producer's own retries)."""

    retriable = True


class DeadLetterFailed(IngestError):
    """Rejected records could not be written to the dead-letter topic; they stay buffered for the next flush."""

    retriable = True


class CommitFailed(IngestError):
    """An offset commit was refused, e.g. because the partitions were reassigned meanwhile."""


class ReplaySourceError(IngestError):
    """A replay file or Kafka range cannot be read as asked (missing column, unreadable file, bad bounds)."""


@contextmanager
def kafka_bootstrap(bootstrap_servers: object, timeout_ms: int) -> Iterator[None]:
    """Around a kafka-python client's construction: its bootstrap retries stay quiet (the ~20 ERROR lines of
    an unreachable broker) and a failed bootstrap becomes one BrokerUnavailable naming the servers."""
    from kafka.errors import KafkaTimeoutError

    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        yield
    except KafkaTimeoutError as e:  # kafka-python 3: 'Unable to bootstrap from ...'
        raise BrokerUnavailable(f"no Kafka broker answers at {bootstrap_servers} within {timeout_ms / 1000:g} s") from e
    finally:
        kafka_log.setLevel(level)
