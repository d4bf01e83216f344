"""`streamwarden alerts tail`: print alerts from the Redis stream as readable lines or JSON lines."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from sinks.alert import Alert
from sinks.connection import RedisConfig
from sinks.errors import SinkUnavailable
from sinks.subscriber import AlertSubscriber, StreamAlert, stream_start_id


def format_ts(ts: float) -> str:
    """Epoch seconds as 'YYYY-MM-DD HH:MM:SS.mmmZ' (UTC).

    >>> format_ts(0.25)
    '1970-01-01 00:00:00.250Z'
    """
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def format_features(alert: Alert, k: int = 3) -> str:
    """The top-k contributing features as 'name=value, ...'.

    >>> format_features(Alert("a", "e", "c", "transactions", 1.0, 0.5, "v", 0.0, 0.0, [("amount", 3.14159), ("hour", 1.0)]))
    'amount=3.14, hour=1'
    """
    return ", ".join(f"{name}={value:.3g}" for name, value in alert.top_features[:k])


def _head(alert: Alert) -> Text:
    ratio = alert.score / alert.threshold if alert.threshold > 0 else float("inf")
    return Text.assemble(
        (format_ts(alert.event_ts), "dim"),
        "  ",
        (f"{alert.domain:<12}", "cyan"),
        " ",
        (alert.entity, "bold"),
        "  score ",
        (f"{alert.score:.4g}", "bold red" if ratio >= 2 else "red"),
        f" > {alert.threshold:.4g}",
        (f" (x{ratio:.2f})" if ratio != float("inf") else "", "dim"),
    )


def _why(alert: Alert) -> Text:
    parts = [Text(alert.reason or format_features(alert), style="yellow")]
    if alert.warming_up:
        parts.append(Text("(models warming up)", style="dim"))
    if alert.episode:
        parts.append(Text(f"[episode {alert.episode}]", style="magenta"))
    if alert.label is not None:
        parts.append(Text(f"label={alert.label}", style="magenta"))
    return Text("  ").join(part for part in parts if part)


class AlertLine:
    """An alert on one line: event time, domain, entity, score vs threshold, why (its reason, else its top
    features), event id and model version. Where that is wider than the console, the why and the ids fold
    onto indented lines below; printed with `soft_wrap=True` it stays one line."""

    INDENT = 4

    def __init__(self, alert: Alert) -> None:
        self.head, self.why = _head(alert), _why(alert)
        self.ids = Text(f"[{alert.event_id} {alert.model_version}]", style="dim")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        line = Text("  ").join(part for part in (self.head, self.why, self.ids) if part)
        if options.no_wrap or line.cell_len <= options.max_width:
            yield line
            return
        yield self.head
        width = max(20, options.max_width - self.INDENT)
        lines = list(self.why.wrap(console, width)) if self.why else []
        for folded in lines:
            folded.rstrip()
        if lines and lines[-1].cell_len + 2 + self.ids.cell_len <= width:
            lines[-1].append("  ").append_text(self.ids)  # the ids stay whole
        else:
            lines.append(self.ids)
        for folded in lines:
            yield Text(" " * self.INDENT) + folded


def alert_line(alert: Alert) -> AlertLine:
    """The readable rendering of one alert (see AlertLine)."""
    return AlertLine(alert)


def tail_alerts(
    url: str | None = None,
    domain: str | None = None,
    since: str | float | None = None,
    group: str | None = None,
    as_json: bool = False,
    follow: bool = True,
    limit: int | None = None,
    console: Console | None = None,
    *,
    prefix: str = "streamwarden:",
    consumer: str | None = None,
    connection: RedisConfig | None = None,
    block_ms: int = 1000,
    max_reconnect_delay_s: float = 5.0,
) -> int:
    """Print alerts and return how many were printed.

    Without `group`: reads the stream from `since` (default: new alerts only when following, else from the
    start). With `group`: a consumer group member (`consumer` defaults to tail-<host>-<pid>) that acks what
    it printed and resumes where the group stopped. `as_json` prints one JSON object per line, else each alert
    is a readable line (AlertLine: folded to the terminal's width, one line when piped). `limit` stops after
    that many alerts.
    When following, a Redis outage is waited out (notice on stderr) and reading resumes where it stopped.
    """
    console = console or Console()
    notices = Console(stderr=True)
    with AlertSubscriber(url, connection=connection, prefix=prefix) as sub:
        name = consumer or f"tail-{socket.gethostname()}-{os.getpid()}"
        default_start = "0" if group or not follow else "$"
        start = stream_start_id(since, default=default_start)

        def items() -> Iterator[StreamAlert]:
            if group:
                return sub.consume(
                    group, name, domain=domain, since=start, auto_ack=False, follow=follow, block_ms=block_ms
                )
            return sub.iter_stream(since=start, domain=domain, follow=follow, block_ms=block_ms)

        printed = 0
        delay = 0.1
        while True:
            try:
                if start == "$":
                    start = sub.latest_id()  # pin "now" once, so a reconnect does not skip alerts
                for item in items():
                    if as_json:
                        console.file.write(item.alert.to_json().decode() + "\n")
                        console.file.flush()
                    else:
                        console.print(alert_line(item.alert), soft_wrap=not console.is_terminal)  # pipes: grep
                    printed += 1
                    if group:
                        sub.ack(group, item.id)  # printed = handled
                    else:
                        start = item.id
                    delay = 0.1
                    if limit is not None and printed >= limit:
                        return printed
                return printed
            except SinkUnavailable as exc:
                if not follow:
                    raise
                notices.print(
                    f"redis unavailable ({exc}); retrying in {delay:.1f} s", style="yellow", highlight=False
                )
                time.sleep(delay)
                delay = min(max_reconnect_delay_s, delay * 2)
