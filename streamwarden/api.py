"""Use streamwarden from Python: the engine of a domain, the live worker and the backtest, as the CLI builds them.

Everything here is what `streamwarden run` and `streamwarden backtest` call, with the same settings (a YAML
file, `STREAMWARDEN_*` variables, or sections given as keywords). `import streamwarden` re-exports these names.

Score events in your own loop (no Kafka, no Redis):

>>> import streamwarden as sw
>>> settings = sw.load_settings(runner={"device": "cpu"}, transactions={"warmup_events": 50})
>>> engine = sw.build_engine(settings, "transactions")
>>> events = list(sw.TransactionSimulator(seed=1, n_customers=30, n_terminals=30, days=5, run="doc").events())
>>> batch = engine.process(events)
>>> len(batch.scores) == len(events), sorted(batch.contender_scores)
(True, ['card_profile', 'dense_autoencoder', 'mlp_classifier'])
>>> batch.reasons[33]  # why the card-profile rule alerted on row 33
"amount 1152.93 is 15.0x the card's usual 76.79"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.schemas import Label, SensorReading, Transaction
from ingest.simulator import SensorSimulator, TransactionSimulator
from pipeline.settings import Settings, load_settings
from sinks.alert import Alert

if TYPE_CHECKING:
    from pipeline.backtest import BacktestResult
    from pipeline.runner import Runner
    from stream_models.engine import StreamEngine

__all__ = ["Alert", "Label", "SensorReading", "SensorSimulator", "Settings", "Transaction", "TransactionSimulator",
           "build_engine", "build_live_runner", "load_settings", "run_backtest"]


def build_engine(settings: Settings, domain: str) -> StreamEngine:
    """The stream engine of `domain` ("transactions" or "sensors") as the worker builds it: features, the champion
    and challengers (plug-ins too), thresholds, alarm rules and online learning.

    `engine.process(events)` scores a batch of `Transaction` / `SensorReading` objects in arrival order and
    learns from it; it returns a `DomainBatch` (`scores`, `flags`, `thresholds`, `explanations`, `reasons`...).
    `engine.apply_labels(labels)` hands it late labels. A bad detector name or parameter raises ConfigError.
    """
    from pipeline.domains import build_processor

    return build_processor(settings, domain)  # type: ignore[no-any-return]


def build_live_runner(settings: Settings, *, idle_timeout_s: float | None = None,
                      max_events: int | None = None) -> tuple[Runner, Callable[[], None]]:
    """The live worker of `streamwarden run`: Kafka consumer -> engines -> Redis alerts, dead letters, commits,
    checkpoints. Returns `(runner, close)`: call `runner.run()` (it returns the run's stats; SIGTERM,
    `idle_timeout_s` or `max_events` stop it), then `close()`.

    Raises `ingest.errors.BrokerUnavailable` / `sinks.errors.SinkUnavailable` within the start-up timeouts when
    Kafka or Redis does not answer.
    """
    from pipeline.worker import build_live_runner as build

    return build(settings, idle_timeout_s=idle_timeout_s, max_events=max_events)  # type: ignore[return-value]


def run_backtest(settings: Settings, input_spec: str, *, domain: str = "transactions",
                 columns: dict[str, str] | Path | None = None, label_delay_s: float | None = None,
                 report_dir: Path | None = None, compare: Sequence[str] = (), progress: bool = False,
                 **window: Any) -> BacktestResult:
    """`streamwarden backtest`: replay a CSV/Parquet file or `kafka://TOPIC?from=..&to=..` through the same engine.

    `columns` maps event fields to the file's columns; `label_delay_s` reveals labels that long after each event;
    `report_dir` writes the HTML report, plots, scores.parquet and metrics.json; `compare` names detectors to score
    side by side. `window` takes `period`, `evaluate_from`, `evaluate_to`, `known_entity_days`, `max_records`.
    The result has `scores` (a DataFrame: one row per event), `alerts`, `stats` and `metrics` (with a report).

    >>> import tempfile, streamwarden as sw
    >>> folder = Path(tempfile.mkdtemp())
    >>> path = sw.TransactionSimulator(seed=2, n_customers=20, n_terminals=20, days=2, run="doc").write(folder / "tx.csv")
    >>> result = sw.run_backtest(sw.load_settings(runner={"device": "cpu"}), str(path), label_delay_s=3600.0)
    >>> len(result.scores) == result.stats.events > 0
    True
    """
    from pipeline.backtest import run_backtest as backtest

    return backtest(settings, input_spec, domain=domain, columns=columns, label_delay_s=label_delay_s,
                    report_dir=report_dir, compare=compare, progress=progress, **window)
