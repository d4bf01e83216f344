"""streamwarden: real-time fraud and anomaly detection on Kafka streams with online deep learning.

The packages: `ingest` (Kafka in and out), `stream_models` (features, detectors, the stream engine),
`sinks` (alerts out), `evaluation` (metrics and reports), `pipeline` (settings, worker, backtest, CLI).
"""

from streamwarden.errors import StreamwardenError

__all__ = ["StreamwardenError"]
