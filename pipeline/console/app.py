"""The console's web app (Starlette): live alert list (server-sent events from the Redis alert stream), alert page,
sensor episodes, verdict buttons, /metrics.

Safety: every page is rendered by Jinja2 with autoescaping (and a Content-Security-Policy that runs only the
console's own script); with `console.token` set, every request needs it (basic auth password or Bearer); a
verdict POST must come from the console's own origin (Origin, else Referer); bound to the loopback interface,
requests must name a loopback Host (no DNS rebinding).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import anyio
import jinja2
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.console import ConsoleServices
from pipeline.console.history import STREAM_ID, episodes, matches, recent_events
from pipeline.console.verdicts import VERDICT_NAMES, can_label, verdict_name
from pipeline.errors import ConfigError
from pipeline.settings import ConsoleSettings
from sinks.subscriber import StreamAlert
from sinks.tail import format_ts
from streamwarden.errors import StreamwardenError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DOMAINS = tuple(VERDICT_NAMES)
HEARTBEAT_S = 15.0
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def check_exposure(console: ConsoleSettings) -> None:
    """Off the loopback interface the console needs a token."""
    if console.host not in LOOPBACK and console.token is None:
        raise ConfigError(f"console.host is {console.host!r}, not 127.0.0.1/localhost/::1: set console.token "
                          "(STREAMWARDEN_CONSOLE__TOKEN) so that only people with it can see alerts and give verdicts")


def token_matches(authorization: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>`, or basic auth with the token as password (any user name).

    >>> token_matches("Bearer s3", "s3"), token_matches("Basic " + base64.b64encode(b"me:s3").decode(), "s3")
    (True, True)
    >>> token_matches("Bearer nope", "s3"), token_matches(None, "s3"), token_matches("Basic !!", "s3")
    (False, False, False)
    """
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    else:
        return False
    return hmac.compare_digest(given.encode(), token.encode())


class Guard:
    """The token check (when a token is set) and the security headers, on every HTTP request."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        if self.token is not None and not token_matches(Headers(scope=scope).get("authorization"), self.token):
            response = PlainTextResponse("the console token is needed: the password of HTTP basic auth, or "
                                         "Authorization: Bearer <token>", 401,
                                         headers={"WWW-Authenticate": 'Basic realm="streamwarden console"'})
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def same_origin(request: Request) -> bool:
    """A POST from the console's own pages: its Origin (else its Referer) names the host it was sent to."""
    source = request.headers.get("origin") or request.headers.get("referer")
    return bool(source) and urlsplit(source).netloc == request.headers.get("host")


def _number(value: float) -> str:
    return f"{value:.4g}"


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(ts=format_ts, num=_number)
    env.globals.update(can_label=can_label, verdict_name=verdict_name, domains=DOMAINS)
    return Jinja2Templates(env=env)


def score_plot(items: list[StreamAlert], current: str, width: int = 720, height: int = 200) -> dict[str, Any]:
    """Coordinates of an inline SVG: the entity's alerts (score over event time) and their thresholds."""
    pad = 40
    alerts = sorted((i.alert for i in items), key=lambda a: a.event_ts)
    t0, t1 = alerts[0].event_ts, alerts[-1].event_ts
    top = max(max(a.score for a in alerts), max(a.threshold for a in alerts)) * 1.1 or 1.0

    def x(ts: float) -> float:
        return round(pad + (ts - t0) / (t1 - t0) * (width - 2 * pad) if t1 > t0 else width / 2, 1)

    def y(value: float) -> float:
        return round(height - pad / 2 - max(0.0, value) / top * (height - pad), 1)

    return {
        "width": width, "height": height, "top": top, "t0": t0, "t1": t1, "y_top": y(top), "y_zero": y(0.0),
        "points": [{"x": x(a.event_ts), "y": y(a.score), "current": a.alert_id == current, "alert": a}
                   for a in alerts],
        "threshold": " ".join(f"{x(a.event_ts)},{y(a.threshold)}" for a in alerts),
    }


def _local_path(path: str, fallback: str) -> str:
    """`path` when it stays on this site (a redirect target from a form), else `fallback`."""
    ok = path.startswith("/") and not path.startswith("//") and "\\" not in path and "\n" not in path
    return path if ok else fallback


def create_app(services: ConsoleServices) -> Starlette:
    settings = services.settings
    history, verdicts = services.history, services.verdicts
    templates = make_templates()
    recent = settings.console.recent
    feed_threads = anyio.CapacityLimiter(64)  # live lists waiting on Redis, apart from the page requests' threads

    def filters(request: Request) -> tuple[str | None, str | None]:
        domain = request.query_params.get("domain") or None
        return (domain if domain in DOMAINS else None), (request.query_params.get("entity") or "").strip() or None

    def alert_list(request: Request) -> Response:
        domain, entity = filters(request)
        top = history.latest_id()
        items = history.newest(recent, lambda a: matches(a, domain, entity), top=top if top != "0" else "+")
        query = {k: v for k, v in (("domain", domain), ("entity", entity)) if v}
        here = "/" + (f"?{urlencode(query)}" if query else "")
        return templates.TemplateResponse(request, "alerts.html", {
            "items": items, "verdicts": verdicts.get_many(i.alert.alert_id for i in items), "domain": domain,
            "entity": entity or "", "next": here, "max_rows": recent,
            "feed": "/events?" + urlencode({**query, "after": top}),
        })

    async def live_feed(request: Request) -> Response:
        domain, entity = filters(request)
        last = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        if not STREAM_ID.match(last):
            return PlainTextResponse("after / Last-Event-ID must be a stream id", 400)
        query = {k: v for k, v in (("domain", domain), ("entity", entity)) if v}
        here = "/" + (f"?{urlencode(query)}" if query else "")
        row = templates.get_template("_row.html")

        async def events() -> AsyncIterator[str]:
            nonlocal last
            quiet_since = time.monotonic()
            while True:
                started = time.monotonic()
                try:
                    items = await anyio.to_thread.run_sync(history.after, last, 1000, limiter=feed_threads)
                except StreamwardenError as exc:  # Redis away: keep the connection, try again shortly
                    log.warning("live list: %s", exc)
                    await anyio.sleep(1.0)
                    continue
                if items:
                    last = items[-1].id
                kept = [i for i in items if matches(i.alert, domain, entity)]
                marks = await run_in_threadpool(verdicts.get_many, [i.alert.alert_id for i in kept]) if kept else {}
                for item in kept:
                    html = row.render(item=item, verdict=marks.get(item.alert.alert_id), next=here)
                    data = "".join(f"data: {line}\n" for line in html.strip().splitlines())
                    yield f"id: {item.id}\nevent: alert\n{data}\n"
                    quiet_since = time.monotonic()
                if time.monotonic() - quiet_since >= HEARTBEAT_S:
                    yield ": still here\n\n"
                    quiet_since = time.monotonic()
                if not items and time.monotonic() - started < 0.05:  # Redis answered at once with nothing usable
                    await anyio.sleep(0.5)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    def alert_page(request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        found = history.find(alert_id, at=request.query_params.get("at"))
        if found is None:
            return templates.TemplateResponse(request, "missing.html", {"alert_id": alert_id}, status_code=404)
        alert = found.alert
        same = history.newest(50, lambda a: a.entity == alert.entity and a.domain == alert.domain)
        if not any(i.alert.alert_id == alert_id for i in same):
            same.append(found)
        events, events_error = [], None
        if alert.entity != "*" and alert.domain in DOMAINS:
            try:
                events = recent_events(settings.kafka.client_config(), settings.topics.for_domain(alert.domain),
                                       alert.entity)
            except Exception as exc:  # the page stands without them
                log.warning("recent events of %s unavailable: %s", alert.entity, exc)
                events_error = str(exc) or type(exc).__name__
        return templates.TemplateResponse(request, "alert.html", {
            "item": found, "alert": alert, "verdict": verdicts.get(alert_id), "same": same,
            "verdicts": verdicts.get_many(i.alert.alert_id for i in same), "plot": score_plot(same, alert_id),
            "events": events, "events_error": events_error, "next": f"/alerts/{quote(alert_id, safe='')}",
            "topic": settings.topics.for_domain(alert.domain) if alert.domain in DOMAINS else None,
        })

    async def give_verdict(request: Request) -> Response:
        if not same_origin(request):
            return PlainTextResponse("refused: a verdict must be posted from the console's own pages", 403)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        label = form.get("label", [""])[0]
        if label not in ("0", "1"):
            return PlainTextResponse("label must be 1 (fraud / fault) or 0 (genuine / normal)", 400)
        alert_id = request.path_params["alert_id"]
        found = await run_in_threadpool(history.find, alert_id, form.get("at", [""])[0])
        if found is None:
            return PlainTextResponse(f"no alert {alert_id} in the stream", 404)
        if not can_label(found.alert):
            return PlainTextResponse("this alert stands for no single event: it takes no verdict", 400)
        await run_in_threadpool(verdicts.record, found.alert, int(label), "console")
        target = _local_path(form.get("next", [""])[0], f"/alerts/{quote(alert_id, safe='')}")
        return RedirectResponse(target, status_code=303)

    def episode_page(request: Request) -> Response:
        entity = (request.query_params.get("entity") or "").strip() or None
        items = history.newest(recent * 5, lambda a: a.episode is not None and matches(a, "sensors", entity))
        return templates.TemplateResponse(request, "episodes.html", {
            "devices": episodes([i.alert for i in items]), "entity": entity or ""})

    def metrics(request: Request) -> Response:
        return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def unavailable(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"service unavailable: {exc}", 503)

    loopback = settings.console.host in LOOPBACK
    token = settings.console.token.get_secret_value() if settings.console.token else None
    return Starlette(
        routes=[
            Route("/", alert_list),
            Route("/events", live_feed),
            Route("/alerts/{alert_id}", alert_page, name="alert"),
            Route("/alerts/{alert_id}/verdict", give_verdict, methods=["POST"]),
            Route("/episodes", episode_page),
            Route("/metrics", metrics),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[
            Middleware(Guard, token=token),
            Middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK, "[::1]"] if loopback else ["*"]),
        ],
        exception_handlers={StreamwardenError: unavailable},
    )
