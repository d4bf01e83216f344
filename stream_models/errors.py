"""Error types of the stream_models package."""

from __future__ import annotations

from streamwarden.errors import StreamwardenError


class ModelError(StreamwardenError):
    """A model, threshold, feature store or drift monitor was used wrongly or failed."""


class CheckpointError(ModelError):
    """A checkpoint could not be written, or was refused (corrupt, unsafe, or of another format)."""
