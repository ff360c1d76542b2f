"""Tests of hub.queue.sla: holidays of the 16 Länder, business-hour arithmetic, SLA clock, settings."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from hub.config import Section, _toml_value
from hub.queue.sla import (
    LAENDER,
    BusinessCalendar,
    SlaClock,
    SlaSettings,
    easter_sunday,
    land_code,
    public_holidays,
)

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


@pytest.fixture
def cal() -> BusinessCalendar:
    """The default D115 calendar: Schleswig-Holstein, Mon-Fri 08-18, Europe/Berlin."""
    return BusinessCalendar()


# --- Easter ------------------------------------------------------------------------------------

KNOWN_EASTER = {
    1818: (3, 22),  # earliest possible date
    1943: (4, 25),  # latest possible date
    1954: (4, 18),
    1981: (4, 19),
    2000: (4, 23),
    2001: (4, 15),
    2002: (3, 31),
    2003: (4, 20),
    2004: (4, 11),
    2005: (3, 27),
    2006: (4, 16),
    2007: (4, 8),
    2008: (3, 23),
    2009: (4, 12),
    2010: (4, 4),
    2011: (4, 24),
    2012: (4, 8),
    2013: (3, 31),
    2014: (4, 20),
    2015: (4, 5),
    2016: (3, 27),
    2017: (4, 16),
    2018: (4, 1),
    2019: (4, 21),
    2020: (4, 12),
    2021: (4, 4),
    2022: (4, 17),
    2023: (4, 9),
    2024: (3, 31),
    2025: (4, 20),
    2026: (4, 5),
    2027: (3, 28),
    2028: (4, 16),
    2029: (4, 1),
    2030: (4, 21),
    2038: (4, 25),
    2285: (3, 22),
}


@pytest.mark.parametrize("year", sorted(KNOWN_EASTER))
def test_easter_sunday_matches_known_table(year: int) -> None:
    assert easter_sunday(year) == date(year, *KNOWN_EASTER[year])


def _easter_gauss_lichtenberg(year: int) -> date:
    """Independent check: Gauss's Easter formula in Lichtenberg's form (no exceptions needed)."""
    k = year // 100
    m = 15 + (3 * k + 3) // 4 - (8 * k + 13) // 25
    s = 2 - (3 * k + 3) // 4
    a = year % 19
    d = (19 * a + m) % 30
    r = (d + a // 11) // 29
    og = 21 + d - r
    sz = 7 - (year + year // 4 + s) % 7
    oe = 7 - (og - sz) % 7
    return date(year, 3, 1) + timedelta(days=og + oe - 1)


def test_easter_sunday_agrees_with_gauss_for_all_gregorian_years() -> None:
    for year in range(1583, 10000):
        easter = easter_sunday(year)
        assert easter == _easter_gauss_lichtenberg(year), year
        assert easter.weekday() == 6
        assert date(year, 3, 22) <= easter <= date(year, 4, 25)


@pytest.mark.parametrize("year", [1582, 10000, 2024.0, "2024", True])
def test_easter_sunday_rejects_bad_years(year: object) -> None:
    with pytest.raises(ValueError, match="year"):
        easter_sunday(year)  # type: ignore[arg-type]


# --- public holidays ---------------------------------------------------------------------------

NATIONWIDE_2024 = {
    date(2024, 1, 1): "Neujahr",
    date(2024, 3, 29): "Karfreitag",
    date(2024, 4, 1): "Ostermontag",
    date(2024, 5, 1): "Tag der Arbeit",
    date(2024, 5, 9): "Christi Himmelfahrt",
    date(2024, 5, 20): "Pfingstmontag",
    date(2024, 10, 3): "Tag der Deutschen Einheit",
    date(2024, 12, 25): "1. Weihnachtstag",
    date(2024, 12, 26): "2. Weihnachtstag",
}


def test_hamburg_2024_is_the_nationwide_set_plus_reformationstag() -> None:
    assert public_holidays(2024, "HH") == {**NATIONWIDE_2024, date(2024, 10, 31): "Reformationstag"}


def test_hessen_2024_full_table() -> None:
    assert public_holidays(2024, "06") == {**NATIONWIDE_2024, date(2024, 5, 30): "Fronleichnam"}


def test_holidays_are_sorted_by_date() -> None:
    for code in LAENDER:
        days = list(public_holidays(2025, code))
        assert days == sorted(days)


@pytest.mark.parametrize(
    ("year", "karfreitag", "ostermontag", "himmelfahrt", "pfingstmontag", "fronleichnam"),
    [
        (2024, (3, 29), (4, 1), (5, 9), (5, 20), (5, 30)),
        (2025, (4, 18), (4, 21), (5, 29), (6, 9), (6, 19)),
        (2026, (4, 3), (4, 6), (5, 14), (5, 25), (6, 4)),
    ],
)
def test_movable_feasts(year, karfreitag, ostermontag, himmelfahrt, pfingstmontag, fronleichnam) -> None:
    nw = public_holidays(year, "NW")
    assert nw[date(year, *karfreitag)] == "Karfreitag"
    assert nw[date(year, *ostermontag)] == "Ostermontag"
    assert nw[date(year, *himmelfahrt)] == "Christi Himmelfahrt"
    assert nw[date(year, *pfingstmontag)] == "Pfingstmontag"
    assert nw[date(year, *fronleichnam)] == "Fronleichnam"
    for code in LAENDER:  # the nationwide movable ones hold everywhere
        table = public_holidays(year, code)
        for day in (karfreitag, ostermontag, himmelfahrt, pfingstmontag):
            assert date(year, *day) in table, (code, day)


def test_fronleichnam_2026_in_nw_not_in_sh() -> None:
    assert public_holidays(2026, "NW")[date(2026, 6, 4)] == "Fronleichnam"
    assert date(2026, 6, 4) not in public_holidays(2026, "SH")


def test_fronleichnam_only_where_it_holds_land_wide() -> None:
    with_it = {abbr for abbr in LAENDER.values() if date(2026, 6, 4) in public_holidays(2026, abbr)}
    # SN and TH have it only in some municipalities: deliberately left out.
    assert with_it == {"BW", "BY", "HE", "NW", "RP", "SL"}


def test_reformationstag() -> None:
    assert public_holidays(2026, "SH")[date(2026, 10, 31)] == "Reformationstag"
    with_it = {abbr for abbr in LAENDER.values() if date(2026, 10, 31) in public_holidays(2026, abbr)}
    assert with_it == {"BB", "HB", "HH", "MV", "NI", "SN", "ST", "SH", "TH"}
    # The northern Länder only since 2018 ...
    assert date(2016, 10, 31) not in public_holidays(2016, "SH")
    assert date(2016, 10, 31) in public_holidays(2016, "SN")
    # ... but 2017 was a one-off nationwide holiday.
    for code in LAENDER:
        assert public_holidays(2017, code)[date(2017, 10, 31)] == "Reformationstag"
    assert date(2018, 10, 31) not in public_holidays(2018, "BY")


@pytest.mark.parametrize(
    ("year", "day"),
    [
        (2017, 22),
        (2018, 21),
        (2019, 20),
        (2020, 18),
        (2021, 17),
        (2022, 16),
        (2023, 22),
        (2024, 20),
        (2025, 19),
        (2026, 18),
    ],
)
def test_buss_und_bettag_in_sachsen(year: int, day: int) -> None:
    sn = public_holidays(year, "SN")
    assert sn[date(year, 11, day)] == "Buß- und Bettag"
    assert date(year, 11, day).weekday() == 2
    assert date(year, 11, day) not in public_holidays(year, "BY")


def test_internationaler_frauentag() -> None:
    assert public_holidays(2024, "BE")[date(2024, 3, 8)] == "Internationaler Frauentag"
    assert date(2018, 3, 8) not in public_holidays(2018, "BE")  # since 2019
    assert date(2019, 3, 8) in public_holidays(2019, "BE")
    assert date(2022, 3, 8) not in public_holidays(2022, "MV")  # MV since 2023
    assert date(2023, 3, 8) in public_holidays(2023, "MV")
    assert date(2024, 3, 8) not in public_holidays(2024, "BB")


def test_other_land_specific_holidays() -> None:
    for abbr in ("BW", "BY", "ST"):
        assert public_holidays(2025, abbr)[date(2025, 1, 6)] == "Heilige Drei Könige"
    assert date(2025, 1, 6) not in public_holidays(2025, "NW")
    assert public_holidays(2025, "SL")[date(2025, 8, 15)] == "Mariä Himmelfahrt"
    assert date(2025, 8, 15) not in public_holidays(2025, "BY")  # only in part of Bayern
    for abbr in ("BW", "BY", "NW", "RP", "SL"):
        assert public_holidays(2025, abbr)[date(2025, 11, 1)] == "Allerheiligen"
    assert date(2025, 11, 1) not in public_holidays(2025, "HE")
    assert public_holidays(2025, "TH")[date(2025, 9, 20)] == "Weltkindertag"
    assert date(2018, 9, 20) not in public_holidays(2018, "TH")  # since 2019
    bb = public_holidays(2025, "BB")
    assert bb[date(2025, 4, 20)] == "Ostersonntag"
    assert bb[date(2025, 6, 8)] == "Pfingstsonntag"
    assert date(2025, 4, 20) not in public_holidays(2025, "BE")


# Number of holidays per Land in 2026 (no two fall on the same day that year).
COUNTS_2026 = {
    "SH": 10, "HH": 10, "NI": 10, "HB": 10, "NW": 11, "HE": 10, "RP": 11, "BW": 12,
    "BY": 12, "SL": 12, "BE": 10, "BB": 12, "MV": 11, "SN": 11, "ST": 11, "TH": 11,
}  # fmt: skip


@pytest.mark.parametrize("abbr", sorted(COUNTS_2026))
def test_number_of_holidays_2026(abbr: str) -> None:
    assert len(public_holidays(2026, abbr)) == COUNTS_2026[abbr]


def test_coinciding_holidays_keep_both_names() -> None:
    names = public_holidays(2008, "SH")[date(2008, 5, 1)].split(" / ")
    assert sorted(names) == ["Christi Himmelfahrt", "Tag der Arbeit"]


def test_code_and_abbreviation_are_equivalent() -> None:
    for code, abbr in LAENDER.items():
        assert land_code(code) == code
        assert land_code(abbr) == code
        assert land_code(f" {abbr.lower()} ") == code
        assert public_holidays(2025, code) == public_holidays(2025, abbr)


def test_returned_table_is_a_copy() -> None:
    table = public_holidays(2025, "SH")
    table.clear()
    assert public_holidays(2025, "SH")


@pytest.mark.parametrize("land", ["XX", "17", "00", "1", "", "Bayern", None])
def test_unknown_land_is_rejected(land: object) -> None:
    with pytest.raises(ValueError, match="unknown Land"):
        public_holidays(2025, land)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown Land"):
        BusinessCalendar(land=land)  # type: ignore[arg-type]


def test_years_before_1995_are_rejected() -> None:
    with pytest.raises(ValueError, match="1995"):
        public_holidays(1994, "SN")
    with pytest.raises(ValueError, match="1995"):
        BusinessCalendar().is_working_day(date(1990, 5, 2))


# --- BusinessCalendar: working time ------------------------------------------------------------


def test_is_working_time(cal: BusinessCalendar) -> None:
    assert cal.is_working_time(berlin(2026, 3, 2, 8))  # Monday opening: inclusive
    assert cal.is_working_time(berlin(2026, 3, 2, 17, 59, 59))
    assert not cal.is_working_time(berlin(2026, 3, 2, 18))  # closing: exclusive
    assert not cal.is_working_time(berlin(2026, 3, 2, 7, 59))
    assert not cal.is_working_time(berlin(2026, 3, 7, 12))  # Saturday
    assert not cal.is_working_time(berlin(2026, 4, 3, 12))  # Karfreitag
    # 07:30 UTC is 08:30 in Berlin in winter, 09:30 in summer.
    assert cal.is_working_time(datetime(2026, 3, 2, 7, 30, tzinfo=UTC))
    assert not cal.is_working_time(datetime(2026, 3, 2, 6, 30, tzinfo=UTC))
    assert cal.is_working_time(datetime(2026, 7, 1, 6, 30, tzinfo=UTC))


def test_is_working_day_depends_on_land() -> None:
    assert not BusinessCalendar("NW").is_working_day(date(2026, 6, 4))
    assert BusinessCalendar("SH").is_working_day(date(2026, 6, 4))
    assert not BusinessCalendar("SH").is_working_day(date(2026, 6, 6))  # Saturday
    assert BusinessCalendar("SH").holidays(2026) == public_holidays(2026, "01")


def test_next_opening(cal: BusinessCalendar) -> None:
    inside = berlin(2026, 3, 4, 11, 15)
    assert cal.next_opening(inside) == inside
    assert cal.next_opening(berlin(2026, 3, 4, 6)) == berlin(2026, 3, 4, 8)
    assert cal.next_opening(berlin(2026, 3, 6, 18)) == berlin(2026, 3, 9, 8)  # Friday closing
    assert cal.next_opening(berlin(2026, 3, 7, 10)) == berlin(2026, 3, 9, 8)  # Saturday
    assert cal.next_opening(berlin(2026, 4, 2, 18, 30)) == berlin(2026, 4, 7, 8)  # Easter
    result = cal.next_opening(datetime(2026, 3, 7, 10, tzinfo=UTC))
    assert result.tzinfo is UTC
    assert result == datetime(2026, 3, 9, 7, tzinfo=UTC)


def test_friday_afternoon_plus_24_hours_is_wednesday_11(cal: BusinessCalendar) -> None:
    assert cal.add_working_hours(berlin(2026, 3, 6, 17), 24) == berlin(2026, 3, 11, 11)


@pytest.mark.parametrize(
    ("start", "hours", "expected"),
    [
        (berlin(2026, 3, 2, 8), 24, berlin(2026, 3, 4, 12)),  # Monday morning
        (berlin(2026, 3, 2, 8), 10, berlin(2026, 3, 2, 18)),  # runs out exactly at closing
        (berlin(2026, 3, 2, 8), 1.5, berlin(2026, 3, 2, 9, 30)),  # fractional hours
        (berlin(2026, 3, 2, 8), 50, berlin(2026, 3, 6, 18)),  # a whole week
        (berlin(2026, 3, 2, 8), 50.25, berlin(2026, 3, 9, 8, 15)),
        (berlin(2026, 3, 7, 10), 2, berlin(2026, 3, 9, 10)),  # starts on Saturday
        (berlin(2026, 3, 6, 19), 1, berlin(2026, 3, 9, 9)),  # starts Friday after closing
        (berlin(2026, 3, 6, 18), 0.5, berlin(2026, 3, 9, 8, 30)),  # starts exactly at closing
        (berlin(2026, 3, 2, 6), 1, berlin(2026, 3, 2, 9)),  # starts before opening
        (berlin(2026, 4, 3, 10), 1, berlin(2026, 4, 7, 9)),  # starts on Karfreitag
        (berlin(2026, 3, 8, 23, 59), 24, berlin(2026, 3, 11, 12)),  # Sunday night
    ],
)
def test_add_working_hours(cal: BusinessCalendar, start: datetime, hours: float, expected: datetime) -> None:
    result = cal.add_working_hours(start, hours)
    assert result == expected
    assert result.utcoffset() == expected.utcoffset()


def test_zero_hours_returns_start(cal: BusinessCalendar) -> None:
    saturday = berlin(2026, 3, 7, 10)
    assert cal.add_working_hours(saturday, 0) == saturday


def test_across_easter_2026(cal: BusinessCalendar) -> None:
    # Gründonnerstag 2 April; Karfreitag 3, Ostermontag 6 April are closed, so are the weekend days.
    # 08:00: Thu 10 h, Tue 10 h, Wed 4 h -> Wednesday 12:00.
    assert cal.add_working_hours(berlin(2026, 4, 2, 8), 24) == berlin(2026, 4, 8, 12)
    # 17:00: Thu 1 h, Tue 10 h, Wed 10 h, Thu 3 h -> Thursday 11:00.
    assert cal.add_working_hours(berlin(2026, 4, 2, 17), 24) == berlin(2026, 4, 9, 11)
    assert cal.working_seconds_between(berlin(2026, 4, 2, 18), berlin(2026, 4, 7, 8)) == 0


def test_across_easter_2025(cal: BusinessCalendar) -> None:
    # Thu 17 April 12:00: Thu 6 h, Tue 22 April 10 h, Wed 23 April 8 h -> 16:00.
    assert cal.add_working_hours(berlin(2025, 4, 17, 12), 24) == berlin(2025, 4, 23, 16)


def test_across_christmas(cal: BusinessCalendar) -> None:
    # 2025: Heiligabend (Wed 24 Dec) is a normal working day; Thu 25/Fri 26 are holidays.
    # Tue 10:00: Tue 8 h, Wed 10 h, Mon 29 Dec 6 h -> 14:00.
    assert cal.add_working_hours(berlin(2025, 12, 23, 10), 24) == berlin(2025, 12, 29, 14)


def test_across_new_year_depends_on_land() -> None:
    # Wed 31 Dec 2025 15:00: Wed 3 h, (Neujahr), Fri 2 Jan 10 h, Mon 5 Jan 10 h, then 1 h.
    start = berlin(2025, 12, 31, 15)
    assert BusinessCalendar("SH").add_working_hours(start, 24) == berlin(2026, 1, 6, 9)
    # In Bayern Tuesday 6 January is Heilige Drei Könige.
    assert BusinessCalendar("BY").add_working_hours(start, 24) == berlin(2026, 1, 7, 9)


def test_dst_spring_forward_weekend(cal: BusinessCalendar) -> None:
    # Clocks go forward in the night to Sunday 29 March 2026.
    start = berlin(2026, 3, 27, 17)
    assert start.utcoffset() == timedelta(hours=1)
    result = cal.add_working_hours(start, 24)
    assert result == berlin(2026, 4, 1, 11)
    assert result.utcoffset() == timedelta(hours=2)
    assert (result.hour, result.minute) == (11, 0)
    # Fri 12-18 + Mon 08-12 = 10 working hours, though the weekend was one hour shorter.
    assert cal.working_seconds_between(berlin(2026, 3, 27, 12), berlin(2026, 3, 30, 12)) == 10 * HOUR


def test_dst_fall_back_weekend(cal: BusinessCalendar) -> None:
    # Clocks go back in the night to Sunday 25 October 2026.
    start = berlin(2026, 10, 23, 17)
    assert start.utcoffset() == timedelta(hours=2)
    result = cal.add_working_hours(start, 24)
    assert result == berlin(2026, 10, 28, 11)
    assert result.utcoffset() == timedelta(hours=1)
    assert (result.hour, result.minute) == (11, 0)
    assert cal.working_seconds_between(berlin(2026, 10, 23, 12), berlin(2026, 10, 26, 12)) == 10 * HOUR


def test_result_keeps_the_input_timezone(cal: BusinessCalendar) -> None:
    # 16:00 UTC on Fri 27 March is 17:00 CET; the deadline Wed 1 April 11:00 CEST is 09:00 UTC.
    result = cal.add_working_hours(datetime(2026, 3, 27, 16, tzinfo=UTC), 24)
    assert result.tzinfo is UTC
    assert result == datetime(2026, 4, 1, 9, tzinfo=UTC)
    assert (result.hour, result.minute) == (9, 0)


def test_start_inside_the_dst_gap(cal: BusinessCalendar) -> None:
    gap = berlin(2026, 3, 29, 2, 30)  # does not exist on the wall clock
    assert not cal.is_working_time(gap)
    assert cal.add_working_hours(gap, 1) == berlin(2026, 3, 30, 9)


def test_round_the_clock_calendar_counts_real_time_across_dst() -> None:
    always = BusinessCalendar("SH", open_days=range(7), start=time(0), end=time(0))
    assert always.working_seconds_between(berlin(2026, 3, 29), berlin(2026, 3, 30)) == 23 * HOUR
    assert always.working_seconds_between(berlin(2026, 10, 25), berlin(2026, 10, 26)) == 25 * HOUR
    assert always.add_working_hours(berlin(2026, 3, 28, 12), 24) == berlin(2026, 3, 29, 13)
    assert always.is_working_time(berlin(2026, 3, 28, 23, 59))
    assert not always.is_working_time(berlin(2026, 4, 3, 12))  # holidays stay closed


def test_working_seconds_between(cal: BusinessCalendar) -> None:
    monday = berlin(2026, 3, 2, 8)
    assert cal.working_seconds_between(monday, berlin(2026, 3, 9, 8)) == 50 * HOUR
    assert cal.working_seconds_between(monday, monday) == 0
    assert cal.working_seconds_between(berlin(2026, 3, 7, 0), berlin(2026, 3, 8, 23)) == 0  # weekend
    assert cal.working_seconds_between(berlin(2026, 3, 2, 7), berlin(2026, 3, 2, 9, 30)) == 1.5 * HOUR
    assert cal.working_seconds_between(berlin(2026, 3, 9, 8), monday) == -50 * HOUR
    # A whole year in SH: 2026 has 261 weekdays, 7 of them holidays (3 Oct, 31 Oct, 26 Dec are Saturdays).
    year = cal.working_seconds_between(berlin(2026, 1, 1), berlin(2027, 1, 1))
    assert year == (261 - 7) * 10 * HOUR


def test_working_year_count_matches_holiday_table(cal: BusinessCalendar) -> None:
    weekday_holidays = [d for d in public_holidays(2026, "SH") if d.weekday() < 5]
    # Neujahr, Karfreitag, Ostermontag, 1 May, Himmelfahrt, Pfingstmontag, 1. Weihnachtstag.
    assert len(weekday_holidays) == 7
    assert len([d for d in public_holidays(2026, "SH") if d.weekday() >= 5]) == 3


def test_add_and_between_are_inverse_on_random_instants() -> None:
    rng = random.Random(115)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    calendars = [BusinessCalendar(land) for land in ("SH", "BY", "SN", "BE")]
    for _ in range(300):
        cal = rng.choice(calendars)
        start = (base + timedelta(minutes=rng.randrange(3 * 365 * 24 * 60))).astimezone(BERLIN)
        hours = rng.choice([0.25, 1, 8, 10, 24, 24, 37.5, 100])
        end = cal.add_working_hours(start, hours)
        assert end >= start
        assert math.isclose(cal.working_seconds_between(start, end), hours * HOUR, abs_tol=1e-6)
        assert cal.is_working_time(end - timedelta(seconds=1))
        assert cal.add_working_hours(start, hours + 0.5) > end


def test_many_hours_are_fast(cal: BusinessCalendar) -> None:
    # Ten working years (whole days are skipped, not minutes): must be well under a second.
    result = cal.add_working_hours(berlin(2026, 1, 2, 8), 10 * 2500)
    assert result.year in (2035, 2036)


# --- invalid input -----------------------------------------------------------------------------


def test_naive_datetimes_are_rejected(cal: BusinessCalendar) -> None:
    naive = datetime(2026, 3, 2, 8)
    with pytest.raises(ValueError, match="start must be timezone-aware"):
        cal.add_working_hours(naive, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.is_working_time(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.next_opening(naive)
    with pytest.raises(ValueError, match="b must be timezone-aware"):
        cal.working_seconds_between(berlin(2026, 3, 2, 8), naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        SlaClock(cal).deadline(naive, 24)
    with pytest.raises(ValueError, match="pause 0 begin must be timezone-aware"):
        SlaClock(cal).deadline(berlin(2026, 3, 2, 8), 24, [(naive, None)])
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        SlaClock.is_overdue(berlin(2026, 3, 2, 8), naive)


@pytest.mark.parametrize("hours", [-1, -0.001, math.nan, math.inf])
def test_bad_hours_are_rejected(cal: BusinessCalendar, hours: float) -> None:
    with pytest.raises(ValueError, match="hours must be a finite number >= 0"):
        cal.add_working_hours(berlin(2026, 3, 2, 8), hours)
    with pytest.raises(ValueError, match="hours"):
        SlaClock(cal).deadline(berlin(2026, 3, 2, 8), hours)


def test_non_datetime_is_a_type_error(cal: BusinessCalendar) -> None:
    with pytest.raises(TypeError):
        cal.add_working_hours(date(2026, 3, 2), 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cal.add_working_hours(berlin(2026, 3, 2, 8), "24")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"open_days": ()}, "open_days"),
        ({"open_days": (0, 7)}, "open_days"),
        ({"open_days": (-1,)}, "open_days"),
        ({"open_days": ("Mon",)}, "open_days"),
        ({"start": time(18), "end": time(8)}, "must be after start"),
        ({"start": time(9), "end": time(9)}, "must be after start"),
        ({"start": time(8, tzinfo=UTC)}, "must not carry a tzinfo"),
        ({"tz": "Mars/Olympus_Mons"}, "unknown time zone"),
        ({"tz": "../etc/passwd"}, "unknown time zone"),
    ],
)
def test_bad_calendar_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BusinessCalendar(**kwargs)


# --- SlaClock ----------------------------------------------------------------------------------

MONDAY = berlin(2026, 3, 2, 8)  # no holidays in the following fortnight
NO_PAUSE_DEADLINE = berlin(2026, 3, 4, 12)


@pytest.fixture
def clock() -> SlaClock:
    return SlaClock(BusinessCalendar())


def test_deadline_without_pauses(clock: SlaClock) -> None:
    assert clock.deadline(MONDAY, 24) == NO_PAUSE_DEADLINE
    assert clock.deadline(MONDAY, 24, []) == NO_PAUSE_DEADLINE


def test_pause_moves_deadline_by_overlapped_working_time(clock: SlaClock) -> None:
    pause = (berlin(2026, 3, 2, 10), berlin(2026, 3, 2, 14))  # 4 working hours
    assert clock.deadline(MONDAY, 24, [pause]) == berlin(2026, 3, 4, 16)


def test_pause_over_night_counts_only_working_hours(clock: SlaClock) -> None:
    # Tue 17:00 .. Thu 09:00 overlaps 1 + 10 + 1 = 12 working hours: Wed 12:00 + 12 h = Thu 14:00.
    pause = (berlin(2026, 3, 3, 17), berlin(2026, 3, 5, 9))
    assert clock.deadline(MONDAY, 24, [pause]) == berlin(2026, 3, 5, 14)


def test_pause_outside_working_hours_changes_nothing(clock: SlaClock) -> None:
    weekend = (berlin(2026, 3, 7, 0), berlin(2026, 3, 9, 8))
    night = (berlin(2026, 3, 2, 18), berlin(2026, 3, 3, 8))
    start = berlin(2026, 3, 6, 17)
    assert clock.deadline(start, 24, [weekend, night]) == berlin(2026, 3, 11, 11)


def test_pause_before_start_is_clipped(clock: SlaClock) -> None:
    pause = (berlin(2026, 3, 1, 12), berlin(2026, 3, 2, 10))  # only Mon 08-10 counts
    assert clock.deadline(MONDAY, 24, [pause]) == berlin(2026, 3, 4, 14)
    earlier = (berlin(2026, 2, 20, 12), berlin(2026, 2, 27, 12))  # entirely before the start
    assert clock.deadline(MONDAY, 24, [earlier]) == NO_PAUSE_DEADLINE


def test_overlapping_and_unsorted_pauses_are_merged(clock: SlaClock) -> None:
    pauses = [
        (berlin(2026, 3, 2, 11), berlin(2026, 3, 2, 14)),
        (berlin(2026, 3, 2, 10), berlin(2026, 3, 2, 12)),
    ]
    assert clock.deadline(MONDAY, 24, pauses) == berlin(2026, 3, 4, 16)
    nested = [
        (berlin(2026, 3, 2, 10), berlin(2026, 3, 2, 14)),
        (berlin(2026, 3, 2, 11), berlin(2026, 3, 2, 12)),
    ]
    assert clock.deadline(MONDAY, 24, nested) == berlin(2026, 3, 4, 16)


def test_several_pauses_add_up(clock: SlaClock) -> None:
    pauses = [
        (berlin(2026, 3, 2, 10), berlin(2026, 3, 2, 11)),
        (berlin(2026, 3, 3, 15), berlin(2026, 3, 3, 17)),
    ]
    assert clock.deadline(MONDAY, 24, pauses) == berlin(2026, 3, 4, 15)


def test_pause_after_deadline_changes_nothing(clock: SlaClock) -> None:
    at_deadline = (NO_PAUSE_DEADLINE, berlin(2026, 3, 5, 12))
    later = (berlin(2026, 3, 5, 9), berlin(2026, 3, 6, 12))
    assert clock.deadline(MONDAY, 24, [at_deadline]) == NO_PAUSE_DEADLINE
    assert clock.deadline(MONDAY, 24, [later]) == NO_PAUSE_DEADLINE


def test_running_pause_stops_the_clock(clock: SlaClock) -> None:
    assert clock.deadline(MONDAY, 24, [(berlin(2026, 3, 3, 10), None)]) is None
    # A running pause that began after the deadline: the case is overdue, the deadline stays.
    assert clock.deadline(MONDAY, 24, [(berlin(2026, 3, 5, 10), None)]) == NO_PAUSE_DEADLINE
    # An open pause swallows a later closed one.
    pauses = [(berlin(2026, 3, 2, 10), None), (berlin(2026, 3, 3, 10), berlin(2026, 3, 3, 11))]
    assert clock.deadline(MONDAY, 24, pauses) is None


def test_pause_across_easter_and_dst(clock: SlaClock) -> None:
    # Start Fri 27 March 2026 17:00 CET (DST begins Sunday), pause Mon 30 March 12:00 .. Tue 31 March 10:00
    # = 6 + 2 working hours. Without the pause: Wed 1 April 11:00; +8 h -> Thu 2 April 09:00 (CEST).
    pause = (berlin(2026, 3, 30, 12), berlin(2026, 3, 31, 10))
    assert clock.deadline(berlin(2026, 3, 27, 17), 24, [pause]) == berlin(2026, 4, 2, 9)
    # Wed 11:00 + 18 h: Wed 7 h, Thu 10 h, (Karfreitag, weekend, Ostermontag), Tue 7 April 1 h.
    pause = (berlin(2026, 3, 30, 12), berlin(2026, 4, 1, 10))  # 6 + 10 + 2 = 18 h
    assert clock.deadline(berlin(2026, 3, 27, 17), 24, [pause]) == berlin(2026, 4, 7, 9)


@pytest.mark.parametrize(
    "pause",
    [
        (berlin(2026, 3, 2, 12), berlin(2026, 3, 2, 10)),
        (berlin(2026, 3, 2, 12),),
        "not a pause",
    ],
)
def test_bad_pauses_are_rejected(clock: SlaClock, pause: object) -> None:
    with pytest.raises(ValueError, match="pause 0"):
        clock.deadline(MONDAY, 24, [pause])  # type: ignore[list-item]


def test_is_overdue(clock: SlaClock) -> None:
    assert not clock.is_overdue(NO_PAUSE_DEADLINE, NO_PAUSE_DEADLINE)
    assert clock.is_overdue(NO_PAUSE_DEADLINE, NO_PAUSE_DEADLINE + timedelta(seconds=1))
    assert not clock.is_overdue(NO_PAUSE_DEADLINE, berlin(2026, 3, 3, 9))
    assert not clock.is_overdue(None, berlin(2030, 1, 1))  # paused
    assert clock.is_overdue(NO_PAUSE_DEADLINE, datetime(2026, 3, 4, 11, 0, 1, tzinfo=UTC))  # 12:00:01 CET


def test_remaining_working_seconds(clock: SlaClock) -> None:
    pause = (berlin(2026, 3, 2, 10), berlin(2026, 3, 2, 14))
    # Mon 10 h + Tue 4 h = 14 h, minus 4 h paused -> 10 h used, 14 h left.
    assert clock.remaining_working_seconds(MONDAY, 24, berlin(2026, 3, 3, 12), [pause]) == 14 * HOUR
    assert clock.elapsed_working_seconds(MONDAY, berlin(2026, 3, 3, 12), [pause]) == 10 * HOUR
    # A running pause counts up to now: Mon 10 h + Tue 2 h used, nothing since Tue 10:00.
    running = (berlin(2026, 3, 3, 10), None)
    assert clock.remaining_working_seconds(MONDAY, 24, berlin(2026, 3, 4, 15), [running]) == 12 * HOUR
    # Overdue: Thursday 08:00 without pauses is 30 h used -> 6 h overdue.
    assert clock.remaining_working_seconds(MONDAY, 24, berlin(2026, 3, 5, 8)) == -6 * HOUR
    # Before the start nothing is used.
    assert clock.remaining_working_seconds(MONDAY, 24, berlin(2026, 3, 1, 8)) == 24 * HOUR
    # Over the weekend the remaining time does not shrink.
    friday = clock.remaining_working_seconds(berlin(2026, 3, 6, 17), 24, berlin(2026, 3, 6, 18))
    monday = clock.remaining_working_seconds(berlin(2026, 3, 6, 17), 24, berlin(2026, 3, 9, 8))
    assert friday == monday == 23 * HOUR


def test_remaining_is_zero_at_the_deadline_with_random_pauses(clock: SlaClock) -> None:
    rng = random.Random(24)
    for _ in range(200):
        offset = timedelta(minutes=rng.randrange(2 * 365 * 24 * 60))
        start = (datetime(2025, 1, 1, tzinfo=UTC) + offset).astimezone(BERLIN)
        pauses = []
        for _ in range(rng.randrange(4)):
            begin = start + timedelta(minutes=rng.randrange(-2 * 24 * 60, 8 * 24 * 60))
            pauses.append((begin, begin + timedelta(minutes=rng.randrange(0, 3 * 24 * 60))))
        hours = rng.choice([1, 8, 24, 40])
        due = clock.deadline(start, hours, pauses)
        assert due is not None
        assert math.isclose(clock.remaining_working_seconds(start, hours, due, pauses), 0, abs_tol=1e-6)
        paused = sum(clock.calendar.working_seconds_between(max(b, start), e) for b, e in pauses if e > start)
        assert due >= clock.calendar.add_working_hours(start, hours)
        if paused == 0:
            assert due == clock.calendar.add_working_hours(start, hours)


# --- settings ----------------------------------------------------------------------------------


def test_settings_defaults_and_calendar() -> None:
    settings = SlaSettings()
    assert isinstance(settings, Section)
    assert settings.land == "01"
    assert settings.open_days == [0, 1, 2, 3, 4]
    assert (settings.opening, settings.closing, settings.timezone) == ("08:00", "18:00", "Europe/Berlin")
    assert settings.first_response_hours == 24
    assert settings.forwarded_answer_hours == 24
    cal = BusinessCalendar.from_settings(settings)
    assert (cal.land, cal.open_days, cal.start, cal.end, cal.tz.key) == (
        "01",
        (0, 1, 2, 3, 4),
        time(8),
        time(18),
        "Europe/Berlin",
    )
    clock = SlaClock.from_settings(settings)
    assert clock.deadline(berlin(2026, 3, 6, 17), settings.forwarded_answer_hours) == berlin(2026, 3, 11, 11)


def test_every_setting_is_documented_and_writable_as_toml() -> None:
    for name, field in SlaSettings.model_fields.items():
        assert field.description and len(field.description) > 10, name
        _toml_value(field.get_default(call_default_factory=True))


def test_settings_are_normalised() -> None:
    settings = SlaSettings(land="nw", open_days=[5, 0, 0], opening="7:30", closing="24:00", timezone="UTC")
    assert settings.land == "05"
    assert settings.open_days == [0, 5]
    assert (settings.opening, settings.closing) == ("07:30", "24:00")
    cal = BusinessCalendar.from_settings(settings)
    assert (cal.land, cal.open_days, cal.start, cal.end, cal.tz.key) == (
        "05",
        (0, 5),
        time(7, 30),
        time(0),
        "UTC",
    )
    assert cal.is_working_time(datetime(2026, 3, 2, 23, 59, tzinfo=UTC))
    assert SlaSettings().open_days is not SlaSettings().open_days


@pytest.mark.parametrize(
    "values",
    [
        {"land": "XX"},
        {"open_days": []},
        {"open_days": [7]},
        {"opening": "8"},
        {"opening": "24:00"},
        {"closing": "25:00"},
        {"closing": "24:30"},
        {"opening": "18:00", "closing": "08:00"},
        {"timezone": "Europe/Atlantis"},
        {"first_response_hours": 0},
        {"forwarded_answer_hours": -1},
        {"unknown_key": 1},
    ],
)
def test_bad_settings_are_rejected(values: dict) -> None:
    with pytest.raises(ValidationError):
        SlaSettings(**values)


def test_open_days_from_an_environment_string() -> None:
    assert SlaSettings(open_days="0, 1,2,3,4,5").open_days == [0, 1, 2, 3, 4, 5]
    assert SlaSettings(open_days="[1, 2]").open_days == [1, 2]
    with pytest.raises(ValidationError):
        SlaSettings(open_days="mon,tue")


def test_settings_validate_on_assignment() -> None:
    settings = SlaSettings()
    with pytest.raises(ValidationError):
        settings.land = "Bayern"
    settings.land = "BY"
    assert settings.land == "09"
