"""The console in a real headless Chromium (Debian's, driven by Playwright), against a real worker, Kafka and Redis:
an injected fraud appears in the live list within 2 s of being produced; clicking "fraud" puts exactly one label
on the labels topic, the worker counts it, and a reload shows the verdict. Saves the docs' screenshots."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.producer import EventProducer
from ingest.schemas import Transaction, encode_event, event_key
from ingest.simulator import TransactionSimulator
from pipeline.settings import load_settings
from tests.integration.test_console import labels_on, running_console
from tests.integration.test_pipeline_acceptance import committed_offsets, produce

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def screenshot(page: Any, name: str) -> None:
    """A small PNG for the docs: the page's pixels in a 64-colour palette."""
    from io import BytesIO

    from PIL import Image

    IMAGES.mkdir(parents=True, exist_ok=True)
    image = Image.open(BytesIO(page.screenshot())).convert("RGB").quantize(colors=64)
    image.save(IMAGES / name, optimize=True)


def wait_for(check: Any, what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_an_injected_fraud_shows_live_and_a_click_labels_it_once(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, topic_factory: Any, unique_name: str, tmp_path: Path,
) -> None:
    from playwright import sync_api

    from pipeline.services import debian_tool
    from pipeline.worker import build_live_runner

    chromium = debian_tool("chromium", "chromium")  # Debian's; installed here as root, like redis-server

    topics = {"transactions": topic_factory("tx"), "sensors": topic_factory("sensors"), "labels": topic_factory("labels")}
    settings = load_settings(  # the shipped model settings; only the services, names and a quick poll are set
        kafka={"bootstrap_servers": kafka_bootstrap, "group_id": unique_name, "session_timeout_ms": 10_000},
        redis={"url": redis_url, "prefix": redis_prefix}, topics=topics,
        runner={"domain": "transactions", "state_dir": str(tmp_path), "device": "cpu", "poll_timeout_ms": 200},
        observability={"log_level": "WARNING"},
    )
    simulator = TransactionSimulator(seed=1, n_customers=30, n_terminals=30, days=3)
    history = list(simulator.events())
    produce(kafka_bootstrap, topics["transactions"], "transactions", history)
    frame = simulator.to_frame()
    card = frame["card_id"].value_counts().index[0]
    own = frame[frame["card_id"] == card]
    fraud = Transaction(event_id=f"{unique_name}-fraud", ts=history[-1].ts + 60, card_id=card,
                        terminal_id=str(own["terminal_id"].mode()[0]), amount=round(float(own["amount"].median()) * 100, 2))

    runner, close = build_live_runner(settings)
    worker = threading.Thread(target=runner.run, daemon=True)
    worker.start()
    try:
        wait_for(lambda: committed_offsets(kafka_bootstrap, unique_name).get((topics["transactions"], 0)) == len(history),
                 "the worker to score the card histories", 120)
        with running_console(settings) as (url, services), sync_api.sync_playwright() as playwright, \
                EventProducer(kafka_bootstrap) as producer:
            browser = playwright.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(f"{url}/?domain=transactions")
            page.wait_for_selector("#live.on")  # the live list is connected

            sent = time.time()
            producer.send(topics["transactions"], event_key("transactions", fraud), encode_event(fraud))
            producer.flush(10)
            row = f'tr[data-event="{fraud.event_id}"]'
            page.wait_for_selector(row, timeout=10_000)
            shown = time.time()
            (alert,) = services.history.newest(1, lambda a: a.event_id == fraud.event_id)
            print(f"\nproduce -> row shown {shown - sent:.3f} s; alert written -> row shown "
                  f"{shown - alert.written_ts:.3f} s; reason: {alert.alert.reason}")
            assert shown - sent <= 2.0
            screenshot(page, "console.png")

            labels_before = runner.metrics.registry.get_sample_value("streamwarden_labels_total") or 0.0
            page.locator(row).get_by_role("button", name="fraud").click()
            page.wait_for_selector(f"{row} span.verdict.v1")
            labels = wait_for(lambda: labels_on(kafka_bootstrap, topics["labels"]), "the label", 10)
            assert [(x.event_id, x.label) for x in labels] == [(fraud.event_id, 1)]
            wait_for(lambda: (runner.metrics.registry.get_sample_value("streamwarden_labels_total") or 0.0)
                     > labels_before, "the worker to count the label", 15)

            page.reload()
            verdict = page.locator(row).locator("span.verdict")
            assert verdict.inner_text() == "fraud" and page.locator(row).locator("button").count() == 0
            page.locator(f"{row} td.time a").click()
            page.wait_for_selector("svg.plot")
            assert page.locator("#verdict").inner_text() == "fraud"
            assert fraud.event_id in page.locator("table.events").inner_text()  # its Kafka partition's tail
            screenshot(page, "console-alert.png")
            browser.close()
        assert len(labels_on(kafka_bootstrap, topics["labels"])) == 1
    finally:
        runner.request_stop()
        worker.join(timeout=60)
        close()
