"""The `streamwarden` command line: run, produce, alerts tail, backtest, models, config, demo, dev."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from pipeline.collector import relax_for_startup
from pipeline.dev_cli import dev_app
from pipeline.errors import CheckpointMismatch, ConfigError
from pipeline.settings import Settings, load_settings

app = typer.Typer(help="Real-time fraud and anomaly detection on Kafka streams.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
alerts_app = typer.Typer(help="Read the alerts in Redis.", no_args_is_help=True)
models_app = typer.Typer(help="Champion and challenger detectors.", no_args_is_help=True)
config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")

console = Console()
err = Console(stderr=True)
log = logging.getLogger("pipeline.cli")

DEMO_REPORT = Path("reports/demo")
ConfigOption = typer.Option(None, "--config", "-c", help="YAML settings file (else $STREAMWARDEN_CONFIG)")
_options = {"debug": False, "console_script": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="show tracebacks with start-up errors")) -> None:
    """Real-time fraud and anomaly detection on Kafka streams."""
    _options["debug"] = debug


def fail(message: str, exc: BaseException | None = None, code: int = 2) -> typer.Exit:
    """Print `message` as one stderr line (the traceback too with --debug); the Exit to raise."""
    if exc is not None and _options["debug"]:
        traceback.print_exception(exc)
    err.print(f"[red]error:[/] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def console_script() -> None:
    """The `streamwarden` command. In-process callers (typer's CliRunner) call `app` and keep a normal exit."""
    _options["console_script"] = True
    relax_for_startup()
    app()


def exit_skipping_teardown(code: int) -> NoReturn:
    """End the process now, output flushed, without the interpreter's teardown (seconds with torch loaded)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    """Settings, or a message naming the bad setting and exit status 2."""
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v})
    except ConfigError as exc:
        raise fail(f"config: {exc}", exc) from exc


@contextmanager
def services_or_exit(settings: Settings) -> Iterator[None]:
    """An unreachable Kafka or Redis (or a configuration mistake found while connecting) ends the command with
    one line naming it and the setting to change, exit status 2."""
    from ingest.errors import BrokerUnavailable
    from sinks.errors import SinkError

    try:
        yield
    except BrokerUnavailable as exc:
        raise fail(f"Kafka: {exc}. Check kafka.bootstrap_servers (or STREAMWARDEN_KAFKA); "
                   "kafka.startup_timeout_s sets how long to wait", exc) from exc
    except SinkError as exc:
        raise fail(f"Redis: {exc}. Check redis.url (or STREAMWARDEN_REDIS_URL); "
                   "redis.startup_timeout_s sets how long to wait", exc) from exc
    except (ConfigError, CheckpointMismatch) as exc:
        raise fail(f"cannot start: {exc}", exc) from exc


def _section(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# ------------------------------------------------------------------------------------- file inputs
FeaturesOption = typer.Option(None, "--features", help="records: the feature columns, e.g. V1..V28,Amount; "
                              "sensors: the reading columns (default: every other numeric column)")
LabelsOption = typer.Option(None, "--labels", help="the label column (1 = fraud / anomaly)")
NoLabelsOption = typer.Option(False, "--no-labels", help="the file has no label column: use none")
TimeOriginOption = typer.Option(None, "--time-origin", help="the time column counts seconds from this date-time")
AttributesOption = typer.Option(None, "--attributes", help="transactions: columns sent as the events' attributes, "
                                "e.g. country,channel (transactions.attributes says which the models use)")


def file_options(columns: Any, features: str | None, labels: str | None, no_labels: bool,
                 time_origin: str | None, attributes: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(column mapping, FileSource keywords) from the file options of produce and backtest."""
    from ingest.errors import ReplaySourceError
    from ingest.replay import expand_columns, load_columns

    if labels and no_labels:
        raise typer.BadParameter("give --labels COL or --no-labels, not both")
    try:
        mapping = load_columns(columns)
        if features:
            mapping["features"] = expand_columns(features)
        if attributes:
            mapping["attributes"] = expand_columns(attributes)
    except ReplaySourceError as exc:
        raise fail(str(exc), exc) from exc
    if labels:
        mapping["label"] = labels
    return mapping, {"labels": not no_labels, "time_origin": _instant(time_origin)}


# ------------------------------------------------------------------------------------- run
@app.command()
def run(
    config: Path | None = ConfigOption,
    domain: str | None = typer.Option(None, help="transactions | sensors | records | all (transactions + sensors)"),
    group_id: str | None = typer.Option(None, help="Kafka consumer group"),
    metrics_port: int | None = typer.Option(None, help="serve Prometheus metrics on this port"),
    state_dir: Annotated[Path | None, typer.Option(help="checkpoints and promotion requests")] = None,
    idle_timeout: float | None = typer.Option(None, help="stop after this many seconds without records"),
    max_events: int | None = typer.Option(None, help="stop after this many records"),
) -> None:
    """Consume events, score them, raise alerts to Redis, learn; stop cleanly on SIGTERM/SIGINT."""
    from pipeline.observability import configure_logging

    settings = settings_or_exit(
        config, runner=_section(domain=domain, state_dir=state_dir), kafka=_section(group_id=group_id),
        observability=_section(metrics_port=metrics_port),
    )
    configure_logging(settings.observability.log_level, settings.observability.log_format)
    from pipeline.worker import build_live_runner

    with services_or_exit(settings):
        runner, close = build_live_runner(settings, idle_timeout_s=idle_timeout, max_events=max_events)
    if settings.observability.metrics_port is not None:
        port = runner.metrics.serve(settings.observability.metrics_port)
        log.info("metrics endpoint up", extra={"port": port})
    runner.install_signal_handlers()
    log.info("worker starting", extra={"domains": settings.domains(), "group": settings.kafka.group_id})
    try:
        with services_or_exit(settings):
            stats = runner.run()
    finally:
        close()
    log.info("worker stopped", extra={"events": stats.events, "alerts": stats.alerts, "rejects": stats.rejects,
                                      "commits": stats.commits, "checkpoints": stats.checkpoints})
    # All durable work is done (flushed, committed, checkpointed). Skip the interpreter's ~2 s teardown of torch
    # and the frozen start-up objects, so SIGTERM ends the process in about the poll timeout plus one flush.
    exit_skipping_teardown(0)


# ------------------------------------------------------------------------------------- produce
@app.command()
def produce(
    domain: str = typer.Option("transactions", help="transactions | sensors | records | labels"),
    input: Annotated[Path | None, typer.Option("--input", "-i", help="CSV/Parquet file (else the simulator)")] = None,
    columns: str | None = typer.Option(None, help="YAML file or field=column,... mapping"),
    features: str | None = FeaturesOption,
    labels: str | None = LabelsOption,
    no_labels: bool = NoLabelsOption,
    time_origin: str | None = TimeOriginOption,
    attributes: str | None = AttributesOption,
    topic: str | None = typer.Option(None, help="default: the domain's topic"),
    rate: float | None = typer.Option(None, help="events per second (default: as fast as possible)"),
    limit: int | None = typer.Option(None, help="stop after this many events"),
    seed: int = typer.Option(0, help="simulator seed"),
    scale: int = typer.Option(200, help="simulator: customers and terminals (transactions), steps x 10 (sensors), "
                              "rows x 100 (records)"),
    days: int = typer.Option(7, help="simulator: days of transactions"),
    run_id: str | None = typer.Option(None, "--run-id", help="simulator: run id in the event ids (default: a new "
                                      "one, printed); give a transactions run's id to produce its labels"),
    config: Path | None = ConfigOption,
) -> None:
    """Send events from a file or the built-in simulator to Kafka."""
    from ingest.produce import events_from_file, events_from_simulator, produce_events
    from ingest.producer import EventProducer
    from ingest.simulator import new_run_id

    settings = settings_or_exit(config)
    security = settings.kafka.client_config()
    security.pop("bootstrap_servers")
    security.pop("client_id")
    if input is not None:
        mapping, options = file_options(parse_columns(columns), features, labels, no_labels, time_origin, attributes)
        events: Any = events_from_file(input, domain, columns=mapping, **options)
    elif domain == "records":
        from ingest.simulator import FeatureVectorSimulator

        run_id = run_id or new_run_id()
        events = FeatureVectorSimulator(seed=seed, n_rows=scale * 100, run=run_id).events()
    elif domain == "sensors":
        run_id = run_id or new_run_id()
        events = events_from_simulator("sensors", seed=seed, limit=limit, n_steps=scale * 10, run=run_id)
    else:
        run_id = run_id or new_run_id()
        events = events_from_simulator(domain, seed=seed, limit=limit, n_customers=scale, n_terminals=scale, days=days,
                                       run=run_id)
    if limit is not None and input is not None:
        from itertools import islice

        events = islice(events, limit)
    with services_or_exit(settings), EventProducer(settings.kafka.bootstrap_servers, config=security) as producer:
        report = produce_events(events, producer, topic or settings.topics.for_domain(domain), domain, rate=rate,
                                progress=sys.stderr.isatty())
    source = f" (simulator seed {seed}, run id {run_id})" if input is None else ""
    console.print(f"sent {report.sent} events ({report.failed} failed) in {report.elapsed_s:.1f}s, "
                  f"{report.rate:.0f}/s{source}")
    if report.failed:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------- alerts
@alerts_app.command("tail")
def alerts_tail(
    domain: str | None = typer.Option(None, help="only this domain"),
    since: str | None = typer.Option(None, help="stream id, epoch seconds or ISO time"),
    group: str | None = typer.Option(None, help="read as a consumer-group member (acks, resumes)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    follow: bool = typer.Option(True, "--follow/--no-follow"),
    limit: int | None = typer.Option(None),
    config: Path | None = ConfigOption,
) -> None:
    """Print alerts from the Redis stream as they come."""
    from sinks.connection import probe
    from sinks.tail import tail_alerts

    settings = settings_or_exit(config)
    with services_or_exit(settings):
        probe(settings.redis.connection(), settings.redis.startup_timeout_s)
        tail_alerts(domain=domain, since=since, group=group, as_json=as_json, follow=follow, limit=limit,
                    prefix=settings.redis.prefix, connection=settings.redis.connection())


# ------------------------------------------------------------------------------------- backtest
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


def parse_duration(text: str) -> float:
    """`7d`, `12h`, `30m`, `90s`, `2w` or plain seconds -> seconds."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration (e.g. 7d, 12h, 3600)")
    return float(match.group(1)) * _UNITS.get(match.group(2) or "s", 1.0)


def parse_columns(text: str | None) -> Any:
    """A YAML file, or inline `field=column,field=column`."""
    if not text:
        return None
    if "=" not in text:
        return Path(text)
    return dict(part.split("=", 1) for part in text.split(",") if part)


@app.command()
def backtest(
    input: str = typer.Option(..., "--input", "-i", help=(
        "FILE or kafka://TOPIC?from=A&to=B: offsets, or date-times (UTC) compared with the events' ts; "
        "add &time=broker to select date-times by Kafka record timestamps, &labels=TOPIC for the labels topic")),
    domain: str = typer.Option("transactions", help="transactions | sensors | records"),
    columns: str | None = typer.Option(None, help="YAML file or field=column,... mapping"),
    features: str | None = FeaturesOption,
    labels: str | None = LabelsOption,
    no_labels: bool = NoLabelsOption,
    time_origin: str | None = TimeOriginOption,
    attributes: str | None = AttributesOption,
    label_delay: str | None = typer.Option(None, help="labels are revealed this long after the event (7d, 1h...)"),
    report: Annotated[Path | None, typer.Option(help="report directory (default: settings backtest.report_dir)")] = None,
    compare: str | None = typer.Option(None, help="det1,det2,...: the first is champion, the rest challengers"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    seed: int | None = typer.Option(None, help="model seed (default: the setting <domain>.seed)"),
    period: str | None = typer.Option(None, help="metrics per day or week (default: week when > 21 days)"),
    evaluate_from: str | None = typer.Option(None, help="score only events from this date-time (event time, UTC)"),
    evaluate_to: str | None = typer.Option(None, help="... and before this date-time"),
    known_entity_days: float | None = typer.Option(
        None, help="leave out of a period the entities with a fraud revealed this many days before it"),
    config: Path | None = ConfigOption,
) -> None:
    """Replay history through the live runner (score, then learn) and write metrics, plots and a report.

    Exits 1 (report still written) when no event was scored or more than backtest.max_reject_share of the
    input was rejected."""
    from ingest.errors import ReplaySourceError
    from pipeline.backtest import run_backtest

    settings = settings_or_exit(config)
    out = report or settings.backtest.report_dir
    mapping, options = file_options(parse_columns(columns), features, labels, no_labels, time_origin, attributes)
    with services_or_exit(settings):
        try:
            result = run_backtest(
                settings, input, domain=domain, columns=mapping, file_options=options,
                label_delay_s=parse_duration(label_delay) if label_delay else None, report_dir=out,
                compare=[c.strip() for c in compare.split(",") if c.strip()] if compare else (), progress=progress,
                seed=seed, period=_period(period), evaluate_from=_instant(evaluate_from),
                evaluate_to=_instant(evaluate_to), known_entity_days=known_entity_days,
            )
        except ReplaySourceError as exc:
            raise fail(f"input {input}: {exc}", exc) from exc
    table = Table("detector", "events", "alerts", "ROC AUC", "AP", "precision", "recall", "F1",
                  title="backtest (after warm-up; per period in the report)")
    for row in result.metrics:
        table.add_row(*(_cell(row.get(k)) for k in ("detector", "events", "alerts", "roc_auc", "average_precision",
                                                    "precision", "recall", "f1")))
    if result.metrics:
        console.print(table)
    warm = result.scores["warming_up"].astype(bool)
    if len(warm) and warm.all():
        alerts = int(result.scores["alert"].astype(bool).sum())
        console.print(f"all {len(warm)} events fell in the models' warm-up, so the table has none to score; "
                      f"they raised {alerts} alert(s) (the cold-start rule's), in the report")
    console.print(f"report: {result.report}")
    failure = fail(f"backtest {result.problem}", code=1) if result.problem else None
    if _options["console_script"]:  # the report is written: the ~1.7 s teardown of a replay's objects is waste
        exit_skipping_teardown(failure.exit_code if failure else 0)
    if failure:
        raise failure


def _period(text: str | None) -> str | None:
    if text not in (None, "day", "week"):
        raise typer.BadParameter(f"--period must be day or week, got {text!r}")
    return text


def _instant(text: str | None) -> float | None:
    """A date-time (naive = UTC) as epoch seconds."""
    if not text:
        return None
    import pandas as pd

    try:
        return float(pd.Timestamp(text, tz="UTC").timestamp()) if pd.Timestamp(text).tzinfo is None \
            else float(pd.Timestamp(text).timestamp())
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a date-time") from exc


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------- models
@models_app.command("compare")
def models_compare(
    domain: str = typer.Option("transactions", help="transactions | sensors"),
    config: Path | None = ConfigOption,
) -> None:
    """The running worker's rolling champion/challenger metrics (written at each checkpoint)."""
    from pipeline.promotion import leaderboard_file, read_leaderboard

    settings = settings_or_exit(config)
    rows = read_leaderboard(settings.runner.state_dir, domain)
    if rows is None:
        err.print(f"no leaderboard yet at {leaderboard_file(settings.runner.state_dir, domain)}: "
                  "a worker writes it at each checkpoint")
        raise typer.Exit(1)
    table = Table(title=f"{domain} detectors")
    table.add_column("detector", no_wrap=True)
    table.add_column("champion", no_wrap=True)
    for header in ("state", "labelled", "positives", "alerts", "ROC AUC", "AP", "precision", "recall",
                   "drifts"):
        table.add_column(header, overflow="fold")
    for row in rows:
        state = f"warming up {row.get('warmup', '')}" if row.get("warming_up") else "armed"
        table.add_row(_cell(row.get("detector")), _cell(row.get("champion")), state,
                      *(_cell(row.get(k)) for k in ("labelled", "positives", "alerts", "roc_auc", "average_precision",
                                                    "precision", "recall", "drifts")))
    console.print(table)


@models_app.command("list")
def models_list(config: Path | None = ConfigOption) -> None:
    """Every registered detector (plug-ins named in the settings too), what it consumes, how it learns, and the
    domains it can serve."""
    from stream_models import catalog
    from stream_models.engine import detector_names
    from stream_models.errors import ModelError

    settings = settings_or_exit(config)
    for domain in ("transactions", "sensors"):
        model = settings.model(domain)
        for name in (model.detector, *model.challengers):
            try:
                catalog.factory(name)
            except ModelError as exc:
                raise fail(f"setting '{domain}.detector'/'challengers': {exc}", exc) from exc
    table = Table("detector", "consumes", "learns from", "domains", title="detectors")
    for name in catalog.names():
        domains = [d for d in ("transactions", "sensors") if name in detector_names(d)]
        learns = "labels" if catalog.learns_from_labels(name) else "unflagged events"
        table.add_row(name, catalog.consumes(name), learns, ", ".join(domains) or "–")
    console.print(table)


@models_app.command("promote")
def models_promote(
    name: str = typer.Argument(..., help="the challenger to make champion"),
    domain: str = typer.Option("transactions", help="transactions | sensors"),
    config: Path | None = ConfigOption,
) -> None:
    """Ask workers to switch champion at their next checkpoint (file `<state_dir>/promote-<domain>`)."""
    from pipeline.promotion import request_promotion
    from stream_models.engine import detector_names

    settings = settings_or_exit(config)
    model = settings.model(domain)
    known = [model.detector, *model.challengers]
    if name not in known:
        err.print(f"{name!r} is not a contender of {domain} (configured: {known}; available: {detector_names(domain)})")
        raise typer.Exit(2)
    path = request_promotion(settings.runner.state_dir, domain, name)
    console.print(f"promotion of {name} requested ({path}); it applies at the next checkpoint")


# ------------------------------------------------------------------------------------- config
@config_app.command("show")
def config_show(
    config: Path | None = ConfigOption,
    as_json: bool = typer.Option(False, "--json", help="JSON instead of YAML"),
) -> None:
    """Print the effective configuration (defaults < shorthands < file < env), secrets masked."""
    settings = settings_or_exit(config)
    if as_json:
        console.print_json(json.dumps(settings.masked()))
    else:
        sys.stdout.write(settings.to_yaml())


# ------------------------------------------------------------------------------------- demo
@app.command()
def demo(
    transactions: int | None = typer.Option(None, help="simulated transactions (default: about 20,000 over 14 days)"),
    sensor_steps: int = typer.Option(700, help="simulated readings per device"),
    devices: int = typer.Option(3, help="simulated sensor devices"),
    report: Annotated[Path, typer.Option(help="where the summary report goes")] = DEMO_REPORT,
    keep_services: bool = typer.Option(True, "--keep-services/--stop-services", help="leave Kafka/Redis running"),
    config: Path | None = ConfigOption,
) -> None:
    """Local Kafka + Redis, a worker, simulated fraud and sensor faults, live alerts, then a summary."""
    from pipeline.demo import DemoOptions, run_demo

    settings = settings_or_exit(config)
    options = DemoOptions(sensor_steps=sensor_steps, devices=devices, report_dir=report, keep_services=keep_services)
    if transactions is not None:
        options = dataclasses.replace(options, transactions=transactions)
    summary = run_demo(settings, options, console=console)
    if summary.get("alerts", 0) == 0:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------- console (pipeline.console_cli)
from pipeline import console_cli  # noqa: E402

app.command("console")(console_cli.console)
alerts_app.command("label")(console_cli.alerts_label)


if __name__ == "__main__":
    console_script()
