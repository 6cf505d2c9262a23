"""The working-day calendar and working-time arithmetic (工作日历), pure: no I/O in the arithmetic.

A `Calendar` is data: the official mainland-China calendar (holidays and the adjusted working
weekends 调休, from the maintained `chinese-calendar` package), the operator's overrides (stored as
`models.contracts.CalendarOverride` rows, loaded by `tasks.clocks.load_calendar`, they win), and the
contract's working hours (5x8: 09:00–18:00 with an optional lunch break, or 7x24: wall-clock time).

A year `chinese-calendar` does not cover (it raises NotImplementedError for 2027) is neither a
crash nor silently Mon–Fri: its statutory holidays come from the `holidays` package, which computes
the lunar dates, and every deadline that touches such a year is *provisional* until the State
Council's notice for it is entered as overrides and the year is listed in `confirmed_years`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from types import MappingProxyType
from zoneinfo import ZoneInfo

import chinese_calendar

# A search for the next working day that finds none within ten years means a broken calendar
# (e.g. overrides marking every day off): fail with a clear message instead of looping for ever.
_MAX_DAYS = 3660

# a calendar built without a zone (the pure layer cannot read settings; tasks pass the contract's
# zone or models.settings.business_timezone())
DEFAULT_TZ = "Asia/Shanghai"


class CalendarError(ValueError):
    """The calendar or its input cannot be used; the message says why, for a person."""


@dataclass(frozen=True)
class Calendar:
    """What counts as working time for one contract."""

    name: str = "cn"
    tz: str = DEFAULT_TZ
    # date -> True (a make-up working day, 调休上班) / False (a day off); wins over everything.
    overrides: Mapping[date, bool] = field(default_factory=lambda: MappingProxyType({}))
    # Years outside chinese-calendar's data whose official notice the operator has entered.
    confirmed_years: frozenset[int] = frozenset()
    day_start: time = time(9, 0)
    day_end: time = time(18, 0)
    lunch: tuple[time, time] | None = None
    # 7x24 contracts count wall-clock time; 5x8 contracts count working hours on working days.
    round_the_clock: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.overrides, MappingProxyType):
            object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))
        if self.day_start >= self.day_end:
            raise CalendarError(
                f"工作时间无效 / working hours {self.day_start}–{self.day_end}: start must be before end"
            )
        if self.lunch is not None:
            a, b = self.lunch
            if not (self.day_start <= a < b <= self.day_end):
                raise CalendarError(
                    f"午休时间无效 / lunch break {a}–{b} must lie inside working hours {self.day_start}–{self.day_end}"
                )
        try:
            ZoneInfo(self.tz)
        except Exception as exc:
            raise CalendarError(f"未知时区 / unknown time zone {self.tz!r}") from exc

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def with_hours(
        self,
        *,
        round_the_clock: bool | None = None,
        day_start: time | None = None,
        day_end: time | None = None,
        lunch: tuple[time, time] | None | bool = False,
    ) -> Calendar:
        """The same days with other working hours (`lunch=False` keeps the current lunch break)."""
        return replace(
            self,
            round_the_clock=self.round_the_clock if round_the_clock is None else round_the_clock,
            day_start=day_start or self.day_start,
            day_end=day_end or self.day_end,
            lunch=self.lunch if lunch is False else lunch,  # type: ignore[arg-type]
        )

    def hours_per_day(self) -> timedelta:
        return sum((b - a for a, b in _intervals_of(date(2000, 1, 3), self)), timedelta())


DEFAULT_CALENDAR = Calendar()


# ---------------------------------------------------------------- which days are working days


def covered_by_official_data(year: int) -> bool:
    """True when chinese-calendar holds the State Council's calendar for `year`."""
    try:
        chinese_calendar.is_workday(date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


@cache
def _statutory_holidays(year: int) -> frozenset[date]:
    # Statutory days only (observed=False): python-holidays' "observed" days are its own guess at
    # the arrangement, without the make-up Saturdays that always come with it.
    import holidays

    return frozenset(holidays.country_holidays("CN", years=year, observed=False).keys())


def is_provisional_day(day: date, calendar: Calendar | None = None) -> bool:
    """True when `day` is judged from computed statutory holidays, not the official notice."""
    cal = calendar or DEFAULT_CALENDAR
    if day in cal.overrides or day.year in cal.confirmed_years:
        return False
    return not covered_by_official_data(day.year)


def is_working_day(day: date, calendar: Calendar | None = None) -> bool:
    """Whether `day` is a working day: overrides, then the official calendar, then the statutory
    holidays of a year without official data (provisional)."""
    if isinstance(day, datetime):
        raise CalendarError(f"需要日期而非时间 / expected a date, got the datetime {day!r}")
    cal = calendar or DEFAULT_CALENDAR
    override = cal.overrides.get(day)
    if override is not None:
        return override
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        if day.weekday() >= 5:
            return False
        return day not in _statutory_holidays(day.year)


def add_working_days(start: date, n: int, calendar: Calendar | None = None) -> date:
    """The day `n` working days after `start` (before it when n < 0); `start` itself is not counted."""
    if isinstance(start, datetime):
        raise CalendarError(f"需要日期而非时间 / expected a date, got the datetime {start!r}")
    if n == 0:
        return start
    step = timedelta(days=1 if n > 0 else -1)
    remaining = abs(n)
    day = start
    searched = 0
    while remaining:
        day += step
        searched += 1
        if searched > _MAX_DAYS + abs(n) * 7:
            raise CalendarError(
                f"日历中找不到工作日 / no working day found near {start}: check the calendar overrides"
            )
        if is_working_day(day, calendar):
            remaining -= 1
    return day


def provisional_between(a: datetime | date, b: datetime | date, calendar: Calendar | None = None) -> bool:
    """True when any day from `a` to `b` (local dates, inclusive) is judged provisionally."""
    cal = calendar or DEFAULT_CALENDAR
    first, last = _local_date(a, cal), _local_date(b, cal)
    if last < first:
        first, last = last, first
    years = range(first.year, last.year + 1)
    if all(covered_by_official_data(y) or y in cal.confirmed_years for y in years):
        return False
    day = first
    while day <= last:
        if is_provisional_day(day, cal):
            return True
        day += timedelta(days=1)
    return False


# ---------------------------------------------------------------- working time (5x8) / wall clock (7x24)


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise CalendarError(f"{what} 需要带时区的时间 / {what} must be a datetime, got {value!r}")
    if value.tzinfo is None:
        raise CalendarError(f"{what} 缺少时区 / {what} is a naive datetime {value!r}: give it a time zone")
    return value


def _local_date(value: datetime | date, cal: Calendar) -> date:
    if isinstance(value, datetime):
        return _aware(value, "time").astimezone(cal.zone).date()
    return value


def _intervals_of(day: date, cal: Calendar) -> list[tuple[datetime, datetime]]:
    """The working intervals of one local day (empty on a day off), as aware local datetimes."""
    zone = cal.zone

    def at(t: time) -> datetime:
        return datetime.combine(day, t, tzinfo=zone)

    if cal.lunch is None:
        return [(at(cal.day_start), at(cal.day_end))]
    return [(at(cal.day_start), at(cal.lunch[0])), (at(cal.lunch[1]), at(cal.day_end))]


def add_working_time(start: datetime, delta: timedelta, calendar: Calendar | None = None) -> datetime:
    """The moment `delta` of working time after `start` (wall-clock time on a 7x24 calendar), in UTC.

    A 5x8 clock started outside working hours starts at the next working moment; a deadline that
    uses up a day exactly ends at that day's closing time (18:00), not the next morning.
    """
    cal = calendar or DEFAULT_CALENDAR
    _aware(start, "start")
    if delta < timedelta(0):
        raise CalendarError(f"时长不能为负 / a duration cannot be negative: {delta}")
    if cal.round_the_clock or delta == timedelta(0):
        return (start + delta).astimezone(UTC)
    remaining = delta
    local = start.astimezone(cal.zone)
    day = local.date()
    for _ in range(_MAX_DAYS + int(delta / timedelta(days=1)) * 3):
        if is_working_day(day, cal):
            for begin, end in _intervals_of(day, cal):
                if local >= end:
                    continue
                s = max(local, begin)
                available = end - s
                if remaining <= available:
                    return (s + remaining).astimezone(UTC)
                remaining -= available
        day += timedelta(days=1)
    raise CalendarError(
        f"日历中找不到工作时间 / no working time found after {start}: check the calendar overrides"
    )


def working_time_between(a: datetime, b: datetime, calendar: Calendar | None = None) -> timedelta:
    """Working time from `a` to `b` (wall-clock time on a 7x24 calendar); zero when b <= a."""
    cal = calendar or DEFAULT_CALENDAR
    _aware(a, "a")
    _aware(b, "b")
    if b <= a:
        return timedelta(0)
    if cal.round_the_clock:
        return b - a
    la, lb = a.astimezone(cal.zone), b.astimezone(cal.zone)
    total = timedelta(0)
    day = la.date()
    while day <= lb.date():
        if is_working_day(day, cal):
            for begin, end in _intervals_of(day, cal):
                s, e = max(begin, la), min(end, lb)
                if e > s:
                    total += e - s
        day += timedelta(days=1)
    return total


def build_calendar(
    overrides: Iterable[tuple[date, bool]] = (),
    *,
    name: str = "cn",
    tz: str = DEFAULT_TZ,
    confirmed_years: Iterable[int] = (),
) -> Calendar:
    """A calendar from override rows (already loaded by a task) — the data, not the I/O."""
    return Calendar(name=name, tz=tz, overrides=dict(overrides), confirmed_years=frozenset(confirmed_years))
