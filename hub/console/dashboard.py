"""The supervisors' dashboard: the D115 service promises against what happened in a period.

Figures (:func:`compute`), each over the cases and calls the supervisor's scope covers:

* **service level** – share of calls whose caller waited at most ``service_level_seconds`` (30 s),
  of the calls whose waiting time the telephone system reported (target 75 %);
* **first-contact rate** – calls answered at first contact / calls finished (first contact + forwarded)
  (target 65 %);
* **forwarded in time** – of the cases forwarded in the period whose outcome is known, the share answered
  by their ``forward_due`` (24 working hours, pauses while waiting for the citizen excluded). A case not
  yet answered counts as late once its deadline has passed and as pending before;
* **queue depth by authority** (cases waiting for someone: not answered, not closed) and the **overdue
  list** – now, not for the period.

Calls are attributed to the authority of the service the agent answered; an admin sees all calls.
Days are local days of the ``[sla]`` time zone. Charts are inline SVG made here (no JavaScript): bars per
day against the target line, and queue depth per authority. Every label is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select

from hub.console.calls import call_t
from hub.console.settings import ConsoleSettings
from hub.queue.cases import FINAL_STATES, CaseState, case_t, overdue_clause

MAX_OVERDUE = 100
#: Cases that still wait for someone: not finished, not answered (an answered case reopens on a follow-up).
WORK_STATES = tuple(s.value for s in CaseState if s not in FINAL_STATES and s != CaseState.ANSWERED)
MAX_DEPTH_BARS = 15


#: The dashboard's calendar: far outside any data, and near year 1 or 9999 the day arithmetic overflows.
EARLIEST = date(2000, 1, 1)
LATEST = date(2099, 12, 31)


@dataclass(frozen=True)
class Period:
    """Whole local days ``first``..``last`` (inclusive) in time zone ``tz``."""

    first: date
    last: date
    tz: ZoneInfo

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(0), tzinfo=self.tz).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(0), tzinfo=self.tz).astimezone(UTC)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def day_of(self, instant: datetime) -> date:
        return instant.astimezone(self.tz).date()

    @classmethod
    def from_query(cls, first: str | None, last: str | None, tz: ZoneInfo, default_days: int, max_days: int,
                   today: date | None = None) -> Period:
        """From ``YYYY-MM-DD`` strings; missing ones default to the last ``default_days`` days up to today."""
        today = today or datetime.now(tz).date()
        try:
            last_day = date.fromisoformat(last) if last else today
            first_day = date.fromisoformat(first) if first else last_day - timedelta(days=default_days - 1)
        except ValueError:
            raise ValueError("Datumsangaben bitte als JJJJ-MM-TT.") from None
        # Far outside any data, and near the ends of the calendar the day arithmetic overflows (a 500).
        if not (EARLIEST <= first_day <= LATEST and EARLIEST <= last_day <= LATEST):
            raise ValueError(f"Das Datum muss zwischen {EARLIEST.isoformat()} und {LATEST.isoformat()} liegen.")
        if first_day > last_day:
            raise ValueError("Der Zeitraum beginnt nach seinem Ende.")
        if (last_day - first_day).days + 1 > max_days:
            raise ValueError(f"Bitte einen Zeitraum von höchstens {max_days} Tagen wählen.")
        return cls(first_day, last_day, tz)


@dataclass
class Day:
    day: date
    calls: int = 0
    calls_with_wait: int = 0
    calls_in_time: int = 0
    first_contact: int = 0
    forwarded_calls: int = 0
    forward_in_time: int = 0
    forward_late: int = 0

    @property
    def service_level(self) -> float | None:
        return self.calls_in_time / self.calls_with_wait if self.calls_with_wait else None

    @property
    def first_contact_rate(self) -> float | None:
        finished = self.first_contact + self.forwarded_calls
        return self.first_contact / finished if finished else None

    @property
    def forward_share(self) -> float | None:
        known = self.forward_in_time + self.forward_late
        return self.forward_in_time / known if known else None


@dataclass
class Figures:
    period: Period
    calls: int = 0
    calls_with_wait: int = 0
    calls_in_time: int = 0
    first_contact: int = 0
    forwarded_calls: int = 0
    forwarded_cases: int = 0
    forward_in_time: int = 0
    forward_late: int = 0
    forward_pending: int = 0
    daily: list[Day] = field(default_factory=list)
    depth: list[tuple[str | None, str, int]] = field(default_factory=list)  # (authority id, name, open cases)
    overdue: list[dict[str, Any]] = field(default_factory=list)

    @property
    def service_level(self) -> float | None:
        return self.calls_in_time / self.calls_with_wait if self.calls_with_wait else None

    @property
    def first_contact_rate(self) -> float | None:
        finished = self.first_contact + self.forwarded_calls
        return self.first_contact / finished if finished else None

    @property
    def forward_share(self) -> float | None:
        known = self.forward_in_time + self.forward_late
        return self.forward_in_time / known if known else None

    @property
    def queue_total(self) -> int:
        return sum(n for _, _, n in self.depth)

    def to_json(self) -> dict[str, Any]:
        iso = lambda v: v.isoformat() if isinstance(v, (date, datetime)) else v  # noqa: E731
        return {
            "period": {"from": self.period.first.isoformat(), "to": self.period.last.isoformat()},
            "calls": {"total": self.calls, "with_wait": self.calls_with_wait, "in_time": self.calls_in_time,
                      "service_level": self.service_level},
            "first_contact": {"answered": self.first_contact, "forwarded": self.forwarded_calls,
                              "rate": self.first_contact_rate},
            "forwarded_cases": {"total": self.forwarded_cases, "in_time": self.forward_in_time,
                                "late": self.forward_late, "pending": self.forward_pending,
                                "share": self.forward_share},
            "daily": [asdict(d) | {"day": d.day.isoformat(), "service_level": d.service_level,
                                   "first_contact_rate": d.first_contact_rate, "forward_share": d.forward_share}
                      for d in self.daily],
            "queue_depth": [{"authority_id": a, "authority": n, "open": c} for a, n, c in self.depth],
            "overdue": [{k: iso(v) for k, v in row.items()} for row in self.overdue],
        }


def compute(engine, period: Period, scope, kb, settings: ConsoleSettings, now: datetime | None = None) -> Figures:
    """The dashboard's figures for ``period``, limited to what ``scope`` (:class:`hub.console.auth.Scope`) covers."""
    now = now or datetime.now(UTC)
    figures = Figures(period)
    days = {d: Day(d) for d in period.days}
    authority_ids = scope.authority_ids(kb)
    case_scope = scope.case_clause(kb)
    call_where = [call_t.c.started_at >= period.start, call_t.c.started_at < period.end]
    if authority_ids is not None:
        call_where.append(call_t.c.authority_id.in_(sorted(authority_ids)))
    case_where = [] if case_scope is None else [case_scope]
    with engine.connect() as conn:
        calls = conn.execute(select(call_t.c.started_at, call_t.c.answered_within_s, call_t.c.outcome)
                             .where(*call_where)).all()
        forwarded = conn.execute(
            select(case_t.c.forwarded_at, case_t.c.forward_due, case_t.c.forward_met_at)
            .where(case_t.c.forwarded_at >= period.start, case_t.c.forwarded_at < period.end, *case_where)).all()
        depth = conn.execute(
            select(case_t.c.authority_id, func.max(case_t.c.authority_name), func.count())
            .where(case_t.c.state.in_(WORK_STATES), *case_where)
            .group_by(case_t.c.authority_id)).all()
        overdue = conn.execute(
            select(case_t.c.id, case_t.c.state, case_t.c.channel, case_t.c.created_at, case_t.c.authority_name,
                   case_t.c.service_name, case_t.c.first_response_due, case_t.c.first_responded_at,
                   case_t.c.forward_due, case_t.c.forward_met_at, case_t.c.assigned_agent)
            .where(and_(overdue_clause(now), *case_where)).order_by(case_t.c.id).limit(MAX_OVERDUE)
        ).mappings().all()
    for started, wait, outcome in calls:
        day = days.get(period.day_of(started))
        figures.calls += 1
        if day is not None:
            day.calls += 1
        if wait is not None:
            in_time = wait <= settings.service_level_seconds
            figures.calls_with_wait += 1
            figures.calls_in_time += in_time
            if day is not None:
                day.calls_with_wait += 1
                day.calls_in_time += in_time
        if outcome == "first_contact":
            figures.first_contact += 1
            if day is not None:
                day.first_contact += 1
        elif outcome == "forwarded":
            figures.forwarded_calls += 1
            if day is not None:
                day.forwarded_calls += 1
    for forwarded_at, due, met in forwarded:
        figures.forwarded_cases += 1
        day = days.get(period.day_of(forwarded_at))
        if met is not None and due is not None:
            verdict = "in_time" if met <= due else "late"
        elif met is None and due is not None and due < now:
            verdict = "late"
        elif met is not None and due is None:
            verdict = "in_time"  # answered while the clock was paused: nothing was overdue
        else:
            verdict = "pending"
        if verdict == "in_time":
            figures.forward_in_time += 1
            if day is not None:
                day.forward_in_time += 1
        elif verdict == "late":
            figures.forward_late += 1
            if day is not None:
                day.forward_late += 1
        else:
            figures.forward_pending += 1
    figures.daily = [days[d] for d in period.days]
    figures.depth = sorted(((a, n or "ohne Zuständigkeit", c) for a, n, c in depth), key=lambda x: (-x[2], x[1]))
    for row in overdue:
        item = dict(row)
        forwarded_open = row["forward_due"] is not None and row["forward_met_at"] is None and row["forward_due"] < now
        item["due"] = row["forward_due"] if forwarded_open else row["first_response_due"]
        item["clock"] = "Weiterleitung (24 Arbeitsstunden)" if forwarded_open else "Erste Antwort"
        figures.overdue.append(item)
    return figures


# -- charts ------------------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{value * 100:.0f} %"


def rate_chart(title: str, days: Sequence[date], values: Sequence[float | None], counts: Sequence[int],
               target: float, *, width: int = 640, height: int = 200) -> str:
    """Bars per day (share 0-1) with the target as a dashed line; days without data get a grey tick."""
    left, right, top, bottom = 40, 64, 24, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(days), 1)
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.7)
    y = lambda v: top + plot_h * (1 - v)  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="14" class="chart-title" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     f'stroke="#ddd" stroke-width="1"/>')
        parts.append(f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="10">'
                     f"{tick * 100:.0f}</text>")
    label_every = max(1, round(n / 10))
    for i, (day, value, count) in enumerate(zip(days, values, counts, strict=True)):
        x = left + i * slot + (slot - bar_w) / 2
        label = f"{day:%d.%m.}: " + ("keine Daten" if value is None else f"{_pct(value)} von {count}")
        if value is None:
            parts.append(f'<rect x="{x:.1f}" y="{y(0) - 2:.1f}" width="{bar_w:.1f}" height="2" fill="#bbb" '
                         f'class="bar none"><title>{escape(label)}</title></rect>')
        else:
            ok = value >= target
            parts.append(f'<rect x="{x:.1f}" y="{y(value):.1f}" width="{bar_w:.1f}" '
                         f'height="{max(plot_h * value, 1):.1f}" fill="{"#2e7d32" if ok else "#c62828"}" '
                         f'class="bar {"ok" if ok else "miss"}"><title>{escape(label)}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 10}" text-anchor="middle" font-size="10">'
                         f"{day:%d.%m.}</text>")
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(target):.1f}" y2="{y(target):.1f}" '
                 f'stroke="#1a237e" stroke-width="2" stroke-dasharray="6 4" class="target"/>')
    parts.append(f'<text x="{width - right + 4}" y="{y(target) + 4:.1f}" font-size="11" '
                 f'fill="#1a237e">Ziel {_pct(target)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def depth_chart(title: str, depth: Sequence[tuple[str | None, str, int]], *, width: int = 640) -> str:
    """Horizontal bars: open cases per authority (the largest first; the rest summed up)."""
    rows = list(depth[:MAX_DEPTH_BARS])
    rest = sum(c for _, _, c in depth[MAX_DEPTH_BARS:])
    if rest:
        rows.append((None, f"{len(depth) - MAX_DEPTH_BARS} weitere", rest))
    row_h, top, label_w = 22, 24, 280
    height = top + max(len(rows), 1) * row_h + 8
    bar_area = width - label_w - 50
    peak = max((c for _, _, c in rows), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="14" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    if not rows:
        parts.append(f'<text x="0" y="{top + 14}" font-size="12">Keine offenen Fälle.</text>')
    for i, (_aid, name, count) in enumerate(rows):
        y = top + i * row_h
        short = name if len(name) <= 42 else name[:41] + "…"
        bar = bar_area * count / peak
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="11">'
                     f"<title>{escape(name)}</title>{escape(short)}</text>")
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(bar, 1):.1f}" height="{row_h - 6}" fill="#1565c0" '
                     f'class="bar depth"><title>{escape(name)}: {count}</title></rect>')
        parts.append(f'<text x="{label_w + bar + 4:.1f}" y="{y + 15}" font-size="11">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)


def charts(f: Figures, settings: ConsoleSettings) -> dict[str, str]:
    """The dashboard's SVG charts, keyed by name."""
    days = [d.day for d in f.daily]
    return {
        "service_level": rate_chart(
            f"Anrufe in {settings.service_level_seconds:g} s angenommen (je Tag)", days,
            [d.service_level for d in f.daily], [d.calls_with_wait for d in f.daily], settings.target_service_level),
        "first_contact": rate_chart(
            "Erstkontaktquote (je Tag)", days, [d.first_contact_rate for d in f.daily],
            [d.first_contact + d.forwarded_calls for d in f.daily], settings.target_first_contact),
        "forward": rate_chart(
            "Weiterleitungen in 24 Arbeitsstunden beantwortet (je Tag der Weiterleitung)", days,
            [d.forward_share for d in f.daily], [d.forward_in_time + d.forward_late for d in f.daily],
            settings.target_forward_in_time),
        "depth": depth_chart("Offene Fälle je Behörde (jetzt)", f.depth),
    }
