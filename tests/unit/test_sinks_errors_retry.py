"""Error types, retry policy, connection config, and the Redis sink's behaviour when Redis is unreachable."""

import socket
from datetime import UTC, datetime

import pytest

from sinks.alert import Alert
from sinks.connection import RedisConfig, make_client, redact_url
from sinks.errors import SinkError, SinkUnavailable
from sinks.redis_sink import RedisAlertSink, RedisSinkConfig
from sinks.retry import RetryPolicy
from sinks.subscriber import stream_start_id
from streamwarden.errors import StreamwardenError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alert(i: int) -> Alert:
    return Alert(f"id-{i}", f"e{i}", f"c{i}", "transactions", 1.0, 0.5, "v1", float(i), float(i))


def test_error_hierarchy_and_retriable_flags() -> None:
    assert issubclass(SinkUnavailable, SinkError) and issubclass(SinkError, StreamwardenError)
    assert SinkUnavailable("x").retriable and not SinkError("x").retriable


def test_retry_policy_backs_off_exponentially_then_gives_up() -> None:
    sleeps: list[float] = []
    calls = 0

    def always_down() -> int:
        nonlocal calls
        calls += 1
        raise SinkUnavailable("down")

    with pytest.raises(SinkUnavailable):
        RetryPolicy(max_attempts=5, base_delay=0.1, max_delay=0.3).call(always_down, sleeps.append)
    assert calls == 5 and sleeps == [0.1, 0.2, 0.3, 0.3]


def test_retry_policy_returns_once_it_succeeds_and_never_retries_fatal_errors() -> None:
    outcomes: list[Exception | int] = [SinkUnavailable("a"), SinkUnavailable("b"), 7]

    def flaky() -> int:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    assert RetryPolicy(max_attempts=3, base_delay=0.0).call(flaky, lambda _: None) == 7
    fatal_calls = []

    def fatal() -> None:
        fatal_calls.append(1)
        raise SinkError("bad script")

    with pytest.raises(SinkError):
        RetryPolicy(max_attempts=4).call(fatal, lambda _: None)
    assert len(fatal_calls) == 1


def test_password_never_shows_in_repr_or_url() -> None:
    cfg = RedisConfig(url="rediss://alerts:hunter2@cache.example:6380/3", password="override-secret")
    text = repr(cfg) + str(cfg) + cfg.safe_url
    assert "hunter2" not in text and "override-secret" not in text
    assert "rediss://alerts:***@cache.example:6380/3" in text
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"


def test_client_from_url_carries_credentials_db_and_timeouts() -> None:
    cfg = RedisConfig(url="redis://alice:pw@127.0.0.1:6399/4", socket_timeout_s=1.5, connect_timeout_s=0.5)
    kwargs = make_client(cfg).connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"], kwargs["port"]) == ("alice", "pw", 4, 6399)
    assert kwargs["socket_timeout"] == 1.5 and kwargs["socket_connect_timeout"] == 0.5
    assert kwargs["health_check_interval"] == cfg.health_check_interval_s


def test_tls_url_uses_ssl_connections() -> None:
    pool = make_client("rediss://h.example:6380/0").connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"


def test_bad_url_scheme_is_rejected_without_leaking_the_password() -> None:
    with pytest.raises(ValueError) as info:
        RedisConfig(url="http://u:topsecret@h/0")
    assert "topsecret" not in str(info.value)


def test_flush_while_redis_is_down_raises_retriable_and_keeps_every_alert() -> None:
    sleeps: list[float] = []
    sink = RedisAlertSink(
        f"redis://127.0.0.1:{closed_port()}/0",
        connection=RedisConfig(connect_timeout_s=0.2, socket_timeout_s=0.2, retries=0),
        sleep=sleeps.append,
        batch_size=2,
    )
    sink.add(alert(i) for i in range(5))
    with pytest.raises(SinkUnavailable) as info:
        sink.flush()
    assert info.value.retriable and sink.pending == 5
    with pytest.raises(SinkUnavailable):
        sink.flush_with_retry(RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=1.0))
    assert sleeps == [0.05, 0.1]
    assert sink.pending == 5 and sink.stats["flush_errors"] == 4 and sink.stats["written"] == 0
    sink.close()


def test_sink_config_rejects_unknown_and_bad_settings() -> None:
    with pytest.raises(TypeError):
        RedisAlertSink("redis://127.0.0.1:1/0", no_such_option=1)
    with pytest.raises(ValueError):
        RedisSinkConfig(batch_size=0)
    with pytest.raises(ValueError):
        RedisSinkConfig(suppression_factor=0.5)


def test_key_layout_follows_the_prefix() -> None:
    cfg = RedisSinkConfig(prefix="t1:")
    assert cfg.stream_key == "t1:alerts" and cfg.channel("sensors") == "t1:alerts:sensors"
    assert (
        cfg.dedup_key("abc") == "t1:dedup:abc"
        and cfg.suppression_key("sensors", "dev-1") == "t1:supp:sensors:dev-1"
    )
    default = RedisSinkConfig()
    assert (
        default.stream_key == "streamwarden:alerts"
        and default.channel("transactions") == "streamwarden:alerts:transactions"
    )


def test_since_accepts_ids_times_and_relative_ages() -> None:
    assert stream_start_id("$") == "$" and stream_start_id("0") == "0"
    assert stream_start_id("1700000000000-3") == "1700000000000-3"
    assert stream_start_id(1700000000.0) == "1699999999999-18446744073709551615"
    assert stream_start_id("1700000000") == stream_start_id(1700000000.0)
    iso = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert (
        stream_start_id("2023-11-14T22:13:20+00:00")
        == stream_start_id(iso)
        == stream_start_id(iso.timestamp())
    )
    assert stream_start_id("2h", now=10_000.0) == stream_start_id(10_000.0 - 7200)
    with pytest.raises(ValueError, match="since"):
        stream_start_id("yesterday-ish")


def test_sink_repr_shows_where_but_not_the_password() -> None:
    sink = RedisAlertSink("redis://bob:s3cr3t@127.0.0.1:6399/2", prefix="x:")
    text = repr(sink)
    assert "127.0.0.1:6399/2" in text and "x:alerts" in text and "s3cr3t" not in text
    sink.close()


def test_the_start_up_probe_retries_an_unreachable_redis_but_not_a_refusal(monkeypatch) -> None:
    import redis

    from sinks.connection import RedisConfig, probe
    from sinks.errors import SinkError, SinkUnavailable

    calls = []

    def refuse(self: object) -> None:
        calls.append(1)
        raise redis.exceptions.NoPermissionError("NOPERM this user has no permissions to run the 'ping' command")

    monkeypatch.setattr(redis.Redis, "ping", refuse)
    with pytest.raises(SinkError, match="refused PING") as refused:
        probe(RedisConfig(), timeout_s=5.0)
    assert not isinstance(refused.value, SinkUnavailable) and len(calls) == 1  # no retries

    def down(self: object) -> None:
        calls.append(1)
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(redis.Redis, "ping", down)
    with pytest.raises(SinkUnavailable, match="within 0.5 s"):
        probe(RedisConfig(), timeout_s=0.5)
    assert len(calls) > 2  # retried until the deadline
