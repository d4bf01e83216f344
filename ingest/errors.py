"""Error types of the ingest package, and the project's root exception."""


class StreamwardenError(Exception):
    """Root of every error the project raises on purpose. `retriable` says whether trying again may help."""

    retriable: bool = False

    def __init__(self, message: str = "", *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class IngestError(StreamwardenError):
    """Kafka in/out or replay failed."""


class BrokerUnavailable(IngestError):
    """The Kafka broker cannot be reached right now."""

    retriable = True
