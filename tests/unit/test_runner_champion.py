"""Champion/challenger through the runner: only the champion alerts, promotion at a checkpoint, metrics endpoint."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from typer.testing import CliRunner

from ingest.records import Record
from ingest.schemas import Label, encode_event
from ingest.simulator import TransactionSimulator
from pipeline import promotion as champion
from pipeline.cli import app
from pipeline.domains import build_processor
from pipeline.observability import RunnerMetrics
from pipeline.runner import Runner, RunnerConfig
from pipeline.settings import load_settings
from sinks.alert import make_alert_id
from sinks.memory_sink import MemorySink
from tests.small_models import SMALL_PARAMS
from tests.unit.test_runner_loop import FakeSource, ListDLQ

TINY = {"label_free_alerts": True, "warmup_events": 64, "threshold_warmup": 64, "threshold_quantile": 0.95, "learn_every": 32, "params": SMALL_PARAMS, "auto_promote": False,
        "threshold_window": 300, "batch_size": 32, "steps_per_update": 1, "label_delay_s": 86_400.0}


def stream(days: int = 6) -> tuple[list[Record], TransactionSimulator]:
    sim = TransactionSimulator(seed=4, n_customers=40, n_terminals=40, days=days, amount_spikes_per_day=5.0)
    records = [Record("tx", 0, i, -1, e.card_id.encode(), encode_event(e)) for i, e in enumerate(sim.events())]
    labels = [Record("labels", 0, i, -1, None, encode_event(Label(event_id=lb.event_id, label=1, ts=lb.ts)))
              for i, lb in enumerate(sim.labels())]
    return records + labels, sim


def make_runner(records: list[Record], state_dir: Path, metrics: RunnerMetrics | None = None) -> tuple[Runner, MemorySink]:
    settings = load_settings(transactions={**TINY, "detector": "dense_autoencoder", "challengers": ["mlp_classifier"]},
                             runner={"device": "cpu"})
    sink = MemorySink()
    runner = Runner(FakeSource(records), sink, ListDLQ(), {"tx": build_processor(settings, "transactions")},
                    labels_topic="labels", metrics=metrics,
                    config=RunnerConfig(max_records=100, poll_timeout_ms=0, commit_interval_s=0.0, checkpoint_interval_s=0.0))
    runner.checkpoint_hooks.append(champion.checkpoint_hook(state_dir))
    return runner, sink


def test_only_the_champion_alerts_and_every_contender_is_rated_on_labels(tmp_path: Path) -> None:
    records, _ = stream()
    runner, sink = make_runner(records, tmp_path)
    runner.run()

    ids = {name: {a.alert_id for a in sink.alerts if a.alert_id == make_alert_id(a.event_id, name, "v1")}
           for name in ("dense_autoencoder", "card_profile")}  # the card profile alerts beside the champion
    assert ids["dense_autoencoder"] and len(ids["dense_autoencoder"]) + len(ids["card_profile"]) == len(sink.alerts)
    rows = {r["detector"]: r for r in champion.read_leaderboard(tmp_path, "transactions")}
    assert rows["dense_autoencoder"]["champion"] and not rows["mlp_classifier"]["champion"]
    assert rows["mlp_classifier"]["labelled"] == rows["dense_autoencoder"]["labelled"] > 0
    assert rows["mlp_classifier"]["positives"] > 0 and rows["mlp_classifier"]["roc_auc"] is not None
    assert rows["dense_autoencoder"]["warmup"] == "64/64" and isinstance(rows["dense_autoencoder"]["warming_up"], bool)


def test_promotion_requested_from_the_cli_applies_at_the_next_checkpoint(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STREAMWARDEN_RUNNER__STATE_DIR", str(tmp_path))
    monkeypatch.setenv("STREAMWARDEN_TRANSACTIONS__CHALLENGERS", '["mlp_classifier"]')
    cli = CliRunner()
    assert cli.invoke(app, ["models", "promote", "isolation"]).exit_code == 2
    result = cli.invoke(app, ["models", "promote", "mlp_classifier"])
    assert result.exit_code == 0, result.output
    assert champion.promotion_file(tmp_path, "transactions").read_text().strip() == "mlp_classifier"

    records, _ = stream(days=3)
    runner, _ = make_runner(records, tmp_path)
    runner.step()
    assert runner.processors["tx"].detector_name == "dense_autoencoder"  # not before a checkpoint
    runner.checkpoint()
    assert runner.processors["tx"].detector_name == "mlp_classifier"
    assert not champion.promotion_file(tmp_path, "transactions").exists()

    shown = cli.invoke(app, ["models", "compare"])
    assert shown.exit_code == 0, shown.output
    assert "mlp_classifier" in shown.output and "True" in shown.output


def test_metrics_endpoint_counts_events_rejects_and_alerts(tmp_path: Path) -> None:
    records, _ = stream(days=3)
    bad = Record("tx", 1, 0, -1, None, b"\xff\xfe not utf-8")
    metrics = RunnerMetrics()
    runner, sink = make_runner([*records, bad], tmp_path, metrics)
    stats = runner.run()
    port = metrics.serve(0, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

    assert f'streamwarden_events_total{{domain="transactions"}} {float(stats.events)}' in body
    assert 'streamwarden_rejects_total{domain="transactions",reason="not_utf8"} 1.0' in body
    assert f'streamwarden_alerts_total{{domain="transactions"}} {float(len(sink.alerts))}' in body
    assert "streamwarden_batch_seconds_count" in body
    assert 'streamwarden_model_loss{detector="mlp_classifier",domain="transactions"}' in body
    assert stats.labels > 0


def test_card_profile_alerts_reach_the_sink_with_their_score_and_reason_while_the_models_warm_up(tmp_path: Path) -> None:
    records, sim = stream(days=6)
    runner, sink = make_runner(records, tmp_path)
    runner.run()
    rule = [a for a in sink.alerts if a.alert_id == make_alert_id(a.event_id, "card_profile", "v1")]
    assert rule and all(a.reason and a.score >= a.threshold == 3.5 for a in rule)
    spikes = set(sim.to_frame().query("scenario == 'amount_spike'").event_id.astype(str))
    assert any("x the card's usual" in a.reason for a in rule if a.event_id in spikes)
    early = [a for a in sink.alerts if a.warming_up]
    assert early and all(a in rule for a in early), "during warm-up only the card profile alerts, and says why"
