"""Simulators: deterministic, labelled, fast, and their files replay into the same events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.decode import decode_batch
from ingest.replay import FileSource
from ingest.simulator import SENSOR_SCENARIOS, TX_SCENARIOS, SensorSimulator, TransactionSimulator


def small_tx(seed: int = 7, **kw: object) -> TransactionSimulator:
    params = dict(n_customers=300, n_terminals=200, days=14)
    params.update(kw)
    return TransactionSimulator(seed=seed, **params)  # type: ignore[arg-type]


def replay(path: Path, domain: str) -> list:
    source = FileSource(path, domain)
    events = []
    while not source.exhausted:
        result = decode_batch(source.poll(2000, 0), domain)
        assert result.rejects == []
        events.extend(result.events)
    return events


def test_transactions_are_deterministic_per_seed_and_run() -> None:
    a, b, c = list(small_tx(1, run="r").events()), list(small_tx(1, run="r").events()), list(small_tx(2, run="r").events())
    assert a == b
    assert a != c


@pytest.mark.parametrize("make", [lambda **kw: small_tx(3, days=2, **kw),
                                  lambda **kw: SensorSimulator(seed=3, n_devices=2, n_steps=300, **kw)])
def test_event_ids_carry_seed_and_run_new_per_simulator_unless_given(make: Any) -> None:
    first, second = make().event_ids(), make().event_ids()
    assert set(first).isdisjoint(second)  # a second run's alerts are not taken for the first's
    assert make(run="fixed").event_ids() == make(run="fixed").event_ids()
    prefix = "tx" if first[0].startswith("tx") else "sr"
    assert make(run="fixed").event_ids()[12] == f"{prefix}-s3-fixed-000000012"
    sim = make()
    labels = sim.labels()
    events = {e.event_id: e.ts for e in sim.events()}
    assert labels and all(lab.event_id in events for lab in labels)
    assert set(sim.to_frame().event_id) == set(events)


def test_transactions_are_in_time_order_with_wire_fields() -> None:
    sim = small_tx()
    events = list(sim.events())
    assert len(events) == len(sim) > 1000
    assert all(x.ts <= y.ts for x, y in zip(events, events[1:], strict=False))
    assert len({e.event_id for e in events}) == len(events)
    e = events[0]
    assert e.card_id.startswith("card-") and e.terminal_id.startswith("term-") and e.amount > 0
    assert e.channel in ("pos", "ecom", "atm") and e.merchant_category and e.currency == "EUR"


def test_every_fraud_pattern_appears_and_has_its_signature() -> None:
    sim = small_tx(
        days=30,
        compromised_terminals_per_day=1,
        card_testing_per_day=2,
        amount_spikes_per_day=3,
        takeovers_per_day=1,
    )
    frame = sim.to_frame()
    counts = frame["scenario"].value_counts()
    for name in TX_SCENARIOS:
        assert counts.get(name, 0) > 0, name
    assert ((frame["label"] == 1) == (frame["scenario"] != "genuine")).all()
    genuine = frame[frame.scenario == "genuine"]
    testing = frame[frame.scenario == "card_testing"]
    assert testing.amount.max() <= 5.0 < genuine.amount.median()
    assert (testing.channel == "ecom").all()
    spikes = frame[frame.scenario == "amount_spike"]
    card_mean = genuine.groupby("card_id").amount.mean()
    assert (
        spikes.amount.to_numpy() > 2 * card_mean.reindex(spikes.card_id).fillna(0).to_numpy()
    ).mean() > 0.9
    ato = frame[frame.scenario == "account_takeover"]
    assert ato.amount.median() > 2 * genuine.amount.median()
    # a compromised terminal's transactions are all fraud while it is compromised
    compromised = frame[frame.scenario == "compromised_terminal"]
    assert compromised.card_id.nunique() > 1


def test_transaction_labels_arrive_after_the_delay() -> None:
    sim = small_tx(label_delay_s=3600.0)
    frame = sim.to_frame()
    labels = sim.labels()
    assert len(labels) == int(frame.label.sum()) > 0 and all(lab.label == 1 for lab in labels)
    ts = dict(zip(frame.event_id, frame.ts, strict=True))
    assert all(lab.ts == pytest.approx(ts[lab.event_id] + 3600.0) for lab in labels)
    assert all(x.ts <= y.ts for x, y in zip(labels, labels[1:], strict=False))
    assert len(sim.labels(include_genuine=True)) == len(sim)


def test_hundred_thousand_transactions_at_default_density() -> None:
    # about 2 transactions per customer-day (generation speed is measured in bench/bench_decode.py)
    sim = TransactionSimulator(seed=0, n_customers=1700, n_terminals=2000, days=30)
    assert 90_000 <= len(sim) <= 115_000
    assert sum(1 for _ in sim.events()) == len(sim)


def test_sensor_simulator_is_deterministic_and_labelled() -> None:
    sim = SensorSimulator(seed=3, n_devices=2, channels=5, n_steps=8000, run="r")
    again = SensorSimulator(seed=3, n_devices=2, channels=5, n_steps=8000, run="r")
    events = list(sim.events())
    assert events == list(again.events())
    assert len(events) == 16000 and {e.device_id for e in events} == {"dev-000", "dev-001"}
    assert all(x.ts <= y.ts for x, y in zip(events, events[1:], strict=False))
    assert len(events[0].readings) == 5
    frame = sim.to_frame()
    for name in SENSOR_SCENARIOS:
        assert (frame.scenario == name).any(), name
    assert ((frame.label == 1) == (frame.scenario != "normal")).all()


def test_sensor_anomalies_have_their_signatures() -> None:
    sim = SensorSimulator(seed=5, n_devices=1, channels=4, n_steps=20000, spikes_per_1000=1.0)
    frame = sim.to_frame()
    values = frame[sim.channel_names].to_numpy()
    normal = frame.scenario.to_numpy() == "normal"
    z = np.abs(values - values[normal].mean(0)) / values[normal].std(0)
    spikes = frame.scenario.to_numpy() == "spike"
    assert np.median(z[spikes].max(1)) > np.quantile(z[normal].max(1), 0.99)
    stuck = frame.scenario.to_numpy() == "stuck"
    # a stuck channel repeats its value: some channel has zero step-to-step change
    diffs = np.abs(np.diff(values, axis=0))[stuck[1:] & stuck[:-1]]
    assert (diffs.min(1) == 0).mean() > 0.8
    # collective anomalies break the correlation between channels
    collective = frame.scenario.to_numpy() == "collective"
    c_normal = np.corrcoef(values[normal].T)
    c_coll = np.corrcoef(values[collective].T)
    assert np.abs(c_normal - c_coll).max() > 0.5


def test_sensor_labels_with_delay() -> None:
    sim = SensorSimulator(seed=1, n_devices=1, n_steps=2000, label_delay_s=30.0)
    labels = sim.labels()
    assert labels and all(lab.label == 1 for lab in labels)
    first = next(e for e in sim.events() if e.event_id == labels[0].event_id)
    assert labels[0].ts == pytest.approx(first.ts + 30.0)


@pytest.mark.parametrize("suffix", ["csv", "parquet", "csv.gz"])
def test_transaction_files_load_with_filesource_as_the_same_events(tmp_path: Path, suffix: str) -> None:
    sim = small_tx()
    path = sim.write(tmp_path / f"tx.{suffix}")
    assert replay(path, "transactions") == list(sim.events())
    source = FileSource(path, "transactions")
    assert source.labels_by_event_id == dict(
        zip(sim.to_frame().event_id, sim.is_fraud.astype(int).tolist(), strict=True)
    )


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_sensor_files_load_with_filesource_as_the_same_events(tmp_path: Path, suffix: str) -> None:
    sim = SensorSimulator(seed=4, n_devices=3, channels=["a", "b", "c"], n_steps=1000)
    path = sim.write(tmp_path / f"sensors.{suffix}")
    assert replay(path, "sensors") == list(sim.events())
    assert FileSource(path, "sensors").labels.tolist() == sim.is_anomaly.astype(int).tolist()  # type: ignore[union-attr]


def test_write_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="csv"):
        small_tx(days=1).write(tmp_path / "x.json")
