"""Alerts out: the Alert record, the Redis sink (Stream + pub/sub, idempotent ids, per-entity suppression),
the in-memory sink, and the subscriber API."""

from sinks.alert import Alert, make_alert_id, new_alert
from sinks.connection import RedisConfig
from sinks.errors import SinkError, SinkUnavailable
from sinks.memory_sink import MemorySink
from sinks.redis_sink import RedisAlertSink, RedisSinkConfig
from sinks.retry import RetryPolicy
from sinks.subscriber import AlertSubscriber
from sinks.suppression import SuppressionConfig, should_emit

__all__ = [
    "Alert",
    "AlertSubscriber",
    "MemorySink",
    "RedisAlertSink",
    "RedisConfig",
    "RedisSinkConfig",
    "RetryPolicy",
    "SinkError",
    "SinkUnavailable",
    "SuppressionConfig",
    "make_alert_id",
    "new_alert",
    "should_emit",
]
