"""Security settings pass straight through to real services: Kafka SASL_SSL (SCRAM) and SSL, Redis ACL users."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis

from ingest.consumer import BatchConsumer
from ingest.errors import BrokerUnavailable
from ingest.producer import EventProducer
from pipeline.services import LocalServices, debian_tool
from pipeline.settings import Settings
from sinks.alert import new_alert
from sinks.errors import SinkError
from sinks.redis_sink import RedisAlertSink
from tests.ports import free_port
from tests.reliability.harness import stop_kafka

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def _free_port_block(size: int) -> int:
    """A base port with `size` consecutive free ports (the secure broker uses base..base+3)."""
    for _ in range(50):
        base = free_port()
        if base + size < 65535 and all(_port_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no block of free ports found")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def secure_kafka() -> Iterator[LocalServices]:
    base = _free_port_block(4)
    services = replace(LocalServices.from_env(), kafka_port=base, controller_port=base + 1, secure=True)
    services.start_kafka()
    yield services
    stop_kafka(services)  # only this broker: `down()` would also stop the test session's Redis


def _settings(services: LocalServices, protocol: str, password: str | None = None) -> Settings:
    security = services.client_security(protocol)
    if password is not None:
        security["sasl_plain_password"] = password
    bootstrap = services.sasl_ssl_bootstrap if protocol == "SASL_SSL" else services.ssl_bootstrap
    return Settings(kafka={"bootstrap_servers": bootstrap, **security})


def _round_trip(settings: Settings, topic: str, n: int) -> list[bytes]:
    client = settings.kafka.client_config()
    with EventProducer(client["bootstrap_servers"], config=client) as producer:
        for i in range(n):
            producer.send(topic, f"k{i}".encode(), f'{{"i": {i}}}'.encode())
        producer.flush()
    consumer = BatchConsumer(client["bootstrap_servers"], topic, f"{topic}-group", config=client)
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < n and time.monotonic() < deadline:
            got.extend(r.value for r in consumer.poll(max_records=500, timeout_ms=500))
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SSL"])
def test_kafka_security_settings_pass_through_to_a_secured_broker(secure_kafka, protocol, unique_name):
    settings = _settings(secure_kafka, protocol)
    got = _round_trip(settings, f"{unique_name}-secure", 50)
    assert sorted(got) == sorted(f'{{"i": {i}}}'.encode() for i in range(50))


def test_wrong_scram_password_is_refused_and_never_shown(secure_kafka):
    settings = _settings(secure_kafka, "SASL_SSL", password="not-the-password")
    client = dict(settings.kafka.client_config(), bootstrap_timeout_ms=5000)
    with pytest.raises(BrokerUnavailable):
        EventProducer(client["bootstrap_servers"], config=client)
    shown = str(settings) + repr(settings) + str(settings.kafka.model_dump())
    assert "not-the-password" not in shown


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory) -> Iterator[tuple[int, str]]:
    binary = shutil.which("redis-server") or debian_tool("redis-server", "redis-server")
    port, password = free_port(), "alerts-s3cret"
    workdir = tmp_path_factory.mktemp("acl-redis")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir), "--save", "",
         "--user", "default", "off",
         "--user", "alerts", "on", f">{password}", "~*", "&*", "+@all"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while _port_free(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port, password
    proc.terminate()
    proc.wait(timeout=10)


def test_redis_acl_user_from_the_url_delivers_alerts(acl_redis):
    port, password = acl_redis
    url = f"redis://alerts:{password}@127.0.0.1:{port}/0"
    settings = Settings(redis={"url": url})
    assert password not in settings.redis.masked_url()
    assert password not in str(settings)
    alert = new_alert(
        event_id="e1", detector="dense_autoencoder", model_version="v1", entity="card-1",
        domain="transactions", score=9.0, threshold=1.0, event_ts=1.7e9, top_features=[("amount", 8.0)],
    )  # fmt: skip
    with RedisAlertSink(settings.redis.url.get_secret_value(), prefix="acl:") as sink:
        sink.add([alert])
        assert sink.flush() == 1
    client = redis.Redis.from_url(url)
    assert client.xlen("acl:alerts") == 1
    client.close()


def test_redis_wrong_password_is_a_clear_non_retriable_error(acl_redis):
    port, _ = acl_redis
    alert = new_alert(
        event_id="e2", detector="d", model_version="v1", entity="card-2", domain="transactions",
        score=5.0, threshold=1.0, event_ts=1.7e9, top_features=[],
    )  # fmt: skip
    with RedisAlertSink(f"redis://alerts:wrong@127.0.0.1:{port}/0", prefix="acl:") as sink:
        sink.add([alert])
        with pytest.raises(SinkError) as info:
            sink.flush()
        assert info.value.retriable is False
        assert sink.pending == 1  # kept, not dropped
