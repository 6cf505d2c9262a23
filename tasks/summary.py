"""Month-end steps (PROCEDURES.md §4 steps 7–8): the list of inspection reports due but not
returned, the monthly service summary (阶段性服务总结) per customer, the quarterly analysis, and
the customer's rating.

Every step is idempotent: a summary is one row per (customer, kind, period) and every message
carries a key, so the month-end run may run daily (it does: a missed day is caught up the next)
and issue nothing twice. All figures come from the case rows, their event logs, clocks and stock
moves (rules/kpi.py computes them), so a summary can be recomputed for any past month.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from models.assets import Device, SparePart, StockMove
from models.cases import CASE_STATUS_ZH, Case, CaseKind, CaseStatus, Event
from models.clocks import Clock, ClockStatus
from models.contracts import Contract
from models.db import session_scope
from models.inspection import RESULT_ZH, ChecklistResult, ItemResult, ServiceSummary
from models.parties import Customer, Role
from models.reports import Report, content_hash
from models.settings import business_timezone
from rules import inspection as plan_rules
from rules import kpi
from tasks.charts import customer_charts
from tasks.clocks import verdict
from tasks.complaints import complaint_lines
from tasks.drill import drills_in_period
from tasks.inspection import calendar_for, local_day
from tasks.links import sign_link
from tasks.notify import queue
from tasks.people import customer_contacts, staff_with_role
from tasks.render import render
from tasks.renewal import renewal_lines

FAULT_KINDS = (str(CaseKind.REPAIR), str(CaseKind.ACCIDENT))
OPEN_KINDS = (str(CaseKind.REPAIR), str(CaseKind.ACCIDENT), str(CaseKind.COMPLAINT))
# An inspection report counts as returned once the centre registered it (or the visit was cancelled).
RETURNED = (CaseStatus.REGISTERED, CaseStatus.CANCELLED, CaseStatus.CLOSED)
TREND_MONTHS = 6


def local_bounds(first: date, last: date, tz: str | None = None) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the local days first..last (in the business time zone by default)."""
    zone = ZoneInfo(tz or business_timezone())
    start = datetime(first.year, first.month, first.day, tzinfo=zone).astimezone(UTC)
    end_day = last + timedelta(days=1)
    end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=zone).astimezone(UTC)
    return start, end


def _local_month(moment: datetime, tz: str) -> str:
    local = moment.astimezone(ZoneInfo(tz))
    return f"{local.year}-{local.month:02d}"


def _months_back(last: date, n: int) -> list[str]:
    y, m = last.year, last.month
    out = []
    for _ in range(n):
        out.append(f"{y}-{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return list(reversed(out))


# ---- unreturned inspection reports (step 7) --------------------------------------------------------


def visit_day_of(case: Case) -> date:
    """The agreed visit day, else the day proposed at planning, else the period's last day."""
    for key in ("visit_day", "proposed_day", "period_end"):
        value = case.data.get(key)
        if value:
            return date.fromisoformat(value)
    return case.reported_at.date()


def unreturned_reports(session: Session, *, month_last_day: date) -> list[dict[str, Any]]:
    """Inspections whose visit fell on or before the month's end and whose report is not registered."""
    rows = session.exec(
        select(Case, Customer)
        .join(Customer, col(Customer.id) == Case.customer_id)
        .where(Case.kind == str(CaseKind.INSPECTION), col(Case.status).not_in(RETURNED))
        .order_by(col(Customer.name), col(Case.id))
    ).all()
    out = []
    for case, customer in rows:
        day = visit_day_of(case)
        if day > month_last_day:
            continue
        out.append(
            {
                "case_id": case.id,
                "number": case.number,
                "customer": customer.name,
                "period": case.period,
                "visit_day": day.isoformat(),
                "status": CASE_STATUS_ZH.get(case.status, case.status),
                "days_overdue": (month_last_day - day).days,
            }
        )
    return out


def queue_unreturned_list(
    session: Session, *, month: str, month_last_day: date, now: datetime
) -> list[dict[str, Any]]:
    """Send the month's list of unreturned inspection reports to the technical director and supervision."""
    items = unreturned_reports(session, month_last_day=month_last_day)
    people = staff_with_role(session, Role.TECHNICAL_DIRECTOR) + staff_with_role(session, Role.SUPERVISION)
    queue(
        session,
        recipients=people,
        template="inspection/unreturned_reports",
        context={"month": month, "items": items, "count": len(items)},
        key=f"inspection-unreturned:{month}",
        case_id=None,
        now=now,
    )
    return items


# ---- the summary's facts ----------------------------------------------------------------------------


@dataclass
class SummaryFacts:
    customer: dict[str, Any]
    kind: str  # monthly / quarterly
    period: str
    first: date
    last: date
    faults: list[kpi.FaultFact] = field(default_factory=list)
    figures: kpi.Figures = field(default_factory=kpi.Figures)
    inspections: list[dict[str, Any]] = field(default_factory=list)
    drills: list[dict[str, Any]] = field(default_factory=list)  # 应急演练 of the period (tasks.drill)
    parts: list[dict[str, Any]] = field(default_factory=list)
    maintenance: list[dict[str, Any]] = field(default_factory=list)
    plan_vs_done: list[dict[str, Any]] = field(default_factory=list)
    open_issues: list[dict[str, Any]] = field(default_factory=list)
    charts: list[Any] = field(default_factory=list)  # tasks.charts.Chart: trends, faults by class, scores
    renewals: list[dict[str, Any]] = field(default_factory=list)  # 合同与续约 (tasks.renewal.renewal_lines)
    complaints: list[dict[str, Any]] = field(default_factory=list)  # 投诉 (tasks.complaints.complaint_lines)


def _restored_at(case: Case, events: list[Event], clocks: list[Any]) -> datetime | None:
    for e in events:
        if e.kind in ("restored", "service_restored"):
            return e.at
    # the flows record the restore as an event; a clock alone says so only when it was met (a clock
    # stopped otherwise may have closed with its case — a repair handed over — unrestored)
    for c in clocks:
        if c.kind == "restore" and c.met_at:
            return c.met_at
    return None


# The documents a fault's cause and analysis are read from, as the flows issue them (Report.data
# holds the context each was rendered from): the repair's 故障处理报告 (FaultReportForm: cause,
# solution, ...), the engineer's 书面说明 and the accident team's 事故总结 (`account`), the
# accident's technical review report (`review`: conclusion, actions).
CAUSE_REPORTS = ("fault_report", "written_account", "accident_summary", "accident_review")
FAULT_REPORT_ANALYSIS = (
    ("symptoms", "故障现象"),
    ("business_impact", "业务影响"),
    ("process", "处理过程"),
    ("advice", "预防建议"),
)


def _text(value: Any) -> str:
    return str(value or "").strip()


def fault_texts(case: Case, reports: dict[str, dict[str, Any]]) -> tuple[str, str, str]:
    """(cause, analysis, solution) of one fault from its latest reports of each kind (`reports`: kind → data).

    A repair: the fault report's 原因分析 and 解决方案, its other parts as the analysis (else the
    written account). An accident: the review meeting's conclusion (事故原因、处理评价) as the cause,
    the team's accident summary as the analysis, the review's actions as the solution. Values put
    in the case's data by hand (imports, older records) are the last resort.
    """
    fault = reports.get("fault_report") or {}
    review = (reports.get("accident_review") or {}).get("review") or {}
    summary = _text((reports.get("accident_summary") or {}).get("account"))
    account = _text((reports.get("written_account") or {}).get("account"))
    parts = "；".join(
        f"{label}：{_text(fault.get(key))}" for key, label in FAULT_REPORT_ANALYSIS if _text(fault.get(key))
    )
    cause = _text(fault.get("cause")) or _text(review.get("conclusion")) or _text(case.data.get("cause"))
    if case.kind == str(CaseKind.ACCIDENT):
        analysis = summary or parts or account
    else:
        analysis = parts or account or summary
    analysis = analysis or _text(case.data.get("analysis")) or _text(case.data.get("summary"))
    solution = (
        _text(fault.get("solution")) or _text(review.get("actions")) or _text(case.data.get("solution"))
    )
    return cause, analysis, solution


def _problem_repairs(
    session: Session, inspection_ids: list[int], rows: list[ChecklistResult]
) -> dict[int, Case]:
    """The repair case each checklist problem became, by checklist result id.

    `link_repair` records the repair's flow run (`repair_run_id`); the run opens the case later
    with that `flow_run_id` and `parent_id` = the inspection. Without a run id (or before it was
    written) the child case of the inspection whose description names the item and the note is
    taken. `repair_case_id`, when set, wins.
    """
    wanted = [r for r in rows if r.result == ItemResult.ABNORMAL and not r.fixed_on_site]
    if not wanted:
        return {}
    run_ids = sorted({r.repair_run_id for r in wanted if r.repair_run_id})
    direct = sorted({r.repair_case_id for r in wanted if r.repair_case_id})
    conditions = [col(Case.parent_id).in_(inspection_ids)]
    if run_ids:
        conditions.append(col(Case.flow_run_id).in_(run_ids))
    if direct:
        conditions.append(col(Case.id).in_(direct))
    cases = session.exec(select(Case).where(sa.or_(*conditions)).order_by(col(Case.id))).all()
    by_id = {c.id: c for c in cases}
    by_run = {c.flow_run_id: c for c in cases if c.flow_run_id}
    children = [c for c in cases if c.parent_id in inspection_ids and c.kind in FAULT_KINDS]
    out: dict[int, Case] = {}
    for r in wanted:
        case = by_id.get(r.repair_case_id) if r.repair_case_id else None
        case = case or (by_run.get(r.repair_run_id) if r.repair_run_id else None)
        if case is not None:
            out[r.id or 0] = case
    taken = {c.id for c in out.values()}
    for r in wanted:
        if (r.id or 0) in out:
            continue
        # start_problem_repair's description: "巡检发现：<target>·<item>：<note>"
        case = next(
            (
                c
                for c in children
                if c.id not in taken
                and c.parent_id == r.case_id
                and f"·{r.item_label}：{r.note}" in c.description
                and (r.device_id is None or c.device_id in (None, r.device_id))
            ),
            None,
        )
        if case is not None:
            out[r.id or 0] = case
            taken.add(case.id)
    return out


def _handling(r: ChecklistResult, repairs: dict[int, Case]) -> str:
    if r.fixed_on_site:
        return "现场已处理"
    case = repairs.get(r.id or 0)
    if case is not None:
        return f"已转{'事故处理' if case.kind == str(CaseKind.ACCIDENT) else '维修'} {case.number}"
    if r.repair_run_id:
        return "已转维修（工单建立中）"
    return "待处理"


def gather(
    session: Session,
    customer_id: int,
    *,
    kind: str,
    period: str,
    first: date,
    last: date,
    tz: str | None = None,
) -> SummaryFacts:
    """Everything PROCEDURES.md §4 step 8 asks for, for one customer and period."""
    tz = tz or business_timezone()
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise ValueError(f"客户 {customer_id} 不存在 / no customer {customer_id}")
    start, end = local_bounds(first, last, tz)
    months = _months_back(last, TREND_MONTHS)
    trend_start, _ = local_bounds(date.fromisoformat(months[0] + "-01"), last, tz)

    facts = SummaryFacts(
        customer={"id": customer.id, "name": customer.name, "code": customer.code},
        kind=kind,
        period=period,
        first=first,
        last=last,
    )
    fault_cases = _faults(session, facts, customer_id, start, end, trend_start, months, tz)
    insp_cases, insp_in_period = _inspections(session, facts, customer_id)
    facts.drills = drills_in_period(session, customer_id, first, last)
    _parts_replaced(session, facts, customer_id, fault_cases, start, end)
    _plan_vs_done(session, facts, customer_id, insp_cases, insp_in_period)
    _open_issues(session, facts, customer_id, end)
    facts.renewals = renewal_lines(session, customer_id, start, end)
    facts.complaints = complaint_lines(session, customer_id, start, end)
    facts.charts = customer_charts(
        session, customer, first=first, last=last, trend_first=date.fromisoformat(months[0] + "-01"), tz=tz
    )
    return facts


def _faults(
    session: Session,
    facts: SummaryFacts,
    customer_id: int,
    start: datetime,
    end: datetime,
    trend_start: datetime,
    months: list[str],
    tz: str,
) -> Sequence[Case]:
    """The period's faults and their figures (with the trend months before it); the fault cases read."""
    fault_cases = session.exec(
        select(Case)
        .where(
            Case.customer_id == customer_id,
            col(Case.kind).in_(FAULT_KINDS),
            Case.reported_at >= trend_start,
            Case.reported_at < end,
        )
        .order_by(col(Case.reported_at), col(Case.id))
    ).all()
    in_period = [c for c in fault_cases if c.reported_at >= start]
    events, clocks, fault_reports = _records_of(session, [c.id for c in in_period if c.id is not None])
    devices = {d.id: d for d in session.exec(select(Device).where(Device.customer_id == customer_id))}

    def fact(c: Case) -> kpi.FaultFact:
        dev = devices.get(c.device_id) if c.device_id else None
        cause, analysis, solution = fault_texts(c, fault_reports.get(c.id or 0, {}))
        return kpi.FaultFact(
            case_id=c.id or 0,
            number=c.number,
            kind=c.kind,
            severity=c.severity,
            title=c.title or c.description[:60],
            device=f"{dev.model}（{dev.serial}）" if dev else "",
            device_class=dev.device_class if dev else "",
            reported_at=c.reported_at,
            restored_at=_restored_at(c, events.get(c.id or 0, []), clocks.get(c.id or 0, [])),
            closed_at=c.closed_at,
            status=c.status,
            cause=cause,
            analysis=analysis,
            solution=solution,
            from_inspection=c.channel == "巡检" or bool(c.data.get("inspection_case_id")),
        )

    facts.faults = [fact(c) for c in in_period]
    history = [fact(c) if c.reported_at >= start else _light_fact(c) for c in fault_cases]
    clock_facts = [
        kpi.ClockFact(
            case_id=c.case_id,
            kind=c.kind,
            started_at=c.started_at,
            stopped_at=c.met_at or c.stopped_at,
            breached=c.breached_at is not None,
            paused_seconds=sum(_pause_seconds(p) for p in (c.pauses or [])),
        )
        for cs in clocks.values()
        for c in cs
        if not (c.status == ClockStatus.STOPPED and verdict(c) == "stopped")  # closed with its case
    ]
    facts.figures = kpi.figures(
        facts.faults,
        clock_facts,
        history=history,
        months=months,
        month_of={h.case_id: _local_month(h.reported_at, tz) for h in history},
    )
    return fault_cases


def _records_of(
    session: Session, ids: list[int]
) -> tuple[dict[int, list[Event]], dict[int, list[Any]], dict[int, dict[str, dict[str, Any]]]]:
    """The events, clocks and cause reports (the latest version of each kind) of these cases."""
    events: dict[int, list[Event]] = {}
    clocks: dict[int, list[Any]] = {}
    fault_reports: dict[int, dict[str, dict[str, Any]]] = {}
    if ids:
        for e in session.exec(
            select(Event).where(col(Event.case_id).in_(ids)).order_by(col(Event.at), col(Event.id))
        ):
            events.setdefault(e.case_id, []).append(e)
        for clock in session.exec(select(Clock).where(col(Clock.case_id).in_(ids)).order_by(col(Clock.id))):
            clocks.setdefault(clock.case_id, []).append(clock)
        for report in session.exec(
            select(Report)
            .where(col(Report.case_id).in_(ids), col(Report.kind).in_(CAUSE_REPORTS))
            .order_by(col(Report.version), col(Report.id))
        ):
            fault_reports.setdefault(report.case_id, {})[report.kind] = (
                report.data or {}
            )  # the latest version of each kind
    return events, clocks, fault_reports


def _inspections(
    session: Session, facts: SummaryFacts, customer_id: int
) -> tuple[Sequence[Case], list[Case]]:
    """The inspections of the period: their checklists' tables, and what was maintained; (all of the
    customer's inspections, those of the period)."""
    first, last = facts.first, facts.last
    insp_cases = session.exec(
        select(Case)
        .where(Case.customer_id == customer_id, Case.kind == str(CaseKind.INSPECTION))
        .order_by(col(Case.id))
    ).all()
    insp_in_period = [c for c in insp_cases if first <= visit_day_of(c) <= last]
    insp_ids = cast(list[int], [c.id for c in insp_in_period])  # rows read from the database: ids are set
    results: dict[int, list[ChecklistResult]] = {}
    if insp_ids:
        for r in session.exec(
            select(ChecklistResult)
            .where(col(ChecklistResult.case_id).in_(insp_ids))
            .order_by(col(ChecklistResult.id))
        ):
            results.setdefault(r.case_id, []).append(r)
    latest_rows: dict[int, list[ChecklistResult]] = {}
    for case_id, rows in results.items():
        latest = max(r.version for r in rows)
        latest_rows[case_id] = [r for r in rows if r.version == latest]
    repairs = (
        _problem_repairs(session, insp_ids, [r for rows in latest_rows.values() for r in rows])
        if insp_ids
        else {}
    )
    for c in insp_in_period:
        rows = latest_rows.get(c.id or 0, [])
        abnormal = [r for r in rows if r.result == ItemResult.ABNORMAL]
        facts.inspections.append(
            {
                "number": c.number,
                "period": c.period,
                "visit_day": visit_day_of(c).isoformat(),
                "status": CASE_STATUS_ZH.get(c.status, c.status),
                "items": len(rows),
                "normal": sum(1 for r in rows if r.result == ItemResult.NORMAL),
                "abnormal": len(abnormal),
                "na": sum(1 for r in rows if r.result == ItemResult.NA),
                "problems": [
                    {
                        "target": r.target,
                        "item": r.item_label,
                        "result": RESULT_ZH[ItemResult(r.result)],
                        "note": r.note,
                        "handling": _handling(r, repairs),
                    }
                    for r in abnormal
                ],
            }
        )
        if c.status in ("registered", "submitted", "report_pending"):
            facts.maintenance.append(
                {
                    "what": f"例行巡检 {c.number}",
                    "day": visit_day_of(c).isoformat(),
                    "note": f"检查 {len(rows)} 项，异常 {len(abnormal)} 项",
                }
            )
        for r in abnormal:
            if r.fixed_on_site:
                facts.maintenance.append(
                    {"what": f"现场处理：{r.item_label}", "day": visit_day_of(c).isoformat(), "note": r.note}
                )
    return insp_cases, insp_in_period


def _parts_replaced(
    session: Session,
    facts: SummaryFacts,
    customer_id: int,
    fault_cases: Sequence[Case],
    start: datetime,
    end: datetime,
) -> None:
    """Spare parts replaced: issued to a case of this customer in the period."""
    case_by_id = {c.id: c for c in fault_cases}
    fact_by_id = {f.case_id: f for f in facts.faults}
    moves = session.exec(
        select(StockMove, SparePart, Case)
        .join(SparePart, col(SparePart.id) == StockMove.part_id)
        .join(Case, col(Case.id) == StockMove.case_id)
        .where(
            Case.customer_id == customer_id, StockMove.quantity < 0, StockMove.at >= start, StockMove.at < end
        )
        .order_by(col(StockMove.at))
    ).all()
    for move, part, case in moves:
        f = fact_by_id.get(case.id or 0)
        hours = None
        if f is not None and f.restored_at is not None:
            hours = round((f.restored_at - f.reported_at).total_seconds() / 3600, 1)
        facts.parts.append(
            {
                "part": part.name,
                "code": part.code,
                "quantity": -move.quantity,
                "case": case.number,
                "reason": move.reason or (case.title or case.description[:60]),
                "duration_hours": hours,
                "impact": (case_by_id.get(case.id) or case).data.get("business_impact")
                or case.description[:80],
            }
        )


def _plan_vs_done(
    session: Session,
    facts: SummaryFacts,
    customer_id: int,
    insp_cases: Sequence[Case],
    insp_in_period: list[Case],
) -> None:
    """Plan vs done: every regular period of the customer's contracts in the window, and the extra ones."""
    first, last = facts.first, facts.last
    contracts = session.exec(
        select(Contract).where(
            Contract.customer_id == customer_id, Contract.start_date <= last, Contract.end_date >= first
        )
    ).all()
    by_key = {(c.contract_id, c.period): c for c in insp_cases}
    for contract in contracts:
        for p in contract.inspection_periods(first, last):
            inspection = by_key.get((contract.id, p.label))
            if inspection is None:
                state, reason = "未安排", "系统中无该周期的巡检记录"
            elif inspection.status == CaseStatus.CANCELLED:
                state, reason = "已取消", str(inspection.data.get("cancel_reason") or "客户取消")
            elif inspection.status in (
                CaseStatus.REGISTERED,
                CaseStatus.SUBMITTED,
                CaseStatus.REPORT_PENDING,
                CaseStatus.CLOSED,
            ):
                state, reason = "已完成", ""
            else:
                state, reason = (
                    "未完成",
                    str(
                        inspection.data.get("delay_reason")
                        or CASE_STATUS_ZH.get(inspection.status, inspection.status)
                    ),
                )
            facts.plan_vs_done.append(
                {"contract": contract.code, "period": p.label, "state": state, "reason": reason}
            )
        for c in insp_in_period:
            if c.contract_id == contract.id and plan_rules.is_extra(c.period or ""):
                facts.plan_vs_done.append(
                    {"contract": contract.code, "period": c.period, "state": "加做", "reason": c.description}
                )


def _open_issues(session: Session, facts: SummaryFacts, customer_id: int, end: datetime) -> None:
    """The issues still open at the end of the period."""
    open_cases = session.exec(
        select(Case)
        .where(
            Case.customer_id == customer_id,
            col(Case.kind).in_(OPEN_KINDS),
            Case.reported_at < end,
            sa.or_(col(Case.closed_at).is_(None), col(Case.closed_at) >= end),
        )
        .order_by(col(Case.reported_at))
    ).all()
    for c in open_cases:
        facts.open_issues.append(
            {
                "number": c.number,
                "title": c.title or c.description[:60],
                "severity": c.severity,
                "status": CASE_STATUS_ZH.get(c.status, c.status),
                "since": c.reported_at,
            }
        )


def _light_fact(c: Case) -> kpi.FaultFact:
    """A fault before the period: only its month counts (the frequency trend)."""
    return kpi.FaultFact(
        case_id=c.id or 0,
        number="",
        kind=c.kind,
        severity=c.severity,
        title="",
        device="",
        device_class="",
        reported_at=c.reported_at,
        restored_at=None,
        closed_at=c.closed_at,
        status=c.status,
    )


def _pause_seconds(p: dict[str, Any]) -> float:
    try:
        return (datetime.fromisoformat(p["to"]) - datetime.fromisoformat(p["from"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return 0.0


def render_summary(facts: SummaryFacts, *, issued_at: datetime, due_by: date, lang: str = "zh") -> str:
    """The summary as HTML (templates/summary/service_summary)."""
    return render(
        "summary/service_summary",
        lang=lang,
        facts=facts,
        f=facts.figures,
        clock_zh=kpi.CLOCK_ZH,
        percent=kpi.percent,
        issued_at=issued_at,
        due_by=due_by,
    )


def _figures_json(facts: SummaryFacts) -> dict[str, Any]:
    f = facts.figures
    return {
        "faults": f.faults,
        "major_faults": f.major_faults,
        "by_severity": {str(k): v for k, v in f.by_severity.items()},
        "by_cause": [list(x) for x in f.by_cause],
        "mttr_hours": f.mttr_hours,
        "sla_compliance": f.sla_compliance,
        "clocks": [c.__dict__ for c in f.clocks],
        "trend": [list(x) for x in f.trend],
        "trend_word": f.trend_word,
        "inspections": len(facts.inspections),
        "drills": len(facts.drills),
        "parts": len(facts.parts),
        "open_issues": len(facts.open_issues),
        "plan_vs_done": facts.plan_vs_done,
    }


def issue_summary(
    session: Session,
    customer_id: int,
    *,
    kind: str,
    period: str,
    first: date,
    last: date,
    now: datetime,
    calendar: Any,
    notify: bool = True,
) -> tuple[ServiceSummary, bool]:
    """Render, store and send one customer's summary (idempotent per customer, kind and period)."""
    existing = session.exec(
        select(ServiceSummary).where(
            ServiceSummary.customer_id == customer_id,
            ServiceSummary.kind == kind,
            ServiceSummary.period == period,
        )
    ).first()
    if existing is not None:
        return existing, False
    due_by = plan_rules.summary_due_day(calendar, last)
    facts = gather(session, customer_id, kind=kind, period=period, first=first, last=last)
    html = render_summary(facts, issued_at=now, due_by=due_by)
    today = now.astimezone(ZoneInfo(business_timezone())).date()
    row = ServiceSummary(
        customer_id=customer_id,
        kind=kind,
        period=period,
        due_by=due_by,
        issued_at=now,
        late=today > due_by,
        content_html=html,
        content_hash=content_hash(html),
        figures=_figures_json(facts),
    )
    session.add(row)
    session.flush()
    if notify:
        _send_summary(session, row, facts, now=now)
    return row, True


RATING_PURPOSE = "summary"  # the rating page: /summary/<token>
RATING_LINK_DAYS = 60


def rating_link(summary_id: int, *, now: datetime) -> str:
    """The signed link of the summary's page, where the customer reads it and rates the service."""
    return sign_link(RATING_PURPOSE, {"s": summary_id}, expires_at=now + timedelta(days=RATING_LINK_DAYS))


def _send_summary(session: Session, row: ServiceSummary, facts: SummaryFacts, *, now: datetime) -> None:
    contacts = customer_contacts(session, row.customer_id)
    queue(
        session,
        recipients=contacts,
        template="inspection/service_summary",
        context={
            "customer": facts.customer["name"],
            "kind_zh": "阶段性服务总结" if row.kind == "monthly" else "季度服务分析报告",
            "period": row.period,
            "faults": facts.figures.faults,
            "inspections": len(facts.inspections),
            "open_issues": len(facts.open_issues),
            "link": rating_link(row.id or 0, now=now),
        },
        key=f"summary:{row.kind}:{row.period}:{row.customer_id}",
        case_id=None,
        now=now,
    )


def customers_to_summarise(session: Session, first: date, last: date) -> list[int]:
    """Customers with a contract active at some point of the period."""
    return sorted(
        set(
            session.exec(
                select(Contract.customer_id).where(Contract.start_date <= last, Contract.end_date >= first)
            ).all()
        )
    )


@dataclass
class MonthEndResult:
    month: str
    unreturned: int = 0
    monthly: int = 0
    quarterly: int = 0
    late: list[str] = field(default_factory=list)


def month_end(now: datetime, *, url: str | None = None, limit: int | None = None) -> MonthEndResult:
    """The month-end step for the month before `now` (local): list, summaries, quarterly analyses."""
    today = local_day(now)
    first, last = plan_rules.previous_month(today)
    month = f"{last.year}-{last.month:02d}"
    result = MonthEndResult(month=month)
    with session_scope(url) as session:
        result.unreturned = len(queue_unreturned_list(session, month=month, month_last_day=last, now=now))
        calendar = calendar_for(session)
        customers = customers_to_summarise(session, first, last)
    quarter_end = last.month % 3 == 0
    for customer_id in customers[:limit] if limit else customers:
        # one transaction per customer: one bad customer's data does not hold back the others
        with session_scope(url) as session:
            row, created = issue_summary(
                session,
                customer_id,
                kind="monthly",
                period=month,
                first=first,
                last=last,
                now=now,
                calendar=calendar,
            )
            result.monthly += int(created)
            if created and row.late:
                result.late.append(f"{customer_id}:{month}")
            if quarter_end:
                label, q_first, q_last = plan_rules.quarter_of(last)
                _, q_created = issue_summary(
                    session,
                    customer_id,
                    kind="quarterly",
                    period=label,
                    first=q_first,
                    last=q_last,
                    now=now,
                    calendar=calendar,
                )
                result.quarterly += int(q_created)
    return result


def record_rating(
    summary_id: int, rating: dict[str, str], *, by: str, comment: str, now: datetime, url: str | None = None
) -> ServiceSummary:
    """Store the customer's rating of a summary (优/良/中/差 per item); a second rating is refused."""
    bad = [k for k, v in rating.items() if v not in RATING_VALUES or k not in RATING_ITEMS]
    missing = [RATING_ITEMS[k] for k in RATING_ITEMS if k not in rating]
    if bad or missing:
        raise ValueError(f"请为每一项选择 优/良/中/差：{'、'.join(missing) or '、'.join(bad)}")
    if not by.strip():
        raise ValueError("请填写评价人姓名 / the rater's name is required")
    with session_scope(url) as session:
        row = session.get(ServiceSummary, summary_id)
        if row is None:
            raise ValueError(f"服务总结 {summary_id} 不存在")
        if row.rated_at is not None:
            raise ValueError(f"该服务总结已由 {row.rated_by} 于 {row.rated_at:%Y-%m-%d} 评价 / already rated")
        row.rating = {**rating, "comment": comment.strip()}
        row.rated_by = by.strip()[:100]
        row.rated_at = now
        session.add(row)
        return row


# PROCEDURES.md §8, overall scorecard
RATING_ITEMS = {
    "inspection": "月度巡检质量",
    "repair": "维修质量",
    "uptime": "系统不间断运行时间",
    "skill": "工程师技术水平",
    "overall": "总体评价",
}
RATING_VALUES = ("优", "良", "中", "差")
