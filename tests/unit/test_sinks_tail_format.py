"""Readable rendering of alerts for `streamwarden alerts tail`."""

import io

from rich.console import Console

from sinks.alert import Alert
from sinks.tail import alert_line, alerts_table, format_ts


def sample(entity: str = "card-[red]7[/]") -> Alert:
    return Alert(
        "aid",
        "evt-9",
        entity,
        "transactions",
        0.93,
        0.31,
        "ae-v2",
        1_700_000_000.5,
        1_700_000_001.0,
        [("amount", 812.4), ("hour", 3.0), ("velocity", 2.5), ("extra", 0.1)],
    )


def render(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_line_shows_time_domain_entity_score_threshold_and_top_features() -> None:
    text = render(alert_line(sample()))
    assert "2023-11-14 22:13:20.500Z" in text and "transactions" in text
    assert "card-[red]7[/]" in text  # entity printed literally, never as markup
    assert "0.93 > 0.31" in text and "x3.00" in text
    assert "amount=812, hour=3, velocity=2.5" in text and "extra" not in text
    assert "evt-9" in text and "ae-v2" in text


def test_table_has_one_row_per_alert() -> None:
    text = render(alerts_table([sample("card-1"), sample("card-2")]))
    assert "card-1" in text and "card-2" in text and "event time (UTC)" in text


def test_format_ts_is_utc() -> None:
    assert format_ts(0) == "1970-01-01 00:00:00.000Z"
