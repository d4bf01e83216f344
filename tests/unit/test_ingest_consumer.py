"""BatchConsumer against a stand-in KafkaConsumer: flattening, commit offsets, config passthrough, callbacks."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest

from ingest import consumer as consumer_module
from ingest.consumer import BatchConsumer
from ingest.errors import BrokerUnavailable, CommitFailed
from ingest.records import Record

Msg = namedtuple("Msg", "topic partition offset timestamp key value")


class StandIn:
    instances: list[StandIn] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.committed_args: list[Any] = []
        self.batches: dict[Any, list[Msg]] = {}
        self.listener: Any = None
        self.commit_error: Exception | None = None
        StandIn.instances.append(self)

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.topics, self.listener = topics, listener

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Msg]]:
        return self.batches

    def commit(self, offsets: Any = None) -> None:
        if self.commit_error:
            raise self.commit_error
        self.committed_args.append(offsets)

    def close(self, autocommit: bool = True) -> None:
        self.closed_with = autocommit


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> type[StandIn]:
    import kafka

    StandIn.instances = []
    monkeypatch.setattr(kafka, "KafkaConsumer", StandIn)
    return StandIn


def test_config_defaults_and_passthrough(standin: type[StandIn]) -> None:
    BatchConsumer("b:9092", "tx", "g1", config={"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"})
    cfg = standin.instances[0].config
    assert (
        cfg["enable_auto_commit"] is False
        and cfg["group_id"] == "g1"
        and cfg["auto_offset_reset"] == "earliest"
    )
    assert cfg["security_protocol"] == "SASL_SSL" and cfg["sasl_mechanism"] == "PLAIN"
    assert standin.instances[0].topics == ["tx"]


def test_poll_flattens_and_maps_tombstones(standin: type[StandIn]) -> None:
    from kafka.structs import TopicPartition

    c = BatchConsumer("b", ["tx"], "g")
    standin.instances[0].batches = {
        TopicPartition("tx", 0): [Msg("tx", 0, 5, 10, b"k", b"v"), Msg("tx", 0, 6, 11, None, None)],
        TopicPartition("tx", 1): [Msg("tx", 1, 0, 12, b"k2", b"w")],
    }
    assert c.poll(10, 0) == [
        Record("tx", 0, 5, 10, b"k", b"v"),
        Record("tx", 0, 6, 11, None, b""),
        Record("tx", 1, 0, 12, b"k2", b"w"),
    ]


def test_commit_uses_kafka_python_3_offset_and_metadata(standin: type[StandIn]) -> None:
    from kafka.structs import OffsetAndMetadata, TopicPartition

    c = BatchConsumer("b", ["tx"], "g")
    c.commit({("tx", 0): 7, ("tx", 2): 1})
    (args,) = standin.instances[0].committed_args
    assert args == {
        TopicPartition("tx", 0): OffsetAndMetadata(7, "", -1),
        TopicPartition("tx", 2): OffsetAndMetadata(1, "", -1),
    }
    c.commit({})  # nothing to commit: no call
    assert len(standin.instances[0].committed_args) == 1


def test_commit_errors_are_translated(standin: type[StandIn]) -> None:
    from kafka.errors import CommitFailedError, KafkaTimeoutError

    c = BatchConsumer("b", ["tx"], "g")
    standin.instances[0].commit_error = CommitFailedError("rebalanced")
    with pytest.raises(CommitFailed):
        c.commit({("tx", 0): 1})
    standin.instances[0].commit_error = KafkaTimeoutError("slow")
    with pytest.raises(BrokerUnavailable) as info:
        c.commit({("tx", 0): 1})
    assert info.value.retriable


def test_close_never_autocommits(standin: type[StandIn]) -> None:
    c = BatchConsumer("b", ["tx"], "g")
    c.close()
    c.close()
    assert standin.instances[0].closed_with is False


def test_listener_runs_callbacks_with_sorted_partitions(standin: type[StandIn]) -> None:
    import asyncio

    from kafka.structs import TopicPartition

    seen: list[tuple[str, list[Any]]] = []
    c = BatchConsumer(
        "b",
        ["tx"],
        "g",
        on_assign=lambda p: seen.append(("assign", p)),
        on_revoke=lambda p: seen.append(("revoke", p)),
    )
    listener = standin.instances[0].listener
    # the stand-in has no IO loop, so callbacks run inline
    asyncio.run(listener.on_partitions_assigned({TopicPartition("tx", 1), TopicPartition("tx", 0)}))
    asyncio.run(listener.on_partitions_revoked({TopicPartition("tx", 1)}))
    assert seen == [("assign", [("tx", 0), ("tx", 1)]), ("revoke", [("tx", 1)])]
    assert c.rebalances == 1


def test_unreachable_broker_is_broker_unavailable() -> None:
    with pytest.raises(BrokerUnavailable):
        consumer_module.create_topics("127.0.0.1:1", {"x": 1}, config={"bootstrap_timeout_ms": 500})


def test_kafka_python_settings_translate_to_librdkafka_and_unknown_ones_are_refused() -> None:
    from ingest.confluent_consumer import librdkafka_config

    config = librdkafka_config({
        "bootstrap_servers": ["a:9092", "b:9092"], "group_id": "g", "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc", "sasl_plain_password": "pw",
        "ssl_cafile": "/ca.pem", "ssl_check_hostname": False, "session_timeout_ms": 10_000,
        "bootstrap_timeout_ms": 8_000, "fetch_max_wait_ms": 20,
    })
    assert config == {
        "bootstrap.servers": "a:9092,b:9092", "group.id": "g", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc", "sasl.password": "pw",
        "ssl.ca.location": "/ca.pem", "ssl.endpoint.identification.algorithm": "none", "session.timeout.ms": 10_000,
        "fetch.wait.max.ms": 20,
    }
    with pytest.raises(ValueError, match="check_crcs"):
        librdkafka_config({"check_crcs": True})


def test_the_fast_client_without_its_package_is_a_config_error_naming_the_extra(monkeypatch) -> None:
    import sys

    from pipeline.errors import ConfigError
    from pipeline.settings import load_settings
    from pipeline.worker import consumer_class

    monkeypatch.setitem(sys.modules, "confluent_kafka", None)
    with pytest.raises(ConfigError, match=r"streamwarden\[fast\]"):
        consumer_class(load_settings(kafka={"client": "confluent"}))
