"""A plug-in detector (docs/examples/my_detectors.py) runs live on Kafka and in a backtest, as champion and as
challenger, with no change to the package: the live alerts and the replay agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.simulator import TransactionSimulator
from pipeline.backtest import run_backtest
from pipeline.settings import load_settings
from tests.integration.test_pipeline_acceptance import alerts_in_redis, produce, run_in_process, sections

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "my_detectors.py"


def test_a_plugin_champion_and_challenger_run_live_and_in_backtest(
    kafka_bootstrap: str, redis_url: str, redis_client: Any, redis_prefix: str, topic_factory: Any, unique_name: str,
    tmp_path: Path,
) -> None:
    champion, challenger = f"{EXAMPLES}:TinyAutoencoder", f"{EXAMPLES}:OneClassSvm"
    topics = {"transactions": topic_factory("tx", partitions=1), "sensors": topic_factory("sensors", partitions=1),
              "labels": topic_factory("labels", partitions=1)}
    sim = TransactionSimulator(seed=8, n_customers=40, n_terminals=40, days=4, amount_spikes_per_day=6.0)
    produce(kafka_bootstrap, topics["transactions"], "transactions", list(sim.events()))
    config = sections(kafka_bootstrap, redis_url, redis_prefix, topics, unique_name, tmp_path, "transactions")
    config["transactions"] = {**config["transactions"], "detector": champion, "challengers": [challenger],
                              "label_free_alerts": True, "profile_threshold": 0.0}
    settings = load_settings(**config)

    stats = run_in_process(settings)
    live = {a.alert_id: a for a in alerts_in_redis(redis_client, redis_prefix)}
    replay = run_backtest(settings, f"kafka://{topics['transactions']}?from=0", domain="transactions",
                          max_records=101, report_dir=tmp_path / "report")

    assert stats.events == len(sim) and live, "the plug-in champion raised no alert live"
    assert {a.alert_id for a in replay.alerts} == set(live)
    assert all(replay_alert.score == live[replay_alert.alert_id].score for replay_alert in replay.alerts)
    assert all(a.top_features for a in live.values())
    assert {m["detector"] for m in replay.metrics} >= {champion, challenger}
    assert list((tmp_path).glob("*.ckpt")), "the worker wrote no checkpoint holding the plug-in's state"
