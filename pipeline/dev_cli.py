"""`streamwarden dev up | down | status`: local Kafka + Redis without Docker."""

from __future__ import annotations

import typer

dev_app = typer.Typer(help="Local Apache Kafka (KRaft) and Redis on 127.0.0.1, owned by the project.")


@dev_app.command("up")
def up() -> None:
    """Start Kafka and Redis (fetching Kafka's jars and installing redis-server on first use)."""
    from pipeline.services import LocalServices

    services = LocalServices.from_env()
    services.ensure_up(verbose=True)
    services.print_status()


@dev_app.command("down")
def down() -> None:
    """Stop the local Kafka and Redis started by `dev up`."""
    from pipeline.services import LocalServices

    LocalServices.from_env().down(verbose=True)


@dev_app.command("status")
def status() -> None:
    """Print addresses and health of the local services."""
    from pipeline.services import LocalServices

    healthy = LocalServices.from_env().print_status()
    raise typer.Exit(0 if healthy else 1)
