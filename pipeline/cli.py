"""The `streamwarden` command line."""

from __future__ import annotations

import typer

from pipeline.dev_cli import dev_app

app = typer.Typer(help="Real-time fraud and anomaly detection on Kafka streams.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")

if __name__ == "__main__":
    app()
