"""The figures of one hub process: intake, routing, outbox and HTTP latency (``prometheus-client``).

The queue's stages count into a :class:`Metrics`; ``GET /metrics`` (:mod:`hub.http.metrics`) serves it.
Every :class:`Metrics` has its own registry, so several apps in one process (tests, the benchmark) never
share or collide on figures.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.registry import Collector

# The ``*_created`` series (when each counter was made) mean nothing to a D115 dashboard and double
# the size of a scrape.
prometheus_client.disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def _child(children: dict[tuple[str, ...], Any], metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered in ``children`` (the same child object prometheus keeps)."""
    child = children.get(labels)
    if child is None:
        child = children[labels] = metric.labels(*labels)
    return child


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
        self._collectors: dict[Hashable, Collector] = {}
        # The labelled children, looked up once per label set: ``labels()`` takes a lock and builds its key
        # on every call, and these two are called for every request.
        self._http_children: dict[tuple[str, ...], Any] = {}
        self._intake_children: dict[tuple[str, ...], Any] = {}

    def count_intake(self, reqs: list[Any], outcomes: list[Any]) -> None:
        self.intake_batches.inc()
        for req, outcome in zip(reqs, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                kind = "failed"
            elif getattr(outcome, "dropped", False):
                kind = "dropped"  # an automatic answer to no open case: not stored
            elif not outcome.created:
                kind = "duplicate"
            else:
                kind = "follow_up" if outcome.joined else "new"
            _child(self._intake_children, self.intake, req.channel, kind).inc()

    def count_rejected(self, status: int) -> None:
        self.http_rejected.labels(str(status)).inc()

    def observe_http(self, method: str, route: str, seconds: float) -> None:
        _child(self._http_children, self.http_latency, method, route).observe(seconds)

    def observe_routing(self, router_seconds: float, arrived: datetime, state: str) -> None:
        self.router_seconds.observe(router_seconds)
        self.routing_latency.observe(max(0.0, (datetime.now(UTC) - arrived).total_seconds()))
        self.routed.labels(state).inc()

    def count_send(self, channel: str, state: str) -> None:
        self.sends.labels(channel, state).inc()

    def add_collector(self, key: Hashable, make: Callable[[], Collector]) -> None:
        """Register the collector ``make()`` once per ``key`` (figures read at scrape time)."""
        if key not in self._collectors:
            self._collectors[key] = make()
            self.registry.register(self._collectors[key])
