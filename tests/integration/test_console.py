"""`streamwarden console` and `streamwarden alerts label` on a real Kafka and Redis: a verdict given twice (from
the page, a second console or the command line) puts exactly one label on the labels topic; the live list
streams new alerts; the alert page shows the entity's events from its Kafka partition; start-up failures."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from ingest.produce import produce_events
from ingest.producer import EventProducer
from ingest.schemas import Label, Transaction
from pipeline.console import ConsoleServices, open_console
from pipeline.console_cli import listening_socket, server
from pipeline.settings import Settings, load_settings
from sinks.alert import Alert, new_alert
from sinks.redis_sink import RedisAlertSink, RedisSinkConfig
from tests.integration.test_startup_failures import _one_line_naming, _streamwarden
from tests.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@contextmanager
def running_console(settings: Settings) -> Iterator[tuple[str, ConsoleServices]]:
    """The console app served by uvicorn in a thread on a free loopback port: (base URL, its services)."""
    from pipeline.console.app import create_app

    services = open_console(settings)
    sock = listening_socket("127.0.0.1", 0)
    uvicorn_server = server(create_app(services))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the console did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", services
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=15)
        services.close()


def console_settings(kafka_bootstrap: str, redis_url: str, prefix: str, topics: dict[str, str]) -> Settings:
    return load_settings(kafka={"bootstrap_servers": kafka_bootstrap}, redis={"url": redis_url, "prefix": prefix},
                         topics=topics)


def write_alerts(redis_url: str, prefix: str, *alerts: Alert) -> None:
    with RedisAlertSink(redis_url, config=RedisSinkConfig(prefix=prefix)) as sink:
        sink.add(alerts)
        assert sink.flush() == len(alerts)


def labels_on(kafka_bootstrap: str, topic: str) -> list[Label]:
    from ingest.replay import KafkaRangeSource

    with KafkaRangeSource(kafka_bootstrap, topic) as source:
        records = []
        while not source.exhausted:
            records.extend(source.poll(1000, 500))
    return [msgspec.json.decode(r.value, type=Label) for r in records]


def an_alert(event_id: str, entity: str = "card-1", domain: str = "transactions", **fields: Any) -> Alert:
    alert = new_alert(event_id=event_id, entity=entity, domain=domain, score=9.0, threshold=3.5,
                      detector="card_profile", model_version="v1", event_ts=1.7e9,
                      top_features=[("CARD_AMOUNT_ZSCORE", 42.0)])
    return msgspec.structs.replace(alert, **fields)


@pytest.fixture
def topics(topic_factory: Any) -> dict[str, str]:
    return {"transactions": topic_factory("tx", partitions=3), "sensors": topic_factory("sensors"),
            "labels": topic_factory("labels")}


def test_a_verdict_given_twice_and_from_a_second_console_puts_one_label_on_the_topic(
    kafka_bootstrap: str, redis_url: str, redis_client: Any, redis_prefix: str, topics: dict[str, str],
) -> None:
    settings = console_settings(kafka_bootstrap, redis_url, redis_prefix, topics)
    alert = an_alert("tx-fraud-1")
    write_alerts(redis_url, redis_prefix, alert)
    path = f"/alerts/{alert.alert_id}/verdict"
    with running_console(settings) as (url, services), running_console(settings) as (second_url, second):
        for base in (url, url, second_url):
            response = httpx.post(base + path, data={"label": "1", "next": "/"}, headers={"origin": base},
                                  follow_redirects=False)
            assert (response.status_code, response.headers["location"]) == (303, "/")
        late = httpx.post(second_url + path, data={"label": "0"}, headers={"origin": second_url}, follow_redirects=True)
        assert late.status_code == 200 and 'class="verdict v1"' in late.text  # the first verdict stands
        page = httpx.get(url + "/").text
        metrics = httpx.get(url + "/metrics").text + httpx.get(second_url + "/metrics").text

    assert [(label.event_id, label.label) for label in labels_on(kafka_bootstrap, topics["labels"])] == \
        [("tx-fraud-1", 1)]
    assert redis_client.get(f"{redis_prefix}verdict:{alert.alert_id}") is not None
    assert 'class="verdict v1"' in page
    assert metrics.count('streamwarden_verdicts_total{domain="transactions",verdict="fraud"} 1.0') == 1


def test_alerts_label_from_the_terminal_records_once(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, topics: dict[str, str], tmp_path: Path,
) -> None:
    sensor = an_alert("reading-7", entity="pump-1", domain="sensors", episode="open")
    write_alerts(redis_url, redis_prefix, sensor)
    env = {"STREAMWARDEN_KAFKA": kafka_bootstrap, "STREAMWARDEN_REDIS_URL": redis_url,
           "STREAMWARDEN_REDIS__PREFIX": redis_prefix, "STREAMWARDEN_TOPICS__LABELS": topics["labels"]}

    first = _streamwarden(["alerts", "label", sensor.alert_id, "--fraud"], env, tmp_path)
    again = _streamwarden(["alerts", "label", sensor.alert_id, "--genuine"], env, tmp_path)
    missing = _streamwarden(["alerts", "label", "no-such-alert", "--genuine"], env, tmp_path)

    assert first.returncode == 0 and first.stdout.startswith("recorded: fault"), first.stdout + first.stderr
    assert again.returncode == 0 and again.stdout.startswith("already recorded: fault (by cli)"), again.stdout
    assert missing.returncode == 1 and "no alert no-such-alert" in missing.stderr
    assert [(label.event_id, label.label) for label in labels_on(kafka_bootstrap, topics["labels"])] == \
        [("reading-7", 1)]


def test_the_live_list_streams_a_new_alert_as_it_is_written(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, topics: dict[str, str],
) -> None:
    settings = console_settings(kafka_bootstrap, redis_url, redis_prefix, topics)
    write_alerts(redis_url, redis_prefix, an_alert("old-1"))
    with running_console(settings) as (url, services):
        feed = f"{url}/events?domain=transactions&after={services.history.latest_id()}"
        with httpx.stream("GET", feed, timeout=10) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            write_alerts(redis_url, redis_prefix, an_alert("s-1", entity="pump-9", domain="sensors"),
                         an_alert("<new>", entity="card-<b>"))
            written = time.time()
            event = []
            for line in lines:
                if not line and event:
                    break
                event.append(line)
            arrived = time.time()
    assert event[0].startswith("id: ") and event[1] == "event: alert"
    data = "\n".join(line.removeprefix("data: ") for line in event[2:])
    assert 'data-event="&lt;new&gt;"' in data and "card-&lt;b&gt;" in data and "old-1" not in data
    assert arrived - written < 1.0


def test_the_alert_page_shows_the_entitys_events_from_its_partition(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, topics: dict[str, str],
) -> None:
    settings = console_settings(kafka_bootstrap, redis_url, redis_prefix, topics)
    events = [Transaction(event_id=f"ev-{card}-{i}", ts=1.7e9 + i, card_id=card, terminal_id="t-1", amount=10.0 + i)
              for i in range(5) for card in ("card-a", "card-b", "card-c", "card-d")]
    with EventProducer(kafka_bootstrap) as producer:
        assert produce_events(events, producer, topics["transactions"], "transactions", progress=False).sent == 20
    alert = an_alert("ev-card-c-4", entity="card-c")
    write_alerts(redis_url, redis_prefix, alert, an_alert("ev-card-a-1", entity="card-a"))
    with running_console(settings) as (url, _):
        page = httpx.get(f"{url}/alerts/{alert.alert_id}").text
    shown = {e.event_id for e in events if e.event_id in page}
    assert shown == {f"ev-card-c-{i}" for i in range(5)}, shown
    assert '<tr class="this">' in page and "<svg" in page


def test_an_unreachable_redis_or_kafka_stops_the_console_with_one_line(kafka_bootstrap: str, redis_url: str,
                                                                       tmp_path: Path) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    result = _streamwarden(["console", "--port", "0"], {"STREAMWARDEN_KAFKA": kafka_bootstrap,
                                                         "STREAMWARDEN_REDIS_URL": dead_redis}, tmp_path)
    _one_line_naming(result, "Redis", dead_redis, "redis.url")
    dead_kafka = f"127.0.0.1:{free_port()}"
    result = _streamwarden(["console", "--port", "0"], {"STREAMWARDEN_KAFKA": dead_kafka,
                                                         "STREAMWARDEN_REDIS_URL": redis_url}, tmp_path)
    _one_line_naming(result, "Kafka", dead_kafka, "kafka.bootstrap_servers")


def test_the_console_command_serves_until_stopped(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMWARDEN_")},
           "STREAMWARDEN_KAFKA": kafka_bootstrap, "STREAMWARDEN_REDIS_URL": redis_url,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "console", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/")
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
                time.sleep(0.2)
        assert page.status_code == 200 and "streamwarden" in page.text
    finally:
        process.terminate()
        out, errors = process.communicate(timeout=20)
    assert process.returncode == 0, errors
    assert f"console at http://127.0.0.1:{port}/" in out


def test_find_reads_the_given_stream_entry_else_scans(redis_url: str, redis_prefix: str) -> None:
    from pipeline.console.history import AlertHistory
    from sinks.subscriber import AlertSubscriber

    alerts = [an_alert(f"e-{i}", entity=f"card-{i % 2}") for i in range(7)]
    write_alerts(redis_url, redis_prefix, *alerts)
    with AlertSubscriber(redis_url, prefix=redis_prefix) as subscriber:
        history = AlertHistory(subscriber, scan_limit=3, find_limit=4)
        entries = {item.alert.alert_id: item.id for item in subscriber.read(count=10)}
        oldest = alerts[0].alert_id
        assert history.find(oldest, at=entries[oldest]).alert == alerts[0]  # type: ignore[union-attr]
        assert history.find(oldest) is None and history.find(oldest, at="1-0") is None  # beyond find_limit
        assert history.find(alerts[5].alert_id, at=entries[oldest]).alert == alerts[5]  # type: ignore[union-attr]
        assert [i.alert.event_id for i in history.newest(5, lambda a: a.entity == "card-0")] == ["e-6", "e-4"]
