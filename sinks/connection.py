"""Redis clients made from a URL (redis://, rediss://, user:password@, /db), with timeouts and health checks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from sinks.errors import SinkError, SinkUnavailable

DEFAULT_URL = "redis://127.0.0.1:6379/0"

# Errors that mean "Redis is not reachable right now"; everything else from Redis is a real failure.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError, MaxConnectionsError
    redis.exceptions.TimeoutError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
)


def redis_call(doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, with Redis errors as SinkUnavailable ("Redis unavailable <doing>: ...") when Redis
    is unreachable, else SinkError."""
    try:
        return fn(*args, **kwargs)
    except UNAVAILABLE_ERRORS as exc:
        raise SinkUnavailable(f"Redis unavailable {doing}: {exc}") from exc
    except redis.RedisError as exc:
        raise SinkError(str(exc)) from exc


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***.

    >>> redact_url("rediss://alerts:s3cret@cache.example:6380/2")
    'rediss://alerts:***@cache.example:6380/2'
    >>> redact_url("redis://127.0.0.1:6379/0")
    'redis://127.0.0.1:6379/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class RedisConfig:
    """How to reach Redis. `password` overrides one in the URL; neither ever shows in repr."""

    url: str = DEFAULT_URL
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    socket_timeout_s: float = 5.0
    connect_timeout_s: float = 2.0
    health_check_interval_s: int = 10
    retries: int = (
        1  # client-level retries of one command on a broken connection; the sink adds its own policy
    )
    client_name: str | None = "streamwarden"

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"Redis URL must start with redis://, rediss:// or unix://, got {redact_url(self.url)!r}"
            )
        if self.socket_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("Redis timeouts must be > 0")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")

    def __repr__(self) -> str:
        secret = "***" if self.password else None
        return (
            f"RedisConfig(url={redact_url(self.url)!r}, username={self.username!r}, password={secret!r}, "
            f"socket_timeout_s={self.socket_timeout_s}, connect_timeout_s={self.connect_timeout_s}, "
            f"health_check_interval_s={self.health_check_interval_s}, retries={self.retries})"
        )

    __str__ = __repr__

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)


def make_client(config: RedisConfig | str | None = None) -> redis.Redis:
    """A redis.Redis for `config` (a RedisConfig or a URL). Responses stay bytes."""
    if config is None:
        config = RedisConfig()
    elif isinstance(config, str):
        config = RedisConfig(url=config)
    kwargs: dict[str, object] = {
        "socket_timeout": config.socket_timeout_s,
        "socket_connect_timeout": config.connect_timeout_s,
        "health_check_interval": config.health_check_interval_s,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.01), config.retries),
        "client_name": config.client_name,
    }
    if config.username is not None:
        kwargs["username"] = config.username
    if config.password is not None:
        kwargs["password"] = config.password
    return redis.Redis.from_url(config.url, **kwargs)


def resolve_client(
    url: str | None, connection: RedisConfig | None, client: redis.Redis | None
) -> tuple[redis.Redis, bool]:
    """(client, owned): the given client (not owned), else a new one from `connection` with `url` applied."""
    if client is not None:
        return client, False
    if connection is None:
        connection = RedisConfig(url=url) if url else RedisConfig()
    elif url:
        connection = replace(connection, url=url)
    return make_client(connection), True


def probe(config: RedisConfig, timeout_s: float) -> None:
    """PING Redis until it answers or `timeout_s` passes (UNAVAILABLE_ERRORS, e.g. a server still loading its
    data, are retried). Raises SinkUnavailable when nothing answers in time, SinkError at once when Redis
    refuses the credentials or the command."""
    config = replace(config, connect_timeout_s=min(config.connect_timeout_s, timeout_s),
                     socket_timeout_s=min(config.socket_timeout_s, timeout_s), retries=0)
    client = make_client(config)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except redis.AuthenticationError as exc:  # a ConnectionError too: caught first
                raise SinkError(f"Redis at {config.safe_url} refused the credentials: {exc}") from exc
            except UNAVAILABLE_ERRORS as exc:
                if time.monotonic() + 0.2 >= deadline:
                    raise SinkUnavailable(
                        f"no Redis answers at {config.safe_url} within {timeout_s:g} s ({exc})") from exc
                time.sleep(0.2)
            except redis.RedisError as exc:
                raise SinkError(f"Redis at {config.safe_url} refused PING: {exc}") from exc
    finally:
        client.close()
