"""Major-event assurance (重要通信保障 / 重大事件值守) — the pure rules (001 §2.3.7, 002, 004 §四(4)).

- The customer asks at least **3 weeks** ahead (002: "客户需至少提前3周与授权服务商客户服务经理联系");
  a shorter notice is flagged and needs the technical director's approval (`notice_short`).
- The period is given in the business time zone: a day alone means the whole day (00:00 of the first
  day to 24:00 of the last), so its boundaries fall on local midnights, never on UTC ones (`period_bounds`).
- During an agreed period a new request from that customer (at that site, when the assurance names
  one) is raised one level of severity (`raised_severity`); the period is half-open, [start, end).
- The duty roster (值班表) is one shift per line: `姓名 | 电话 | 开始 | 结束` (`parse_roster`); the shifts
  must lie inside the period, and the hours no shift covers are shown on the roster (`roster_gaps`).

No I/O here: the callers pass the time zone, the moments and the names they read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from rules.calendar import Calendar, add_working_days
from rules.inspection import PlanningError, check_visit_day, proposed_day

MIN_NOTICE = timedelta(weeks=3)  # 002: the customer asks at least 3 weeks ahead
ROSTER_AHEAD = timedelta(days=3)  # the duty roster is with the customer 3 days before the period
ROSTER_ASK_AHEAD = timedelta(days=7)  # the coordinator is asked for it a week before the period
MAX_PERIOD = timedelta(days=92)  # an assurance longer than a quarter is a typing error (or a contract)
DATE_EXAMPLE = "2026-12-20 或 2026-12-20 08:00"

# a phone a customer can dial: a mobile (13800000000, +86 138 0000 0000) or a landline (010-12345678)
_PHONE = re.compile(r"^(?:\+?86[- ]?)?(?:1[3-9]\d{9}|0\d{2,3}-?\d{7,8}(?:-\d{1,6})?)$")


class AssuranceError(ValueError):
    """A value that cannot be taken as entered; the message says what to correct, in Chinese."""


def _moment(text: str, tz: ZoneInfo, *, end: bool) -> datetime:
    """`2026-12-20` or `2026-12-20 08:00` in the business time zone → aware UTC. A day alone is its
    start (00:00), or — for the end of a period — the end of that day (24:00, the next day's 00:00)."""
    text = text.strip().replace("：", ":").replace("/", "-")
    try:
        if re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}", text):
            day = date.fromisoformat("-".join(p.zfill(2) for p in text.split("-")))
            local = datetime.combine(day + timedelta(days=1) if end else day, time(0), tzinfo=tz)
        else:
            local = datetime.fromisoformat(text)
            local = local.replace(tzinfo=tz) if local.tzinfo is None else local
    except ValueError:
        raise AssuranceError(f"无法识别的时间“{text}”，请写成 {DATE_EXAMPLE}（北京时间）") from None
    return local.astimezone(UTC)


def period_bounds(starts: str, ends: str, tz: str) -> tuple[datetime, datetime]:
    """The assurance period [start, end) as aware UTC moments; AssuranceError when it is not one."""
    zone = ZoneInfo(tz)
    if not starts.strip() or not ends.strip():
        raise AssuranceError("请填写保障开始和结束时间")
    start, end = _moment(starts, zone, end=False), _moment(ends, zone, end=True)
    if end <= start:
        raise AssuranceError("保障结束时间须晚于开始时间")
    if end - start > MAX_PERIOD:
        raise AssuranceError("保障期不能超过 92 天；更长的驻场值守请签订专门的服务合同")
    return start, end


def notice_short(requested_at: datetime, start: datetime) -> bool:
    """True when the customer asked less than 3 weeks before the period starts (002)."""
    return start - requested_at < MIN_NOTICE


def notice_days(requested_at: datetime, start: datetime) -> float:
    """How many days ahead the customer asked (one decimal), for the flag and the report."""
    return round((start - requested_at).total_seconds() / 86400, 1)


@dataclass(frozen=True)
class Period:
    """An agreed assurance period of one customer: `site_id` None covers all its sites."""

    number: str  # the assurance case, BZ-000012
    case_id: int
    customer_id: int
    site_id: int | None
    start: datetime
    end: datetime

    def covers(self, customer_id: int, site_id: int | None, at: datetime) -> bool:
        """[start, end), at that customer and (when the assurance names one) at that site."""
        if customer_id != self.customer_id or not (self.start <= at < self.end):
            return False
        return self.site_id is None or site_id == self.site_id


def covering(periods: Iterable[Period], customer_id: int, site_id: int | None, at: datetime) -> Period | None:
    """The first agreed period that covers a request of that customer and site at `at`, if any."""
    return next((p for p in periods if p.covers(customer_id, site_id, at)), None)


def raised_severity(severity: int) -> int:
    """One level more severe (4 → 3 … 2 → 1); level 1 stays 1."""
    return max(1, severity - 1)


@dataclass(frozen=True)
class Shift:
    """One line of the duty roster."""

    name: str
    phone: str
    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return round((self.end - self.start).total_seconds() / 3600, 1)


def parse_roster(text: str, tz: str) -> list[Shift]:
    """The roster as typed, one shift a line: `姓名 | 电话 | 2026-12-20 08:00 | 2026-12-20 20:00`
    (`|`, `｜`, tabs or commas between the four). AssuranceError names the line and what is wrong."""
    zone = ZoneInfo(tz)
    shifts: list[Shift] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = [p.strip() for p in re.split(r"\s*[|｜\t,，]\s*", line)]
        if len(parts) != 4 or not all(parts):
            raise AssuranceError(
                f"第 {n} 行应为 姓名 | 电话 | 开始时间 | 结束时间，如 "
                "张工 | 13800000000 | 2026-12-20 08:00 | 2026-12-20 20:00"
            )
        name, phone, starts, ends = parts
        if len(name) > 50:
            raise AssuranceError(f"第 {n} 行：姓名过长")
        if not _PHONE.fullmatch(phone.replace(" ", "")):
            raise AssuranceError(
                f"第 {n} 行：电话“{phone}”不是有效的手机或座机号码（如 13800000000、010-12345678）"
            )
        try:
            start, end = _moment(starts, zone, end=False), _moment(ends, zone, end=True)
        except AssuranceError as exc:
            raise AssuranceError(f"第 {n} 行：{exc}") from None
        if end <= start:
            raise AssuranceError(f"第 {n} 行：班次结束须晚于开始")
        shifts.append(Shift(name, phone.replace(" ", ""), start, end))
    if not shifts:
        raise AssuranceError("值班表至少要有一个班次")
    return sorted(shifts, key=lambda s: (s.start, s.name))


def roster_problems(
    shifts: Sequence[Shift], start: datetime, end: datetime, staff: Iterable[str], tz: str
) -> list[str]:
    """What keeps the roster from being sent: a shift outside the period, a name that is not one of
    the provider's active staff (the customer must reach a named engineer). Empty: it can go."""
    zone = ZoneInfo(tz)
    known = set(staff)
    problems = []
    for s in shifts:
        if s.start < start or s.end > end:
            problems.append(
                f"{s.name} 的班次 {_local(s.start, zone)}–{_local(s.end, zone)} 超出保障期"
                f"（{_local(start, zone)}–{_local(end, zone)}）"
            )
        if s.name not in known:
            problems.append(f"“{s.name}”不是在职员工的姓名，请填写值班工程师的全名")
    return problems


def roster_gaps(shifts: Sequence[Shift], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The stretches of the period no shift covers (shown on the roster, so the customer knows)."""
    gaps, covered = [], start
    for s in sorted(shifts, key=lambda s: s.start):
        if s.start > covered:
            gaps.append((covered, min(s.start, end)))
        covered = max(covered, s.end)
        if covered >= end:
            break
    if covered < end:
        gaps.append((covered, end))
    return gaps


def roster_send_by(start: datetime, now: datetime) -> tuple[datetime, datetime]:
    """(when the coordinator is asked for the roster, when it must be with the customer): a week and
    3 days before the period; never before now (a late request asks at once)."""
    return max(now, start - ROSTER_ASK_AHEAD), max(now, start - ROSTER_AHEAD)


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


PRE_INSPECTION_WORKING_DAYS = 2  # the pre-inspection lies 2 working days before: time to fix what it finds


def pre_inspection_day(calendar: Calendar | None, *, today: date, first_day: date) -> date | None:
    """The day of the inspection before the period (reusing the inspection's own rules: a working
    day with room for its 3-working-day notice): 2 working days before the period's first day, or
    the earliest day that can still be kept; None when no day before the period can be."""
    wanted = add_working_days(first_day, -PRE_INSPECTION_WORKING_DAYS, calendar)
    try:
        check_visit_day(calendar, wanted, today=today)
        return wanted
    except PlanningError:
        earliest = proposed_day(calendar, planned_on=today, window_start=today, window_end=today)
        return earliest if earliest < first_day else None
