"""``GET /metrics``: what a scrape shows, with ``prometheus-client``.

Two kinds of figures:

* counters and histograms of *this process* (:class:`hub.queue.metrics.Metrics`: intake by channel and
  outcome, routing latency, time in the router, outbox sends; HTTP request latency per route, observed
  by :func:`request_timer`);
* gauges read from the database at scrape time, the same for every process of a deployment
  (cases by state, stored requests by channel, overdue cases, flagged SLA breaches, outbox backlog).

The text format and its content type come from the library (``choose_encoder``: Prometheus text 0.0.4
unless the scraper asks for OpenMetrics).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from hub.queue.cases import CaseState, case_t, message_t, overdue_clause
from hub.queue.metrics import Metrics


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
