"""The direct answer both Twilio channels give: service, responsible office, its phone, today's hours.

:func:`direct_answer` turns a routing decision of the knowledge base into an :class:`Answer` when the
hub may answer without a person: the service is certain and the place, and so the office, is known.
:mod:`channels.twilio.sms` writes it as an SMS, :mod:`channels.twilio.voice` speaks it. The opening
hours are the office's own for the local weekday of ``now``; on a public holiday of the Land the office
counts as closed and the next opening day is named instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from hub.queue.routing import route_cache
from hub.queue.sla import BusinessCalendar

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = {"mon": "Montag", "tue": "Dienstag", "wed": "Mittwoch", "thu": "Donnerstag", "fri": "Freitag",
             "sat": "Samstag", "sun": "Sonntag"}
DAY_SHORT = {"mon": "Mo", "tue": "Di", "wed": "Mi", "thu": "Do", "fri": "Fr", "sat": "Sa", "sun": "So"}

Span = tuple[str, str]


@dataclass(frozen=True)
class Hours:
    """An office's hours as far as a caller needs them today."""

    known: bool  # the office has opening hours at all
    today: tuple[Span, ...]  # spans today (empty: closed today)
    holiday: bool = False  # closed today because of a public holiday
    next_day: str | None = None  # when closed today: weekday key of the next opening day
    next_spans: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Answer:
    """What the hub tells a citizen without a person: the service, who does it, how to reach them, when."""

    service_id: str
    service: str
    office_id: str
    office: str
    phone: str | None
    hours: Hours
    place: str | None = None


def _spans(raw: Any) -> tuple[Span, ...]:
    out = []
    for item in raw or ():
        if isinstance(item, Sequence) and len(item) == 2 and all(isinstance(x, str) for x in item):
            out.append((item[0], item[1]))
    return tuple(out)


def hours_on(opening_hours: Mapping[str, Any] | None, today: date,
             is_holiday: Callable[[date], bool] | None = None) -> Hours:
    """The hours of an office on ``today`` (and the next opening day when it is closed then)."""
    if not opening_hours:
        return Hours(known=False, today=())
    holiday = bool(is_holiday and is_holiday(today))
    spans = () if holiday else _spans(opening_hours.get(WEEKDAYS[today.weekday()]))
    if spans:
        return Hours(True, spans)
    for ahead in range(1, 15):
        day = today + timedelta(days=ahead)
        if is_holiday and is_holiday(day):
            continue
        nxt = _spans(opening_hours.get(WEEKDAYS[day.weekday()]))
        if nxt:
            return Hours(True, (), holiday, WEEKDAYS[day.weekday()], nxt)
    return Hours(True, (), holiday)


@lru_cache(maxsize=32)
def _land_calendar(land: str) -> BusinessCalendar:
    return BusinessCalendar(land=land)


def office_holidays(authority: Any, fallback: Callable[[date], bool] | None) -> Callable[[date], bool] | None:
    """The public holidays of the office's own Land (the first two digits of its ARS), so that an office in
    Nordrhein-Westfalen is closed on Fronleichnam wherever the hub runs; ``fallback`` (the hub's Land) for an
    office without a known Land."""
    land = (getattr(authority, "region_ars", None) or "")[:2]
    try:
        return _land_calendar(land).is_holiday
    except ValueError:
        return fallback


def direct_answer(route: Any, now: datetime, is_holiday: Callable[[date], bool] | None = None) -> Answer | None:
    """An :class:`Answer` from a :class:`knowledge.base.RouteResult`, or None when a person must help.

    ``now`` is local time (the ``[sla]`` time zone): it decides which weekday's hours are today. The office is
    closed on the public holidays of its own Land (:func:`office_holidays`; ``is_holiday`` for an office
    whose Land is not known).
    """
    if route is None or route.needs_clarification or route.service is None or route.authority is None:
        return None
    authority = route.authority
    location = getattr(route, "location", None)
    return Answer(
        service_id=route.service.id,
        service=route.service.name,
        office_id=authority.id,
        office=authority.name,
        phone=(authority.phone or "").strip() or None,
        hours=hours_on(authority.opening_hours, now.date(), office_holidays(authority, is_holiday)),
        place=getattr(location, "display_name", None) if location is not None else None,
    )


def short_time(value: str) -> str:
    """``08:00`` → ``8``, ``17:30`` → ``17:30`` (how hours are written in a short message)."""
    hour, _, minute = value.partition(":")
    hour = hour.lstrip("0") or "0"
    return hour if minute in ("", "00") else f"{hour}:{minute}"


def spoken_time(value: str) -> str:
    """``08:00`` → ``8 Uhr``, ``17:30`` → ``17 Uhr 30`` (how a German voice reads a time)."""
    hour, _, minute = value.partition(":")
    hour = hour.lstrip("0") or "0"
    return f"{hour} Uhr" if minute in ("", "00") else f"{hour} Uhr {minute.lstrip('0') or '0'}"


def spoken_digits(number: str) -> str:
    """A phone number read digit by digit, groups apart: ``04551 951-0`` → ``0 4 5 5 1, 9 5 1, 0``.

    A voice reads ``04551`` as a number (viertausendfünfhunderteinundfünfzig); callers want digits.
    """
    groups, current = [], []
    for char in number:
        if char.isdigit():
            current.append(char)
        elif char == "+" and not groups and not current:
            current.append("plus")
        elif current:
            groups.append(" ".join(current))
            current = []
    if current:
        groups.append(" ".join(current))
    return ", ".join(groups)


_BEFORE_PLACE = r"(?:(?:ich\s+)?wohne\s+in|wohnhaft\s+in|in|aus|nach|bei|für|im)"


def _without_place(text: str, region: Any) -> str:
    """``text`` without the region's name (and the preposition before it) and without a postcode."""
    stripped = text
    for name in sorted({region.name, region.display_name} - {""}, key=len, reverse=True):
        stripped = re.sub(rf"(?i)(\b{_BEFORE_PLACE}\s+)?\b{re.escape(name)}\b", " ", stripped)
    return re.sub(r"\b\d{5}\b", " ", stripped)


def route_text(kb: Any, text: str, location: str | None = None) -> Any:
    """``kb.route(text, location)`` for a text that may name the place itself (an SMS, a caller's sentence).

    The knowledge base finds the place in the text, but the place's name also counts as words of the
    request and dilutes the service's score ("Personalausweis ... ich wohne in Todesfelde" scores 75,
    without the place 98). So when the text names one place, the service is looked up without the place's
    words, at that place; only when that is not certain (the "place" may have been words of the request)
    is the whole text routed as well, and the better decision counts.

    The decisions come through the knowledge base's :class:`~hub.queue.routing.RouteCache`: a text asked
    again (by another citizen, or by the routing stage for the case the webhook stored) is decided once.
    """
    kb = route_cache(kb)
    if location is None:
        place = kb.resolve_place(None, text)
        found = place.match if place is not None else None
        if found is not None:
            stripped = _without_place(text, found)
            if stripped != text and stripped.strip():
                first = kb.route(stripped, found.ars)
                if not first.needs_clarification:
                    return first
                whole = kb.route(text)
                if whole.needs_clarification and first.confidence > whole.confidence:
                    return first
                return whole
    return kb.route(text, location)


def within_working_hours(hours: float) -> str:
    """"innerhalb von 24 Arbeitsstunden": the queue's first-response time (``[sla] first_response_hours``), as the
    acknowledgement and the callback promise it."""
    return "innerhalb einer Arbeitsstunde" if hours == 1 else f"innerhalb von {hours:g} Arbeitsstunden".replace(".", ",")
