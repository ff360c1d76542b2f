"""Opening hours of an office: whether it is open now, and how people read them ("Mo 08:00–12:00")."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def open_now(hours: dict[str, list[list[str]]], now: datetime | None = None) -> bool | None:
    """Whether an office with these opening hours is open at ``now`` (Europe/Berlin); None if unknown."""
    if not hours:
        return None
    now = now or datetime.now(ZoneInfo("Europe/Berlin"))
    hhmm = now.strftime("%H:%M")
    return any(start <= hhmm < end for start, end in hours.get(WEEKDAYS[now.weekday()], []))


def format_hours(hours: dict[str, list[list[str]]]) -> str:
    names = {"mon": "Mo", "tue": "Di", "wed": "Mi", "thu": "Do", "fri": "Fr", "sat": "Sa", "sun": "So"}
    parts = []
    for day in WEEKDAYS:
        spans = hours.get(day)
        if spans:
            parts.append(f"{names[day]} " + ", ".join(f"{a}–{b}" for a, b in spans))
    return "; ".join(parts)
