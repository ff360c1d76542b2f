"""``GET /metrics`` in the Prometheus text format (no client library needed for this little).

Two kinds of figures:

* counters and histograms of *this process* (intake by channel and outcome, routing latency from
  arrival to the routing decision, time spent in the router, outbox sends by outcome);
* gauges read from the database at scrape time, the same for every process of a deployment
  (cases by state, stored requests by channel, overdue cases, flagged SLA breaches, outbox backlog).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from hub.queue.cases import CaseState, case_t, message_t, overdue_clause

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        lines, running = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{suffix} {self.sum:.6f}")
        lines.append(f"{name}_count{suffix} {self.count}")
        return lines


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """The in-process figures; thread-safe (intake and workers run in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.intake: Counter[tuple[str, str]] = Counter()
        self.routing_latency = Histogram()
        self.router_seconds = Histogram()
        self.routed: Counter[str] = Counter()
        self.sends: Counter[tuple[str, str]] = Counter()
        self.http_rejected: Counter[int] = Counter()
        self.intake_batches = 0  # group commits; requests / batches is the average batch size

    def count_intake(self, reqs: list[Any], outcomes: list[Any]) -> None:
        with self._lock:
            self.intake_batches += 1
            for req, outcome in zip(reqs, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    kind = "failed"
                elif not outcome.created:
                    kind = "duplicate"
                else:
                    kind = "follow_up" if outcome.joined else "new"
                self.intake[(req.channel, kind)] += 1

    def count_rejected(self, status: int) -> None:
        with self._lock:
            self.http_rejected[status] += 1

    def observe_routing(self, router_seconds: float, arrived: datetime, state: str) -> None:
        latency = max(0.0, (datetime.now(UTC) - arrived).total_seconds())
        with self._lock:
            self.router_seconds.observe(router_seconds)
            self.routing_latency.observe(latency)
            self.routed[state] += 1

    def count_send(self, channel: str, state: str) -> None:
        with self._lock:
            self.sends[(channel, state)] += 1

    def render(self, engine: Engine | None = None) -> str:
        out: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        with self._lock:
            head("citizen_hub_intake_requests_total", "counter",
                 "Inbound requests handed to intake by this process, by channel and outcome.")
            for (channel, kind), n in sorted(self.intake.items()):
                out.append(f'citizen_hub_intake_requests_total{{channel="{_label(channel)}",outcome="{kind}"}} {n}')
            head("citizen_hub_intake_batches_total", "counter",
                 "Transactions (group commits) intake wrote; requests per batch show how well commits are shared.")
            out.append(f"citizen_hub_intake_batches_total {self.intake_batches}")
            head("citizen_hub_http_rejected_total", "counter", "HTTP intake requests refused, by status code.")
            for status, n in sorted(self.http_rejected.items()):
                out.append(f'citizen_hub_http_rejected_total{{status="{status}"}} {n}')
            head("citizen_hub_routing_latency_seconds", "histogram",
                 "Time from a request's arrival to its routing decision (routed or needs_clarification).")
            out.extend(self.routing_latency.render("citizen_hub_routing_latency_seconds"))
            head("citizen_hub_router_seconds", "histogram", "Time the knowledge base took to route one case.")
            out.extend(self.router_seconds.render("citizen_hub_router_seconds"))
            head("citizen_hub_routed_total", "counter", "Routing decisions of this process, by resulting state.")
            for state, n in sorted(self.routed.items()):
                out.append(f'citizen_hub_routed_total{{state="{state}"}} {n}')
            head("citizen_hub_outbox_sends_total", "counter", "Send attempts of this process, by channel and outcome.")
            for (channel, state), n in sorted(self.sends.items()):
                out.append(f'citizen_hub_outbox_sends_total{{channel="{_label(channel)}",outcome="{state}"}} {n}')
        if engine is not None:
            out.extend(database_gauges(engine))
        return "\n".join(out) + "\n"


def database_gauges(engine: Engine) -> list[str]:
    """Queue depth by state, stored requests by channel, SLA figures, outbox backlog (whole deployment)."""
    now = datetime.now(UTC)
    with engine.connect() as conn:
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
    lines = ["# HELP citizen_hub_queue_depth Cases by state.", "# TYPE citizen_hub_queue_depth gauge"]
    for state in CaseState:
        lines.append(f'citizen_hub_queue_depth{{state="{state.value}"}} {by_state.get(state.value, 0)}')
    lines += ["# HELP citizen_hub_requests_stored Inbound messages stored, by channel.",
              "# TYPE citizen_hub_requests_stored gauge"]
    for channel, n in sorted(by_channel.items()):
        lines.append(f'citizen_hub_requests_stored{{channel="{_label(channel)}"}} {n}')
    lines += ["# HELP citizen_hub_sla_overdue Open cases past a running SLA deadline now.",
              "# TYPE citizen_hub_sla_overdue gauge", f"citizen_hub_sla_overdue {overdue}",
              "# HELP citizen_hub_sla_breaches Cases that were flagged for an SLA breach.",
              "# TYPE citizen_hub_sla_breaches gauge", f"citizen_hub_sla_breaches {breached}",
              "# HELP citizen_hub_outbox_messages Outbound messages by send state.",
              "# TYPE citizen_hub_outbox_messages gauge"]
    for state in ("pending", "sending", "sent", "failed", "uncertain"):
        lines.append(f'citizen_hub_outbox_messages{{state="{state}"}} {outbox.get(state, 0)}')
    return lines
