"""Error types of the ingest package."""

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
