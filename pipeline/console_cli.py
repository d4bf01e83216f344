"""`streamwarden console` and `streamwarden alerts label`: the analysts' side (pipeline.console).

Registered on the CLI by pipeline.cli; the shared helpers (settings, one-line start-up failures) come from it.
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import Any

import typer

ConfigOption = typer.Option(None, "--config", "-c", help="YAML settings file (else $STREAMWARDEN_CONFIG)")


def console(
    host: str | None = typer.Option(None, help="address to listen on (default: settings console.host, 127.0.0.1)"),
    port: int | None = typer.Option(None, help="port (default: settings console.port, 8700; 0 = any free one)"),
    config: Path | None = ConfigOption,
) -> None:
    """Serve the analysts' web page: live alerts, alert details, sensor episodes, verdict buttons."""
    from pipeline import cli
    from pipeline.console.app import check_exposure
    from pipeline.errors import ConfigError

    settings = cli.settings_or_exit(config, console=cli._section(host=host, port=port))
    try:
        check_exposure(settings.console)
    except ConfigError as exc:
        raise cli.fail(f"config: {exc}", exc) from exc
    try:
        sock = listening_socket(settings.console.host, settings.console.port)
    except OSError as exc:
        raise cli.fail(f"console: cannot listen on {settings.console.host}:{settings.console.port} ({exc}); "
                       "change console.port (or --port)", exc) from exc
    from pipeline.console import open_console
    from pipeline.console.app import create_app

    with cli.services_or_exit(settings):
        services = open_console(settings)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    cli.console.print(f"console at http://{shown}:{bound[1]}/ (Ctrl-C stops it)", highlight=False)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again with the handlers it found:
    # these end the command normally, after the clients are closed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server(create_app(services)).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        services.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn (port 0: any free one). Made with proto IPPROTO_TCP, so asyncio turns Nagle
    off on its connections (TCP_NODELAY): each live-list event leaves at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock


def server(app: Any, log_level: str = "warning") -> Any:
    """A uvicorn server for `app` (run it with `.run(sockets=[...])`; `.should_exit = True` stops it)."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=2,
                                         lifespan="off"))


def alerts_label(
    alert_id: str = typer.Argument(..., help="the alert's id (alert_id in `streamwarden alerts tail --json`)"),
    fraud: bool | None = typer.Option(None, "--fraud/--genuine",
                                      help="fraud (sensors: a fault) or genuine (sensors: normal)"),
    config: Path | None = ConfigOption,
) -> None:
    """Give an alert its verdict: one label on the labels topic, once (the console's buttons do the same)."""
    from pipeline import cli

    if fraud is None:
        raise typer.BadParameter("give --fraud or --genuine", param_hint="--fraud/--genuine")
    settings = cli.settings_or_exit(config)
    from ingest.errors import ProduceFailed
    from pipeline.console import open_console
    from pipeline.console.verdicts import can_label

    with cli.services_or_exit(settings):
        services = open_console(settings)
    try:
        with cli.services_or_exit(settings):
            found = services.history.find(alert_id)
            if found is None:
                raise cli.fail(f"no alert {alert_id} among the newest entries of {services.history.subscriber.stream}",
                               code=1)
            if not can_label(found.alert):
                raise cli.fail(f"alert {alert_id} ({found.alert.episode or 'a summary'}) stands for no single event: "
                               "it takes no verdict", code=1)
            try:
                result = services.verdicts.record(found.alert, int(fraud), by="cli")
            except ProduceFailed as exc:
                raise cli.fail(f"Kafka: {exc}; nothing recorded, try again", exc) from exc
    finally:
        services.close()
    verdict = result.verdict
    if result.recorded:
        cli.console.print(f"recorded: {verdict.name} for alert {alert_id} (event {verdict.event_id}); "
                          f"one label sent to {settings.topics.labels}", highlight=False)
    else:
        cli.console.print(f"already recorded: {verdict.name} (by {verdict.by}) for alert {alert_id}; nothing sent",
                          highlight=False)
