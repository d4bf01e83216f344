"""The records domain live: ready-made feature vectors on Kafka become per-row alerts in Redis, and a backtest of the
same topic gives the same alerts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.simulator import FeatureVectorSimulator
from pipeline.backtest import run_backtest
from pipeline.settings import load_settings
from tests.integration.test_pipeline_acceptance import alerts_in_redis, produce, run_in_process, sections
from tests.unit.test_records_domain import FAST

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def test_feature_vectors_on_kafka_alert_row_by_row_live_and_in_backtest(
    kafka_bootstrap: str, redis_url: str, redis_client: Any, redis_prefix: str, topic_factory: Any, unique_name: str,
    tmp_path: Path,
) -> None:
    topics = {"transactions": topic_factory("tx", partitions=1), "sensors": topic_factory("sensors", partitions=1),
              "records": topic_factory("records", partitions=2), "labels": topic_factory("labels", partitions=1)}
    sim = FeatureVectorSimulator(seed=4, n_rows=3_000, fraud_rate=0.01, start="2025-01-01")
    produce(kafka_bootstrap, topics["records"], "records", list(sim.events()))
    config = sections(kafka_bootstrap, redis_url, redis_prefix, topics, unique_name, tmp_path, "records")
    config["records"] = {**FAST, "challengers": []}
    settings = load_settings(**config)

    stats = run_in_process(settings)
    live = alerts_in_redis(redis_client, redis_prefix)
    replay = run_backtest(settings, f"kafka://{topics['records']}?from=0", domain="records")

    assert stats.events == len(sim)
    assert live and {a.domain for a in live} == {"records"} and {a.entity for a in live} == {"all"}
    assert len({a.event_id for a in live}) == len(live), "one alert per row"
    assert all(a.episode is None and a.top_features for a in live)
    assert {a.alert_id for a in replay.alerts} == {a.alert_id for a in live}
