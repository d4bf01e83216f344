"""Readable rendering of alerts for `streamwarden alerts tail`."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from rich.console import Console

from sinks import tail
from sinks.alert import Alert
from sinks.subscriber import StreamAlert
from sinks.tail import alert_line, format_ts


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


REASON = "amount 812.40 is 9.3x the card's usual 87.21; first use of this terminal after 41 transactions"


def realistic() -> Alert:
    return Alert("aid", "tx-s0-3f9a1c2b-000012345", "card-000123", "transactions", 7.234, 3.5, "card_profile-v1",
                 1_704_200_000.25, 1_704_200_001.0, [("amount", 812.4)], reason=REASON, warming_up=True)


class FakeSubscriber:
    """Stands in for AlertSubscriber: a stream holding the realistic alert twice."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __enter__(self) -> FakeSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def iter_stream(self, **kwargs: object) -> Iterator[StreamAlert]:
        return iter([StreamAlert("1-0", realistic()), StreamAlert("2-0", realistic())])

    def latest_id(self) -> str:
        return "0-0"


@pytest.mark.parametrize("follow", [False, True])
def test_tail_fits_80_columns_with_entity_reason_and_ids_whole(monkeypatch: pytest.MonkeyPatch, follow: bool) -> None:
    monkeypatch.setattr(tail, "AlertSubscriber", FakeSubscriber)
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None, record=True)
    assert tail.tail_alerts(follow=follow, since="0", console=console) == 2
    lines = console.export_text().splitlines()
    assert len(lines) == 8 and all(len(line) <= 80 for line in lines)
    head, *folded = lines[:4]
    assert head.startswith("2024-01-02 12:53:20.250Z  transactions card-000123  score 7.234 > 3.5 (x2.07)")
    assert all(line.startswith("    ") for line in folded)
    assert REASON in " ".join(line.strip() for line in folded)
    assert "[tx-s0-3f9a1c2b-000012345 card_profile-v1]" in lines[3] and "(models warming up)" in lines[2]


def test_piped_tail_prints_one_line_per_alert(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "AlertSubscriber", FakeSubscriber)
    console = Console(file=io.StringIO(), width=80, color_system=None)  # not a terminal
    tail.tail_alerts(follow=False, console=console)
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 2 and "card-000123" in lines[0] and REASON in lines[0] and "tx-s0-3f9a1c2b-000012345" in lines[0]


def test_an_alert_that_fits_stays_on_one_line() -> None:
    assert render(alert_line(sample("card-1"))).count("\n") == 1


def test_format_ts_is_utc() -> None:
    assert format_ts(0) == "1970-01-01 00:00:00.000Z"
