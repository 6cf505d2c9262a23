"""Inspection steps (巡检, PROCEDURES.md §4): planning every contract's periods exactly once,
starting their flow runs idempotently, and the steps of one inspection.

Exactly-once rests on two keys, not on timing: the database's unique (kind, contract_id, period)
on `case` (a second insert does nothing) and Prefect's idempotency key
`inspection:<contract>:<period>` on the flow run (a second start returns the first run). A
duplicated tick, a re-run, two workers or a restart therefore create nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pendulum
import sqlalchemy as sa
from prefect import task
from sqlmodel import Session, col, select

from models.cases import Case, CaseKind, Event, append_event
from models.contracts import Contract
from models.db import session_scope
from rules import inspection as rules
from tasks.cases import STEP

INSPECTION_DEPLOYMENT = "inspection/inspection"


class InspectionError(ValueError):
    """Bad input for an inspection step; the message says what, for a person."""


@dataclass
class PlanResult:
    created: list[int] = field(default_factory=list)  # case ids created by this call
    already: int = 0  # due periods that already had their inspection


def local_day(now: datetime, tz: str = "Asia/Shanghai") -> date:
    """The calendar day of `now` in the contract's time zone."""
    return pendulum.instance(now).in_timezone(tz).date()


def calendar_for(session: Session, name: str = "cn") -> Any:
    """The working-day calendar of a contract, with the operator's overrides (tasks.clocks loads it)."""
    try:
        from tasks.clocks import load_calendar
    except ImportError:  # the clocks module not installed yet: the official calendar alone
        from rules.calendar import DEFAULT_CALENDAR

        return DEFAULT_CALENDAR
    return load_calendar(session, name)


def _insert_ignore(session: Session, values: dict[str, Any]) -> int | None:
    """Insert the case unless the unique (kind, contract_id, period) already holds it; the new id or None."""
    from models.db import insert_ignore

    return insert_ignore(session, Case, values)


def create_inspection(
    session: Session,
    contract: Contract,
    period: rules.Period,
    *,
    window_start: date,
    window_end: date,
    proposed: date,
    now: datetime,
    extra_reason: str = "",
) -> int | None:
    """Create the inspection case of one contract and period (in the caller's transaction).

    Returns the new case id, or None when that period already has its inspection.
    """
    data = {
        "period_start": period.start.isoformat(),
        "period_end": period.end.isoformat(),
        "window_start": window_start.isoformat(),
        "window_end": window_end.isoformat(),
        "proposed_day": proposed.isoformat(),
        "extra": rules.is_extra(period.label),
    }
    if extra_reason:
        data["extra_reason"] = extra_reason
    title = f"{'加做巡检' if extra_reason else '巡检'} {period.label.removeprefix(rules.EXTRA_PREFIX)}"
    case_id = _insert_ignore(
        session,
        {
            "kind": str(CaseKind.INSPECTION),
            "customer_id": contract.customer_id,
            "contract_id": contract.id,
            "period": period.label,
            "status": "planned",
            "title": title,
            "description": extra_reason,
            "channel": "schedule" if not extra_reason else "request",
            "reported_by": "system",
            "reported_at": now,
            "out_of_contract": False,
            "data": data,
            "created_at": now,
            "updated_at": now,
        },
    )
    if case_id is not None:
        append_event(session, case_id, "inspection_planned", at=now, data=data, key="planned")
    return case_id


def plan_inspections(now: datetime, *, url: str | None = None, lead_days: int = 0) -> PlanResult:
    """For every active contract, create the inspection of each period due on `now`'s day (idempotent)."""
    result = PlanResult()
    calendars: dict[str, Any] = {}
    with session_scope(url) as session:
        # A day early/late margin for contracts in other time zones; the rule below is exact.
        utc_day = now.date()
        contracts = session.exec(
            select(Contract).where(
                Contract.inspection_frequency != rules.NONE,
                Contract.end_date >= date.fromordinal(utc_day.toordinal() - 1),
                Contract.start_date <= date.fromordinal(utc_day.toordinal() + lead_days + 1),
            )
        ).all()
        for contract in contracts:
            today = local_day(now, contract.timezone)
            due = rules.due_periods(
                today=today,
                frequency=contract.inspection_frequency,
                contract_start=contract.start_date,
                contract_end=contract.end_date,
                every_months=contract.inspection_every_months,
                lead_days=lead_days,
            )
            for d in due:
                if contract.calendar not in calendars:
                    calendars[contract.calendar] = calendar_for(session, contract.calendar)
                proposed = rules.proposed_day(
                    calendars[contract.calendar], planned_on=today, window_start=d.window_start, window_end=d.window_end
                )
                case_id = create_inspection(
                    session,
                    contract,
                    d.period,
                    window_start=d.window_start,
                    window_end=d.window_end,
                    proposed=proposed,
                    now=now,
                )
                if case_id is None:
                    result.already += 1
                else:
                    result.created.append(case_id)
    return result


def request_extra_inspection(
    contract_code: str, day: date, reason: str, *, now: datetime, url: str | None = None
) -> tuple[int, bool]:
    """An extra inspection on request (before an important customer operation): (case id, created?)."""
    if not reason.strip():
        raise InspectionError("请填写加做巡检的原因（如：重要业务操作前）/ a reason is required")
    with session_scope(url) as session:
        contract = session.exec(select(Contract).where(Contract.code == contract_code)).first()
        if contract is None:
            raise InspectionError(f"未找到合同 {contract_code!r} / unknown contract")
        today = local_day(now, contract.timezone)
        if day < today:
            raise InspectionError(f"日期 {day} 已过 / the date is in the past")
        if not contract.is_active(day):
            raise InspectionError(f"合同 {contract_code} 在 {day} 不在有效期内 / contract not active on that day")
        period = rules.extra_period(day)
        case_id = create_inspection(
            session, contract, period, window_start=day, window_end=day, proposed=day, now=now, extra_reason=reason.strip()
        )
        if case_id is not None:
            return case_id, True
        existing = session.exec(
            select(Case.id).where(
                Case.kind == str(CaseKind.INSPECTION), Case.contract_id == contract.id, Case.period == period.label
            )
        ).one()
        return int(existing), False  # type: ignore[arg-type]


def idempotency_key(contract_id: int, period: str) -> str:
    return f"inspection:{contract_id}:{period}"


def start_inspection_runs(now: datetime, *, url: str | None = None, limit: int | None = None) -> int:
    """Start the flow run of every planned inspection that has none yet; returns how many were started.

    `run_deployment` with the case's idempotency key returns the existing run when one was already
    created (a crash between the start and the write below, or another worker), so the case ends
    up with one run whatever happens in between.
    """
    from prefect.deployments import run_deployment

    with session_scope(url) as session:
        query = (
            select(Case.id, Case.contract_id, Case.period)
            .where(Case.kind == str(CaseKind.INSPECTION), Case.flow_run_id == None, Case.status == "planned")  # noqa: E711
            .order_by(Case.id)
        )
        if limit:
            query = query.limit(limit)
        pending = list(session.exec(query).all())
    started = 0
    for case_id, contract_id, period in pending:
        run = run_deployment(
            INSPECTION_DEPLOYMENT,
            parameters={"case_id": case_id},
            idempotency_key=idempotency_key(contract_id, period),
            as_subflow=False,
            timeout=0,
            flow_run_name=f"巡检 XJ-{case_id:06d} {period}",
        )
        with session_scope(url) as session:
            session.execute(
                sa.update(Case.__table__)  # type: ignore[attr-defined]
                .where(Case.__table__.c.id == case_id, Case.__table__.c.flow_run_id.is_(None))  # type: ignore[attr-defined]
                .values(flow_run_id=str(run.id), updated_at=now)
            )
            append_event(session, case_id, "inspection_run_started", at=now, data={"flow_run_id": str(run.id)}, key="run-started")
        started += 1
    return started


# ---- the steps of one inspection (tasks: each opens its own session) ------------------------------


PROBLEM_SEVERITY_DEFAULT = 3


def _case(session: Session, case_id: int) -> Case:
    case = session.get(Case, case_id)
    if case is None or case.kind != str(CaseKind.INSPECTION):
        raise InspectionError(f"巡检单 {case_id} 不存在 / no inspection {case_id}")
    return case


def checklist_spec(session: Session, case_id: int) -> dict[str, Any]:
    """What the engineer fills in: the site-level items once, then each device's class checklist."""
    from models.assets import Device
    from models.inspection import COMMON, checklist_for

    case = _case(session, case_id)
    devices = session.exec(select(Device).where(Device.contract_id == case.contract_id).order_by(Device.id)).all()
    from models.parties import Site

    site_ids = sorted({d.site_id for d in devices})
    site = session.get(Site, site_ids[0]) if site_ids else None
    targets = [{"target": "site", "label": "机房与管理", "device_class": COMMON, "device_id": None, "serial": None,
                "site": site.name if site else None,
                "items": [{"code": i.code, "label": i.label} for i in checklist_for(session, COMMON)]}]
    for d in devices:
        targets.append({"target": f"device:{d.id}", "label": f"{d.model}（{d.serial}）", "device_class": d.device_class,
                        "device_id": d.id, "serial": d.serial, "site": None, "items": [{"code": i.code, "label": i.label} for i in checklist_for(session, d.device_class)]})
    return {"case_id": case_id, "number": case.number, "targets": targets}


def parse_checklist(spec: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Check a submitted checklist against its spec; the clean data, or InspectionError saying what is missing."""
    from models.inspection import ItemResult

    pre = payload.get("prechecks") or {}
    if not pre.get("backup_confirmed"):
        raise InspectionError("操作前须确认数据已备份（第3步）/ confirm the backup before any action")
    answers = {(a.get("target"), a.get("code")): a for a in payload.get("items") or []}
    clean, missing, errors = [], [], []
    for t in spec["targets"]:
        for item in t["items"]:
            a = answers.get((t["target"], item["code"]))
            if a is None or a.get("result") not in {r.value for r in ItemResult}:
                missing.append(f"{t['label']}·{item['label']}")
                continue
            note = str(a.get("note") or "").strip()
            fixed = bool(a.get("fixed_on_site"))
            severity = a.get("severity")
            if a["result"] == ItemResult.ABNORMAL:
                if not note:
                    errors.append(f"{t['label']}·{item['label']}：异常须填写说明")
                if not fixed:
                    try:
                        severity = int(severity or PROBLEM_SEVERITY_DEFAULT)
                    except (TypeError, ValueError):
                        severity = 0
                    if severity not in (1, 2, 3, 4):
                        errors.append(f"{t['label']}·{item['label']}：级别须为 1–4")
            clean.append({"target": t["target"], "device_id": t["device_id"], "device_class": t["device_class"],
                          "code": item["code"], "label": item["label"], "result": a["result"], "note": note,
                          "fixed_on_site": fixed if a["result"] == ItemResult.ABNORMAL else False,
                          "severity": severity if a["result"] == ItemResult.ABNORMAL and not fixed else None,
                          "target_label": t["label"], "serial": t.get("serial"), "site": t.get("site")})
    if missing:
        raise InspectionError("以下检查项未填写：" + "、".join(missing[:10]) + ("等" if len(missing) > 10 else ""))
    if errors:
        raise InspectionError("；".join(errors))
    return {"prechecks": {"changes": str(pre.get("changes") or ""), "customer_reported": str(pre.get("customer_reported") or ""),
                          "backup_confirmed": True}, "items": clean}


def store_checklist(session: Session, case_id: int, version: int, clean: dict[str, Any], *, at: datetime, by: str) -> list[dict[str, Any]]:
    """Write the results of one submitted version (idempotent); returns the problems to start repairs for."""
    from models.inspection import ChecklistResult, ItemResult

    have = {(r.target, r.item_code) for r in session.exec(
        select(ChecklistResult).where(ChecklistResult.case_id == case_id, ChecklistResult.version == version))}
    for it in clean["items"]:
        if (it["target"], it["code"]) in have:
            continue
        session.add(ChecklistResult(case_id=case_id, version=version, target=it["target"], device_id=it["device_id"],
                                    device_class=it["device_class"], item_code=it["code"], item_label=it["label"],
                                    result=it["result"], note=it["note"], fixed_on_site=it["fixed_on_site"],
                                    severity=it["severity"], recorded_at=at))
    append_event(session, case_id, "checklist_submitted", at=at, actor=by, key=f"checklist:v{version}",
                 data={"version": version, "prechecks": clean["prechecks"],
                       "abnormal": sum(1 for i in clean["items"] if i["result"] == ItemResult.ABNORMAL)})
    return [i for i in clean["items"] if i["result"] == ItemResult.ABNORMAL and not i["fixed_on_site"]]


def cancel_inspection(case_id: int, reason: str, *, by: str, now: datetime, url: str | None = None) -> bool:
    """The customer cancels: recorded, the period marked cancelled with the reason, everyone involved told.

    Returns False when it was already cancelled (a second click changes nothing).
    """
    from models.parties import Role
    from tasks.cases import customer_contact, set_status
    from tasks.notify import queue
    from tasks.people import staff_with_role

    if not reason.strip():
        raise InspectionError("请填写取消原因 / a reason is required")
    with session_scope(url) as session:
        case = _case(session, case_id)
        if case.status == "cancelled":
            return False
        if case.status in ("registered", "closed"):
            raise InspectionError(f"{case.number} 已完成，不能取消 / already done")
        case.data = {**case.data, "cancel_reason": reason.strip(), "cancelled_by": by}
        set_status(session, case_id, "cancelled", at=now, closed=True)
        append_event(session, case_id, "inspection_cancelled", at=now, actor=by, key="cancelled",
                     data={"reason": reason.strip(), "period": case.period})
        people: list[Any] = []
        for role in (Role.DISPATCHER, Role.ENGINEER, Role.TECHNICAL_LEAD):
            people.extend(p for p in staff_with_role(session, role) if p not in people)
        people.append(customer_contact(session, case_id))
        queue(session, recipients=people, template="inspection/cancelled", key=f"{case_id}:cancelled", case_id=case_id,
              now=now, context={"number": case.number, "period": case.period, "reason": reason.strip(), "by": by,
                                "visit_day": case.data.get("visit_day") or case.data.get("proposed_day", "")})
        return True


@task(name="巡检概况 / inspection facts", **STEP)
def load_inspection(case_id: int) -> dict[str, Any]:
    """The inspection's facts as plain values (customer, contract, period, proposed day)."""
    from tasks.cases import case_facts

    with session_scope() as session:
        case = _case(session, case_id)
        facts = case_facts(session, case_id).as_dict()
        facts.update(period=case.period, proposed_day=case.data.get("proposed_day"), status=case.status,
                     extra=bool(case.data.get("extra")))
        return facts


@task(name="约定巡检日期 / fix the visit", **STEP)
def fix_visit(case_id: int, day: str, start: str, by: str, at: datetime) -> dict[str, str]:
    """Record the agreed day and time; returns when to notify, re-confirm and arrive (UTC ISO)."""
    from datetime import time as dtime

    with session_scope() as session:
        case = _case(session, case_id)
        contract = session.get(Contract, case.contract_id)
        assert contract is not None
        cal = calendar_for(session, contract.calendar)
        visit_day = date.fromisoformat(day)
        hh, mm = (int(x) for x in (start or "09:30").split(":"))
        dates = rules.visit_dates(cal, visit_day)
        tz = contract.timezone

        def moment(d: date, t: dtime) -> str:
            return pendulum.datetime(d.year, d.month, d.day, t.hour, t.minute, tz=tz).in_timezone("UTC").isoformat()

        out = {"visit_day": day, "start": f"{hh:02d}:{mm:02d}", "notice_at": moment(dates.notice_day, dtime(9, 0)),
               "reconfirm_at": moment(dates.reconfirm_day, dtime(10, 0)), "visit_at": moment(visit_day, dtime(hh, mm))}
        case.data = {**case.data, **out}
        case.status, case.updated_at = "scheduled", at
        session.add(case)
        append_event(session, case_id, "visit_agreed", at=at, actor=by, data=out, key=f"visit:{day}:{out['start']}")
        return out


@task(name="巡检是否已取消 / cancelled?", **STEP)
def is_cancelled(case_id: int, attempt: str) -> bool:
    """Whether the customer cancelled meanwhile (attempt: re-read after each wait)."""
    with session_scope() as session:
        return _case(session, case_id).status == "cancelled"


@task(name="巡检通知 / notice to the customer", **STEP)
def send_notice(case_id: int, at: datetime) -> int:
    """The customer and the engineer are told of the visit (3 working days before it)."""
    return queue_notice(case_id, at=at)


def queue_notice(case_id: int, *, at: datetime, url: str | None = None, session: Session | None = None) -> int:
    """Queue the notice of one inspection (idempotent by its key); returns the rows queued."""
    from contextlib import nullcontext

    with (nullcontext(session) if session is not None else session_scope(url)) as s:
        return queue_notices(s, [case_id], at=at)


def queue_notices(session: Session, case_ids: Sequence[int], *, at: datetime) -> int:
    """Queue the notices of many inspections in the caller's transaction (the month's batch).

    Who is told is looked up once for the batch (the engineer, each customer's contacts), the
    outbox rows go in through one `queue_many` statement, the status and the `notice` event in
    bulk. Idempotent: a case that already has its `notice` event is skipped, and the outbox key
    `<case>:notice` writes nothing twice either.
    """
    from models.parties import Contact, Role
    from tasks.notify import Message, queue_many
    from tasks.people import staff_with_role

    ids = sorted(set(case_ids))
    done = set(session.exec(select(Event.case_id).where(col(Event.case_id).in_(ids), Event.key == "notice")).all())
    cases = [c for c in session.exec(select(Case).where(col(Case.id).in_(ids)).order_by(col(Case.id))).all()
             if c.kind == str(CaseKind.INSPECTION) and c.id not in done]
    if len(ids) == 1 and not cases and not done:
        _case(session, ids[0])  # raises the Chinese "no such inspection"
    engineer = staff_with_role(session, Role.ENGINEER)[:1]
    # the contact a case names, else the customer's first contact — tasks.cases.customer_contact's
    # rule, applied to contacts loaded once for the whole batch
    contacts: dict[int, list[Contact]] = {}
    for c in session.exec(select(Contact).where(col(Contact.customer_id).in_({c.customer_id for c in cases}))
                          .order_by(col(Contact.is_primary).desc(), col(Contact.id))):
        contacts.setdefault(c.customer_id, []).append(c)
    by_id = {c.id: c for group in contacts.values() for c in group}
    messages = []
    for case in cases:
        contact = by_id.get(case.data.get("contact_id")) or next(iter(contacts.get(case.customer_id, [])), None)
        if contact is None:
            raise InspectionError(f"{case.number} 的客户没有联系人，无法通知 / the customer has no contact")
        messages.append(Message(
            recipients=[contact, *engineer], template="inspection/notice", key=f"{case.id}:notice", case_id=case.id,
            now=at, context={"number": case.number, "period": case.period,
                             "visit_day": case.data.get("visit_day") or case.data.get("proposed_day", ""),
                             "start": case.data.get("start", "09:30")}))
    rows = queue_many(session, messages)
    for case in cases:
        if case.status in ("planned", "scheduled"):
            case.status, case.updated_at = "notified", at
        session.add(Event(case_id=case.id, kind="notice_sent", at=at, actor="system", data={}, key="notice"))
    session.flush()
    return rows


@task(name="巡检检查表 / checklist form", **STEP)
def load_checklist_spec(case_id: int) -> dict[str, Any]:
    """The checklist the engineer fills in for this inspection (from the editable checklist table)."""
    with session_scope() as session:
        return checklist_spec(session, case_id)


@task(name="记录检查结果 / record the checklist", **STEP)
def record_checklist(case_id: int, version: int, payload: dict[str, Any], at: datetime, by: str) -> dict[str, Any]:
    """Store the submitted checklist: {"error": "" or why it was refused, "problems": those not fixed on site}."""
    with session_scope() as session:
        try:
            clean = parse_checklist(checklist_spec(session, case_id), payload)
        except InspectionError as exc:
            append_event(session, case_id, "checklist_refused", at=at, actor=by, key=f"checklist-refused:v{version}",
                         data={"version": version, "error": str(exc)})
            return {"error": str(exc), "problems": []}
        return {"error": "", "problems": store_checklist(session, case_id, version, clean, at=at, by=by)}


def record_move(session: Session, case_id: int, *, day: str, start: str, reason: str, by: str, at: datetime) -> bool:
    """Record that the visit moved to `day` and why (case.data `delay_reason`, the summary's plan vs done).

    Returns False when nothing moved: the same day as already planned (only the time changed), or
    this very move already recorded (a replayed step).
    """
    case = _case(session, case_id)
    moves = list(case.data.get("moves") or [])
    before = (moves[-1]["to"] if moves else None) or case.data.get("visit_day") or case.data.get("proposed_day") or ""
    if day == before:
        return False
    why = reason.strip() or "客户要求改期"
    move = {"from": before, "to": day, "start": start, "reason": why, "by": by, "at": at.isoformat()}
    event = append_event(session, case_id, "visit_moved", at=at, actor=by or "customer", data=move,
                         key=f"moved:{len(moves) + 1}")
    if event.data != move:  # this move recorded before (a replayed step): keep the first record
        return False
    case.data = {**case.data, "moves": [*moves, move],
                 "delay_reason": f"客户改期（{before or '原定日期'} → {day}）：{why}"}
    case.updated_at = at
    session.add(case)
    return True


def _move_request(session: Session, case_id: int, at: datetime) -> tuple[str, str]:
    """The reason and the person of the customer's latest "改期" answer on the date form, up to `at`."""
    from models.approvals import Approval

    answers = session.exec(
        select(Approval).where(Approval.case_id == case_id, col(Approval.step).startswith("date-v"),
                               Approval.decided_at != None)  # noqa: E711
        .order_by(col(Approval.decided_at).desc(), col(Approval.id).desc())
    ).all()
    for a in answers:
        if a.decided_at is not None and a.decided_at <= at:
            payload = a.payload or {}
            if payload.get("action") == "改期":
                return str(payload.get("reason") or ""), a.decided_by or ""
            break
    return "", ""


@task(name="检查改期日期 / check the moved date", **STEP)
def check_moved_day(case_id: int, day: str, start: str, at: datetime, reason: str | None = None,
                    by: str | None = None) -> dict[str, str]:
    """The customer's new date and time, checked (and a date that can be kept recorded as a move, with its reason)."""
    import re

    out = {"day": day.strip(), "start": start.strip() or "09:30", "problem": ""}
    try:
        visit_day = date.fromisoformat(out["day"])
    except ValueError:
        return {**out, "problem": f"「{day}」不是有效日期，请按 2026-10-20 的格式填写"}
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", out["start"]):
        return {**out, "problem": f"「{start}」不是有效时间，请按 09:30 的格式填写"}
    with session_scope() as session:
        contract = session.get(Contract, _case(session, case_id).contract_id)
        assert contract is not None
        try:
            rules.check_visit_day(calendar_for(session, contract.calendar), visit_day,
                                  today=local_day(at, contract.timezone))
        except rules.PlanningError as exc:
            return {**out, "problem": str(exc)}
        # the reason: the one given, else what the customer wrote on the date form that asked for the move
        asked_reason, asked_by = _move_request(session, case_id, at)
        record_move(session, case_id, day=out["day"], start=out["start"], reason=reason or asked_reason,
                    by=by or asked_by, at=at)
    return out


@task(name="重新建议巡检日期 / propose the date again", **STEP)
def propose_again(case_id: int, at: datetime) -> str:
    """The earliest day that, seen from `at`, still leaves room for the notice and the answer (the
    proposal confirmed too late for its own notice is replaced by this one)."""
    with session_scope() as session:
        contract = session.get(Contract, _case(session, case_id).contract_id)
        assert contract is not None
        today = local_day(at, contract.timezone)
        return rules.proposed_day(calendar_for(session, contract.calendar), planned_on=today, window_start=today,
                                  window_end=today).isoformat()


@task(name="关联维修单 / link the repair", **STEP)
def link_repair(case_id: int, version: int, target: str, code: str, run_id: str) -> None:
    """Remember which repair run a checklist problem started."""
    from models.inspection import ChecklistResult

    with session_scope() as session:
        row = session.exec(select(ChecklistResult).where(
            ChecklistResult.case_id == case_id, ChecklistResult.version == version,
            ChecklistResult.target == target, ChecklistResult.item_code == code)).first()
        if row is not None and row.repair_run_id is None:
            row.repair_run_id = run_id
            session.add(row)


@task(name="巡检报告内容 / report context", **STEP)
def report_context(case_id: int, version: int) -> dict[str, Any]:
    """What the inspection report (巡检报告) shows: customer, date, work done, each device's state."""
    from models.inspection import RESULT_ZH, ChecklistResult, ItemResult

    with session_scope() as session:
        case = _case(session, case_id)
        rows = session.exec(select(ChecklistResult).where(ChecklistResult.case_id == case_id, ChecklistResult.version == version)
                            .order_by(ChecklistResult.id)).all()
        pre = next((e.data.get("prechecks", {}) for e in session.exec(
            select(Event).where(Event.case_id == case_id, Event.key == f"checklist:v{version}"))), {})
        spec = checklist_spec(session, case_id)
        labels = {t["target"]: t["label"] for t in spec["targets"]}
        targets: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            targets.setdefault(labels.get(r.target, r.target), []).append(
                {"item": r.item_label, "result": RESULT_ZH[ItemResult(r.result)], "note": r.note,
                 "handling": "现场已处理" if r.fixed_on_site else ("已转维修" if r.result == ItemResult.ABNORMAL else "")})
        return {"visit_day": case.data.get("visit_day", ""), "period": case.period, "prechecks": pre,
                "targets": [{"label": k, "items": v} for k, v in targets.items()]}



@task(name="取消巡检 / cancel", **STEP)
def cancel_step(case_id: int, reason: str, by: str, at: datetime) -> bool:
    """The customer's cancellation, from a flow: recorded, everyone told."""
    return cancel_inspection(case_id, reason, by=by, now=at)


@task(name="巡检问题转维修 / start a repair", **STEP)
def start_problem_repair(case_id: int, version: int, n: int, problem: dict[str, Any], at: datetime) -> str:
    """A problem not fixed on site becomes its own repair flow, linked to this inspection; returns the run id."""
    from tasks.cases import Channel, RepairRequest, start_repair_run

    with session_scope() as session:
        case = _case(session, case_id)
        from models.parties import Customer

        customer = session.get(Customer, case.customer_id)
        assert customer is not None
        code = customer.code
    request = RepairRequest(
        customer=code, site=problem.get("site"), device=problem.get("serial"), reported_by="巡检工程师",
        channel=Channel.INSPECTION, severity=int(problem.get("severity") or PROBLEM_SEVERITY_DEFAULT), reported_at=at,
        description=f"巡检发现：{problem['target_label']}·{problem['label']}：{problem['note']}", parent_case_id=case_id,
    )
    # keyed by the checklist item, not the version: a report sent back and filled in again starts no second repair
    return start_repair_run.fn(request, idempotency_key=f"{case_id}:checklist:{problem['target']}:{problem['code']}")


@task(name="巡检计划 / plan the due inspections", **STEP)
def plan_inspections_step(now: datetime) -> int:
    """Create the inspections due on `now` (idempotent); returns how many were new."""
    return len(plan_inspections(now).created)


@task(name="启动巡检流程 / start the runs", **STEP)
def start_runs_step(now: datetime) -> int:
    """Start the run of every planned inspection without one (idempotent by key)."""
    return start_inspection_runs(now)
