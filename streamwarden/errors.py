"""The project's root exception, in a module every package may import (it imports nothing of ours)."""


class StreamwardenError(Exception):
    """Root of every error the project raises on purpose. `retriable` says whether trying again may help."""

    retriable: bool = False

    def __init__(self, message: str = "", *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable
