"""streamwarden: real-time fraud and anomaly detection on Kafka streams with online deep learning.

The packages: `ingest` (Kafka in and out), `stream_models` (features, detectors, the stream engine),
`sinks` (alerts out), `evaluation` (metrics and reports), `pipeline` (settings, worker, backtest, CLI).
The Python API (`streamwarden.api`) is re-exported here, imported on first use so `import streamwarden` stays
cheap: `load_settings`, `build_engine`, `build_live_runner`, `run_backtest`, the event schemas, the simulators.
"""

from __future__ import annotations

import importlib
from typing import Any

from streamwarden.errors import StreamwardenError

_API = ("Alert", "Label", "SensorReading", "SensorSimulator", "Settings", "Transaction", "TransactionSimulator",
        "build_engine", "build_live_runner", "load_settings", "run_backtest")
__all__ = ["StreamwardenError", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("streamwarden.api"), name)
    raise AttributeError(f"module 'streamwarden' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
