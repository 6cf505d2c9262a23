"""Inspection planning (巡检计划), pure rules: which periods are due for a contract, and the dates
that hang off an agreed inspection day (PROCEDURES.md §4 step 1).

No I/O here: the planner task (tasks/inspection.py) reads contracts and passes plain values in.

Periods
- monthly   → "2026-03"      (calendar months)
- quarterly → "2026-Q2"      (calendar quarters)
- custom    → "2026-03/2M"   (blocks of `every_months` months, anchored on the contract's start month)
- extra     → "extra-2026-05-20" (an additional inspection on request, before an important operation)

A period is due on `today` when the contract covers part of it and the planning day of the
period has come: the planning day is the later of the period's first day and the contract's start
(so a contract that starts mid-month gets that month's inspection at once), minus `lead_days`.
It stays due until the end of the period (or the contract's end, whichever is first), so a planner
that was down for a few days catches up; a contract that has lapsed is never due again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time, timedelta
from typing import Any

from rules.calendar import add_working_days, is_working_day

# PROCEDURES.md §4 step 1 defaults (per contract in `Contract.sla_policy["inspection"]`).
NOTICE_WORKING_DAYS = 3  # the customer is notified 3 working days before
RECONFIRM_DAYS = 2  # the exact time is re-confirmed 2 days before
PROPOSAL_WORKING_DAYS = 5  # first proposed day: far enough out for the notice and the customer's answer
DEFAULT_START = time(9, 30)  # proposed start of the visit, local time
SUMMARY_WORKING_DAYS = 5  # monthly summary within 5 working days after month end (step 8)

MONTHLY, QUARTERLY, CUSTOM, NONE = "monthly", "quarterly", "custom", "none"
EXTRA_PREFIX = "extra-"


class PlanningError(ValueError):
    """Bad planning input; the message says what, for a person."""


@dataclass(frozen=True)
class Period:
    label: str
    start: date  # first day of the period
    end: date  # last day of the period (inclusive)


@dataclass(frozen=True)
class DuePeriod:
    period: Period
    window_start: date  # first day the contract covers in the period
    window_end: date  # last day the contract covers in the period


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    idx = year * 12 + (month - 1) + n
    return idx // 12, idx % 12 + 1


def _month_end(year: int, month: int) -> date:
    ny, nm = _add_months(year, month, 1)
    return date(ny, nm, 1) - timedelta(days=1)


def period_containing(
    day: date, frequency: str, *, every_months: int = 1, anchor: date | None = None
) -> Period:
    """The period of `frequency` that contains `day`."""
    if frequency == MONTHLY or (frequency == CUSTOM and every_months == 1):
        return Period(f"{day.year}-{day.month:02d}", day.replace(day=1), _month_end(day.year, day.month))
    if frequency == QUARTERLY:
        q = (day.month - 1) // 3
        first = date(day.year, 3 * q + 1, 1)
        return Period(f"{day.year}-Q{q + 1}", first, _month_end(day.year, 3 * q + 3))
    if frequency == CUSTOM:
        if every_months < 1:
            raise PlanningError(f"巡检间隔月数必须 ≥ 1 / every_months must be ≥ 1, got {every_months}")
        if anchor is None:
            raise PlanningError(
                "自定义巡检周期需要合同开始日期 / a custom frequency needs the contract's start"
            )
        offset = (day.year * 12 + day.month) - (anchor.year * 12 + anchor.month)
        k = offset // every_months
        y, m = _add_months(anchor.year, anchor.month, k * every_months)
        ey, em = _add_months(y, m, every_months - 1)
        return Period(f"{y}-{m:02d}/{every_months}M", date(y, m, 1), _month_end(ey, em))
    raise PlanningError(f"未知的巡检频率 / unknown inspection frequency {frequency!r}")


def due_periods(
    *,
    today: date,
    frequency: str,
    contract_start: date,
    contract_end: date,
    every_months: int = 1,
    lead_days: int = 0,
) -> list[DuePeriod]:
    """The regular periods whose inspection must exist on `today` (usually zero or one)."""
    if frequency == NONE:
        return []
    if contract_end < contract_start:
        raise PlanningError(
            f"合同结束日 {contract_end} 早于开始日 {contract_start} / contract ends before it starts"
        )
    found: list[DuePeriod] = []
    # The period containing today, and the next one when the lead reaches into it.
    for probe in (today, today + timedelta(days=lead_days)) if lead_days else (today,):
        if probe < contract_start:
            probe = contract_start
        period = period_containing(probe, frequency, every_months=every_months, anchor=contract_start)
        window_start = max(period.start, contract_start)
        window_end = min(period.end, contract_end)
        if window_start > window_end:
            continue  # the contract does not cover this period at all
        if window_start - timedelta(days=lead_days) <= today <= window_end:
            due = DuePeriod(period, window_start, window_end)
            if due not in found:
                found.append(due)
    return found


def extra_period(day: date) -> Period:
    """The period label of an extra inspection on request (one per contract and day)."""
    return Period(f"{EXTRA_PREFIX}{day.isoformat()}", day, day)


def is_extra(label: str) -> bool:
    return label.startswith(EXTRA_PREFIX)


WARRANTY_PREFIX = f"{EXTRA_PREFIX}warranty-"  # the warranty-end inspection (tasks.renewal, 003 §8.1.3)


def period_words(label: str | None) -> str:
    """A period label as the customer reads it: `2026-11`; `extra-2026-12-01` → 加做 2026-12-01;
    `extra-warranty-2026-12-31` → 质保期满巡检（质保至 2026-12-31）."""
    if not label:
        return ""
    if label.startswith(WARRANTY_PREFIX):
        return f"质保期满巡检（质保至 {label.removeprefix(WARRANTY_PREFIX)}）"
    if is_extra(label):
        return f"加做 {label.removeprefix(EXTRA_PREFIX)}"
    return label


def periods_between(
    first: date,
    last: date,
    *,
    frequency: str,
    contract_start: date,
    contract_end: date,
    every_months: int = 1,
) -> list[Period]:
    """Every regular period the contract covers between two days (plan vs done in the summary)."""
    out: list[Period] = []
    day = max(first, contract_start)
    stop = min(last, contract_end)
    while day <= stop and frequency != NONE:
        p = period_containing(day, frequency, every_months=every_months, anchor=contract_start)
        out.append(p)
        day = p.end + timedelta(days=1)
    return out


# ---- the dates that hang off an agreed inspection day ----------------------------------------


@dataclass(frozen=True)
class VisitDates:
    visit_day: date
    notice_day: date  # the customer is told (3 working days before)
    reconfirm_day: date  # the exact time is re-confirmed (2 days before)


def _add_wd(calendar: Any, start: date, n: int) -> date:
    return add_working_days(start, n, calendar)


def _is_wd(calendar: Any, day: date) -> bool:
    return is_working_day(day, calendar)


def proposed_day(calendar: Any, *, planned_on: date, window_start: date, window_end: date) -> date:
    """The day the dispatcher proposes: the first working day that leaves room for the 3-working-day
    notice and the customer's answer; a short window (contract starting late in the month) gets the
    earliest such day even if it falls after the window, and the dispatcher may move it."""
    base = max(planned_on, window_start)
    return _add_wd(calendar, base, PROPOSAL_WORKING_DAYS)


def visit_dates(
    calendar: Any, visit_day: date, *, notice_working_days: int = NOTICE_WORKING_DAYS
) -> VisitDates:
    """Notice 3 working days before the visit; re-confirmation 2 calendar days before."""
    return VisitDates(
        visit_day=visit_day,
        notice_day=_add_wd(calendar, visit_day, -notice_working_days),
        reconfirm_day=visit_day - timedelta(days=RECONFIRM_DAYS),
    )


def check_visit_day(
    calendar: Any, visit_day: date, *, today: date, notice_working_days: int = NOTICE_WORKING_DAYS
) -> None:
    """A date the customer picks must be a working day and leave room for the notice."""
    if not _is_wd(calendar, visit_day):
        raise PlanningError(f"{visit_day} 不是工作日，请选择工作日 / not a working day")
    if _add_wd(calendar, visit_day, -notice_working_days) < today:
        raise PlanningError(
            f"{visit_day} 太近：须提前 {notice_working_days} 个工作日通知 / too soon for the {notice_working_days}-working-day notice"
        )


def summary_due_day(calendar: Any, month_last_day: date, *, working_days: int = SUMMARY_WORKING_DAYS) -> date:
    """The last day the monthly summary may go out: 5 working days after month end."""
    return _add_wd(calendar, month_last_day, working_days)


def month_of(label: str) -> tuple[int, int]:
    """(year, month) of a monthly label "2026-03"."""
    try:
        y, m = label.split("-")
        return int(y), int(m)
    except ValueError as exc:
        raise PlanningError(f"无效的月份 {label!r}（应如 2026-03）") from exc


def previous_month(day: date) -> tuple[date, date]:
    """First and last day of the month before `day`'s month."""
    last = day.replace(day=1) - timedelta(days=1)
    return last.replace(day=1), last


def quarter_of(day: date) -> tuple[str, date, date]:
    p = period_containing(day, QUARTERLY)
    return p.label, p.start, p.end
