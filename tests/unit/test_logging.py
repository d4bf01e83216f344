"""configure_logging: our loggers at the configured level, other libraries quiet below WARNING unless DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pipeline.observability import OWN_LOGGERS, configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root, cluster = logging.getLogger(), logging.getLogger("kafka.cluster")
    saved = root.handlers[:], root.level, cluster.filters[:], {n: logging.getLogger(n).level for n in OWN_LOGGERS}
    yield
    root.handlers[:], cluster.filters[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    for name, level in saved[3].items():
        logging.getLogger(name).setLevel(level)


def test_info_keeps_our_loggers_and_quietens_third_party_ones() -> None:
    configure_logging("INFO", "text")
    assert logging.getLogger("pipeline.runner").isEnabledFor(logging.INFO)
    assert logging.getLogger("ingest.produce").isEnabledFor(logging.INFO)
    for name in ("kafka.conn", "urllib3.connectionpool", "redis", "torch", "matplotlib.font_manager"):
        logger = logging.getLogger(name)
        assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING), name


def test_warning_applies_to_our_loggers_too() -> None:
    configure_logging("WARNING", "text")
    assert not logging.getLogger("pipeline.runner").isEnabledFor(logging.INFO)
    assert logging.getLogger("pipeline.runner").isEnabledFor(logging.WARNING)


def test_debug_turns_everything_up() -> None:
    configure_logging("INFO", "text")
    configure_logging("DEBUG", "text")
    assert logging.getLogger("kafka.conn").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("pipeline.runner").isEnabledFor(logging.DEBUG)


def test_kafka_topic_auto_create_error_is_dropped_unless_debug(capsys: pytest.CaptureFixture[str]) -> None:
    cluster = logging.getLogger("kafka.cluster")
    configure_logging("INFO", "text")
    cluster.error("Topic %s not found in cluster metadata", "transactions")
    cluster.error("Topic %s is not authorized for this client", "secret")
    err = capsys.readouterr().err
    assert "not found" not in err and "secret is not authorized" in err
    configure_logging("DEBUG", "text")
    cluster.error("Topic %s not found in cluster metadata", "transactions")
    assert "Topic transactions not found" in capsys.readouterr().err


def test_a_library_repeating_one_error_is_shown_once_a_minute_and_ours_always() -> None:
    import logging

    from pipeline.observability import RepeatLimit

    now = [0.0]
    limit = RepeatLimit(60.0, clock=lambda: now[0])

    def passes(name: str, msg: str) -> bool:
        return limit.filter(logging.makeLogRecord({"name": name, "msg": msg, "levelno": logging.ERROR}))

    assert passes("kafka.net.connection", "%s: Connection lost: %s")
    assert not passes("kafka.net.connection", "%s: Connection lost: %s")  # the next reconnect failure
    assert passes("kafka.net.manager", "Connection failed: %s")  # another message still shows
    assert passes("pipeline.runner", "alert delivery failing") and passes("pipeline.runner", "alert delivery failing")
    now[0] = 61.0
    assert passes("kafka.net.connection", "%s: Connection lost: %s")
