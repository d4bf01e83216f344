"""The console's web app with fakes behind it: escaping, the token, the host check, same-origin verdict POSTs."""

from __future__ import annotations

import base64
import doctest
import importlib
from html.parser import HTMLParser
from typing import Any

import pytest
from starlette.testclient import TestClient

from pipeline.console import ConsoleServices
from pipeline.console.app import check_exposure, create_app
from pipeline.console.verdicts import Verdict, VerdictResult
from pipeline.errors import ConfigError
from pipeline.observability import ConsoleMetrics
from pipeline.settings import Settings
from sinks.alert import Alert
from sinks.subscriber import StreamAlert

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'
BASE = "http://127.0.0.1:8700"


def alert(i: int, entity: str = "card-1", event_id: str | None = None, **extra: Any) -> StreamAlert:
    extra = {"domain": "transactions", "top_features": [("CARD_AMOUNT_ZSCORE", 9.0)], **extra}
    return StreamAlert(f"{1000 + i}-0", Alert(f"a{i}", event_id or f"e{i}", entity, score=5.0 + i, threshold=3.5,
                                             model_version="v1", event_ts=100.0 + i, alert_ts=101.0 + i, **extra))


class FakeHistory:
    def __init__(self, items: list[StreamAlert]) -> None:
        self.items = items  # oldest first, like the stream

    def latest_id(self) -> str:
        return self.items[-1].id if self.items else "0"

    def newest(self, count: int, keep: Any = None, top: str = "+", alert_id: str | None = None) -> list[StreamAlert]:
        found = [i for i in reversed(self.items) if (alert_id is None or i.alert.alert_id == alert_id)
                 and (keep is None or keep(i.alert))]
        return found[:count]

    def find(self, alert_id: str, at: str | None = None) -> StreamAlert | None:
        hits = self.newest(1, alert_id=alert_id)
        return hits[0] if hits else None

    def after(self, last_id: str, block_ms: int = 1000, count: int = 100) -> list[StreamAlert]:
        return []


class FakeVerdicts:
    def __init__(self) -> None:
        self.given: dict[str, Verdict] = {}

    def get_many(self, ids: Any) -> dict[str, Verdict]:
        return {i: self.given[i] for i in ids if i in self.given}

    def get(self, alert_id: str) -> Verdict | None:
        return self.given.get(alert_id)

    def record(self, alert: Alert, label: int, by: str = "console") -> VerdictResult:
        if alert.alert_id in self.given:
            return VerdictResult(self.given[alert.alert_id], recorded=False)
        self.given[alert.alert_id] = Verdict(alert.alert_id, alert.event_id, alert.domain, label, 1.0, by)
        return VerdictResult(self.given[alert.alert_id], recorded=True)


def client(items: list[StreamAlert], **console: Any) -> tuple[TestClient, FakeVerdicts]:
    settings = Settings(console=console, kafka={"bootstrap_servers": "127.0.0.1:1", "startup_timeout_s": 0.2})
    verdicts = FakeVerdicts()
    services = ConsoleServices(settings, FakeHistory(items), verdicts, ConsoleMetrics(), lambda: None)  # type: ignore[arg-type]
    return TestClient(create_app(services), base_url=BASE), verdicts


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Elements()
    parser.feed(html)
    return parser.tags


@pytest.mark.parametrize("path", ["/", "/alerts/a1", "/episodes", "/?entity=%3Cscript%3E"])
def test_user_controlled_text_is_shown_as_text_not_markup(path: str) -> None:
    items = [alert(0, entity=SCRIPT, event_id=IMG, reason=f"amount {SCRIPT}"),
             alert(1, entity=SCRIPT, event_id=SCRIPT, top_features=[(IMG, 1.0)]),
             alert(2, entity=IMG, event_id="s1", domain="sensors", episode="open"),
             alert(3, entity=IMG, event_id="s1:close", domain="sensors", episode="close", episode_start_ts=102.0)]
    http, _ = client(items)
    page = http.get(path)
    assert page.status_code == 200
    tags = elements(page.text)
    assert [a for t, a in tags if t == "script"] == [{"src": "/static/console.js", "defer": None}]
    assert not [t for t, _ in tags if t == "img"]
    assert SCRIPT not in page.text and IMG not in page.text
    if path != "/episodes":
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]  # and no inline script runs


def test_the_list_filters_by_domain_and_entity_text() -> None:
    http, _ = client([alert(0, entity="card-1"), alert(1, entity="CARD-22"), alert(2, entity="pump-3", domain="sensors")])
    rows = [a.get("data-event") for t, a in elements(http.get("/?entity=card-2").text) if t == "tr" and a.get("id")]
    assert rows == ["e1"]
    rows = [a.get("data-event") for t, a in elements(http.get("/?domain=sensors").text) if t == "tr" and a.get("id")]
    assert rows == ["e2"]


def test_a_verdict_post_records_once_and_redirects_to_a_local_page() -> None:
    http, verdicts = client([alert(0)])
    origin = {"origin": BASE}
    first = http.post("/alerts/a0/verdict", data={"label": "1", "next": "/?domain=transactions"}, headers=origin,
                      follow_redirects=False)
    assert (first.status_code, first.headers["location"]) == (303, "/?domain=transactions")
    again = http.post("/alerts/a0/verdict", data={"label": "0", "next": "//evil.example/"}, headers=origin,
                      follow_redirects=False)
    assert (again.status_code, again.headers["location"]) == (303, "/alerts/a0")
    assert verdicts.given["a0"].label == 1
    page = http.get("/alerts/a0").text
    assert 'class="verdict v1"' in page and 'name="label"' not in page.split('id="verdict"')[1].split("</tr>")[0]


@pytest.mark.parametrize("headers", [{}, {"origin": "http://evil.example"}, {"referer": "http://evil.example/x"}])
def test_a_cross_site_verdict_post_is_refused(headers: dict[str, str]) -> None:
    http, verdicts = client([alert(0)])
    response = http.post("/alerts/a0/verdict", data={"label": "1"}, headers=headers, follow_redirects=False)
    assert response.status_code == 403 and not verdicts.given


def test_alerts_that_stand_for_no_single_event_take_no_verdict() -> None:
    http, verdicts = client([alert(0, entity="pump", domain="sensors", event_id="r9:close", episode="close"),
                             alert(1, entity="*")])
    for alert_id in ("a0", "a1"):
        response = http.post(f"/alerts/{alert_id}/verdict", data={"label": "1"}, headers={"origin": BASE})
        assert response.status_code == 400
    assert http.post("/alerts/nope/verdict", data={"label": "1"}, headers={"origin": BASE}).status_code == 404
    assert http.post("/alerts/a0/verdict", data={"label": "7"}, headers={"origin": BASE}).status_code == 400
    assert not verdicts.given


def test_off_the_loopback_interface_a_token_is_required() -> None:
    with pytest.raises(ConfigError, match="console.token"):
        check_exposure(Settings(console={"host": "0.0.0.0"}).console)
    check_exposure(Settings(console={"host": "0.0.0.0", "token": "s3"}).console)
    for host in ("127.0.0.1", "localhost", "::1"):
        check_exposure(Settings(console={"host": host}).console)


def test_the_cli_refuses_to_start_off_loopback_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    monkeypatch.setenv("STREAMWARDEN_CONSOLE__HOST", "0.0.0.0")
    result = CliRunner().invoke(app, ["console"])
    assert result.exit_code == 2
    assert "console.token" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("path", ["/", "/alerts/a0", "/metrics", "/events", "/static/console.js"])
def test_with_a_token_every_request_needs_it(path: str) -> None:
    http, _ = client([alert(0)], host="0.0.0.0", token="s3cret")
    response = http.get(path)
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Basic")
    assert http.get(path, headers={"authorization": "Bearer wrong"}).status_code == 401
    if path != "/events":  # a stream: its 200 is shown by the integration tests
        assert http.get(path, headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert http.get(path, auth=("analyst", "s3cret")).status_code == 200


def test_with_a_token_a_verdict_needs_the_token_and_the_origin() -> None:
    http, verdicts = client([alert(0)], host="0.0.0.0", token="s3cret")
    post = {"data": {"label": "1"}, "follow_redirects": False}
    assert http.post("/alerts/a0/verdict", headers={"origin": BASE}, **post).status_code == 401
    assert http.post("/alerts/a0/verdict", auth=("x", "s3cret"), **post).status_code == 403
    assert http.post("/alerts/a0/verdict", auth=("x", "s3cret"), headers={"origin": BASE}, **post).status_code == 303
    assert set(verdicts.given) == {"a0"}


def test_on_loopback_a_foreign_host_name_is_refused() -> None:  # DNS rebinding
    http, _ = client([alert(0)])
    assert http.get("/", headers={"host": "evil.example:8700"}).status_code == 400
    assert http.get("/", headers={"host": "localhost:8700"}).status_code == 200


def test_the_token_is_masked_in_config_show() -> None:
    settings = Settings(console={"token": "s3cret"})
    assert settings.masked()["console"]["token"] == "**********" and "s3cret" not in settings.to_yaml()


def test_metrics_count_verdicts() -> None:
    metrics = ConsoleMetrics()
    metrics.verdicts.labels(domain="sensors", verdict="fault").inc()
    assert b'streamwarden_verdicts_total{domain="sensors",verdict="fault"} 1.0' in metrics.exposition()


@pytest.mark.parametrize("module", ["pipeline.console.app", "pipeline.console.history", "pipeline.console.verdicts"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_basic_auth_with_a_colon_in_the_password() -> None:
    from pipeline.console.app import token_matches

    assert token_matches("Basic " + base64.b64encode(b"u:a:b").decode(), "a:b")
