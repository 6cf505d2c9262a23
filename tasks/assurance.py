"""Major-event assurance (重要通信保障 / 重大事件值守): the request, the agreed period, the duty roster,
the pre-inspection and the report's facts — the steps flows/assurance.py is made of.

The assurance is a case of its own (kind `assurance`, BZ-000012): its customer, its site (none: all
the customer's sites), and in `data` the period [start, end) in UTC, the event, when the customer
asked and whether that was less than 3 weeks ahead. Once the plan is agreed (`in_force`), the
intake of every new request of that customer and site reads the period (tasks.cases.open_case,
rules.assurance.raised_severity): a request during it is raised one level of severity and listed
on the assurance report.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pendulum
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import col, select

from models import Case, CaseKind, Contract, Role, Site, Staff, append_event
from models.cases import CaseStatus, add_opened_case
from models.db import session_scope
from models.forms import FUTURE_SLACK, read_time
from models.settings import business_timezone
from rules import assurance as rules
from tasks.cases import (
    REPAIR_TEAM,
    SEVERITY_WORDS,
    IntakeError,
    RequiredText,
    blank_none,
    find_customer,
    queue_for_case,
    set_status,
    team_member,
)
from tasks.inspection import (
    ExtraInspectionRequest,
    InspectionError,
    calendar_for,
    local_day,
    open_extra_inspection,
    request_extra_inspection,
)
from tasks.ledger import step
from tasks.people import customer_contacts, first_with_role
from tasks.render import _local_time


class AssuranceRequest(BaseModel):
    """重要通信保障申请 — what the customer asks for: the event, the period, the sites."""

    model_config = ConfigDict(title="重要通信保障 / major-event assurance")

    customer: RequiredText = Field(
        title="客户", description="客户名称或客户编码", min_length=1, max_length=100
    )
    site: str | None = Field(
        default=None, title="机房/站点", description="不填为该客户的全部站点", max_length=100
    )
    event: RequiredText = Field(
        title="保障事由",
        description="重大会议、节假日、年终结算、重大割接等",
        min_length=2,
        max_length=400,
    )
    starts: RequiredText = Field(
        title="保障开始", description=f"北京时间，{rules.DATE_EXAMPLE}", min_length=8, max_length=40
    )
    ends: RequiredText = Field(
        title="保障结束",
        description=f"北京时间，{rules.DATE_EXAMPLE}；只写日期为该日 24:00",
        min_length=8,
        max_length=40,
    )
    requested_by: RequiredText = Field(
        title="申请人", description="客户方提出申请的人员姓名与电话", min_length=1, max_length=100
    )
    requested_at: datetime | None = Field(
        default=None,
        title="申请时间",
        description="客户提出申请的时间（北京时间）；不填为当前时间。须提前 3 周，不足 3 周须技术总监批准",
    )
    onsite: bool = Field(default=True, title="需要现场值守", description="否：远程值守，电话即时响应")
    requirements: str = Field(
        default="", title="客户要求", max_length=4000, description="保障范围、重点系统等"
    )

    _blank = field_validator("site", mode="before")(blank_none)

    @field_validator("requested_at", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        return read_time(blank_none(value))


# the people an assurance needs: the repair's team (its dispatcher, lead, engineer, director, coordinator)
ASSURANCE_TEAM = REPAIR_TEAM


def open_assurance_case(
    request: AssuranceRequest, *, now: datetime, flow_run_id: str | None = None
) -> dict[str, Any]:
    """Validate the request and open the assurance case (idempotent per flow run). Returns the facts
    the flow branches on; IntakeError / AssuranceError say what to correct."""
    tz = business_timezone()
    start, end = rules.period_bounds(request.starts, request.ends, tz)
    requested_at = request.requested_at or now
    if requested_at > now + FUTURE_SLACK:
        raise IntakeError(f"申请时间 {_local_time(requested_at)} 晚于当前时间，请更正")
    if end <= now:
        raise IntakeError(f"保障期已于 {_local_time(end)} 结束，请检查日期")
    with session_scope() as session:
        if flow_run_id:
            existing = session.exec(select(Case).where(Case.flow_run_id == flow_run_id)).first()
            if existing is not None:
                return _opened(existing)
        customer = find_customer(session, request.customer)
        assert customer.id is not None
        sites = list(session.exec(select(Site).where(Site.customer_id == customer.id).order_by(col(Site.id))))
        site = None
        if request.site:
            site = next((s for s in sites if s.name == request.site.strip()), None)
            if site is None:
                known = "、".join(s.name for s in sites) or "（无）"
                raise IntakeError(f"未知站点“{request.site}”；客户 {customer.name} 的站点：{known}")
        first_day = pendulum.instance(start).in_timezone(tz).date()
        contracts = list(
            session.exec(
                select(Contract)
                .where(Contract.customer_id == customer.id)
                .order_by(col(Contract.end_date).desc())
            )
        )
        contract = next((c for c in contracts if c.is_active(first_day)), None)
        reason = (
            ""
            if contract is not None
            else f"保障期开始时（{first_day}）该客户没有有效的服务合同，按有偿服务提供"
        )
        contact = next(iter(customer_contacts(session, customer.id, primary_only=True)), None)
        late = rules.notice_short(requested_at, start)
        scheme = contract.severity_scheme if contract else "outage"
        case = Case(
            kind=str(CaseKind.ASSURANCE),
            customer_id=customer.id,
            site_id=site.id if site else None,
            contract_id=contract.id if contract else (contracts[0].id if contracts else None),
            severity=4,
            status=CaseStatus.OPEN,
            title=f"重要通信保障：{request.event}"[:80],
            description=f"{request.event}\n{request.requirements}".strip(),
            channel="热线",
            reported_by=request.requested_by,
            reported_at=requested_at,
            out_of_contract=contract is None,
            flow_run_id=flow_run_id,
            data={
                "team": {str(r): first_with_role(session, r).id for r in ASSURANCE_TEAM},
                "contact_id": contact.id if contact else None,
                "severity_label": SEVERITY_WORDS.get(scheme, SEVERITY_WORDS["outage"])[4],
                "paid_service_reason": reason,
                "event": request.event,
                "requirements": request.requirements,
                "onsite": request.onsite,
                "period_start": start.isoformat(),
                "period_end": end.isoformat(),
                "all_sites": site is None,
                "requested_at": requested_at.isoformat(),
                "late": late,
                "notice_days": rules.notice_days(requested_at, start),
                "in_force": False,
            },
            created_at=now,
            updated_at=now,
        )
        add_opened_case(
            session,
            case,
            "assurance_requested",
            at=requested_at,
            actor=request.requested_by,
            data={"event": request.event, "start": start.isoformat(), "end": end.isoformat(), "late": late},
        )
        return _opened(case)


def _opened(case: Case) -> dict[str, Any]:
    return {
        "error": "",
        "case_id": case.id,
        "number": case.number,
        "start": datetime.fromisoformat(case.data["period_start"]),
        "end": datetime.fromisoformat(case.data["period_end"]),
        "late": bool(case.data["late"]),
        "notice_days": case.data["notice_days"],
    }


def period_text(case: Case) -> str:
    """`2026-12-20 00:00 至 2026-12-28 00:00（北京时间）`."""
    start, end = (datetime.fromisoformat(case.data[k]) for k in ("period_start", "period_end"))
    return f"{_local_time(start)} 至 {_local_time(end)}（北京时间）"


# --- steps ------------------------------------------------------------------------------------


@step("open-assurance", title="受理保障申请 / take the assurance request")
def open_assurance(
    request: AssuranceRequest, now: datetime, flow_run_id: str | None = None
) -> dict[str, Any]:
    """Open the assurance case: {"error": "" or what to correct, "case_id", "late", "start", "end", …}."""
    try:
        return open_assurance_case(request, now=now, flow_run_id=flow_run_id)
    except (IntakeError, rules.AssuranceError) as exc:
        return {"error": str(exc)}


@step("assurance-facts", title="保障概况 / the assurance's facts")
def assurance_facts(case_id: int) -> dict[str, Any]:
    """The period, the event, what the customer asked for: the pages and reports show them."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        site = session.get(Site, case.site_id) if case.site_id else None
        return {
            "event": case.data["event"],
            "requirements": case.data.get("requirements", ""),
            "onsite": case.data.get("onsite", True),
            "period": period_text(case),
            "start": datetime.fromisoformat(case.data["period_start"]),
            "end": datetime.fromisoformat(case.data["period_end"]),
            "sites": site.name if site else "全部站点",
            "requested_at": datetime.fromisoformat(case.data["requested_at"]),
            "notice_days": case.data["notice_days"],
            "late": case.data["late"],
        }


@step("assurance-in-force", title="保障生效 / the assurance is in force")
def put_in_force(case_id: int, at: datetime, plan_version: int) -> None:
    """The plan is agreed by both sides: from now on intake raises the period's requests."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        case.data = {**case.data, "in_force": True, "plan_version": plan_version}
        case.updated_at = at
        session.add(case)
        append_event(
            session, case_id, "assurance_in_force", at=at, key="in-force", data={"plan_version": plan_version}
        )


@step("roster-prefill", title="值班表初稿 / the roster's first lines")
def roster_prefill(case_id: int) -> str:
    """The case's engineer and lead over the whole period: a start the coordinator edits."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        start, end = (datetime.fromisoformat(case.data[k]) for k in ("period_start", "period_end"))
        lines = []
        for role in ("engineer", "technical_lead"):
            person = team_member(session, case_id, role)
            lines.append(
                f"{person.name} | {person.phone or '请填写电话'} | {_local_time(start)} | {_local_time(end)}"
            )
        return "\n".join(lines)


@step("check-roster", title="检查值班表 / check the roster")
def check_roster(case_id: int, shifts: str) -> dict[str, Any]:
    """The roster against the period and the staff list: {"problems": [...], "shifts": [...], "gaps": [...]}."""
    tz = business_timezone()
    parsed = rules.parse_roster(shifts, tz)  # the form validated it already: this cannot fail
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        start, end = (datetime.fromisoformat(case.data[k]) for k in ("period_start", "period_end"))
        names = [s.name for s in session.exec(select(Staff).where(Staff.active == True)).all()]  # noqa: E712
    problems = rules.roster_problems(parsed, start, end, names, tz)
    return {
        "problems": problems,
        "shifts": [
            {"name": s.name, "phone": s.phone, "start": s.start, "end": s.end, "hours": s.hours}
            for s in parsed
        ],
        "gaps": [{"start": a, "end": b} for a, b in rules.roster_gaps(parsed, start, end)],
        "hours": round(sum(s.hours for s in parsed), 1),
    }


@step("open-pre-inspection", title="保障前巡检 / the inspection before the period")
def open_pre_inspection(case_id: int, at: datetime) -> dict[str, Any]:
    """Register the extra inspection before the period (the inspection's own rules and flow):
    {"case_id", "number", "day"} or {"error": why none can be held before the period}."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        start = datetime.fromisoformat(case.data["period_start"])
        contract = session.get(Contract, case.contract_id) if case.contract_id else None
        site = session.get(Site, case.site_id) if case.site_id else None
        customer_code = case_customer_code(session, case)
        number = case.number
        event = case.data["event"]
    if contract is None:
        return {"error": "没有服务合同，不能安排合同内巡检"}
    tz = contract.timezone
    first_day = pendulum.instance(start).in_timezone(tz).date()
    with session_scope() as session:
        cal = calendar_for(session, contract.calendar)
    day = rules.pre_inspection_day(cal, today=local_day(at, tz), first_day=first_day)
    if day is None:
        return {"error": f"保障期 {first_day} 开始前已来不及安排巡检（须提前 3 个工作日通知）"}
    reason = f"{number} 重要通信保障（{event}）前巡检"
    try:
        if site is not None:
            opened = open_extra_inspection(
                ExtraInspectionRequest(customer=customer_code, site=site.name, reason=reason, day=day), now=at
            )
            inspection_id, inspection_number = opened.case_id, opened.number
        else:  # all sites: the contract's whole device list
            inspection_id, _created = request_extra_inspection(contract.code, day, reason, now=at)
            inspection_number = f"XJ-{inspection_id:06d}"
    except InspectionError as exc:
        return {"error": str(exc)}
    with session_scope() as session:
        append_event(
            session,
            case_id,
            "pre_inspection_planned",
            at=at,
            key="pre-inspection",
            data={"inspection_id": inspection_id, "number": inspection_number, "day": day.isoformat()},
        )
        inspection = session.get(Case, inspection_id)
        if inspection is not None and inspection.parent_id is None:
            inspection.parent_id = case_id
            session.add(inspection)
    return {"error": "", "case_id": inspection_id, "number": inspection_number, "day": day}


def case_customer_code(session: Any, case: Case) -> str:
    from models import Customer

    customer = session.get(Customer, case.customer_id)
    assert customer is not None
    return customer.code


@step("period-requests", title="保障期间的报修 / the requests during the period")
def period_requests(case_id: int) -> list[dict[str, Any]]:
    """Every request taken during the period, raised one level (recorded by intake on this case)."""
    from models import Event

    with session_scope() as session:
        rows = session.exec(
            select(Event)
            .where(Event.case_id == case_id, Event.kind == "assurance_request")
            .order_by(col(Event.at))
        ).all()
        found = []
        for e in rows:
            other = session.get(Case, e.data["case_id"])
            found.append(
                {
                    "number": other.number if other else "",
                    "at": e.at,
                    "title": other.title if other else "",
                    "reported": e.data["severity_reported"],
                    "raised": e.data["severity_raised"],
                    "status": other.status if other else "",
                }
            )
        return found


# --- cancelling (the CLI: aftercare assurance cancel) ---------------------------------------------

FINISHED = (CaseStatus.ARCHIVED, CaseStatus.CLOSED)


def find_assurance(session: Any, number: str) -> Case:
    """An assurance by the number people quote (BZ-000012, or 12); IntakeError when there is none."""
    import re

    m = re.fullmatch(r"(?:BZ-?)?0*(\d+)", number.strip(), flags=re.IGNORECASE)
    case = session.get(Case, int(m[1])) if m else None
    if m is None or case is None or case.kind != str(CaseKind.ASSURANCE):
        raise IntakeError(f"保障单号应如 BZ-000012，{number!r} 不是一张保障单 / not an assurance number")
    return case


def cancel_assurance(case_id: int, reason: str, *, by: str, now: datetime, url: str | None = None) -> bool:
    """The customer calls an assurance off (with a reason), before or during its period: it is no
    longer in force (intake stops raising that customer's requests), the case is cancelled and the
    customer and the team are told. False when already cancelled; IntakeError when it cannot be."""
    if not reason.strip():
        raise IntakeError("请填写取消原因 / a reason is required")
    with session_scope(url) as session:
        case = session.get(Case, case_id)
        if case is None or case.kind != str(CaseKind.ASSURANCE):
            raise IntakeError(f"保障单 {case_id} 不存在 / no assurance {case_id}")
        if case.status == CaseStatus.CANCELLED:
            return False
        if case.status in FINISHED or datetime.fromisoformat(case.data["period_end"]) <= now:
            raise IntakeError(f"{case.number} 保障期已结束，不能再取消 / the period is over")
        was_in_force = bool(case.data.get("in_force"))
        case.data = {**case.data, "in_force": False, "cancel_reason": reason.strip(), "cancelled_by": by}
        session.add(case)
        set_status(session, case_id, CaseStatus.CANCELLED, at=now)
        append_event(
            session,
            case_id,
            "assurance_cancelled",
            at=now,
            actor=by,
            key="cancelled",
            data={"reason": reason.strip(), "was_in_force": was_in_force},
        )
        queue_for_case(
            session,
            case_id,
            template="assurance/cancelled",
            key="cancelled",
            now=now,
            roles=[Role.DISPATCHER, Role.TECHNICAL_LEAD, Role.ENGINEER, Role.COORDINATOR],
            customer=True,
            urgent=False,
            context={
                "reason": reason.strip(),
                "by": by,
                "assurance": {
                    "event": case.data["event"],
                    "period": period_text(case),
                    "sites": session.get(Site, case.site_id).name if case.site_id else "全部站点",  # type: ignore[union-attr]
                    "onsite": case.data.get("onsite", True),
                },
            },
        )
        return True


@step("assurance-cancelled", title="保障是否已取消 / called off?")
def is_assurance_cancelled(case_id: int) -> bool:
    with session_scope() as session:
        case = session.get(Case, case_id)
        return case is not None and case.status == CaseStatus.CANCELLED
