"""Error types of the pipeline package (composition root)."""

from __future__ import annotations

from streamwarden.errors import StreamwardenError


class PipelineError(StreamwardenError):
    """The runner, backtest or CLI wiring failed."""


class ConfigError(PipelineError):
    """A setting is missing, unknown or invalid; the message names the setting."""


class CheckpointMismatch(PipelineError):
    """A checkpoint was written for other topics, domains or model architecture than the current config."""
