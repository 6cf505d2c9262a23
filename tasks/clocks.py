"""SLA clocks of a case: start, pause, resume, stop — and the keeper steps that fire breaches,
the escalation ladder and stale-record escalations.

`start_clock` / `pause_clock` / `resume_clock` / `stop_clock` work in the caller's session (a task
of a procedure) and append an event for every change, so that `recompute_clock` can rebuild the
figure from the case's event log at any time. `fire_due_clocks(now)` and
`escalate_stale_records(now)` are clock-keeper steps (flows.clock_keeper.KEEPER_STEPS): they open
their own session, find work through indexed columns only, and write one `Escalation` per
(clock, level) — unique in the database, so a restarted or duplicate keeper never fires twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from models.approvals import Approval, ApprovalStatus, Timer
from models.cases import Case, Event, append_event, paid_prefix
from models.clocks import Clock, ClockStatus, Escalation
from models.contracts import CalendarOverride, CalendarYear, Contract, ContractVersion, terms_on
from models.db import insert_ignore, session_scope
from models.parties import Customer, Site, Staff
from models.settings import business_timezone
from rules import escalation as ladder_rules
from rules.calendar import Calendar, build_calendar, provisional_between
from rules.sla import (
    CLOCK_LABELS_ZH,
    ClockKind,
    PolicyError,
    SlaPolicy,
    deadline,
    figure_from_events,
    ladder_steps,
    merge_policy,
    policy_for,
    severity_text,
    shift_after_pause,
    span_for,
    stale_at,
    stale_in_working_time,
    stale_span,
)
from tasks.approvals import Approver, approval_link
from tasks.notify import queue

log = logging.getLogger("aftercare.clocks")

PROVISIONAL_WARNING = "暂定：该年度官方节假日安排未发布，按法定节假日推算"

# Severity 1–2 go out even in a recipient's quiet hours (DESIGN §4); the rest wait for the morning.
URGENT_SEVERITY = 2


def _urgent(*severities: int | None) -> bool:
    """Whether a message about a case of these severities ignores quiet hours."""
    return any(s is not None and int(s) <= URGENT_SEVERITY for s in severities)


class ClockError(ValueError):
    """A clock operation that cannot be done (unknown kind, not running, …); the message says why."""


# ---------------------------------------------------------------- calendar data


def load_calendar(session: Session, name: str = "cn", tz: str | None = None) -> Calendar:
    """The official calendar with the operator's overrides of `name` (read here, used by pure code)."""
    rows = session.exec(select(CalendarOverride).where(CalendarOverride.calendar == name)).all()
    years = session.exec(select(CalendarYear.year).where(CalendarYear.calendar == name)).all()
    return build_calendar(
        ((r.day, r.working) for r in rows), name=name, tz=tz or business_timezone(), confirmed_years=years
    )


def set_calendar_day(
    session: Session, day: date, working: bool, *, note: str, now: datetime, name: str = "cn"
) -> CalendarOverride:
    """Enter one day of an official notice (or a local correction): a day off, or a make-up working day."""
    row = session.exec(
        select(CalendarOverride).where(CalendarOverride.calendar == name, CalendarOverride.day == day)
    ).first()
    if row is None:
        row = CalendarOverride(calendar=name, day=day, working=working, note=note, created_at=now)
    else:
        row.working, row.note = working, note
    session.add(row)
    session.flush()
    return row


def confirm_year(session: Session, year: int, *, note: str, now: datetime, name: str = "cn") -> CalendarYear:
    """Mark `year` as entered from the official notice: its deadlines stop being provisional.

    Refused while no day of that year has been entered: confirming the statutory estimate alone
    would hide the 调休 make-up days the notice always brings."""
    entered = session.exec(
        select(CalendarOverride.id).where(
            CalendarOverride.calendar == name,
            CalendarOverride.day >= date(year, 1, 1),
            CalendarOverride.day <= date(year, 12, 31),
        )
    ).first()
    if entered is None:
        raise ClockError(
            f"{year} 年尚未录入任何节假日/调休日，请先按国务院通知录入再确认 / "
            f"enter the official days of {year} first (aftercare calendar off|working DAY)"
        )
    row = session.exec(
        select(CalendarYear).where(CalendarYear.calendar == name, CalendarYear.year == year)
    ).first()
    if row is None:
        row = CalendarYear(calendar=name, year=year, note=note, confirmed_at=now)
        session.add(row)
        session.flush()
    # The clocks whose deadlines rested on this year's estimate: re-judged with the year confirmed
    # (a clock that also touches another unconfirmed year stays provisional). Provisional clocks
    # are few and a confirmation is rare, so a filtered read of them is fine here.
    cleared = moved = 0
    for clock in session.exec(select(Clock).where(Clock.provisional == True)).all():  # noqa: E712
        if clock.terms.get("calendar", "cn") != name:
            continue
        cal = calendar_for_terms(session, clock.terms)
        if _relay(session, clock, cal, now):
            moved += 1  # the official days moved its deadline (a holiday or a make-up working day)
        clock.provisional = _provisional_now(clock, cal)
        if not clock.provisional:
            cleared += 1
        session.add(clock)
    session.flush()
    log.info(
        "calendar %s year %s confirmed: %d clock(s) no longer provisional, %d deadline(s) moved",
        name,
        year,
        cleared,
        moved,
    )
    return row


def _relay(session: Session, clock: Clock, cal: Calendar, now: datetime) -> bool:
    """Lay a clock's due time and ladder again on `cal` — from its start, with the pauses it had —
    as `start_clock` laid them on the estimate; True (and an event) when they moved. A running
    clock's levels already fired stay fired; a stopped clock is judged again on the new deadline
    (met or breached: the report and the SLA figures then say what the official days make true)."""
    case = session.get(Case, clock.case_id)
    contract, site = _contract_and_site(session, case) if case is not None else (None, None)
    try:
        pol = policy_for(contract)
        due = deadline(pol, clock.kind, clock.severity, clock.started_at, site=site, calendar=cal)
        steps = ladder_steps(pol, clock.kind, clock.started_at, cal)
    except PolicyError as exc:
        log.warning("clock %s of case %s not re-laid: %s", clock.kind, clock.case_id, exc)
        return False
    times = [step.at for step in steps] + ([due.at] if due else [])
    for pause in clock.pauses:
        times = shift_after_pause(
            times, datetime.fromisoformat(pause["from"]), datetime.fromisoformat(pause["to"]), cal
        )
    ladder = [[step.level, at.isoformat()] for step, at in zip(steps, times, strict=False)]
    due_at = times[-1] if due else None
    if due_at == clock.due_at and ladder == clock.ladder:
        return False
    old_due = clock.due_at
    clock.due_at, clock.ladder = due_at, ladder
    data: dict[str, Any] = {
        "clock": clock.kind,
        "due_at_before": _iso(old_due),
        "due_at": _iso(due_at),
        "ladder": ladder,
        "reason": "已录入该年国务院节假日安排，按正式日历重新计算期限",
    }
    if clock.status == ClockStatus.STOPPED:
        data["verdict_before"] = verdict(clock)
        _judge(clock, closed=_was_closed(session, clock))
        data["verdict"] = verdict(clock)
    _schedule(clock, _done_levels(session, clock.id))  # type: ignore[arg-type]
    append_event(
        session,
        clock.case_id,
        "clock.relaid",
        at=now,
        key=f"clock:{clock.kind}:relaid:{cal.name}:{now.isoformat()}",
        data=data,
    )
    return True


def _judge(clock: Clock, *, closed: bool = False) -> None:
    """Judge a stopped clock against its deadline. Stopped by its step: met when it stopped in time,
    breached otherwise. Closed with its case (`close_clocks`): never met — the service did not finish
    under it — and breached only when the deadline passed before it closed."""
    stopped = clock.stopped_at
    assert stopped is not None  # only stopped clocks are judged
    late = clock.due_at is not None and stopped > clock.due_at
    clock.met_at = stopped if not closed and not late else None
    clock.breached_at = clock.due_at if late else None


def verdict(clock: Clock) -> str:
    """A stopped clock's judgement: met, breached, or stopped (closed with its case, deadline not passed)."""
    return "met" if clock.met_at else "breached" if clock.breached_at else "stopped"


def _was_closed(session: Session, clock: Clock) -> bool:
    """Whether the clock was stopped by its case closing (`close_clocks`), not by its own step."""
    return (
        session.exec(
            select(Event.id).where(Event.case_id == clock.case_id, Event.key == f"clock:{clock.kind}:closed")
        ).first()
        is not None
    )


def _bound_times(clock: Clock) -> list[datetime]:
    """The clock's current due time and ladder times that were laid on the working-day calendar.

    Clocks started before `terms["calendar_bound"]` was recorded count every time that may be
    (a 5x8 or working-day deadline, every ladder level): better flagged once too often than hidden."""
    bound = clock.terms.get("calendar_bound")
    if bound is None:
        due_bound = "5x8" in clock.basis or "工作日" in clock.basis
        levels = {int(level) for level, _ in clock.ladder}
    else:
        due_bound = bool(bound.get("due"))
        levels = {int(level) for level in bound.get("levels", [])}
    times = [t for level, t in _ladder_pairs(clock) if level in levels]
    if due_bound and clock.due_at is not None:
        times.append(clock.due_at)
    return times


def _provisional_now(clock: Clock, cal: Calendar) -> bool:
    """Whether the clock's calendar-bound times rest on a provisionally judged day, as the calendar stands."""
    return any(provisional_between(clock.started_at, t, cal) for t in _bound_times(clock))


def calendar_for_terms(session: Session, terms: dict[str, Any]) -> Calendar:
    """The calendar a clock counts in, rebuilt from its stored terms."""
    cal = load_calendar(session, terms.get("calendar", "cn"), terms.get("tz") or business_timezone())
    lunch = terms.get("lunch")
    return cal.with_hours(
        round_the_clock=terms.get("service_hours", "7x24") == "7x24",
        day_start=_hm(terms.get("start", "09:00")),
        day_end=_hm(terms.get("end", "18:00")),
        lunch=(_hm(lunch[0]), _hm(lunch[1])) if lunch else None,
    )


def _hm(value: str) -> time:
    hh, mm = value.split(":")
    return time(int(hh), int(mm))


# ---------------------------------------------------------------- the clock operations


def _kind(kind: str) -> str:
    try:
        return str(ClockKind(kind))
    except ValueError as exc:
        known = ", ".join(k.value for k in ClockKind)
        raise ClockError(f"未知的时钟 / unknown clock {kind!r}: use one of {known}") from exc


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _ladder_pairs(clock: Clock) -> list[tuple[int, datetime]]:
    return [(int(level), datetime.fromisoformat(at)) for level, at in clock.ladder]


def _done_levels(session: Session, clock_id: int) -> set[int]:
    return set(session.exec(select(Escalation.level).where(Escalation.clock_id == clock_id)).all())


def _active_until(clock: Clock) -> datetime | None:
    """Steps due before this moment can still fire: the pause or the stop; None while running."""
    if clock.status == ClockStatus.PAUSED:
        return clock.paused_at
    if clock.status == ClockStatus.STOPPED:
        return clock.stopped_at
    return None


def _schedule(clock: Clock, done: set[int]) -> None:
    """Set `next_check_at`: the next step of this clock the keeper must fire."""
    until = _active_until(clock)
    pairs = [(lv, at) for lv, at in _ladder_pairs(clock) if until is None or at < until]
    due = clock.due_at if (clock.due_at is not None and (until is None or clock.due_at < until)) else None
    clock.next_check_at = ladder_rules.next_check(due_at=due, ladder=pairs, done_levels=done, running=True)


def _get(session: Session, case_id: int, kind: str) -> Clock | None:
    return session.exec(select(Clock).where(Clock.case_id == case_id, Clock.kind == kind)).first()


def _contract_and_site(session: Session, case: Case) -> tuple[Contract | None, Site | None]:
    """The contract and site a case's clocks are laid by (its SLA table, its distance band)."""
    contract = session.get(Contract, case.contract_id) if case.contract_id is not None else None
    site = session.get(Site, case.site_id) if case.site_id is not None else None
    return contract, site


def _terms_on(session: Session, contract: Contract | None, at: datetime) -> Any:
    """The contract's terms (row or recorded version) that hold on `at`'s local day."""
    if contract is None or contract.id is None:
        return contract
    versions = list(session.exec(select(ContractVersion).where(ContractVersion.contract_id == contract.id)))
    if not versions:
        return contract
    day = at.astimezone(ZoneInfo(contract.timezone)).date()
    return terms_on(versions, contract, day)


def find_clock(session: Session, case_id: int, kind: str) -> Clock | None:
    """The case's clock of `kind`, None when it was never started."""
    return _get(session, case_id, _kind(kind))


def _stop_moment(clock: Clock, at: datetime) -> datetime:
    # A paused clock stopped later counts up to its pause: the waiting time is not the provider's.
    return clock.paused_at if clock.status == ClockStatus.PAUSED and clock.paused_at else at


def applies(session: Session, case_id: int, kind: str, severity: int) -> bool:
    """Whether the case's SLA table sets this clock for the severity at all. A null entry means "no
    such deadline" (临时解决方案 for level 4: 不适用, PROCEDURES.md §1): such a clock is not started,
    so no report or summary counts it as met. The escalation clocks always run (their ladder counts
    from the start, deadline or not)."""
    case = session.get(Case, case_id)
    if case is None:
        return False
    contract, _site = _contract_and_site(session, case)
    pol = policy_for(contract)
    kind = _kind(kind)
    if kind in pol.escalation.get("clocks", []) or "bands" in pol.clock_rule(kind):
        return True
    return span_for(pol, kind, severity) is not None


def start_clock(
    session: Session,
    case_id: int,
    kind: str,
    *,
    started_at: datetime,
    severity: int,
    policy: SlaPolicy | dict[str, Any] | None = None,
    contract: Contract | None = None,
    site: Site | None = None,
    calendar: Calendar | None = None,
) -> Clock:
    """Start an SLA clock of a case (idempotent: a clock already started is returned unchanged).

    Without `policy`/`contract`/`site`, the case's contract and site are used.
    """
    kind = _kind(kind)
    existing = _get(session, case_id, kind)
    if existing is not None:
        return existing
    case = session.get(Case, case_id)
    if case is None:
        raise ClockError(f"没有编号为 {case_id} 的工单 / no case {case_id}")
    found_contract, found_site = _contract_and_site(session, case)
    contract, site = contract or found_contract, site or found_site
    if isinstance(policy, SlaPolicy):
        pol = policy
    elif policy is not None:
        pol = merge_policy(policy, service_hours=str(contract.service_hours) if contract else None)
    else:
        # the terms in force on the day the clock starts: a renewed contract's new terms count from
        # the new term's first day (models.contracts.ContractVersion), never before
        pol = policy_for(_terms_on(session, contract, started_at))
    cal_name = contract.calendar if contract else "cn"
    tz = contract.timezone if contract else business_timezone()
    base = calendar or load_calendar(session, cal_name, tz)
    due = deadline(pol, kind, severity, started_at, site=site, calendar=base)
    steps = ladder_steps(pol, kind, started_at, base)
    wh = pol.data.get("working_hours", {})
    clock = Clock(
        case_id=case_id,
        kind=kind,
        severity=severity,
        status=ClockStatus.RUNNING,
        started_at=started_at,
        due_at=due.at if due else None,
        provisional=bool(due and due.provisional) or any(s.provisional for s in steps),
        basis=due.basis if due else "无时限",
        terms={
            "service_hours": pol.service_hours,
            "start": wh.get("start", "09:00"),
            "end": wh.get("end", "18:00"),
            "lunch": wh.get("lunch"),
            "calendar": base.name,
            "tz": base.tz,
            "raise_severity": kind in pol.escalation.get("raise_severity_on", []),
            # which times were laid on the working-day calendar: only these can turn provisional
            # (or stop being so) when a pause moves them or a year is confirmed
            "calendar_bound": {
                "due": bool(due and due.uses_calendar),
                "levels": [s.level for s in steps if s.uses_calendar],
            },
        },
        ladder=[[s.level, s.at.isoformat()] for s in steps],
    )
    _schedule(clock, set())
    session.add(clock)
    session.flush()
    append_event(
        session,
        case_id,
        "clock.started",
        at=started_at,
        key=f"clock:{kind}:started",
        data={
            "clock": kind,
            "label": CLOCK_LABELS_ZH[kind],
            "severity": severity,
            "due_at": _iso(clock.due_at),
            "provisional": clock.provisional,
            "basis": clock.basis,
            "terms": clock.terms,
            "warning": PROVISIONAL_WARNING if clock.provisional else None,
        },
    )
    return clock


def pause_clock(session: Session, case_id: int, kind: str, *, at: datetime, reason: str) -> Clock:
    """Pause a running clock (e.g. waiting for the customer); a paused clock neither runs out nor escalates."""
    kind = _kind(kind)
    clock = _get(session, case_id, kind)
    if clock is None or clock.status != ClockStatus.RUNNING:
        if clock is not None and clock.status == ClockStatus.PAUSED:
            return clock  # a replayed pause
        raise ClockError(
            f"时钟 {CLOCK_LABELS_ZH[kind]} 未在计时，不能暂停 / clock {kind} of case {case_id} is not running"
        )
    clock.status = ClockStatus.PAUSED
    clock.paused_at = at
    _schedule(clock, _done_levels(session, clock.id))  # type: ignore[arg-type]
    session.add(clock)
    append_event(
        session,
        case_id,
        "clock.paused",
        at=at,
        key=f"clock:{kind}:paused:{len(clock.pauses)}",
        data={"clock": kind, "reason": reason},
    )
    return clock


def resume_clock(session: Session, case_id: int, kind: str, *, at: datetime, reason: str = "") -> Clock:
    """Resume a paused clock: its deadline and ladder move on by the pause, in the clock's own hours."""
    kind = _kind(kind)
    clock = _get(session, case_id, kind)
    if clock is None or clock.status != ClockStatus.PAUSED:
        if clock is not None and clock.status == ClockStatus.RUNNING:
            return clock  # a replayed resume
        raise ClockError(
            f"时钟 {CLOCK_LABELS_ZH[kind]} 未暂停，不能恢复 / clock {kind} of case {case_id} is not paused"
        )
    assert clock.paused_at is not None
    if at < clock.paused_at:
        raise ClockError(f"恢复时间早于暂停时间 / resume at {at} is before the pause at {clock.paused_at}")
    cal = calendar_for_terms(session, clock.terms)
    paused_at = clock.paused_at
    pairs = _ladder_pairs(clock)
    times = [t for _, t in pairs] + ([clock.due_at] if clock.due_at else [])
    moved = shift_after_pause(times, paused_at, at, cal)
    clock.ladder = [[level, t.isoformat()] for (level, _), t in zip(pairs, moved, strict=False)]
    if clock.due_at is not None:
        clock.due_at = moved[-1]
    clock.pauses = [*clock.pauses, {"from": paused_at.isoformat(), "to": at.isoformat(), "reason": reason}]
    clock.status = ClockStatus.RUNNING
    clock.paused_at = None
    # the moved times may now reach into (or out of) a year without official calendar data
    clock.provisional = _provisional_now(clock, cal)
    _schedule(clock, _done_levels(session, clock.id))  # type: ignore[arg-type]
    session.add(clock)
    append_event(
        session,
        case_id,
        "clock.resumed",
        at=at,
        key=f"clock:{kind}:resumed:{len(clock.pauses) - 1}",
        data={
            "clock": kind,
            "paused_at": paused_at.isoformat(),
            "due_at": _iso(clock.due_at),
            "ladder": clock.ladder,
            "reason": reason,
            "provisional": clock.provisional,
            "warning": PROVISIONAL_WARNING if clock.provisional else None,
        },
    )
    return clock


def stop_clock(session: Session, case_id: int, kind: str, *, at: datetime) -> Clock | None:
    """Stop a clock: met when it stopped in time, breached otherwise. None when it was never started."""
    kind = _kind(kind)
    clock = _get(session, case_id, kind)
    if clock is None:
        return None
    if clock.status == ClockStatus.STOPPED:
        return clock  # a replayed stop
    effective = _stop_moment(clock, at)
    # done before the clock was due to run (an engineer on site before the time agreed with the
    # customer): it counts as done at its start, never as a negative time
    effective = max(effective, clock.started_at)
    clock.status = ClockStatus.STOPPED
    clock.stopped_at = effective
    clock.paused_at = None
    _judge(clock)
    # a breach that became due before the stop and was not fired yet is still the keeper's to fire
    _schedule(clock, _done_levels(session, clock.id))  # type: ignore[arg-type]
    session.add(clock)
    append_event(
        session,
        case_id,
        "clock.met" if clock.met_at else "clock.breached",
        at=effective,
        key=f"clock:{kind}:stopped",
        data={"clock": kind, "due_at": _iso(clock.due_at), "stopped_at": effective.isoformat()},
    )
    return clock


def close_clocks(session: Session, case_id: int, *, at: datetime, reason: str) -> int:
    """A case that closes with clocks still running (a repair handed over to the accident flow, a
    cancelled inspection) stops them where they are: not met — the service did not finish under
    them — and a deadline already passed stays breached. The keeper looks at them no more."""
    closed = 0
    for clock in session.exec(
        select(Clock).where(Clock.case_id == case_id, Clock.status != ClockStatus.STOPPED)
    ):
        stopped = _stop_moment(clock, at)
        clock.status, clock.stopped_at, clock.paused_at, clock.next_check_at = (
            ClockStatus.STOPPED,
            stopped,
            None,
            None,
        )
        _judge(clock, closed=True)
        session.add(clock)
        append_event(
            session,
            case_id,
            "clock.closed",
            at=stopped,
            key=f"clock:{clock.kind}:closed",
            data={
                "clock": clock.kind,
                "case_status": reason,
                "due_at": _iso(clock.due_at),
                "breached": clock.breached_at is not None,
            },
        )
        closed += 1
    return closed


def recompute_clock(session: Session, case_id: int, kind: str) -> dict[str, Any]:
    """The clock's figure rebuilt from the case's event log alone (see rules.sla.figure_from_events)."""
    kind = _kind(kind)
    events = session.exec(
        select(Event)
        .where(Event.case_id == case_id, col(Event.kind).like("clock.%"))
        .order_by(col(Event.at), col(Event.id))
    ).all()
    mine = [(e.kind, e.at, e.data) for e in events if e.data.get("clock") == kind]
    if not mine:
        raise ClockError(
            f"工单 {case_id} 没有时钟 {kind} 的记录 / no events of clock {kind} in case {case_id}"
        )
    terms = next((d.get("terms") for k, _, d in mine if k == "clock.started"), None) or {}
    return figure_from_events(mine, calendar_for_terms(session, terms))


# ---------------------------------------------------------------- the keeper steps


class _People:
    """Staff by role, looked up once per keeper step."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._all: list[Staff] | None = None

    def for_case(self, case: Case, roles: Sequence[str]) -> list[Staff]:
        """The people a step names, role by role: the one the case assigned to the role at intake
        (its engineer, its dispatcher …), else everyone holding the role (the expert group, the vendor)."""
        team = (case.data or {}).get("team") or {}
        picked: list[Staff] = []
        for role in roles:
            assigned = self.session.get(Staff, team[role]) if team.get(role) else None
            for person in [assigned] if assigned is not None and assigned.active else self.with_roles([role]):
                if person not in picked:
                    picked.append(person)
        return picked

    def with_roles(self, roles: Sequence[str]) -> list[Staff]:
        if self._all is None:
            self._all = list(
                self.session.exec(select(Staff).where(Staff.active == True).order_by(col(Staff.id))).all()  # noqa: E712
            )
        picked: list[Staff] = []
        for role in roles:
            picked.extend(p for p in self._all if p.has_role(role) and p not in picked)
        return picked


def _case_context(session: Session, case: Case) -> dict[str, Any]:
    # an out-of-contract case says so in every message (PROCEDURES.md §6 step 7): the same mark as
    # the procedures' own notices (models.cases.paid_prefix)
    customer = session.get(Customer, case.customer_id)
    site = session.get(Site, case.site_id) if case.site_id else None
    contract = session.get(Contract, case.contract_id) if case.contract_id else None
    scheme = contract.severity_scheme if contract else None
    return {
        "id": case.id,
        "number": case.number,
        "title": case.title,
        "customer": customer.name if customer else "",
        "site": site.name if site else "",
        "severity": case.severity,
        "severity_scheme": scheme,
        "severity_text": severity_text(scheme, case.severity),
        "out_of_contract": bool(case.out_of_contract),
        "paid": paid_prefix(case),
        "paid_service_reason": (case.data or {}).get("paid_service_reason", ""),
    }


def _queue(session: Session, **kwargs: Any) -> None:
    # The outbox engineer's function; imported here so a missing outbox fails this step loudly.
    queue(session, **kwargs)


def _claim(session: Session, **values: Any) -> bool:
    """Insert one escalation row unless it exists (unique per key and per (clock, level)); True when
    this call wrote it. INSERT … ON CONFLICT DO NOTHING: a duplicate keeper racing for the same step
    loses quietly instead of failing its whole batch."""
    return insert_ignore(session, Escalation, values) is not None


def _fire_step(
    session: Session, clock: Clock, case: Case, step: ladder_rules.Step, now: datetime, people: _People
) -> bool:
    """Write one escalation (breach or ladder level) with its event and notifications; False when
    another keeper already did (the unique row says so)."""
    key = f"clock:{clock.id}:{step.key}"
    label = CLOCK_LABELS_ZH.get(clock.kind, clock.kind)
    if not _claim(
        session,
        key=key,
        clock_id=clock.id,
        case_id=case.id,
        kind="breach" if step.level == ladder_rules.BREACH else "ladder",
        level=step.level,
        due_at=step.at,
        fired_at=now,
        note=f"{label}超时" if step.level == ladder_rules.BREACH else ladder_rules.LEVELS[step.level][2],
    ):
        return False
    acts, informed = ladder_rules.recipients_roles(clock.kind, step.level)
    # the level a clock starts in (level 1, entered at intake) is the normal handling, not an
    # escalation: it is recorded, and the people on it were told by the procedure's own notice
    starting = step.level != ladder_rules.BREACH and step.at <= clock.started_at
    recipients = [] if starting else people.for_case(case, [*acts, *informed])
    context: dict[str, Any] = {
        "case": _case_context(session, case),
        "clock": {
            "kind": clock.kind,
            "label": label,
            "started_at": clock.started_at,
            "due_at": clock.due_at,
            "basis": clock.basis,
            "provisional": clock.provisional,
        },
        "level": step.level,
        "level_label": ladder_rules.LEVEL_LABELS_ZH[step.level],
        "action": "" if step.level == ladder_rules.BREACH else ladder_rules.LEVELS[step.level][2],
        "due_at": step.at,
        "fired_at": now,
        "warning": PROVISIONAL_WARNING if clock.provisional else "",
    }
    data = {
        "clock": clock.kind,
        "level": step.level,
        "due_at": step.at.isoformat(),
        "recipients": [p.name for p in recipients],
    }
    if step.level == ladder_rules.BREACH:
        if clock.breached_at is None:
            clock.breached_at = step.at
        if clock.kind in LADDER_CLOCKS:  # a complaint goes up its customer's manager ladder
            manager = move_up_ladder(session, case, at=now, reason=clock.kind, key=f"ladder:{clock.kind}")
            if manager is not None:
                recipients = [manager, *(p for p in recipients if p.id != manager.id)]
                data["recipients"] = [p.name for p in recipients]
                context["manager"] = manager.name
        append_event(session, case.id, "clock.breach", at=now, key=f"clock:{clock.kind}:breach", data=data)  # type: ignore[arg-type]
        if clock.terms.get("raise_severity") and case.severity is not None and case.severity > 1:
            old = case.severity
            case.severity = ladder_rules.raised_severity(old)
            case.updated_at = now
            session.add(case)
            append_event(
                session,
                case.id,  # type: ignore[arg-type]
                "severity.raised",
                at=now,
                key=f"clock:{clock.kind}:severity",
                data={"from": old, "to": case.severity, "reason": f"{label}超时未恢复，自动提升故障级别"},
            )
            context["case"]["severity"] = case.severity
            context["case"]["severity_text"] = severity_text(
                context["case"]["severity_scheme"], case.severity
            )
            context["raised_from"] = old
            context["raised_from_text"] = severity_text(context["case"]["severity_scheme"], old)
        template = "escalation_breach"
    else:
        clock.level = max(clock.level, step.level)
        append_event(
            session,
            case.id,  # type: ignore[arg-type]
            "clock.escalated",
            at=now,
            key=f"clock:{clock.kind}:L{step.level}",
            data=data,
        )
        template = "escalation"
    context.setdefault("raised_from", None)
    if recipients:
        # the case's severity after a raise counts: a case raised to 2 is a severity-2 case now
        _queue(
            session,
            recipients=recipients,
            template=template,
            context=context,
            key=key,
            case_id=case.id,
            now=now,
            urgent=_urgent(clock.severity, case.severity),
        )
    elif not starting:
        log.warning(
            "escalation %s of case %s has nobody to tell (roles %s)", key, case.id, [*acts, *informed]
        )
    return True


# The clocks whose breach moves a complaint up its customer's manager ladder (PROCEDURES.md §7).
LADDER_CLOCKS = frozenset({ClockKind.COMPLAINT_ANSWER, ClockKind.COMPLAINT_CLOSE})
MANAGER_ROLE = (
    "service_manager"  # the role a complaint's owner holds in its team (models.Role.SERVICE_MANAGER)
)


def move_up_ladder(session: Session, case: Case, *, at: datetime, reason: str, key: str) -> Staff | None:
    """One level up the complaint's manager ladder (`case.data["ladder"]`, staff ids lowest to
    highest, copied from the customer at intake): the manager there owns the complaint from now on
    (its next forms go to them); an event records it. Idempotent by `key`; None when already done.
    At the top of the ladder it stays there (the top manager is told again)."""
    done = session.exec(select(Event.id).where(Event.case_id == case.id, Event.key == key)).first()
    if done is not None:
        return None
    ladder = [int(i) for i in (case.data or {}).get("ladder") or []]
    level = min(int((case.data or {}).get("ladder_level", 0)) + 1, max(len(ladder) - 1, 0))
    manager = session.get(Staff, ladder[level]) if ladder else None
    if manager is None:
        return None
    team = {**((case.data or {}).get("team") or {}), MANAGER_ROLE: manager.id}
    # `acting`: the manager acts as the complaint's owner without holding the role (tasks.approvals)
    acting = {**((case.data or {}).get("acting") or {}), MANAGER_ROLE: manager.id}
    case.data = {**(case.data or {}), "ladder_level": level, "team": team, "acting": acting}
    case.updated_at = at
    session.add(case)
    # what the owner was asked and has not answered yet (the first answer, an investigation) is the
    # new manager's to answer from now on: the new manager replaces the lower one as its approver (the
    # complaint went up because the lower level did not answer, or the customer was not satisfied
    # there; two owners answering the same form would race), the links in the manager's notice. The
    # lower manager's link then says who has it (tasks.approvals.not_entitled_message).
    tasks: list[dict[str, Any]] = []
    for row in session.exec(
        select(Approval).where(
            Approval.case_id == case.id,
            Approval.status == ApprovalStatus.PENDING,
            Approval.approver_role == MANAGER_ROLE,
        )
    ):
        if row.approver_staff_ids != [manager.id]:
            row.approver_staff_ids = [manager.id]  # type: ignore[list-item]
            session.add(row)
        tasks.append({"subject": row.subject, "link": approval_link(row, Approver("staff", manager.id))})  # type: ignore[arg-type]
    append_event(
        session,
        case.id,  # type: ignore[arg-type]
        "complaint_escalated",
        at=at,
        key=key,
        data={"level": level, "manager": manager.name, "reason": reason, "handed_over": len(tasks)},
    )
    _queue(
        session,
        recipients=[manager],
        template="complaint/escalated",
        context={"case": _case_context(session, case), "level": level, "reason": reason, "tasks": tasks},
        key=f"{case.id}:{key}",
        case_id=case.id,
        now=at,
        urgent=True,
    )
    return manager


def fire_due_clocks(now: datetime, *, url: str | None = None, batch: int = 100) -> int:
    """Keeper step: mark breaches and walk the escalation ladder of every clock due by `now`; returns steps fired."""
    # Small batches, each its own transaction: the first notifications are committed (and can be
    # sent) while a long backlog is still being worked through.

    fired = 0
    seen: set[int] = set()
    while True:
        with session_scope(url) as session:
            clocks = list(
                session.exec(
                    select(Clock)
                    .where(Clock.next_check_at <= now)  # type: ignore[operator]
                    .order_by(Clock.next_check_at, Clock.id)  # type: ignore[arg-type]
                    .limit(batch)
                ).all()
            )
            clocks = [c for c in clocks if c.id not in seen]
            if not clocks:
                return fired
            ids = [c.id for c in clocks]
            done: dict[int, set[int]] = {i: set() for i in ids}  # type: ignore[misc]
            for clock_id, level in session.exec(
                select(Escalation.clock_id, Escalation.level).where(Escalation.clock_id.in_(ids))  # type: ignore[union-attr]
            ).all():
                done[clock_id].add(level)  # type: ignore[index]
            cases = {
                c.id: c
                for c in session.exec(select(Case).where(Case.id.in_({c.case_id for c in clocks}))).all()  # type: ignore[union-attr]
            }
            people = _People(session)
            for clock in clocks:
                seen.add(clock.id)  # type: ignore[arg-type]
                until = _active_until(clock)
                horizon = now if until is None else min(now, until)
                pairs = [(lv, at) for lv, at in _ladder_pairs(clock) if until is None or at < until]
                due = (
                    clock.due_at
                    if (clock.due_at is not None and (until is None or clock.due_at < until))
                    else None
                )
                for step in ladder_rules.due_steps(
                    due_at=due,
                    ladder=pairs,
                    done_levels=done[clock.id],  # type: ignore[index]
                    now=horizon,
                    running=True,
                ):
                    if _fire_step(session, clock, cases[clock.case_id], step, now, people):
                        fired += 1
                    done[clock.id].add(step.level)  # type: ignore[index]
                _schedule(clock, done[clock.id])  # type: ignore[index]
                session.add(clock)


def escalate_stale_records(now: datetime, *, url: str | None = None, limit: int = 200) -> int:
    """Keeper step: escalate open cases nobody updated within their contract's time (working time
    on 5x8) to the next manager; fires at most `limit` escalations per call."""
    default_policy = merge_policy()
    fired = 0
    with session_scope(url) as session:
        policies = _stale_policies(session, default_policy)
        # The shortest limit any contract uses bounds the query: a case of a 4-hour contract must be
        # found before the default 24 hours. Working time never runs faster than the wall clock, so
        # no case stale by its own limit is left out; each case's own limit is applied below.
        shortest = min([stale_span(default_policy), *(stale_span(p) for p, _ in policies.values())])
        already = (
            select(Escalation.id)
            .where(
                Escalation.case_id == Case.id, Escalation.kind == "stale", Escalation.due_at > Case.updated_at
            )
            .exists()
        )
        # A case whose procedure waits by plan for a date (an inspection's visit day, a callback in two
        # days: a Timer not yet due) is not stale: nobody is expected to touch it before then.
        waiting_by_plan = (
            select(Timer.id)
            .where(Timer.case_id == Case.id, Timer.fired_at.is_(None), Timer.due_at > now)  # type: ignore[union-attr]
            .exists()
        )
        calendars: dict[tuple[str, str], Calendar] = {}
        people = _People(session)
        after: tuple[datetime, int] | None = None
        # Pages in (updated_at, id) order: candidates not yet stale by their own (longer or working-
        # time) limit do not use up the page and hide a stale case behind them.
        while fired < limit:
            query = select(Case).where(
                Case.closed_at.is_(None),  # type: ignore[union-attr]
                Case.updated_at <= now - shortest,
                ~already,
                ~waiting_by_plan,
            )
            if after is not None:
                query = query.where(
                    sa.or_(
                        col(Case.updated_at) > after[0],
                        sa.and_(col(Case.updated_at) == after[0], col(Case.id) > after[1]),
                    )
                )
            page = session.exec(query.order_by(col(Case.updated_at), col(Case.id)).limit(limit)).all()
            for case in page:
                policy, base = policies.get(case.contract_id, (default_policy, ("cn", business_timezone())))  # type: ignore[arg-type]
                if base not in calendars:
                    calendars[base] = load_calendar(session, *base)
                try:
                    due = stale_at(policy, case.updated_at, calendars[base])
                    span = stale_span(policy)
                except PolicyError:
                    due, span = stale_at(default_policy, case.updated_at), stale_span(default_policy)
                if due > now:
                    continue
                if _escalate_stale(
                    session, case, due, span, now, people, working_time=stale_in_working_time(policy)
                ):
                    fired += 1
                    if fired >= limit:
                        break
            if len(page) < limit:
                break
            after = (page[-1].updated_at, page[-1].id)  # type: ignore[assignment]
    return fired


def _stale_policies(session: Session, default: SlaPolicy) -> dict[int, tuple[SlaPolicy, tuple[str, str]]]:
    """Each contract's policy and calendar (name, tz), for the stale sweep; contracts are reference
    data (few rows), and equal overrides are merged once."""
    import json

    merged: dict[str, SlaPolicy] = {}
    out: dict[int, tuple[SlaPolicy, tuple[str, str]]] = {}
    for contract in session.exec(select(Contract)).all():
        key = json.dumps(
            [contract.sla_policy or {}, str(contract.service_hours)], sort_keys=True, default=str
        )
        if key not in merged:
            try:
                merged[key] = policy_for(contract)
            except PolicyError:
                merged[key] = default
        out[contract.id] = (merged[key], (contract.calendar, contract.timezone))  # type: ignore[index]
    return out


def _escalate_stale(
    session: Session,
    case: Case,
    due: datetime,
    span: timedelta,
    now: datetime,
    people: _People,
    *,
    working_time: bool = False,
) -> bool:
    """Write one stale-record escalation with its event and notifications; False when already written."""
    current = (
        session.exec(select(sa.func.max(Escalation.level)).where(Escalation.case_id == case.id)).one() or 1
    )
    level = ladder_rules.next_manager_level(int(current))
    key = f"stale:{case.id}:{case.updated_at.isoformat()}"
    if not _claim(
        session,
        key=key,
        clock_id=None,
        case_id=case.id,
        kind="stale",
        level=level,
        due_at=due,
        fired_at=now,
        note="工单状态超时未更新，升级至上一级负责人",
    ):
        return False
    acts, informed = ladder_rules.LEVELS[level][:2]
    recipients = people.with_roles([*acts, *informed])
    append_event(
        session,
        case.id,  # type: ignore[arg-type]
        "case.stale_escalated",
        at=now,
        key=key,
        data={
            "level": level,
            "last_update": case.updated_at.isoformat(),
            "recipients": [p.name for p in recipients],
        },
    )
    if recipients:
        _queue(
            session,
            recipients=recipients,
            template="escalation_stale",
            key=key,
            case_id=case.id,
            now=now,
            urgent=_urgent(case.severity),
            context={
                "case": _case_context(session, case),
                "level": level,
                "level_label": ladder_rules.LEVEL_LABELS_ZH[level],
                "last_update": case.updated_at,
                "stale_hours": span.total_seconds() / 3600,
                "hours_word": "个工作小时" if working_time else "小时",
            },
        )
    return True


def next_due(now: datetime, *, url: str | None = None) -> datetime | None:
    """The earliest moment a clock needs the keeper (indexed), for the keeper loop's sleep."""
    with session_scope(url) as session:
        return session.exec(select(sa.func.min(Clock.next_check_at))).one()
