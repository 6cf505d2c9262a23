"""The working-day calendar: official holidays with their make-up days (调休), 5x8 working time,
years without official data (provisional, never plain Mon–Fri), operator overrides."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from rules.calendar import (
    Calendar,
    CalendarError,
    add_working_days,
    add_working_time,
    build_calendar,
    is_provisional_day,
    is_working_day,
    provisional_between,
    working_time_between,
)

SH = ZoneInfo("Asia/Shanghai")
FIVE_BY_EIGHT = Calendar().with_hours(round_the_clock=False)


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)  # type: ignore[misc]


def test_national_day_2026_days_off_and_make_up_weekends() -> None:
    assert is_working_day(date(2026, 9, 20))  # Sunday, make-up working day
    assert is_working_day(date(2026, 10, 10))  # Saturday, make-up working day
    assert not is_working_day(date(2026, 10, 5))  # Monday inside the holiday
    assert not any(is_working_day(date(2026, 10, d)) for d in range(1, 8))
    assert not is_working_day(date(2026, 10, 11))  # an ordinary Sunday


def test_add_working_days_across_national_day_2026() -> None:
    assert add_working_days(date(2026, 9, 30), 1) == date(2026, 10, 8)
    assert add_working_days(date(2026, 9, 30), 3) == date(2026, 10, 10)  # Oct 8, 9, make-up Sat 10
    assert add_working_days(date(2026, 10, 9), 1) == date(2026, 10, 10)
    assert add_working_days(date(2026, 10, 12), -3) == date(2026, 10, 8)
    assert add_working_days(date(2026, 10, 8), -1) == date(2026, 9, 30)
    # the make-up Sunday before the holiday
    assert add_working_days(date(2026, 9, 18), 1) == date(2026, 9, 20)
    assert add_working_days(date(2026, 10, 5), 0) == date(2026, 10, 5)


def test_add_working_days_across_spring_festival_2026() -> None:
    assert is_working_day(date(2026, 2, 14))  # Saturday before the festival, make-up
    assert is_working_day(date(2026, 2, 28))  # Saturday after it, make-up
    assert not is_working_day(date(2026, 2, 16))  # New Year's Eve, Monday
    assert add_working_days(date(2026, 2, 13), 1) == date(2026, 2, 14)
    assert add_working_days(date(2026, 2, 14), 1) == date(2026, 2, 24)
    assert add_working_days(date(2026, 2, 24), 4) == date(2026, 2, 28)
    assert add_working_days(date(2026, 2, 24), -1) == date(2026, 2, 14)


def test_5x8_clock_stops_friday_1800_and_restarts_monday_0900() -> None:
    start = sh(2026, 11, 27, 16, 0)  # Friday
    due = add_working_time(start, timedelta(hours=4), FIVE_BY_EIGHT)
    assert due == sh(2026, 11, 30, 11, 0).astimezone(UTC)
    # a deadline that uses the day up ends at 18:00, not the next morning
    assert add_working_time(start, timedelta(hours=2), FIVE_BY_EIGHT) == sh(2026, 11, 27, 18, 0).astimezone(
        UTC
    )
    assert working_time_between(start, sh(2026, 11, 30, 11, 0), FIVE_BY_EIGHT) == timedelta(hours=4)
    # the weekend counts nothing
    assert working_time_between(sh(2026, 11, 27, 18, 0), sh(2026, 11, 30, 9, 0), FIVE_BY_EIGHT) == timedelta(
        0
    )


def test_5x8_clock_restarts_on_a_make_up_saturday() -> None:
    start = sh(2026, 10, 9, 16, 0)  # Friday before the make-up Saturday Oct 10
    assert add_working_time(start, timedelta(hours=4), FIVE_BY_EIGHT) == sh(2026, 10, 10, 11, 0).astimezone(
        UTC
    )
    # started on the eve of National Day: the whole holiday week counts nothing
    assert add_working_time(sh(2026, 9, 30, 17, 0), timedelta(hours=2), FIVE_BY_EIGHT) == sh(
        2026, 10, 8, 10, 0
    ).astimezone(UTC)


def test_5x8_outside_hours_starts_at_next_working_moment_and_lunch_break_is_configurable() -> None:
    assert add_working_time(sh(2026, 11, 28, 22, 0), timedelta(minutes=30), FIVE_BY_EIGHT) == sh(
        2026, 11, 30, 9, 30
    ).astimezone(UTC)
    lunch = FIVE_BY_EIGHT.with_hours(lunch=(time(12, 0), time(13, 0)))
    assert add_working_time(sh(2026, 11, 30, 11, 0), timedelta(hours=2), lunch) == sh(
        2026, 11, 30, 14, 0
    ).astimezone(UTC)
    assert working_time_between(sh(2026, 11, 30, 9, 0), sh(2026, 11, 30, 18, 0), lunch) == timedelta(hours=8)
    assert lunch.hours_per_day() == timedelta(hours=8)


def test_7x24_counts_wall_clock_time() -> None:
    cal = Calendar(round_the_clock=True)
    start = sh(2026, 10, 1, 23, 0)
    assert add_working_time(start, timedelta(hours=4), cal) == (start + timedelta(hours=4)).astimezone(UTC)
    assert working_time_between(start, start + timedelta(days=3), cal) == timedelta(days=3)


def test_2027_is_provisional_from_statutory_holidays_not_plain_weekdays() -> None:
    # chinese-calendar has no 2027 data; the statutory days come from the lunar tables
    assert not is_working_day(date(2027, 10, 1))  # Friday, National Day
    assert not is_working_day(date(2027, 2, 8))  # Monday, Spring Festival
    assert not is_working_day(date(2027, 9, 15))  # Wednesday, Mid-Autumn
    assert is_working_day(date(2027, 10, 8))
    assert is_provisional_day(date(2027, 3, 3))
    assert not is_provisional_day(date(2026, 3, 3))
    assert add_working_days(date(2027, 9, 30), 1) == date(2027, 10, 4)
    assert provisional_between(sh(2026, 12, 31, 10, 0), sh(2027, 1, 4, 10, 0))
    assert not provisional_between(sh(2026, 12, 1, 10, 0), sh(2026, 12, 31, 10, 0))


def test_operator_overrides_win_and_confirmed_year_is_not_provisional() -> None:
    cal = build_calendar(
        [(date(2027, 10, 4), False), (date(2027, 9, 26), True), (date(2026, 10, 10), False)],
        confirmed_years=[2027],
    )
    assert not is_working_day(date(2027, 10, 4), cal)
    assert is_working_day(date(2027, 9, 26), cal)  # a Sunday made a working day
    assert not is_working_day(date(2026, 10, 10), cal)  # the official make-up day overridden
    assert add_working_days(date(2027, 9, 30), 1, cal) == date(2027, 10, 5)
    assert not is_provisional_day(date(2027, 3, 3), cal)


def test_bad_input_gives_clear_errors() -> None:
    with pytest.raises(CalendarError, match="naive"):
        add_working_time(datetime(2026, 11, 27, 16, 0), timedelta(hours=1), FIVE_BY_EIGHT)
    with pytest.raises(CalendarError, match="negative"):
        add_working_time(sh(2026, 11, 27, 16, 0), timedelta(hours=-1), FIVE_BY_EIGHT)
    with pytest.raises(CalendarError, match="expected a date"):
        add_working_days(datetime(2026, 11, 27, tzinfo=UTC), 1)
    with pytest.raises(CalendarError, match="lunch"):
        Calendar(lunch=(time(19, 0), time(20, 0)))
    with pytest.raises(CalendarError, match="time zone"):
        Calendar(tz="Mars/Olympus")
    nothing = build_calendar([(date(2026, 1, 1) + timedelta(days=i), False) for i in range(4000)])
    with pytest.raises(CalendarError, match="no working"):
        add_working_days(date(2026, 1, 1), 1, nothing)
