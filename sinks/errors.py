"""Error types of the sinks package."""

from streamwarden.errors import StreamwardenError


class SinkError(StreamwardenError):
    """Delivering alerts failed. Alerts stay buffered in the sink."""


class SinkUnavailable(SinkError):
    """The alert store cannot be reached right now (outage, timeout, loading). Retry later."""

    retriable = True
