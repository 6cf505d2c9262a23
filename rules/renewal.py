"""Contract renewal dates (续约, PROCEDURES.md §6): pure rules, no I/O.

Every date is a local date of the contract's calendar (its time zone and working days); a moment is
made from a local day and a time of day only at the end (`at_local`). The renewal-alert bugs of
ticketing tools (an alert a day late because the end date was read as UTC midnight, an alert skipped
because its day fell on a weekend or a holiday, a month-end end date moved by month arithmetic) are
what these rules are written against: the count is in calendar days from the end date itself, and a
day that is not a working day moves **earlier**, never later — a renewal contact opened late would
leave the customer less than the 60 days' written notice the contract gives them to end it.

- `open_day(end)`: the renewal case is opened 60 days before the end (the last working day on or
  before that day).
- `outreach(notice_day, end)`: what follows the notice while the customer has not answered —
  follow-ups every 7 days (each on a working day, moved later to the next one: a reminder is never
  sent on a holiday), escalation to the account manager's manager 30 and 15 days before the end,
  a reminder to the customer 7 days before (those three moved earlier, like the opening) — and the
  lapse the day after the end. "Every 7 days" is read as calendar weeks, each landing on a working
  day (the issue's "every 7 days (a timer, working days, quiet hours respected)"; PROCEDURES §6 and
  the seeds give no other cadence): a customer hears from the provider weekly, not every 7 working
  days, which would stretch to 9–11 calendar days and fit fewer follow-ups into the 60 days.
- `sendable_at(moment)`: outreach caught up late goes out only on a working day in working hours.
- `notice_in_time(notice_day, end)`: a written notice to end must be given at least 60 days before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from rules.calendar import Calendar, is_provisional_day, is_working_day

OPEN_DAYS_BEFORE = 60  # 000 §8: the provider contacts the customer 60 days before the end
NOTICE_DAYS = 60  # 000 §8.3: ending the contract needs 60 days' written notice
FOLLOW_UP_EVERY = 7  # days between follow-ups until the customer answers
ESCALATE_DAYS_BEFORE = (30, 15)  # to the account manager's manager
REMIND_DAYS_BEFORE = 7  # the customer's last reminder
SEND_AT = time(10, 0)  # outreach goes out in the morning of a working day
_MAX_SHIFT = 40  # no calendar has this many days off in a row


class RenewalDateError(ValueError):
    """A contract's dates cannot be used; the message says why, for a person."""


class Outreach(StrEnum):
    FOLLOW_UP = "follow_up"  # 跟进：客户经理联系客户，客户再收到答复链接
    ESCALATE = "escalate"  # 升级：客户经理的上级
    REMIND = "remind"  # 提醒客户：到期前7天
    LAPSE = "lapse"  # 到期未答复：合同失效


OUTREACH_ZH = {
    Outreach.FOLLOW_UP: "跟进",
    Outreach.ESCALATE: "升级至上级经理",
    Outreach.REMIND: "到期提醒",
    Outreach.LAPSE: "到期未续约",
}


@dataclass(frozen=True)
class Due:
    """One outreach action: its stable key (an event key: done once), kind, local day and moment (UTC)."""

    key: str
    kind: Outreach
    day: date
    at: datetime
    days_before_end: int
    provisional: bool = False


def _shift(day: date, cal: Calendar | None, step: int) -> date:
    for _ in range(_MAX_SHIFT):
        if is_working_day(day, cal):
            return day
        day += timedelta(days=step)
    raise RenewalDateError(f"{day} 前后 {_MAX_SHIFT} 天内没有工作日，请检查日历 / no working day near {day}")


def working_on_or_before(day: date, cal: Calendar | None = None) -> date:
    """`day` when it is a working day, else the last working day before it."""
    return _shift(day, cal, -1)


def working_on_or_after(day: date, cal: Calendar | None = None) -> date:
    """`day` when it is a working day, else the next working day."""
    return _shift(day, cal, 1)


def check_term(start: date, end: date) -> None:
    """A term must end after it starts (a typing error otherwise)."""
    if end < start:
        raise RenewalDateError(
            f"合同结束日期 {end} 早于开始日期 {start} / the end date lies before the start date"
        )


def open_day(end: date, cal: Calendar | None = None) -> date:
    """The day the renewal case is opened: 60 days before `end`, on a working day, never later."""
    return working_on_or_before(end - timedelta(days=OPEN_DAYS_BEFORE), cal)


def due_to_open(today: date, start: date, end: date, cal: Calendar | None = None) -> bool:
    """Whether the renewal of the term `start`–`end` is due on `today`: from its opening day until the
    end itself (a planner that was down, or a contract entered with less than 60 days left, still
    opens it, at once). A term that started after its opening day opens on its first day."""
    if today > end:
        return False
    return today >= max(open_day(end, cal), start)


def at_local(day: date, cal: Calendar | None, at: time = SEND_AT) -> datetime:
    """The moment `at` on the local `day` of the calendar's time zone, in UTC."""
    tz = ZoneInfo(cal.tz if cal else "Asia/Shanghai")
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def sendable_at(moment: datetime, cal: Calendar | None = None) -> bool:
    """Whether outreach may go out at `moment`: on a working day of the contract's calendar, inside its
    working hours (default 09:00–18:00 local). A keeper that catches up late (after an outage, at
    night, on a holiday) holds a follow-up, an escalation or a reminder until the next such moment —
    never a message to the customer at 02:00 or on a Sunday. The lapse is not outreach: it is not held."""
    c = cal or Calendar()
    local = moment.astimezone(ZoneInfo(c.tz))
    return is_working_day(local.date(), c) and c.day_start <= local.time().replace(tzinfo=None) < c.day_end


def outreach(notice_day: date, end: date, cal: Calendar | None = None) -> list[Due]:
    """Every outreach action from the notice (sent on `notice_day`) to the lapse, in time order.

    Follow-ups fall every 7 days after the notice, each moved to the next working day, while they
    still fall before the end; the escalations and the reminder fall on their day before the end (or
    the working day before it); those already past on the notice day are left out (a notice sent late
    does not escalate at once for a date already gone). The lapse is the first moment after the end."""
    found: list[Due] = []

    def add(key: str, kind: Outreach, day: date, moment: datetime | None = None) -> None:
        found.append(
            Due(
                key,
                kind,
                day,
                moment or at_local(day, cal),
                (end - day).days,
                is_provisional_day(day, cal),
            )
        )

    n = 1
    while True:
        day = working_on_or_after(notice_day + timedelta(days=FOLLOW_UP_EVERY * n), cal)
        if day >= end:
            break
        add(f"follow-up-{n}", Outreach.FOLLOW_UP, day)
        n += 1
    for before in ESCALATE_DAYS_BEFORE:
        day = working_on_or_before(end - timedelta(days=before), cal)
        if day > notice_day:
            add(f"escalate-{before}", Outreach.ESCALATE, day)
    day = working_on_or_before(end - timedelta(days=REMIND_DAYS_BEFORE), cal)
    if day > notice_day:
        add(f"remind-{REMIND_DAYS_BEFORE}", Outreach.REMIND, day)
    after = end + timedelta(days=1)
    add("lapse", Outreach.LAPSE, after, at_local(after, cal, time(0, 0)))
    found.sort(key=lambda d: (d.at, d.key))
    return found


def notice_deadline(end: date) -> date:
    """The last day a written notice to end the contract on `end` is in time."""
    return end - timedelta(days=NOTICE_DAYS)


def notice_in_time(notice_day: date, end: date) -> bool:
    """Whether a written notice given on `notice_day` ends the contract on `end` in time (60 days)."""
    return notice_day <= notice_deadline(end)


def next_term(previous_end: date, months: int) -> tuple[date, date]:
    """The term that follows a contract ending on `previous_end`: from the next day, `months` long —
    ending the day before the same day `months` later, or, when that month has no such day (a term
    from 29 February or the 31st), on that month's last day."""
    import calendar as monthcal

    if months < 1 or months > 120:
        raise RenewalDateError(f"合同期限应为 1–120 个月，不是 {months} / the term must be 1–120 months")
    start = previous_end + timedelta(days=1)
    month = start.month - 1 + months
    year, month = start.year + month // 12, month % 12 + 1
    last = monthcal.monthrange(year, month)[1]
    if start.day > last:
        return start, date(year, month, last)
    return start, date(year, month, start.day) - timedelta(days=1)
