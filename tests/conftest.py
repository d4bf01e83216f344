"""Session-wide real Kafka and Redis for the tests.

Order of preference, per service:
1. an address from the environment (`STREAMWARDEN_KAFKA`, `STREAMWARDEN_REDIS_URL`);
2. testcontainers, when a Docker engine answers;
3. the project's own local services (`pipeline.services`), started here if they are not
   running and stopped at the end if this session started them.
Each test gets its own topic names and Redis key prefix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-not-found]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def local_services() -> Iterator[object]:
    from pipeline.services import LocalServices

    services = LocalServices.from_env()
    started = services.ensure_up()
    yield services
    if started and not os.environ.get("STREAMWARDEN_KEEP_SERVICES"):
        services.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    env = os.environ.get("STREAMWARDEN_KAFKA")
    if env:
        yield env
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    services = request.getfixturevalue("local_services")
    yield services.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    env = os.environ.get("STREAMWARDEN_REDIS_URL")
    if env:
        yield env
        return
    if _docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer() as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    services = request.getfixturevalue("local_services")
    yield services.redis_url


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A short name unique to this test run, usable as a topic name or key prefix."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"t-{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic_factory(kafka_bootstrap: str, unique_name: str) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics: `topic_factory("transactions", partitions=3)` -> name."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests-admin")
    created: list[str] = []

    def make(suffix: str = "events", partitions: int = 1) -> str:
        name = f"{unique_name}-{suffix}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        created.append(name)
        return name

    yield make
    if created:
        try:
            admin.delete_topics(created)
        except Exception:
            pass
    admin.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: object, unique_name: str) -> Iterator[str]:
    """A key prefix for this test; its keys are deleted afterwards."""
    prefix = f"{unique_name}:"
    yield prefix
    for key in redis_client.scan_iter(match=f"{prefix}*"):  # type: ignore[attr-defined]
        redis_client.delete(key)  # type: ignore[attr-defined]
