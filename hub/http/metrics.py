"""``GET /metrics``: the Prometheus figures of the hub, with ``prometheus-client``.

Two kinds of figures:

* counters and histograms of *this process* (intake by channel and outcome, HTTP request latency per
  route, routing latency from arrival to the routing decision, time spent in the router, outbox sends
  by outcome);
* gauges read from the database at scrape time, the same for every process of a deployment
  (cases by state, stored requests by channel, overdue cases, flagged SLA breaches, outbox backlog).

Every :class:`Metrics` has its own registry, so several apps in one process (tests, the benchmark)
never share or collide on figures. The text format and its content type come from the library
(``choose_encoder``: Prometheus text 0.0.4 unless the scraper asks for OpenMetrics).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from hub.queue.cases import CaseState, case_t, message_t, overdue_clause

# The ``*_created`` series (when each counter was made) mean nothing to a D115 dashboard and double
# the size of a scrape.
prometheus_client.disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """The in-process figures of one hub process (thread-safe: intake and workers run in threads)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.intake = Counter("citizen_hub_intake_requests", "Inbound requests handed to intake by this process, "
                              "by channel and outcome.", ["channel", "outcome"], registry=r)
        self.intake_batches = Counter("citizen_hub_intake_batches", "Transactions (group commits) intake wrote; "
                                      "requests per batch show how well commits are shared.", registry=r)
        self.http_rejected = Counter("citizen_hub_http_rejected", "HTTP intake requests refused, by status code.",
                                     ["status"], registry=r)
        self.http_latency = Histogram("citizen_hub_http_request_duration_seconds",
                                      "Time to answer an HTTP request, by method and route.", ["method", "route"],
                                      buckets=HTTP_BUCKETS, registry=r)
        self.routing_latency = Histogram("citizen_hub_routing_latency_seconds", "Time from a request's arrival "
                                         "to its routing decision (routed or needs_clarification).",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.router_seconds = Histogram("citizen_hub_router_seconds", "Time the knowledge base took to route "
                                        "one case.", buckets=LATENCY_BUCKETS, registry=r)
        self.routed = Counter("citizen_hub_routed", "Routing decisions of this process, by resulting state.",
                              ["state"], registry=r)
        self.sends = Counter("citizen_hub_outbox_sends", "Send attempts of this process, by channel and outcome.",
                             ["channel", "outcome"], registry=r)
        self._database: _DatabaseGauges | None = None

    def count_intake(self, reqs: list[Any], outcomes: list[Any]) -> None:
        self.intake_batches.inc()
        for req, outcome in zip(reqs, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                kind = "failed"
            elif not outcome.created:
                kind = "duplicate"
            else:
                kind = "follow_up" if outcome.joined else "new"
            self.intake.labels(req.channel, kind).inc()

    def count_rejected(self, status: int) -> None:
        self.http_rejected.labels(str(status)).inc()

    def observe_http(self, method: str, route: str, seconds: float) -> None:
        self.http_latency.labels(method, route).observe(seconds)

    def observe_routing(self, router_seconds: float, arrived: datetime, state: str) -> None:
        self.router_seconds.observe(router_seconds)
        self.routing_latency.observe(max(0.0, (datetime.now(UTC) - arrived).total_seconds()))
        self.routed.labels(state).inc()

    def count_send(self, channel: str, state: str) -> None:
        self.sends.labels(channel, state).inc()

    def with_database(self, engine: Engine) -> None:
        """Report the deployment-wide gauges of ``engine`` at every scrape."""
        if self._database is None:
            self._database = _DatabaseGauges(engine)
            self.registry.register(self._database)

    def render(self, engine: Engine | None = None, accept: str = "") -> tuple[bytes, str]:
        """The scrape body and its content type (by the scraper's ``Accept`` header)."""
        if engine is not None:
            self.with_database(engine)
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


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
