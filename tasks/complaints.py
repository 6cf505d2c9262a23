"""Complaints (投诉, PROCEDURES.md §7): intake from the separate channel, the manager ladder, the
customer's own complaint link.

A complaint is taken on every route the same way — the Prefect UI run form, `aftercare complaint
new`, the public complaint page — by `open_complaint`: validated (`ComplaintRequest`, Chinese
messages), recorded as a case `TS-…` owned by the customer-service manager, both clocks started in
the intake's own transaction on the contract's calendar (`complaint_answer` 2 h, `complaint_close`
15 days), the acknowledgement queued to the customer and the owner told, all or nothing.

The manager ladder is the customer's `manager_ladder` (staff ids, lowest to highest: the list the
provider publishes to the customer). The complaint stands at a level of it (`data["ladder_level"]`,
0 = the customer-service manager who owns it); a breached clock (tasks.clocks) and a customer not
satisfied with the resolution each move it one level up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, func, select

from models import Case, CaseKind, Contract, Customer, Event, Incident, Role, Staff, append_event
from models.accounts import RefusedPost
from models.approvals import Approval
from models.cases import CaseStatus, add_opened_case
from models.clocks import Clock
from models.db import session_scope
from models.forms import read_time
from models.parties import ROLE_LABELS_ZH
from models.reports import Report, ReportKind
from rules.calendar import add_working_days
from rules.sla import ClockKind
from tasks import clocks
from tasks.accident import event_text
from tasks.cases import (
    IntakeError,
    RequiredText,
    Tell,
    blank_none,
    case_facts,
    check_report_time,
    contract_on,
    find_customer,
    read_case_ref,
    start_deployment_run,
)
from tasks.ledger import step
from tasks.notify import queue
from tasks.people import customer_contacts, first_with_role
from tasks.render import _local_time
from tasks.reports import clock_summary

COMPLAINT_DEPLOYMENT = "complaint/complaint"
OWNER = Role.SERVICE_MANAGER
COMPLAINT_TEAM = (Role.SERVICE_MANAGER, Role.TECHNICAL_DIRECTOR, Role.DISPATCHER)
COMPLAINT_CLOCKS = (ClockKind.COMPLAINT_ANSWER, ClockKind.COMPLAINT_CLOSE)

# The public page (tasks.links.complaint_url: one signed link per customer, printed on every report
# and notice).
# A flood from one customer's link is refused (the link is printed on paper: anyone holding it can
# post). Counted from the complaints recorded, in the database: every web process sees the same count.
PAGE_LIMIT_HOUR = 5
PAGE_LIMIT_DAY = 20


class ComplaintChannel(StrEnum):
    WEB = "网站"  # the public complaint page
    HOTLINE = "投诉电话"
    EMAIL = "邮件"
    LETTER = "信函"
    VISIT = "来访"


About = Literal["服务工程师", "维修/事故工单", "响应与时限", "服务质量", "备件", "其他"]
ABOUT_CHOICES: tuple[str, ...] = ("服务工程师", "维修/事故工单", "响应与时限", "服务质量", "备件", "其他")


class ComplaintRequest(BaseModel):
    """投诉受理单 — who complains, about what, what happened, what they want."""

    model_config = ConfigDict(title="投诉 / complaint")

    customer: RequiredText = Field(
        title="客户", description="客户名称或客户编码", min_length=1, max_length=100
    )
    complainant: RequiredText = Field(
        title="投诉人", description="姓名与电话，如 王先生 13800000000", min_length=1, max_length=100
    )
    about: About = Field(default="服务质量", title="投诉对象", description="、".join(ABOUT_CHOICES))
    case_ref: int | None = Field(default=None, ge=1, title="相关工单", description="如 WX-000123；没有可留空")
    engineer: str = Field(default="", max_length=100, title="相关工程师", description="姓名；没有可留空")
    description: RequiredText = Field(
        title="投诉内容", description="发生了什么、何时、影响", min_length=2, max_length=4000
    )
    wish: str = Field(default="", max_length=2000, title="投诉诉求", description="希望如何处理；可留空")
    channel: ComplaintChannel = Field(default=ComplaintChannel.HOTLINE, title="投诉渠道")
    reported_at: datetime | None = Field(
        default=None, title="投诉时间", description="北京时间，如 2026-11-23 10:30；不填为当前时间"
    )
    case_id: int | None = Field(
        default=None, ge=1, title="已受理的投诉", description="由投诉网页或命令行受理后启动流程时填写"
    )

    _case_ref = field_validator("case_ref", mode="before")(read_case_ref)
    _blank = field_validator("engineer", "wish", mode="before")(lambda v: blank_none(v) or "")

    @field_validator("engineer", "wish", mode="after")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("reported_at", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        return read_time(value)


def ladder_of(session: Session, customer: Customer) -> list[Staff]:
    """The customer's published managers, lowest to highest (active ones; the customer-service
    manager first when the list is empty)."""
    people = [session.get(Staff, staff_id) for staff_id in customer.manager_ladder or []]
    ladder = [p for p in people if p is not None and p.active]
    return ladder or [first_with_role(session, OWNER)]


def open_complaint(
    session: Session,
    request: ComplaintRequest,
    *,
    now: datetime,
    flow_run_id: str | None = None,
    entered_at: datetime | None = None,
) -> Case:
    """Validate and record a complaint with its clocks, acknowledgement and owner's notice (in the
    caller's transaction); idempotent per flow run. IntakeError says what to correct."""
    if request.case_id is not None:  # taken already (the page, the CLI): this run adopts it
        case = session.get(Case, request.case_id)
        if case is None or case.kind != str(CaseKind.COMPLAINT):
            raise IntakeError(f"投诉 {request.case_id} 不存在 / no complaint {request.case_id}")
        if flow_run_id and not case.flow_run_id:
            case.flow_run_id = flow_run_id
            session.add(case)
        return case
    if flow_run_id:
        existing = session.exec(select(Case).where(Case.flow_run_id == flow_run_id)).first()
        if existing is not None:
            return existing
    check_report_time(request.reported_at, entered_at or now)
    reported_at = request.reported_at or now
    customer = find_customer(session, request.customer)
    assert customer.id is not None
    linked = None
    if request.case_ref is not None:
        linked = session.get(Case, request.case_ref)
        if linked is None or linked.customer_id != customer.id:
            raise IntakeError(
                f"相关工单（编号 {request.case_ref:06d}）不存在或不属于该客户 / no such case of this customer"
            )
    contract, reason = contract_on(session, customer, reported_at)
    ladder = ladder_of(session, customer)
    team = {str(role): first_with_role(session, role).id for role in COMPLAINT_TEAM}
    team[str(OWNER)] = ladder[0].id
    contact = next(iter(customer_contacts(session, customer.id, primary_only=True)), None)
    case = Case(
        kind=str(CaseKind.COMPLAINT),
        customer_id=customer.id,
        site_id=linked.site_id if linked else None,
        device_id=linked.device_id if linked else None,
        contract_id=contract.id if contract else None,
        parent_id=linked.id if linked else None,
        severity=None,
        status=CaseStatus.OPEN,
        title=request.description.splitlines()[0][:80],
        description=request.description,
        channel=str(request.channel),
        reported_by=request.complainant,
        reported_at=reported_at,
        out_of_contract=bool(reason),
        flow_run_id=flow_run_id,
        data={
            "team": team,
            "contact_id": contact.id if contact else None,
            "paid_service_reason": reason,
            "about": request.about,
            "engineer": request.engineer,
            "wish": request.wish,
            "ladder": [p.id for p in ladder],
            "ladder_level": 0,
        },
        created_at=now,
        updated_at=now,
    )
    case_id = add_opened_case(
        session,
        case,
        "complaint_received",
        at=reported_at,
        actor=request.complainant,
        data={
            "channel": str(request.channel),
            "about": request.about,
            "case_ref": request.case_ref,
            "engineer": request.engineer,
            "wish": request.wish,
            "owner": ladder[0].name,
        },
    )
    if linked is not None:  # the repair (or accident) shows the complaint in its history
        append_event(
            session,
            linked.id,  # type: ignore[arg-type]
            "complaint_linked",
            at=reported_at,
            key=f"complaint:{case.id}",
            data={"complaint_id": case.id, "number": case.number},
        )
    for kind in COMPLAINT_CLOCKS:  # started at intake, on the contract's calendar
        started = clocks.start_clock(session, case_id, kind, started_at=reported_at, severity=4)
        if kind == ClockKind.COMPLAINT_CLOSE and started.due_at is not None:
            # the first answer's 预计处理完毕时间 is checked against it (models.forms.ComplaintAnswerForm)
            case.data = {**case.data, "close_due": started.due_at.isoformat()}
            session.add(case)
    for notice in (
        Tell(template="complaint/received", key="received", customer=True, urgent=False),
        Tell(template="complaint/opened", key="opened", roles=[OWNER, Role.DISPATCHER], urgent=True),
    ):
        notice.queue(session, case_id, now=reported_at, **_notice_context(session, case))
    return case


def _notice_context(session: Session, case: Case) -> dict[str, Any]:
    answer = clocks.find_clock(session, case.id, ClockKind.COMPLAINT_ANSWER)  # type: ignore[arg-type]
    close = clocks.find_clock(session, case.id, ClockKind.COMPLAINT_CLOSE)  # type: ignore[arg-type]
    return {
        "complaint": {
            "about": case.data.get("about", ""),
            "engineer": case.data.get("engineer", ""),
            "wish": case.data.get("wish", ""),
            "complainant": case.reported_by,
            "answer_due": answer.due_at if answer else None,
            "close_due": close.due_at if close else None,
        }
    }


def recent_web_complaints(session: Session, customer_id: int, *, now: datetime) -> tuple[int, int]:
    """How many complaints the customer's page took in the last hour and the last day."""

    def since(span: timedelta) -> int:
        return int(
            session.exec(
                select(func.count())
                .select_from(Case)
                .where(
                    Case.kind == str(CaseKind.COMPLAINT),
                    Case.customer_id == customer_id,
                    Case.channel == str(ComplaintChannel.WEB),
                    col(Case.created_at) > now - span,
                )
            ).one()
        )

    return since(timedelta(hours=1)), since(timedelta(days=1))


def linked_numbers(text: str) -> list[int]:
    """The case ids of "WX-000123、SG-4" (the investigation form's linked cases)."""
    return [int(m) for m in re.findall(r"(\d+)", text or "") if int(m) > 0]


# --- steps (each opens its own session; the flow calls these) ----------------------------------


@step("take-complaint", title="受理投诉 / take the complaint")
def take_complaint(request: ComplaintRequest, now: datetime, flow_run_id: str | None = None) -> int:
    """Validate and record the complaint (or adopt the one the page or the CLI took)."""
    with session_scope() as session:
        return int(open_complaint(session, request, now=now, flow_run_id=flow_run_id).id)  # type: ignore[arg-type]


@step("complaint-level", title="投诉升级 / up the manager ladder", key="{reason}-{round_}")
def climb_ladder(case_id: int, at: datetime, reason: str, round_: int) -> str:
    """Move the complaint one level up the customer's manager ladder (tasks.clocks.move_up_ladder):
    the manager there owns it from now on and is told; returns who owns it now."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        key = f"ladder:{reason}:{round_}"
        clocks.move_up_ladder(session, case, at=at, reason=reason, key=key)  # the manager is told there
        owner = session.get(Staff, (case.data.get("team") or {}).get(str(OWNER)))
        return owner.name if owner is not None else ""


@step("working-days-after", title="工作日期限 / working days later", key="{days}")
def working_days_after(case_id: int, at: datetime, days: int) -> datetime:
    """The same time of day `days` working days after `at`, on the complaint contract's calendar."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        contract = session.get(Contract, case.contract_id) if case.contract_id else None
        cal = clocks.load_calendar(
            session, contract.calendar if contract else "cn", contract.timezone if contract else None
        )
    zone = ZoneInfo(cal.tz)
    local = at.astimezone(zone)
    day = add_working_days(local.date(), days, cal)
    return datetime.combine(day, local.time(), tzinfo=zone).astimezone(UTC)


class ComplaintBrief(BaseModel):
    """What the complaint's forms and its reply letter say about it."""

    text: str
    about: str
    engineer: str
    wish: str


@step("complaint-brief", title="投诉概况 / the complaint")
def complaint_brief(case_id: int) -> ComplaintBrief:
    """The complaint as the manager's forms show it: who, about what, what happened, what they want."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        data = case.data or {}
        lines = [
            f"投诉人：{case.reported_by}（{case.channel}，{_local_time(case.reported_at)}）",
            f"投诉对象：{data.get('about', '')}"
            + (f"（工程师 {data['engineer']}）" if data.get("engineer") else ""),
        ]
        if case.parent_id:
            parent = session.get(Case, case.parent_id)
            if parent is not None:
                lines.append(f"相关工单：{parent.number} {parent.title}")
        lines.append(f"投诉内容：{case.description}")
        if data.get("wish"):
            lines.append(f"投诉诉求：{data['wish']}")
        return ComplaintBrief(
            text="\n".join(lines),
            about=str(data.get("about", "")),
            engineer=str(data.get("engineer", "")),
            wish=str(data.get("wish", "")),
        )


@step("complaint-links", title="关联工单 / link the cases", key="{round_}")
def link_cases(case_id: int, numbers: str, at: datetime, round_: int) -> list[str]:
    """Record the investigation's linked cases on both sides (the repair shows the complaint);
    returns the numbers found (a number that names no case of this customer is left out, and said)."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        found: list[str] = []
        missing: list[str] = []
        for other_id in linked_numbers(numbers):
            other = session.get(Case, other_id)
            if other is None or other.customer_id != case.customer_id or other.id == case_id:
                missing.append(str(other_id))
                continue
            found.append(other.number)
            append_event(
                session,
                other_id,
                "complaint_linked",
                at=at,
                key=f"complaint:{case_id}",
                data={"complaint_id": case_id, "number": case.number},
            )
        append_event(
            session,
            case_id,
            "complaint_cases_linked",
            at=at,
            key=f"linked:{round_}",
            data={"cases": found, "unknown": missing},
        )
        return found


# --- the customer's complaint page (web/complaints.py) ------------------------------------------


class TooMany(Exception):
    """The customer's page took its share of complaints for now; the message says when to try again."""


REFUSED_PAGE = "complaint"
REFUSED_LIMIT_LINK = 10  # refused posts of one customer's link in an hour, then 429 for the hour
REFUSED_LIMIT_ADDRESS = 30  # refused posts from one address in an hour (one address trying many links)


def check_refused_posts(session: Session, customer_code: str, address: str, *, now: datetime) -> None:
    """TooMany when the link or the address posted too many refused complaints in the last hour
    (invalid values, a bad form): a flood of invalid posts is refused like a flood of valid ones.
    Counted in the database (models.accounts.RefusedPost), as the login throttle is."""
    since = now - timedelta(hours=1)
    for column, value, limit in (
        (RefusedPost.subject, customer_code, REFUSED_LIMIT_LINK),
        (RefusedPost.address, address, REFUSED_LIMIT_ADDRESS),
    ):
        if not value:
            continue
        count = session.exec(
            select(func.count())
            .select_from(RefusedPost)
            .where(RefusedPost.page == REFUSED_PAGE, column == value, col(RefusedPost.at) > since)
        ).one()
        if int(count) >= limit:
            raise TooMany(
                f"1 小时内从此处提交的无效投诉已达 {limit} 次，暂不受理新的提交，请稍后再试；"
                "紧急情况请直接致电客户服务中心。"
            )


def note_refused_post(session: Session, customer_code: str, address: str, *, now: datetime) -> None:
    """Count a refused post of the complaint page (check_refused_posts)."""
    session.add(RefusedPost(page=REFUSED_PAGE, subject=customer_code[:64], address=address[:64], at=now))


PAGE_FIELDS = ("complainant", "about", "case_ref", "engineer", "description", "wish")


def take_from_page(
    session: Session, customer_code: str, values: dict[str, str], *, now: datetime
) -> tuple[Case, ComplaintRequest]:
    """A complaint posted on the customer's page: refused when the link posted too many of late
    (TooMany), validated by `ComplaintRequest` (ValidationError → the page names each field),
    then taken like any other (`open_complaint`)."""
    customer = find_customer(session, customer_code)
    hour, day = recent_web_complaints(session, customer.id, now=now)  # type: ignore[arg-type]
    if hour >= PAGE_LIMIT_HOUR or day >= PAGE_LIMIT_DAY:
        span = "1 小时" if hour >= PAGE_LIMIT_HOUR else "24 小时"
        limit = PAGE_LIMIT_HOUR if hour >= PAGE_LIMIT_HOUR else PAGE_LIMIT_DAY
        raise TooMany(
            f"此链接在 {span}内已提交 {limit} 件投诉，暂不受理新的投诉，请稍后再试；"
            "紧急情况请直接致电下列管理人员。"
        )
    request = ComplaintRequest.model_validate(
        {
            # a field left empty is "not given" (its default), as on every form (models.forms.validate_answer)
            **{k: v for k in PAGE_FIELDS if (v := (values.get(k) or "").strip())},
            "customer": customer.code,
            "channel": ComplaintChannel.WEB,
        }
    )
    return open_complaint(session, request, now=now), request


REQUEST_KINDS = (str(CaseKind.REPAIR), str(CaseKind.ACCIDENT))


def _overdue(session: Session, case_id: int, now: datetime) -> datetime | None:
    """The earliest deadline of the case's clocks still running past due (the customer waits past
    what was promised: no answer, no arrival, no restore); None when nothing is overdue."""
    due = [
        c.due_at
        for c in session.exec(select(Clock).where(Clock.case_id == case_id)).all()
        if c.stopped_at is None and c.due_at is not None and c.due_at <= now
    ]
    return min(due) if due else None


def page_view(session: Session, customer_code: str, *, now: datetime) -> dict[str, Any]:
    """What the customer's page shows: the customer, its published managers, its open complaints
    and its requests (repairs, accidents) left without an answer past their deadline — either can
    be sent straight to the managers once a deadline has passed (PROCEDURES.md §7)."""
    customer = find_customer(session, customer_code)
    managers = [
        {
            "name": p.name,
            "role": "、".join(ROLE_LABELS_ZH.get(Role(r), r) for r in p.roles if r in set(Role)),
            "phone": p.phone,
        }
        for p in ladder_of(session, customer)
    ]
    open_cases = session.exec(
        select(Case)
        .where(
            col(Case.kind).in_((str(CaseKind.COMPLAINT), *REQUEST_KINDS)),
            Case.customer_id == customer.id,
            col(Case.closed_at).is_(None),
        )
        .order_by(col(Case.id).desc())
        .limit(100)
    ).all()
    complaints, requests = [], []
    for case in open_cases:
        overdue = _overdue(session, case.id, now)  # type: ignore[arg-type]
        sent = _event(session, case.id, "to-managers") is not None  # type: ignore[arg-type]
        if case.kind != str(CaseKind.COMPLAINT):
            if overdue is not None or sent:
                requests.append(
                    {
                        "id": case.id,
                        "number": case.number,
                        "title": case.title,
                        "reported_at": case.reported_at,
                        "due": overdue,
                        "sent_to_managers": sent,
                    }
                )
            continue
        answer = clocks.find_clock(session, case.id, ClockKind.COMPLAINT_ANSWER)  # type: ignore[arg-type]
        complaints.append(
            {
                "id": case.id,
                "number": case.number,
                "title": case.title,
                "reported_at": case.reported_at,
                "answered": answer is not None and answer.stopped_at is not None,
                "answer_due": answer.due_at if answer else None,
                "overdue": overdue is not None,
                "due": overdue,
                "sent_to_managers": sent,
            }
        )
    return {
        "customer": customer,
        "managers": managers,
        "complaints": complaints[:20],
        "requests": requests[:20],
    }


def _event(session: Session, case_id: int, key: str) -> Any:
    return session.exec(select(Event).where(Event.case_id == case_id, Event.key == key)).first()


def straight_to_managers(session: Session, customer_code: str, case_id: int, *, now: datetime) -> str:
    """A complaint or a request (repair, accident) of the customer whose deadline passed without an
    answer goes straight to every manager on the customer's ladder (PROCEDURES.md §7: "unanswered
    requests or complaints can go straight to the provider's managers"); once per case. Returns
    what the page says; IntakeError when it may not (not this customer's, nothing overdue)."""
    customer = find_customer(session, customer_code)
    case = session.get(Case, case_id)
    if (
        case is None
        or case.kind not in (str(CaseKind.COMPLAINT), *REQUEST_KINDS)
        or case.customer_id != customer.id
        or case.closed_at is not None
    ):
        raise IntakeError("找不到此投诉或报修 / no such open complaint or request")
    if _event(session, case_id, "to-managers") is not None:
        return f"{case.number} 已于此前转交管理层，我们会尽快与您联系。"
    if _overdue(session, case_id, now) is None:
        raise IntakeError(f"{case.number} 尚在约定时限内或已答复，暂不需要转交管理层。")
    managers = ladder_of(session, customer)
    complaint = case.kind == str(CaseKind.COMPLAINT)
    append_event(
        session,
        case_id,
        "complaint_to_managers" if complaint else "request_to_managers",
        at=now,
        actor=customer.name,
        key="to-managers",
        data={"managers": [m.name for m in managers]},
    )
    queue(
        session,
        recipients=managers,
        template="complaint/ladder",
        context={**_queue_context(session, case), "complaint": complaint},
        key=f"{case_id}:to-managers",
        case_id=case_id,
        now=now,
        urgent=True,
    )
    return f"{case.number} 已直接转交管理层：{'、'.join(m.name for m in managers)}。"


def _queue_context(session: Session, case: Case) -> dict[str, Any]:
    return {"case": case_facts(session, case.id).as_dict()}  # type: ignore[arg-type]


# --- starting the flow of a complaint taken outside one (the page, the CLI) ----------------------

START_GRACE = timedelta(seconds=30)  # the page or the CLI starts the run itself; the keeper after this


def start_complaint_run(case_id: int, request: ComplaintRequest, reopened: int = 0) -> str:
    """Start the complaint flow for a complaint already taken (idempotent by the complaint: the page,
    the CLI and the keeper starting it all get the one run; a reopened complaint gets one run per
    reopening)."""
    parameters = {"request": {**request.model_dump(mode="json"), "case_id": case_id}}
    key = f"complaint:{case_id}" + (f":reopened-{reopened}" if reopened else "")
    return start_deployment_run(COMPLAINT_DEPLOYMENT, parameters, idempotency_key=key)


def request_of(session: Session, case: Case) -> ComplaintRequest:
    """The run's request for a complaint taken already (its flow adopts the case by `case_id`)."""
    return ComplaintRequest(
        customer=str(session.get(Customer, case.customer_id).code),  # type: ignore[union-attr]
        complainant=case.reported_by or "客户",
        description=case.description if len(case.description) >= 2 else f"{case.description}。",
        reported_at=case.reported_at,
    )


def start_unstarted(now: datetime, limit: int = 50) -> int:
    """Keeper step: a complaint taken (or reopened) whose flow did not start (Prefect was down when
    the page or the command took it) gets its run now; returns how many were started."""
    with session_scope() as session:
        waiting = session.exec(
            select(Case)
            .where(
                Case.kind == str(CaseKind.COMPLAINT),
                col(Case.flow_run_id).is_(None),
                col(Case.closed_at).is_(None),
                col(Case.updated_at) <= now - START_GRACE,
            )
            .order_by(col(Case.id))
            .limit(limit)
        ).all()
        todo = [
            (int(case.id), request_of(session, case), int((case.data or {}).get("reopened", 0)))  # type: ignore[arg-type]
            for case in waiting
        ]
    started = 0
    for case_id, request, reopened in todo:
        _started(case_id, start_complaint_run(case_id, request, reopened))
        started += 1
    return started


def _started(case_id: int, run_id: str) -> None:
    with session_scope() as session:
        case = session.get(Case, case_id)
        if case is not None and not case.flow_run_id:
            case.flow_run_id = run_id
            session.add(case)


def start_reopened(
    case_id: int, reopened: int, *, now: datetime, start: Callable[..., str] = start_complaint_run
) -> str | None:
    """Start the flow of a complaint a late answer reopened (`late_reply_answer`); its run id, or None
    when it could not start (an incident says so; the keeper's `start_unstarted` starts it later)."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        number, request = case.number, request_of(session, case)
    try:
        run_id = start(case_id, request, reopened)
    except Exception as exc:  # noqa: BLE001 - the reopening is recorded; the keeper starts the flow
        with session_scope() as session:
            session.add(
                Incident(
                    case_id=case_id,
                    kind="run_not_started",
                    message=f"投诉 {number} 已重新打开，但投诉流程未能启动：{type(exc).__name__}",
                    opened_at=now,
                )
            )
        return None
    _started(case_id, run_id)
    return run_id


@step("complaint-history", title="投诉处理经过 / the complaint's history")
def complaint_history(case_id: int) -> dict[str, Any]:
    """The reply letter's record: the complaint's own events as Chinese lines (tasks.accident's one
    wording of history) and its clocks as they stand (each call is its own step: read anew)."""
    with session_scope() as session:
        events = session.exec(
            select(Event)
            .where(Event.case_id == case_id, col(Event.kind).like("complaint%"))
            .order_by(col(Event.at), col(Event.id))
        ).all()
        return {
            "history": [{"at": e.at, "by": e.actor, "text": event_text(e.kind, e.data)} for e in events],
            "clocks": clock_summary(session, case_id),
        }


def complaint_lines(
    session: Session, customer_id: int, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The complaints received in [start, end) for the 阶段性服务总结: number, about what, whether
    the first answer came within 2 hours and the close within 15 days, and the customer's verdict."""
    cases = session.exec(
        select(Case)
        .where(
            Case.kind == str(CaseKind.COMPLAINT),
            Case.customer_id == customer_id,
            Case.reported_at >= start,
            Case.reported_at < end,
        )
        .order_by(col(Case.reported_at), col(Case.id))
    ).all()
    lines = []
    for case in cases:
        clocks_of = {c.kind: c for c in session.exec(select(Clock).where(Clock.case_id == case.id)).all()}
        closed = (  # the last close (a reopened complaint closes again under a key of its own)
            session.exec(
                select(Event)
                .where(Event.case_id == case.id, Event.kind == "complaint_closed")
                .order_by(col(Event.id).desc())
            ).first()
            if case.closed_at is not None
            else None
        )

        lines.append(
            {
                "number": case.number,
                "about": (case.data or {}).get("about", ""),
                "title": case.title,
                "received": case.reported_at,
                "answered": _fate(clocks_of.get(ClockKind.COMPLAINT_ANSWER)),
                "closed": _fate(clocks_of.get(ClockKind.COMPLAINT_CLOSE)),
                "verdict": ("满意（电话确认）" if closed.data.get("by_call") else "满意（签字确认）")
                if closed is not None
                else "处理中",
            }
        )
    return lines


def _fate(clock: Clock | None) -> str:
    if clock is None:
        return "—"
    return "按时" if clock.met_at else "超时" if clock.breached_at else "进行中"


# --- the customer's answer to a reply letter after the manager's call decided it ----------------------
#
# The reply letter waits 3 working days for the customer's own answer, then the manager calls; the
# first of the two decides (flows.complaint). An answer the customer gives on the letter's link after
# the call was recorded is late: it is kept — in the case's history and told to the owner — never
# dropped. PROCEDURES.md §7, "closed only when solved and the customer is satisfied": a late "not
# satisfied" on a complaint the call closed reopens it, one level up the manager ladder (as a "not
# satisfied" answered in time does), and the complaint flow starts again from the investigation.


class LateAnswer(BaseModel):
    """What a late answer did: the page's confirmation and, when it reopened the complaint, the run
    to start (`start_reopened`)."""

    message: str
    case_id: int
    reopened: int = 0  # the how-many-th reopening this answer made (0: it reopened nothing)


def late_reply_answer(
    session: Session, report_id: int, *, satisfied: bool, by: str, comment: str, now: datetime
) -> LateAnswer | None:
    """The customer's answer to a complaint reply letter whose wait the manager's call already
    decided (the call form of that version answered), recorded in the caller's transaction: a
    history entry, the owner told (and, not satisfied, the manager one level up), a closed complaint
    reopened when not satisfied. None when the answer is not late (the flow still reads it)."""
    report = session.get(Report, report_id)
    case = session.get(Case, report.case_id) if report is not None else None
    if (
        report is None
        or case is None
        or case.kind != str(CaseKind.COMPLAINT)
        or report.kind != str(ReportKind.COMPLAINT_REPLY)
    ):
        return None
    call = session.exec(
        select(Approval).where(
            Approval.case_id == case.id, Approval.step == "complaint-call", Approval.version == report.version
        )
    ).first()
    if call is None or call.decision is None:
        return None
    # one entry per answer: a customer who signed late and then objects (or the reverse) changed
    # their answer — kept too; the same answer again (a second click) is not
    key = f"late-answer:{report.version}:{'satisfied' if satisfied else 'not-satisfied'}"
    if _event(session, case.id, key) is not None:  # type: ignore[arg-type]
        return LateAnswer(message=f"您对投诉 {case.number} 的答复此前已记录，谢谢。", case_id=case.id)
    owner = session.get(Staff, ((case.data or {}).get("team") or {}).get(str(OWNER)))
    was_closed = case.status == CaseStatus.CLOSED
    call_satisfied = bool((call.payload or {}).get("satisfied"))
    append_event(
        session,
        case.id,  # type: ignore[arg-type]
        "complaint_late_answer",
        at=now,
        actor=by[:100],
        key=key,
        data={
            "reply": report.version,
            "satisfied": satisfied,
            "satisfied_zh": "满意" if satisfied else "不满意",
            "comment": comment,
            "call_by": call.decided_by,
            "call_at": call.decided_at.isoformat() if call.decided_at else None,
            "call_satisfied": call_satisfied,
            "closed": was_closed,
        },
    )
    manager, times = None, 0
    if not satisfied:  # an older letter's objection (a newer one went out since) reopens nothing
        latest = report.version == _latest_letter(session, case.id)  # type: ignore[arg-type]
        manager, times = _reopen_one_level_up(
            session, case, report.version, by=by, comment=comment, now=now, reopen=latest
        )
    recipients = [p for p in (owner, manager) if p is not None]
    queue(
        session,
        recipients=list({p.id: p for p in recipients}.values()),
        template="complaint/late_answer",
        context={
            **_queue_context(session, case),
            "reply": report.version,
            "satisfied": satisfied,
            "comment": comment,
            "by": by,
            "at": now,
            "call_by": call.decided_by,
            "call_at": call.decided_at,
            "was_closed": was_closed,
            "reopened": bool(times),
            "manager": manager.name if manager is not None else "",
        },
        key=f"{case.id}:{key}",
        case_id=case.id,
        now=now,
        urgent=not satisfied,
    )
    return LateAnswer(
        message=_late_message(case.number, report.version, satisfied, was_closed, call, manager or owner),
        case_id=case.id,
        reopened=times,
    )


def _reopen_one_level_up(
    session: Session, case: Case, reply: int, *, by: str, comment: str, now: datetime, reopen: bool
) -> tuple[Staff | None, int]:
    """Not satisfied after the call. A closed complaint whose newest letter it answers opens again
    (`Case.reopen`) one level up the ladder (the manager there owns it and is told,
    tasks.clocks.move_up_ladder) and waits for its flow to start again (`flow_run_id` cleared: the
    keeper's `start_unstarted` starts it if the page could not). Otherwise (still open, or an older
    letter) nothing moves: the manager one level up is only told. Returns that manager and the
    how-many-th reopening (0: none)."""
    ladder = [int(i) for i in (case.data or {}).get("ladder") or []]
    if case.status != CaseStatus.CLOSED or not reopen:
        level = min(int((case.data or {}).get("ladder_level", 0)) + 1, max(len(ladder) - 1, 0))
        return (session.get(Staff, ladder[level]) if ladder else None), 0
    times = int((case.data or {}).get("reopened", 0)) + 1
    case.reopen(now)
    clocks.move_up_ladder(session, case, at=now, reason="reopened", key=f"ladder:reopened-{times}")
    manager = session.get(Staff, ((case.data or {}).get("team") or {}).get(str(OWNER)))
    case.flow_run_id = None
    case.data = {**(case.data or {}), "reopened": times}
    session.add(case)
    append_event(
        session,
        case.id,  # type: ignore[arg-type]
        "complaint_reopened",
        at=now,
        actor=by[:100],
        key=f"reopened:{times}",
        data={"reply": reply, "comment": comment, "times": times, "manager": manager.name if manager else ""},
    )
    return manager, times


def _late_message(
    number: str, reply: int, satisfied: bool, was_closed: bool, call: Any, person: Staff | None
) -> str:
    """The page's confirmation of a late answer, in Chinese."""
    called = f"已于 {_local_time(call.decided_at)} 由 {call.decided_by} 电话回访"
    who = person.name if person is not None else "负责人"
    if satisfied:
        state = f"{called}确认关闭" if was_closed else f"{called}，正在继续处理"
        return f"您对第 {reply} 版处理结果的签字确认已收到并记入投诉 {number} 的处理记录（该投诉{state}），已告知 {who}。谢谢！"
    if was_closed:
        return (
            f"您的意见已收到。投诉 {number} {called}后关闭；根据您对第 {reply} 版处理结果的意见，"
            f"该投诉已重新打开，由 {who} 负责重新调查，我们会尽快与您联系。"
        )
    return f"您的意见已收到并记入投诉 {number} 的处理记录，已转告 {who}，我们会尽快与您联系。"


class Reopening(BaseModel):
    """Where a reopened complaint's new run takes up (the flow goes on from the investigation)."""

    times: int  # the how-many-th reopening
    reply: int  # the reply letter the customer was not satisfied with
    letters: int  # reply letters issued so far (the next is one more)
    comment: str
    by: str
    at: datetime
    owner: str  # the manager who has it now (one level up)
    first_answer: dict[str, Any]
    rounds: list[dict[str, Any]]
    previous: list[dict[str, Any]]  # the reply letters the customer was not satisfied with


@step("complaint-reopening", title="重新打开的投诉 / a reopened complaint")
def reopening(case_id: int) -> Reopening | None:
    """The complaint's last reopening (`late_reply_answer`) with what its reply letters and rounds
    said so far, or None for a complaint never reopened (the flow starts from the first answer)."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        events = session.exec(
            select(Event).where(Event.case_id == case_id).order_by(col(Event.at), col(Event.id))
        ).all()
        last = next((e for e in reversed(events) if e.kind == "complaint_reopened"), None)
        if last is None:
            return None
        answered = next(e for e in events if e.kind == "complaint_answered")
        owner = session.get(Staff, ((case.data or {}).get("team") or {}).get(str(OWNER)))
        objected = [
            {"version": int(e.data["reply"]), "comment": e.data.get("comment", "")}
            for e in events
            if e.kind == "complaint_not_satisfied"
            or (e.kind == "complaint_late_answer" and not e.data.get("satisfied"))
        ]
        return Reopening(
            times=int(last.data["times"]),
            reply=int(last.data["reply"]),
            letters=_latest_letter(session, case_id),
            comment=str(last.data.get("comment", "")),
            by=last.actor,
            at=last.at,
            owner=owner.name if owner is not None else "",
            first_answer={"by": answered.actor, "at": answered.at, "answer": answered.data.get("answer", "")},
            rounds=[_round_of(e) for e in events if e.kind == "complaint_investigated"],
            previous=sorted({p["version"]: p for p in objected}.values(), key=lambda p: p["version"]),
        )


def _latest_letter(session: Session, case_id: int) -> int:
    """The version of the complaint's newest reply letter (0: none yet)."""
    latest = session.exec(
        select(func.max(Report.version)).where(
            Report.case_id == case_id, Report.kind == str(ReportKind.COMPLAINT_REPLY)
        )
    ).one()
    return int(latest or 0)


def _round_of(event: Event) -> dict[str, Any]:
    """One investigation round as the reply letter lists it (flows.complaint._investigate)."""
    data = event.data or {}
    return {
        "round": int(data.get("round", 0)),
        "by": event.actor,
        "at": event.at,
        **{k: data.get(k, "") for k in ("facts", "cause", "responsibility", "responsible")},
        "linked": data.get("linked") or [],
    }
