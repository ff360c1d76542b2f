"""Service levels: public holidays, business hours and SLA deadlines.

The D115 service promise: a question that is forwarded to the responsible authority is answered
within 24 *working* hours, i.e. hours inside the opening window (default Mon-Fri 08:00-18:00,
``Europe/Berlin``) on days that are not public holidays of the configured Land.

* :func:`public_holidays` gives the statutory holidays of every Land, from the ``holidays`` package;
  :func:`easter_sunday` is its Easter computation.
* :class:`BusinessCalendar` answers "is this working time?", "what is start + N working hours?"
  and "how many working seconds lie between a and b?" for timezone-aware datetimes.
* :class:`SlaClock` adds pauses (waiting for the citizen) on top of a calendar.
* :class:`SlaSettings` is the ``[sla]`` section of the configuration model.

Working time is measured as real elapsed time inside the opening windows: a window is the local
wall-clock interval ``opening``-``closing`` of a working day, converted to absolute instants. With
the usual office hours a DST switch (02:00/03:00 at night) never falls into a window, so every
working day has exactly ``closing - opening`` hours; a window that did contain a switch would be one
hour shorter or longer, as the clock on the wall says.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from dateutil.easter import EASTER_WESTERN, easter
from pydantic import Field, field_validator, model_validator

from knowledge.settings import Section

__all__ = [
    "LAENDER",
    "MIN_YEAR",
    "BusinessCalendar",
    "SlaClock",
    "SlaSettings",
    "easter_sunday",
    "land_code",
    "public_holidays",
]

#: Two-digit Land code (first two digits of the ARS/AGS) -> usual abbreviation.
LAENDER: dict[str, str] = {
    "01": "SH",  # Schleswig-Holstein
    "02": "HH",  # Hamburg
    "03": "NI",  # Niedersachsen
    "04": "HB",  # Bremen
    "05": "NW",  # Nordrhein-Westfalen
    "06": "HE",  # Hessen
    "07": "RP",  # Rheinland-Pfalz
    "08": "BW",  # Baden-Württemberg
    "09": "BY",  # Bayern
    "10": "SL",  # Saarland
    "11": "BE",  # Berlin
    "12": "BB",  # Brandenburg
    "13": "MV",  # Mecklenburg-Vorpommern
    "14": "SN",  # Sachsen
    "15": "ST",  # Sachsen-Anhalt
    "16": "TH",  # Thüringen
}
_BY_ABBREVIATION = {abbr: code for code, abbr in LAENDER.items()}

#: Earliest year whose holidays are modelled. Until 1994 Buß- und Bettag was a holiday everywhere
#: (it was abolished from 1995 on to fund the care insurance, except in Sachsen); earlier rules
#: are not needed for a ticket system and would be wrong here.
MIN_YEAR = 1995

#: The holidays package names some feasts differently from how German offices write them; its names
#: are kept except for these (the ones citizens read on our pages and in the dashboard).
_OUR_NAMES = {
    "Erster Mai": "Tag der Arbeit",
    "Frauentag": "Internationaler Frauentag",
    "Erster Weihnachtstag": "1. Weihnachtstag",
    "Zweiter Weihnachtstag": "2. Weihnachtstag",
}


def land_code(land: str) -> str:
    """Normalise a Land given as code (``"01"``..``"16"``) or abbreviation (``"SH"``, ``"nw"``).

    Returns the two-digit code; raises ``ValueError`` for anything else.
    """
    if isinstance(land, str):
        key = land.strip().upper()
        if key in LAENDER:
            return key
        if key in _BY_ABBREVIATION:
            return _BY_ABBREVIATION[key]
    valid = ", ".join(f"{code}/{abbr}" for code, abbr in LAENDER.items())
    raise ValueError(f"unknown Land {land!r}; expected a two-digit code or abbreviation ({valid})")


def easter_sunday(year: int) -> date:
    """Easter Sunday of ``year`` in the Gregorian calendar (the computation of ``dateutil``, which the
    ``holidays`` package uses for every movable feast)."""
    if not isinstance(year, int) or isinstance(year, bool) or not 1583 <= year <= 9999:
        raise ValueError(f"year must be an integer between 1583 and 9999, not {year!r}")
    return easter(year, EASTER_WESTERN)


def _name(name: str) -> str:
    if name.endswith("Jahrestag der Befreiung vom Nationalsozialismus und der Beendigung des Zweiten "
                     "Weltkriegs in Europa"):
        return "Tag der Befreiung"  # Berlin's one-off holidays of 2020 and 2025
    return _OUR_NAMES.get(name, name)


@lru_cache(maxsize=512)
def _holidays(year: int, code: str) -> MappingProxyType[date, str]:
    """Cached, read-only holiday table of one year and Land (``code`` already normalised).

    The statutory public holidays come from the ``holidays`` package (``subdiv`` = the Land), which
    tracks every Land's changes (Reformationstag in the north since 2018, Frauentag in Berlin and
    Mecklenburg-Vorpommern, Weltkindertag in Thüringen, one-off holidays). Its ``public`` category holds
    only what is a holiday in the whole Land: Fronleichnam in parts of Sachsen and Thüringen and Mariä
    Himmelfahrt in the Catholic part of Bayern are not, and neither is Augsburg's Friedensfest; the
    calendar is per Land, not per municipality.
    """
    table = holidays.country_holidays("DE", subdiv=LAENDER[code], years=year, language="de")
    # Two feasts can coincide (e.g. Christi Himmelfahrt on 1 May 2008): keep both names.
    return MappingProxyType({day: " / ".join(_name(n) for n in table.get_list(day)) for day in sorted(table)})


def public_holidays(year: int, land: str) -> dict[date, str]:
    """Statutory public holidays of ``land`` in ``year`` as ``{date: German name}``, sorted by date.

    ``land`` is a two-digit code (``"01"``..``"16"``) or an abbreviation (``"SH"`` .. ``"TH"``).
    Only holidays that hold in the whole Land are included (see the comments on Fronleichnam and
    Mariä Himmelfahrt). Raises ``ValueError`` for an unknown Land or a year before :data:`MIN_YEAR`.
    """
    code = land_code(land)
    if not isinstance(year, int) or isinstance(year, bool) or not MIN_YEAR <= year <= 9999:
        raise ValueError(f"year must be an integer between {MIN_YEAR} and 9999, not {year!r}")
    return dict(_holidays(year, code))


def _require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name} must be timezone-aware (e.g. datetime(..., tzinfo=ZoneInfo('Europe/Berlin'))), "
            f"got naive {value.isoformat()}"
        )


@functools.lru_cache(maxsize=64, typed=True)  # every deadline of intake asks for the same few lengths
def _hours_to_timedelta(hours: float) -> timedelta:
    if isinstance(hours, bool) or not isinstance(hours, (int, float)):
        raise TypeError(f"hours must be a number, not {type(hours).__name__}")
    if not math.isfinite(hours) or hours < 0:
        raise ValueError(f"hours must be a finite number >= 0, got {hours!r}")
    return timedelta(seconds=hours * 3600)


def _parse_clock(value: str, *, closing: bool = False) -> time:
    """``"HH:MM"`` -> ``time``; a closing of ``"24:00"`` is midnight at the end of the day (``time(0)``)."""
    match = re.fullmatch(r"([01]?\d|2[0-4]):([0-5]\d)", value.strip())
    if not match or (match.group(1) == "24" and (match.group(2) != "00" or not closing)):
        limit = "24:00" if closing else "23:59"
        raise ValueError(f"expected a time as HH:MM (00:00-{limit}), got {value!r}")
    hour, minute = int(match.group(1)), int(match.group(2))
    return time(0) if hour == 24 else time(hour, minute)


# Longest run of closed days tolerated while searching for the next window; with at least one
# open weekday the real maximum is a few days, so hitting this means the calendar is unusable.
_MAX_CLOSED_DAYS = 400


class BusinessCalendar:
    """Opening hours of the hub: ``open_days`` (0 = Monday .. 6 = Sunday) from ``start`` to ``end``
    local time in ``tz``, except on the public holidays of ``land``.

    ``end == time(0)`` means midnight at the end of the day (24:00). All methods take and return
    timezone-aware datetimes; a result is given in the timezone of the argument it is derived from.
    Holidays are cached per year; whole days are skipped, so adding thousands of hours is cheap.
    """

    def __init__(
        self,
        land: str = "01",
        open_days: Iterable[int] = (0, 1, 2, 3, 4),
        start: time = time(8),
        end: time = time(18),
        tz: str = "Europe/Berlin",
    ) -> None:
        self.land = land_code(land)
        days = tuple(open_days)
        if not days or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 6 for d in days):
            raise ValueError(
                f"open_days must be a non-empty set of weekdays 0 (Mon) .. 6 (Sun), got {days!r}"
            )
        self.open_days = tuple(sorted(set(days)))
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ValueError("start and end are local wall-clock times and must not carry a tzinfo")
        if end != time(0) and end <= start:
            raise ValueError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
        self.start = start
        self.end = end
        try:
            self.tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}") from exc

    @classmethod
    def from_settings(cls, settings: SlaSettings) -> BusinessCalendar:
        """Build the calendar from the ``[sla]`` configuration section."""
        return cls(
            land=settings.land,
            open_days=settings.open_days,
            start=_parse_clock(settings.opening),
            end=_parse_clock(settings.closing, closing=True),
            tz=settings.timezone,
        )

    def __repr__(self) -> str:
        return (
            f"BusinessCalendar(land={self.land!r}, open_days={self.open_days!r}, start={self.start!r}, "
            f"end={self.end!r}, tz={self.tz.key!r})"
        )

    # -- days ---------------------------------------------------------------------------------

    def holidays(self, year: int) -> dict[date, str]:
        """Public holidays of the calendar's Land in ``year`` (see :func:`public_holidays`)."""
        return public_holidays(year, self.land)

    def is_holiday(self, day: date) -> bool:
        """Whether ``day`` is a public holiday of the calendar's Land."""
        return day in _holidays_checked(day.year, self.land)

    def is_working_day(self, day: date) -> bool:
        """Whether the hub is open at all on ``day`` (an open weekday that is not a holiday)."""
        return day.weekday() in self.open_days and not self.is_holiday(day)

    def _window(self, day: date) -> tuple[datetime, datetime]:
        """Opening window of ``day`` as UTC instants (whether or not ``day`` is a working day)."""
        opening = datetime.combine(day, self.start, tzinfo=self.tz)
        closing_day = day + timedelta(days=1) if self.end == time(0) else day
        closing = datetime.combine(closing_day, self.end, tzinfo=self.tz)
        return opening.astimezone(UTC), closing.astimezone(UTC)

    def _local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.tz).date()

    # -- instants -----------------------------------------------------------------------------

    def is_working_time(self, dt: datetime) -> bool:
        """Whether ``dt`` lies inside an opening window (opening inclusive, closing exclusive)."""
        _require_aware(dt, "dt")
        day = self._local_date(dt)
        if not self.is_working_day(day):
            return False
        opening, closing = self._window(day)
        return opening <= dt < closing

    def next_opening(self, dt: datetime) -> datetime:
        """``dt`` itself if the hub is open then, else the start of the next opening window.

        The result is in the timezone of ``dt``.
        """
        _require_aware(dt, "dt")
        instant = dt.astimezone(UTC)
        day = self._local_date(instant)
        for _ in range(_MAX_CLOSED_DAYS):
            if self.is_working_day(day):
                opening, closing = self._window(day)
                if instant < closing:
                    return max(instant, opening).astimezone(dt.tzinfo)
            day += timedelta(days=1)
        raise RuntimeError(f"{self!r} has no opening within {_MAX_CLOSED_DAYS} days of {dt.isoformat()}")

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """The instant at which ``hours`` working hours have elapsed since ``start``.

        Time outside the opening windows does not count, so a start outside hours counts from the
        next opening. The result is the earliest such instant: when the hours run out exactly at a
        closing time, the closing time is returned (not the next opening); ``hours=0`` returns
        ``start``. Example: Friday 17:00 + 24 h (Mon-Fri 08-18) = Wednesday 11:00.
        The result is in the timezone of ``start``. Raises ``ValueError`` for a naive ``start`` or
        negative/non-finite ``hours``.
        """
        _require_aware(start, "start")
        amount = _hours_to_timedelta(hours)
        return self._add(start.astimezone(UTC), amount).astimezone(start.tzinfo)

    def working_seconds_between(self, a: datetime, b: datetime) -> float:
        """Working seconds (time inside opening windows) from ``a`` to ``b``.

        Negative when ``b`` is before ``a`` (so ``between(a, b) == -between(b, a)``).
        """
        _require_aware(a, "a")
        _require_aware(b, "b")
        return self._between(a.astimezone(UTC), b.astimezone(UTC)).total_seconds()

    # -- internals on UTC instants ------------------------------------------------------------

    def _add(self, instant: datetime, amount: timedelta) -> datetime:
        if amount <= timedelta(0):
            return instant
        day = self._local_date(instant)
        closed_run = 0
        while True:
            if self.is_working_day(day):
                closed_run = 0
                opening, closing = self._window(day)
                begin = max(instant, opening)
                if begin < closing:
                    available = closing - begin
                    if amount <= available:
                        return begin + amount
                    amount -= available
            else:
                closed_run += 1
                if closed_run > _MAX_CLOSED_DAYS:
                    raise RuntimeError(f"{self!r} has no opening within {_MAX_CLOSED_DAYS} days of {day}")
            day += timedelta(days=1)

    def _between(self, a: datetime, b: datetime) -> timedelta:
        if b < a:
            return -self._between(b, a)
        total = timedelta(0)
        day = self._local_date(a)
        # A window never starts before its own local day, so windows of days after b's date
        # cannot overlap [a, b].
        last = self._local_date(b)
        while day <= last:
            if self.is_working_day(day):
                opening, closing = self._window(day)
                low, high = max(a, opening), min(b, closing)
                if low < high:
                    total += high - low
            day += timedelta(days=1)
        return total


def _holidays_checked(year: int, code: str) -> MappingProxyType[date, str]:
    if not MIN_YEAR <= year <= 9999:
        raise ValueError(f"public holidays are modelled from {MIN_YEAR} on, not for {year}")
    return _holidays(year, code)


Pause = tuple[datetime, datetime | None]


class SlaClock:
    """SLA deadlines on top of a :class:`BusinessCalendar`, with pauses.

    A pause ``(begin, end)`` is an interval in which the clock is stopped (e.g. waiting for the
    citizen to answer a question). Working time overlapped by a pause does not count, so the
    deadline moves by exactly that working time. ``end=None`` is a pause that is still running.
    Pauses may overlap each other; parts before the start of the SLA are ignored.
    """

    def __init__(self, calendar: BusinessCalendar | None = None) -> None:
        self.calendar = calendar if calendar is not None else BusinessCalendar()
        # (UTC minute, working time) -> how deadlines from inside that minute follow (see _add_memo).
        self._minutes: dict[tuple[datetime, timedelta], tuple[datetime, bool] | None] = {}

    @classmethod
    def from_settings(cls, settings: SlaSettings) -> SlaClock:
        """Clock on the calendar described by the ``[sla]`` configuration section."""
        return cls(BusinessCalendar.from_settings(settings))

    @staticmethod
    def _merge_pauses(pauses: Sequence[Pause], start: datetime) -> list[tuple[datetime, datetime | None]]:
        """Validate, clip to ``start`` and merge the pauses; UTC, sorted, non-overlapping."""
        cleaned: list[tuple[datetime, datetime | None]] = []
        for index, pause in enumerate(pauses):
            try:
                begin, end = pause
            except (TypeError, ValueError) as exc:
                raise ValueError(f"pause {index} must be a (begin, end) pair, got {pause!r}") from exc
            _require_aware(begin, f"pause {index} begin")
            if end is not None:
                _require_aware(end, f"pause {index} end")
                if end < begin:
                    raise ValueError(
                        f"pause {index} ends before it begins: {begin.isoformat()} .. {end.isoformat()}"
                    )
            begin_utc = max(begin.astimezone(UTC), start)
            end_utc = None if end is None else end.astimezone(UTC)
            if end_utc is not None and end_utc <= begin_utc:
                continue  # entirely before the start (or empty)
            cleaned.append((begin_utc, end_utc))
        cleaned.sort(key=lambda item: item[0])
        merged: list[tuple[datetime, datetime | None]] = []
        for begin, end in cleaned:
            if merged:
                last_begin, last_end = merged[-1]
                if last_end is None:
                    break  # an open pause swallows everything after it
                if begin <= last_end:
                    merged[-1] = (last_begin, None if end is None else max(last_end, end))
                    continue
            merged.append((begin, end))
        return merged

    def deadline(self, start: datetime, hours: float, pauses: Sequence[Pause] = ()) -> datetime | None:
        """When ``hours`` working hours have elapsed since ``start``, not counting ``pauses``.

        Returns ``None`` while the clock is stopped, i.e. when a still-running pause (``end=None``)
        began before the deadline was reached; a running pause that began after the deadline does
        not matter (the case is overdue anyway). The result is in the timezone of ``start``.
        """
        _require_aware(start, "start")
        remaining = _hours_to_timedelta(hours)
        position = start.astimezone(UTC)
        if not pauses:  # every new case: nothing to merge
            return self._add_memo(position, remaining).astimezone(start.tzinfo)
        cal = self.calendar
        for begin, end in self._merge_pauses(pauses, position):
            worked = cal._between(position, begin)
            if remaining <= worked:
                break
            remaining -= worked
            if end is None:
                return None
            position = max(position, end)
        return self._add_memo(position, remaining).astimezone(start.tzinfo)

    def _add_memo(self, position: datetime, remaining: timedelta) -> datetime:
        """``calendar._add(position, remaining)``, computed once per minute of ``position``.

        Intake computes a deadline for every request, each from its own arrival instant; under load
        they share their minute. For a minute ``[m, m+1)`` the deadline is either the same for every
        instant in it (no working time in the minute: all count from the next opening) or the
        deadline of ``m`` shifted by the offset (the minute is working time and so is the minute after
        the deadline of ``m``: a working minute more at the start is a working minute more at the end).
        Both are checked with the calendar itself; any other minute (one containing an opening or a
        closing time, or whose deadlines cross one) is computed in full.
        """
        minute = position.replace(second=0, microsecond=0)
        key = (minute, remaining)
        try:
            rule = self._minutes[key]
        except KeyError:
            rule = self._minute_rule(minute, remaining)
            if len(self._minutes) > 4096:
                self._minutes.clear()
            self._minutes[key] = rule
        if rule is None:
            return self.calendar._add(position, remaining)
        base, shifted = rule
        return base + (position - minute) if shifted else base

    def _minute_rule(self, minute: datetime, remaining: timedelta) -> tuple[datetime, bool] | None:
        cal = self.calendar
        one = timedelta(minutes=1)
        base = cal._add(minute, remaining)
        after = cal._add(minute + one, remaining)
        worked = cal._between(minute, minute + one)
        if worked == timedelta(0) and after == base:
            return base, False
        if worked == one and after == base + one:
            return base, True
        return None

    def elapsed_working_seconds(self, start: datetime, now: datetime, pauses: Sequence[Pause] = ()) -> float:
        """Working seconds from ``start`` to ``now`` that count, i.e. minus those in ``pauses``.

        A running pause (``end=None``) counts as lasting until ``now``. 0 if ``now`` is before ``start``.
        """
        _require_aware(start, "start")
        _require_aware(now, "now")
        cal = self.calendar
        begin_utc, now_utc = start.astimezone(UTC), now.astimezone(UTC)
        if now_utc <= begin_utc:
            return 0.0
        total = cal._between(begin_utc, now_utc)
        for begin, end in self._merge_pauses(pauses, begin_utc):
            if begin >= now_utc:
                break
            total -= cal._between(begin, now_utc if end is None else min(end, now_utc))
        return total.total_seconds()

    def remaining_working_seconds(
        self, start: datetime, hours: float, now: datetime, pauses: Sequence[Pause] = ()
    ) -> float:
        """Working seconds left until the SLA of ``hours`` from ``start`` is used up at ``now``.

        Negative once overdue (by that many working seconds). Unlike the deadline this is defined
        while a pause is running, so it is the number to show on a paused case.
        """
        budget = _hours_to_timedelta(hours).total_seconds()
        return budget - self.elapsed_working_seconds(start, now, pauses)

    @staticmethod
    def is_overdue(deadline: datetime | None, now: datetime) -> bool:
        """Whether ``now`` is past ``deadline``; a deadline of ``None`` (clock paused) is never overdue."""
        _require_aware(now, "now")
        if deadline is None:
            return False
        _require_aware(deadline, "deadline")
        return now > deadline


class SlaSettings(Section):
    """Service levels and the business calendar they are measured in."""

    land: str = Field(
        "01",
        description="Land whose public holidays close the hub: two-digit code '01'..'16' (first digits of "
        "the ARS) or abbreviation 'SH', 'HH', 'NI', 'HB', 'NW', 'HE', 'RP', 'BW', 'BY', 'SL', 'BE', 'BB', "
        "'MV', 'SN', 'ST', 'TH'. Stored as the two-digit code.",
    )
    open_days: list[int] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4],
        description="Weekdays on which working hours count: 0 = Monday .. 6 = Sunday.",
    )
    opening: str = Field("08:00", description="Start of working hours, local time HH:MM.")
    closing: str = Field(
        "18:00", description="End of working hours, local time HH:MM ('24:00' = midnight); after opening."
    )
    timezone: str = Field("Europe/Berlin", description="IANA time zone of opening and closing.")
    first_response_hours: float = Field(
        24.0, gt=0, description="Working hours within which a new request gets its first response."
    )
    forwarded_answer_hours: float = Field(
        24.0,
        gt=0,
        description="Working hours within which a question forwarded to the responsible authority is "
        "answered (the D115 service promise: 24).",
    )

    @field_validator("land")
    @classmethod
    def _check_land(cls, value: str) -> str:
        return land_code(value)

    @field_validator("open_days", mode="before")
    @classmethod
    def _split_open_days(cls, value: object) -> object:
        # Environment variables are strings: CITIZEN_HUB_SLA__OPEN_DAYS="0,1,2,3,4" (or "[0, 1, 2]").
        if isinstance(value, str):
            return [part.strip() for part in value.strip().strip("[]").split(",") if part.strip()]
        return value

    @field_validator("open_days")
    @classmethod
    def _check_open_days(cls, value: list[int]) -> list[int]:
        if not value or any(not 0 <= day <= 6 for day in value):
            raise ValueError("open_days must be a non-empty list of weekdays 0 (Monday) .. 6 (Sunday)")
        return sorted(set(value))

    @field_validator("opening")
    @classmethod
    def _check_opening(cls, value: str) -> str:
        return _parse_clock(value).strftime("%H:%M")

    @field_validator("closing")
    @classmethod
    def _check_closing(cls, value: str) -> str:
        parsed = _parse_clock(value, closing=True)
        return "24:00" if parsed == time(0) else parsed.strftime("%H:%M")

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _check_hours(self) -> SlaSettings:
        opening, closing = _parse_clock(self.opening), _parse_clock(self.closing, closing=True)
        if closing != time(0) and closing <= opening:
            raise ValueError(f"closing ({self.closing}) must be after opening ({self.opening})")
        return self
