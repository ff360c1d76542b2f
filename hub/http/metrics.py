"""``GET /metrics``: what a scrape shows, with ``prometheus-client``.

Two kinds of figures:

* counters and histograms of *this process* (:class:`hub.queue.metrics.Metrics`: intake by channel and
  outcome, routing latency, time in the router, outbox sends; HTTP request latency per route, observed
  by :func:`request_timer`);
* gauges read from the database at scrape time, the same for every process of a deployment
  (cases by state, stored requests by channel, overdue cases, flagged SLA breaches, outbox backlog).

The text format and its content type come from the library (``choose_encoder``: Prometheus text 0.0.4
unless the scraper asks for OpenMetrics).

Who may scrape (``[server]``): by default anyone who reaches the HTTP port, as before — the figures are
counts only, but they tell an outsider how busy the hub is and whether its queue is backing up, so a
deployment should keep ``/metrics`` off the public network. ``metrics_token`` requires
``Authorization: Bearer <token>``; ``metrics_separate`` serves ``/metrics`` on a listener of its own
(``metrics_host``:``metrics_port``, e.g. on the monitoring network) and the public server answers 404 there.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from hub.queue.cases import CaseState, case_t, message_t, overdue_clause
from hub.queue.metrics import Metrics

log = logging.getLogger(__name__)


def render(metrics: Metrics, engine: Engine | None = None, accept: str = "") -> tuple[bytes, str]:
    """The scrape body of ``metrics`` and its content type (by the scraper's ``Accept`` header), with the
    deployment-wide gauges read from ``engine``."""
    if engine is not None:
        metrics.add_collector(("database", id(engine)), lambda: _DatabaseGauges(engine))
    encode, content_type = choose_encoder(accept)
    return encode(metrics.registry), content_type


class _DatabaseGauges(Collector):
    """Queue depth by state, stored requests by channel, SLA figures, outbox backlog (whole deployment)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list:
        return []  # read at scrape time only; nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = datetime.now(UTC)
        with self.engine.connect() as conn:
            by_state = dict(conn.execute(select(case_t.c.state, func.count()).group_by(case_t.c.state)).all())
            by_channel = dict(conn.execute(
                select(message_t.c.channel, func.count()).where(message_t.c.direction == "in")
                .group_by(message_t.c.channel)).all())
            overdue = conn.execute(select(func.count()).select_from(case_t).where(overdue_clause(now))).scalar_one()
            breached = conn.execute(
                select(func.count()).select_from(case_t).where(case_t.c.sla_breached_at.isnot(None))).scalar_one()
            outbox = dict(conn.execute(
                select(message_t.c.send_state, func.count()).where(message_t.c.direction == "out")
                .group_by(message_t.c.send_state)).all())
        depth = GaugeMetricFamily("citizen_hub_queue_depth", "Cases by state.", labels=["state"])
        for state in CaseState:
            depth.add_metric([state.value], by_state.get(state.value, 0))
        yield depth
        stored = GaugeMetricFamily("citizen_hub_requests_stored", "Inbound messages stored, by channel.",
                                   labels=["channel"])
        for channel, n in sorted(by_channel.items()):
            stored.add_metric([channel], n)
        yield stored
        yield GaugeMetricFamily("citizen_hub_sla_overdue", "Open cases past a running SLA deadline now.",
                                value=overdue)
        yield GaugeMetricFamily("citizen_hub_sla_breaches", "Cases that were flagged for an SLA breach.",
                                value=breached)
        messages = GaugeMetricFamily("citizen_hub_outbox_messages", "Outbound messages by send state.",
                                     labels=["state"])
        for state in ("pending", "sending", "sent", "failed", "uncertain"):
            messages.add_metric([state], outbox.get(state, 0))
        yield messages


def request_timer(metrics_of):
    """An aiohttp middleware observing each request's latency under its route's pattern
    (``/api/cases/{case_id}``, never the concrete path, so the label set stays small and holds no ids).

    ``metrics_of(app)`` returns the app's :class:`Metrics`, or None while the queue is starting.
    """

    @web.middleware
    async def timer(request: web.Request, handler):
        start = time.perf_counter()
        try:
            return await handler(request)
        finally:
            metrics = metrics_of(request.app)
            if metrics is not None:
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else "unmatched"
                metrics.observe_http(request.method, route, time.perf_counter() - start)

    return timer


# -- who may scrape -----------------------------------------------------------------------------------------


def metrics_guard(request: web.Request, settings: Any, *, separate_listener: bool) -> web.Response | None:
    """None when this request may read ``/metrics``; else the answer (404 on the public server while a
    separate listener serves it, 401 without the configured bearer token)."""
    server = getattr(settings, "server", None)
    if server is None:
        return None
    if getattr(server, "metrics_separate", False) and not separate_listener:
        return web.Response(status=404, text="nicht gefunden\n")
    token = getattr(server, "metrics_token", "")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return web.Response(status=401, text="Ein Bearer-Token ist nötig\n",
                                headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return None


class MetricsListener:
    """``/metrics`` on a listener of its own (``[server] metrics_separate``, ``metrics_host``, ``metrics_port``;
    port 0 picks a free one, in :attr:`port`), started and stopped with the app."""

    def __init__(self, settings: Any,
                 render_for: Callable[[web.Application, web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.settings = settings
        self.render_for = render_for
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, app: web.Application) -> None:
        server = getattr(self.settings, "server", None)
        if server is None or not getattr(server, "metrics_separate", False):
            return
        settings, render_for = self.settings, self.render_for

        async def scrape(request: web.Request) -> web.StreamResponse:
            refused = metrics_guard(request, settings, separate_listener=True)
            return refused if refused is not None else await render_for(app, request)

        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", scrape)
        self.runner = web.AppRunner(metrics_app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, server.metrics_host, server.metrics_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("metrics: served on %s:%d", server.metrics_host, self.port)

    async def stop(self, _app: web.Application | None = None) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
