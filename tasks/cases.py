"""Cases: intake of a service request (受理), the team that works it, and case helpers.

The intake form (`RepairRequest`) is what a dispatcher fills in on the phone; it is the `repair`
deployment's parameter, so the Prefect UI shows its Chinese titles and descriptions. Validation
(`resolve_request`) turns names into rows and answers bad input with a clear message, never a
traceback. A request from a customer whose contract has lapsed is still taken, marked **out of
contract / paid service** (PROCEDURES.md §6 step 7), and every message about it says so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, func, or_, select

from models import Case, CaseKind, Contact, Contract, Customer, Device, Event, Role, Site, Staff, append_event
from models.cases import CaseStatus, add_opened_case, paid_prefix
from models.clocks import ClockAction, ClockStatus
from models.db import session_scope
from models.forms import FUTURE_SLACK, read_time
from models.inspection import open_problems
from models.settings import business_timezone, get_settings
from rules.assurance import Period, covering, raised_severity
from rules.sla import SEVERITY_LEVELS_ZH, ClockKind, severity_text
from tasks import clocks
from tasks.answering import responder
from tasks.clocks import close_clocks
from tasks.ledger import step
from tasks.links import report_url
from tasks.notify import queue
from tasks.people import customer_contacts, first_with_role
from tasks.render import _local_time


class Channel(StrEnum):
    HOTLINE = "热线"
    EMAIL = "邮件"
    WEB = "网站"
    INSPECTION = "巡检"
    SALES = "销售"
    ONSITE = "现场"  # found by an engineer on site (5-minute talk)


SEVERITY_HELP = (
    "1 = 特大 / 一级（业务中断、数据丢失；停机超过 24 小时影响 30% 以上用户）；"
    "2 = 重大 / 二级（部件故障、性能下降，业务仍运行；停机超过 4 小时）；"
    "3 = 严重 / 三级（运行正常但有错误或隐患；停机达 2 小时）；"
    "4 = 一般 / 四级（无中断：性能下降、告警、咨询、配置、计划性请求）。按合同约定的措辞为准。"
)

# The wording of each level under the two schemes of PROCEDURES.md §1 (contract.severity_scheme).
SEVERITY_WORDS = {
    "outage": {1: "特大", 2: "重大", 3: "严重", 4: "一般"},
    "business": {1: "一级（紧急）", 2: "二级（严重）", 3: "三级", 4: "四级"},
}


# The severity choices of the Prefect-UI run forms: the level, then its words in both schemes of
# PROCEDURES.md §1 (the form is filled before the customer's contract, and so its scheme, is known).
SEVERITY_CHOICES: dict[int, str] = {
    level: f"{level} {SEVERITY_LEVELS_ZH['outage'][level][0]} / {SEVERITY_LEVELS_ZH['business'][level][0]}"
    for level in (1, 2, 3, 4)
}


def read_severity(value: Any) -> Any:
    """A severity as a form sends it — 2, "2" or the choice "2 重大故障 / 二级（严重）" — → 2; empty → None."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip()
    if not text:
        return None
    found = re.match(r"([1-4])(?!\d)", text)
    if found is None:
        raise ValueError("故障级别请选 1–4：" + "；".join(SEVERITY_CHOICES.values()))
    return int(found.group(1))


def read_case_ref(value: Any) -> Any:
    """A case as a dispatcher names it — "WX-000123", "123" — → its id; empty (or 0) → None."""
    if value is None or isinstance(value, int):
        return value or None
    text = str(value).strip().upper()
    if not text:
        return None
    found = re.fullmatch(r"(?:[A-Z]{2}-?)?0*(\d+)", text)
    if found is None:
        raise ValueError("工单号请写成 WX-000123 或 123")
    return int(found.group(1)) or None


def blank_none(value: Any) -> Any:
    """An optional form field left empty ("") → None: the run forms send "" for 不填."""
    return None if isinstance(value, str) and not value.strip() else value


def _required_text(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("不能为空 / must not be empty")
    return value


# A text a form must not leave blank: surrounding blanks dropped, nothing left refused.
RequiredText = Annotated[str, AfterValidator(_required_text)]


class RepairRequest(BaseModel):
    """故障报修受理单 — what the dispatcher fills in while the customer is on the phone."""

    model_config = ConfigDict(title="故障报修 / repair request")

    customer: RequiredText = Field(
        title="客户",
        description="客户名称或客户编码，如 BJYH 或 北京某银行数据中心",
        min_length=1,
        max_length=100,
    )
    site: str | None = Field(
        default=None,
        title="机房/站点",
        description="站点名称；客户只有一个站点或已填设备序列号时可不填",
        max_length=100,
    )
    device: str | None = Field(
        default=None, title="设备序列号", description="可选：故障设备的序列号（设备档案）", max_length=64
    )
    reported_by: RequiredText = Field(
        title="报告人", description="报告故障的客户人员姓名与电话", min_length=1, max_length=100
    )
    channel: Channel = Field(
        default=Channel.HOTLINE, title="报告渠道", description="热线 / 邮件 / 网站 / 巡检 / 销售 / 现场"
    )
    description: RequiredText = Field(
        title="故障描述", description="现象、影响的业务、开始时间", min_length=2, max_length=4000
    )
    severity: int = Field(default=3, ge=1, le=4, title="故障级别 (1–4)", description=SEVERITY_HELP)
    reported_at: datetime | None = Field(
        default=None,
        title="报告时间",
        description="客户报告故障的时间（北京时间，如 2026-11-23 10:30）；不填为当前时间（时钟由此开始计时）。"
        "不能晚于当前时间，也不能早于 30 天以前",
    )
    parent_case_id: int | None = Field(
        default=None,
        ge=1,
        title="关联工单",
        description="由巡检、5分钟交流或其他工单发现时，填来源工单号（数字）",
    )

    # The Prefect-UI run form (deployments.run_forms) sends "" for a field left empty, the
    # severity as its labelled choice and a case as its number; programs send plain values.
    _blank = field_validator("site", "device", mode="before")(blank_none)
    _severity = field_validator("severity", mode="before")(read_severity)
    _case_ref = field_validator("parent_case_id", mode="before")(read_case_ref)

    @field_validator("reported_at", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        # a dispatcher types local time (`2026-11-23 10:30`): read it in the service's time zone;
        # text that is no time is refused here, never taken as "now"
        return read_time(value)


class IntakeError(ValueError):
    """The request cannot be taken as entered; the message says what to correct."""


def _latest_known(session: Session, parent_case_id: int | None, entered_at: datetime) -> datetime:
    """The latest moment the record knows of: when the request is entered, or — for a problem found
    in another case (an inspection, a 5-minute talk, a hand-over) — that case's last recorded event,
    whose time was itself checked when it was answered."""
    if parent_case_id is None:
        return entered_at
    last = session.exec(select(func.max(Event.at)).where(Event.case_id == parent_case_id)).one()
    return max(entered_at, last) if last is not None else entered_at


def check_report_time(reported_at: datetime | None, now: datetime) -> None:
    """A report time may not lie in the future (a few minutes' slack for a fast clock) nor further
    back than the intake window (`AFTERCARE_INTAKE_MAX_AGE_DAYS`, 30 days): either is a typing
    error that would lay every deadline wrong. Raises IntakeError with the local times."""
    from datetime import timedelta

    if reported_at is None:
        return
    if reported_at > now + FUTURE_SLACK:
        raise IntakeError(
            f"报告时间 {_local_time(reported_at)} 晚于当前时间 {_local_time(now)}，请更正 "
            "/ the report time lies in the future"
        )
    days = get_settings().intake_max_age_days
    if reported_at < now - timedelta(days=days):
        raise IntakeError(
            f"报告时间 {_local_time(reported_at)} 早于 {days} 天以前，请更正 "
            f"/ the report time is more than {days} days back"
        )


@dataclass(frozen=True)
class Resolved:
    customer: Customer
    site: Site
    device: Device | None
    contract: Contract | None
    out_of_contract: bool
    reason: str  # why it is out of contract ("" when covered)


def find_customer(session: Session, text: str) -> Customer:
    """A customer by exact code or name, else by a unique part of the name."""
    text = text.strip()
    # the run form's choice "北京某银行数据中心（BJYH）" names the customer by its code
    choice = re.fullmatch(r"(.+)（([^（）]+)）", text)
    if choice is not None:
        by_code = session.exec(select(Customer).where(Customer.code == choice.group(2).upper())).first()
        if by_code is not None:
            return by_code
    exact = session.exec(
        select(Customer).where(or_(Customer.code == text.upper(), Customer.name == text))
    ).first()
    if exact is not None:
        return exact
    like = session.exec(
        select(Customer).where(col(Customer.name).contains(text)).order_by(col(Customer.id))
    ).all()
    if len(like) == 1:
        return like[0]
    if not like:
        raise IntakeError(f"未知客户：{text}（请用客户编码或完整名称） / unknown customer {text!r}")
    names = "、".join(f"{c.name}（{c.code}）" for c in like)
    raise IntakeError(f"客户“{text}”不唯一，请从中选择：{names} / ambiguous customer")


def resolve_request(session: Session, request: RepairRequest, *, today: datetime) -> Resolved:
    """Names to rows, with a clear message for each thing that does not fit."""
    if request.parent_case_id is not None and session.get(Case, request.parent_case_id) is None:
        raise IntakeError(f"关联工单 {request.parent_case_id} 不存在 / no case {request.parent_case_id}")
    customer = find_customer(session, request.customer)
    assert customer.id is not None
    sites = list(
        session.exec(select(Site).where(Site.customer_id == customer.id).order_by(col(Site.id))).all()
    )
    device = None
    if request.device:
        device = session.exec(select(Device).where(Device.serial == request.device.strip())).first()
        if device is None:
            raise IntakeError(f"未知设备序列号：{request.device} / unknown device serial")
        if device.customer_id != customer.id:
            raise IntakeError(
                f"设备 {device.serial} 不属于客户 {customer.name} / device belongs to another customer"
            )
    if request.site:
        wanted = request.site.strip()
        site = next((s for s in sites if s.name == wanted), None)
        if site is None:
            others = session.exec(select(Site).where(Site.name == wanted)).first()
            known = "、".join(s.name for s in sites) or "（无）"
            if others is not None:
                raise IntakeError(
                    f"站点“{wanted}”不属于客户 {customer.name}；该客户的站点：{known} / site is not this customer's"
                )
            raise IntakeError(f"未知站点“{wanted}”；客户 {customer.name} 的站点：{known} / unknown site")
    elif device is not None:
        site = next(s for s in sites if s.id == device.site_id)
    elif len(sites) == 1:
        site = sites[0]
    else:
        known = "、".join(s.name for s in sites) or "（无）"
        raise IntakeError(f"请指定站点；客户 {customer.name} 的站点：{known} / please name the site")
    if device is not None and device.site_id != site.id:
        raise IntakeError(f"设备 {device.serial} 不在站点 {site.name} / the device is at another site")

    contract, reason = contract_on(session, customer, today)
    return Resolved(customer, site, device, contract, bool(reason), reason)


def contract_on(session: Session, customer: Customer, today: datetime) -> tuple[Contract | None, str]:
    """The customer's contract in force on `today`, with "" — else its latest contract (or None) and
    why the request is out of contract (paid service, PROCEDURES.md §6 step 7)."""
    contracts = list(
        session.exec(
            select(Contract)
            .where(Contract.customer_id == customer.id)
            .order_by(col(Contract.end_date).desc())
        )
    )
    day = _local_day(today)
    active = next((c for c in contracts if c.is_active(day)), None)
    if active is not None:
        return active, ""
    latest = contracts[0] if contracts else None
    if latest is None:
        reason = "该客户没有服务合同，按有偿服务受理"
    elif latest.end_date < day:
        reason = f"合同 {latest.code} 已于 {latest.end_date:%Y-%m-%d} 到期，按有偿服务受理"
    else:
        reason = f"合同 {latest.code} 自 {latest.start_date:%Y-%m-%d} 起生效，当前按有偿服务受理"
    return latest, reason


def _local_day(moment: datetime) -> Any:
    import pendulum

    return pendulum.instance(moment).in_timezone(business_timezone()).date()


# The roles a repair needs, in the order PROCEDURES.md §2 meets them.
REPAIR_TEAM = (
    Role.DISPATCHER,
    Role.TECHNICAL_LEAD,
    Role.ENGINEER,
    Role.TECHNICAL_DIRECTOR,
    Role.COORDINATOR,
    Role.PARTS_KEEPER,
)


def open_case(
    session: Session,
    request: RepairRequest,
    *,
    kind: CaseKind = CaseKind.REPAIR,
    now: datetime,
    flow_run_id: str | None = None,
    team_roles: tuple[Role, ...] = REPAIR_TEAM,
    entered_at: datetime | None = None,
) -> Case:
    """Validate and record a request as a case with its team; idempotent per flow run.
    `entered_at`: when the request was entered (the report time is checked against it; default `now`)."""
    if flow_run_id:
        existing = session.exec(select(Case).where(Case.flow_run_id == flow_run_id)).first()
        if existing is not None:
            return existing
    check_report_time(request.reported_at, _latest_known(session, request.parent_case_id, entered_at or now))
    reported_at = request.reported_at or now
    resolved = resolve_request(session, request, today=reported_at)
    severity, assurance = (
        request.severity,
        covering(
            assurance_periods(session, resolved.customer.id),  # type: ignore[arg-type]
            resolved.customer.id,  # type: ignore[arg-type]
            resolved.site.id,
            reported_at,
        ),
    )
    if assurance is not None:  # 重要通信保障期间: one level more severe (001 §2.3.7, 002)
        severity = raised_severity(severity)
    team = {str(role): first_with_role(session, role).id for role in team_roles}
    contact = next(iter(customer_contacts(session, resolved.customer.id, primary_only=True)), None)  # type: ignore[arg-type]
    scheme = resolved.contract.severity_scheme if resolved.contract else "outage"
    data: dict[str, Any] = {
        "team": team,
        "contact_id": contact.id if contact else None,
        "severity_label": SEVERITY_WORDS.get(scheme, SEVERITY_WORDS["outage"])[severity],
        "paid_service_reason": resolved.reason,
    }
    case = Case(
        kind=str(kind),
        customer_id=resolved.customer.id,  # type: ignore[arg-type]
        site_id=resolved.site.id,
        device_id=resolved.device.id if resolved.device else None,
        contract_id=resolved.contract.id if resolved.contract else None,
        parent_id=request.parent_case_id,
        severity=severity,
        status=CaseStatus.OPEN,
        title=request.description.splitlines()[0][:80],
        description=request.description,
        channel=str(request.channel),
        reported_by=request.reported_by,
        reported_at=reported_at,
        out_of_contract=resolved.out_of_contract,
        flow_run_id=flow_run_id,
        data=data,
        created_at=now,
        updated_at=now,
    )
    add_opened_case(
        session,
        case,
        "opened",
        at=reported_at,
        actor=request.reported_by,
        data={
            "channel": str(request.channel),
            "severity": severity,
            "out_of_contract": resolved.out_of_contract,
            "reason": resolved.reason,
            "parent_id": request.parent_case_id,
            "team": team,
        },
    )
    if assurance is not None:
        _during_assurance(session, case, assurance, request.severity, at=reported_at)
    if request.parent_case_id:
        append_event(
            session,
            request.parent_case_id,
            "linked_case_opened",
            at=reported_at,
            key=f"linked:{case.id}",
            data={"case_id": case.id, "kind": str(kind)},
        )
        if (
            request.channel == Channel.INSPECTION
        ):  # a problem an inspection found: the customer is told its number
            feedback_repair_opened(session, request.parent_case_id, case, at=now)
    return case


def assurance_periods(session: Session, customer_id: int) -> list[Period]:
    """The customer's assurance periods in force (plan agreed by both sides, not cancelled)."""
    rows = session.exec(
        select(Case).where(Case.kind == str(CaseKind.ASSURANCE), Case.customer_id == customer_id)
    ).all()
    return [
        Period(
            number=c.number,
            case_id=int(c.id),  # type: ignore[arg-type]
            customer_id=c.customer_id,
            site_id=c.site_id,
            start=datetime.fromisoformat(c.data["period_start"]),
            end=datetime.fromisoformat(c.data["period_end"]),
        )
        for c in rows
        if c.data.get("in_force") and c.status != CaseStatus.CANCELLED
    ]


def _during_assurance(session: Session, case: Case, period: Period, reported: int, *, at: datetime) -> None:
    """A request taken during an assurance period: its severity was raised one level; both cases say
    so (the assurance report lists the requests of its period)."""
    raised = {"severity_reported": reported, "severity_raised": case.severity, "case_id": case.id}
    append_event(
        session,
        case.id,  # type: ignore[arg-type]
        "severity_raised_for_assurance",
        at=at,
        key="assurance-raise",
        data={**raised, "assurance": period.number, "assurance_id": period.case_id},
    )
    append_event(session, period.case_id, "assurance_request", at=at, key=f"request:{case.id}", data=raised)
    case.data = {**case.data, "assurance": period.number}


@dataclass(frozen=True)
class CaseFacts:
    """What templates and messages say about a case (plain values, safe to pass to tasks)."""

    id: int
    number: str
    kind: str
    customer: str
    customer_code: str
    site: str
    site_distance_km: float
    device: str
    severity: int
    severity_label: str
    severity_text: str  # the level said once, for messages and reports ("1 级（特大故障）", "三级")
    description: str
    reported_by: str
    reported_at: datetime
    channel: str
    out_of_contract: bool
    paid_service_reason: str
    contract_code: str
    contact_name: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def case_facts(session: Session, case_id: int) -> CaseFacts:
    case = session.get(Case, case_id)
    if case is None:
        raise IntakeError(f"工单 {case_id} 不存在 / no case {case_id}")
    customer = session.get(Customer, case.customer_id)
    site = session.get(Site, case.site_id) if case.site_id else None
    device = session.get(Device, case.device_id) if case.device_id else None
    contract = session.get(Contract, case.contract_id) if case.contract_id else None
    contact = session.get(Contact, case.data.get("contact_id")) if case.data.get("contact_id") else None
    assert customer is not None
    return CaseFacts(
        id=case_id,
        number=case.number,
        kind=case.kind,
        customer=customer.name,
        customer_code=customer.code,
        site=site.name if site else "",
        site_distance_km=site.distance_km if site else 0.0,
        device=f"{device.model}（{device.serial}）" if device else "",
        severity=case.severity or 4,
        severity_label=case.data.get("severity_label", ""),
        severity_text=severity_text(contract.severity_scheme if contract else None, case.severity or 4),
        description=case.description,
        reported_by=case.reported_by,
        reported_at=case.reported_at,
        channel=case.channel,
        out_of_contract=case.out_of_contract,
        paid_service_reason=case.data.get("paid_service_reason", ""),
        contract_code=contract.code if contract else "",
        contact_name=contact.name if contact else "",
    )


def team_member(session: Session, case_id: int, role: Role | str) -> Staff:
    """The staff member the case assigned to `role` at intake (falls back to the roles data)."""
    case = session.get(Case, case_id)
    staff_id = (case.data.get("team") or {}).get(str(role)) if case else None
    staff = session.get(Staff, staff_id) if staff_id else None
    if staff is None or not staff.active:
        staff = first_with_role(session, role)
    return staff


def customer_contact(session: Session, case_id: int) -> Contact:
    case = session.get(Case, case_id)
    assert case is not None
    contact = session.get(Contact, case.data.get("contact_id")) if case.data.get("contact_id") else None
    if contact is None:
        contact = next(iter(customer_contacts(session, case.customer_id)), None)
    if contact is None:
        raise IntakeError(f"客户没有联系人，无法请其签字 / the customer of {case.number} has no contact")
    return contact


def set_status(session: Session, case_id: int, status: CaseStatus, *, at: datetime) -> Case:
    """Move the case to `status` (IllegalTransition if it may not); an ending status closes the case
    and stops its clocks."""
    case = session.get(Case, case_id)
    assert case is not None
    if case.move_to(status, at).ends_case:
        case.closed_at = at

        close_clocks(session, case_id, at=at, reason=status)
    session.add(case)
    return case


# --- tasks (each opens its own session; flows call these) ------------------------------------


@step("take-request", title="受理报修 / take the request")
def take_request(
    request: RepairRequest,
    now: datetime,
    flow_run_id: str | None = None,
    tell: list[Tell] | None = None,
    entered_at: datetime | None = None,
) -> int:
    """Validate the request and open the case (raises IntakeError with a clear message, nothing
    written); `tell`: the notices of the opening, queued in the same transaction (see `record`)."""
    with session_scope() as session:
        case = open_case(session, request, now=now, flow_run_id=flow_run_id, entered_at=entered_at)
        for notice in tell or []:
            notice.queue(session, int(case.id), now=case.reported_at)  # type: ignore[arg-type]
        return int(case.id)  # type: ignore[arg-type]


# "case-facts", not the "load-case" of old: that one recorded a dict, and a waiting case replays a
# recorded result as the type it was recorded with; under the new name a replay reads the facts anew.
@step("case-facts", title="工单概况 / case facts")
def load_case(case_id: int) -> CaseFacts:
    """The case's facts (a typed, frozen record; the step ledger replays it as the same type)."""
    with session_scope() as session:
        return case_facts(session, case_id)


@step("record", title="记录 / record", key=lambda a: a["key"] or a["kind"])
def record(
    case_id: int,
    kind: str,
    at: datetime,
    actor: str = "system",
    data: dict[str, Any] | None = None,
    key: str | None = None,
    status: CaseStatus | None = None,
    tell: list[Tell] | None = None,
) -> int:
    """Append one event to the case's history (idempotent by key), optionally setting its status.

    `tell`: the messages this event sends (`Tell`: template, key, roles, customer, context, urgent), queued in the outbox in the same transaction as the
    event (DESIGN.md §4): both are written or neither.
    """
    with session_scope() as session:
        event = append_event(session, case_id, kind, at=at, actor=actor, data=data or {}, key=key or kind)
        if status:
            set_status(session, case_id, status, at=at)
        for notice in tell or []:
            notice.queue(session, case_id, now=at)
        return int(event.id)  # type: ignore[arg-type]


@step("assignees", title="分派人员 / who does the step", key="{role}")
def assignees(case_id: int, role: str) -> list[int]:
    """The staff ids assigned to `role` on this case."""
    with session_scope() as session:
        return [int(team_member(session, case_id, role).id)]  # type: ignore[arg-type]


@step("contact-of", title="客户联系人 / customer contact")
def contact_of(case_id: int) -> int:
    """The customer contact who signs for this case."""
    with session_scope() as session:
        return int(customer_contact(session, case_id).id)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Tell:
    """One message an event sends: `queue_for_case`'s arguments, queued in the event's transaction."""

    template: str
    key: str
    roles: Sequence[str] = ()
    customer: bool = False
    context: dict[str, Any] = field(default_factory=dict)
    urgent: bool | None = None

    def queue(self, session: Session, case_id: int, *, now: datetime, **more: Any) -> int:
        """Queue it for the case; `more`: context added by the step that sends it (e.g. a report id)."""
        return queue_for_case(
            session,
            case_id,
            template=self.template,
            key=self.key,
            now=now,
            roles=list(self.roles),
            customer=self.customer,
            context={**self.context, **more},
            urgent=self.urgent,
        )


def queue_for_case(
    session: Session,
    case_id: int,
    *,
    template: str,
    key: str,
    now: datetime,
    roles: list[str] | None = None,
    customer: bool = False,
    context: dict[str, Any] | None = None,
    urgent: bool | None = None,
) -> int:
    """Queue `template` to the case's people in `roles` (and its customer contact) in the caller's
    transaction; urgent (through quiet hours) for severity 1–2 unless said otherwise."""
    facts = case_facts(session, case_id)
    recipients: list[Any] = []
    for role in roles or []:
        person = team_member(session, case_id, role)
        if all(getattr(p, "id", None) != person.id or not isinstance(p, Staff) for p in recipients):
            recipients.append(person)
    if customer:
        recipients.append(customer_contact(session, case_id))
    extra = dict(context or {})
    if "report_id" in extra:  # a message about a report carries a signed link to it
        extra["report_url"] = report_url(extra["report_id"], now=now)
    rows = queue(
        session,
        recipients=recipients,
        template=template,
        context={"case": facts.as_dict(), "paid": paid_prefix(facts.as_dict()), **extra},
        key=f"{case_id}:{key}",
        case_id=case_id,
        now=now,
        urgent=facts.severity <= 2 if urgent is None else urgent,
    )
    return len(rows)


def feedback_repair_opened(session: Session, inspection_id: int, repair: Case, *, at: datetime) -> bool:
    """A repair an inspection's problem started is open: the customer is told the problem and the
    repair's number (巡检问题反馈, PROCEDURES.md §4.5), the checklist rows are linked to the repair, and
    the inspection's feedback clock stops once every problem has its repair. Runs in the repair's
    intake transaction; idempotent (the event and the outbox key are per repair). False: not an
    inspection's repair, or no problem of it matches."""
    inspection = session.get(Case, inspection_id)
    if inspection is None or inspection.kind != str(CaseKind.INSPECTION) or repair.id is None:
        return False
    target = f"device:{repair.device_id}" if repair.device_id is not None else "site"
    rows = [
        r
        for r in open_problems(session, inspection_id)
        if r.target == target and f"·{r.item_label}：" in (repair.description or "")
    ]
    if not rows:
        return False
    for r in rows:
        if r.repair_case_id is None:
            r.repair_case_id = repair.id
            session.add(r)
    session.flush()
    first = rows[0]
    key = f"feedback:{repair.id}"
    if session.exec(select(Event).where(Event.case_id == inspection_id, Event.key == key)).first() is None:
        queue_for_case(
            session,
            inspection_id,
            template="inspection/problem_feedback",
            key=key,
            now=at,
            customer=True,
            urgent=False,
            context={
                "number": inspection.number,
                "repair_number": repair.number,
                "problem": f"{first.item_label}：{first.note}",
                "severity": repair.severity,
            },
        )
        append_event(
            session,
            inspection_id,
            "problem_feedback_sent",
            at=at,
            actor="system",
            key=key,
            data={
                "repair_case_id": repair.id,
                "repair_number": repair.number,
                "item": first.item_code,
                "target": first.target,
            },
        )
    return True


@step("inspection-problem-fixed", title="巡检问题修复结果反馈 / tell the customer the problem is fixed")
def problem_fixed_feedback(case_id: int, fixed_at: datetime, at: datetime, work_done: str) -> bool:
    """PROCEDURES.md §4.5, 001 §2.3.3.8: a problem an inspection found that could not be fixed on site
    is fed back to the customer within 2 working days of being fixed ("在解决问题结束后两工作日内反馈
    给客户"). Called when the problem's repair records the restore: the feedback clock (on the repair,
    one per repair) runs from the fix (`fixed_at`, as typed on the repair form) to this feedback (`at`),
    and the customer gets the result with the inspection's and the repair's numbers. A fix recorded more
    than 2 working days after it happened is a late feedback: the clock says breached. False: not an
    inspection's problem."""
    with session_scope() as session:
        repair = session.get(Case, case_id)
        if repair is None or repair.parent_id is None or repair.channel != str(Channel.INSPECTION):
            return False
        inspection = session.get(Case, repair.parent_id)
        if inspection is None or inspection.kind != str(CaseKind.INSPECTION):
            return False
        rows = [r for r in open_problems(session, inspection.id) if r.repair_case_id == case_id]  # type: ignore[arg-type]
        if not rows:
            return False
        clocks.start_clock(
            session, case_id, "inspection_feedback", started_at=fixed_at, severity=repair.severity or 4
        )
        key = f"fixed:{case_id}"
        if (
            session.exec(select(Event).where(Event.case_id == inspection.id, Event.key == key)).first()
            is None
        ):
            queue_for_case(
                session,
                inspection.id,  # type: ignore[arg-type]
                template="inspection/problem_fixed",
                key=key,
                now=at,
                customer=True,
                urgent=False,
                context={
                    "number": inspection.number,
                    "repair_number": repair.number,
                    "problems": [f"{r.item_label}：{r.note}" for r in rows],
                    "fixed_at": fixed_at,
                    "work_done": work_done,
                },
            )
            append_event(
                session,
                inspection.id,  # type: ignore[arg-type]
                "problem_fixed_fed_back",
                at=at,
                actor="system",
                key=key,
                data={
                    "repair_case_id": case_id,
                    "repair_number": repair.number,
                    "fixed_at": fixed_at.isoformat(),
                },
            )
        clocks.stop_clock(session, case_id, "inspection_feedback", at=at)
        return True


@step("clock", title="服务时限 / SLA clock", key="{kind}-{action}")
def clock(case_id: int, kind: ClockKind, action: ClockAction, at: datetime, reason: str = "") -> str:
    """Start, pause, resume or stop one SLA clock of the case; returns "running", "paused", "met",
    "breached" or "none". A pause (waiting for the customer) moves the deadline on by its length."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        if action in (ClockAction.PAUSE, ClockAction.RESUME):
            row = clocks.find_clock(session, case_id, kind)
            if row is None or row.status == ClockStatus.STOPPED:
                return (
                    "none" if row is None else "stopped"
                )  # nothing left to pause: the clock has run its course
            if action == ClockAction.PAUSE:
                clocks.pause_clock(session, case_id, kind, at=at, reason=reason or "等待客户")
                return "paused"
            clocks.resume_clock(session, case_id, kind, at=at, reason=reason)
            return "running"
        if action == ClockAction.START:  # laid by the case's contract and site
            if not clocks.applies(session, case_id, kind, case.severity or 4):
                return "none"  # the contract sets no such deadline for this severity
            clocks.start_clock(session, case_id, kind, started_at=at, severity=case.severity or 4)
            return "running"
        stopped = clocks.stop_clock(session, case_id, kind, at=at)
        if stopped is None:
            return "none"
        return clocks.verdict(stopped)


REPAIR_DEPLOYMENT = "repair/repair"
ACCIDENT_DEPLOYMENT = "accident/accident"


def start_deployment_run(
    deployment: str, parameters: dict[str, Any], *, idempotency_key: str | None = None, as_form: bool = False
) -> str:
    """Start a run of `flow/deployment` from a program (not a subflow: a run with a parent cannot
    suspend); returns its id. A duplicate idempotency key returns the run started the first time.

    The deployments a dispatcher starts carry the Prefect-UI run form as their schema
    (deployments.run_forms: customers as choices, "" for 不填), which the server enforces on what
    the form sends. A program sends the flow's own model instead (a customer code, None), which
    that model validates when the run starts: the schema is not enforced on this run. Prefect's
    `run_deployment` cannot say so, hence the API's own request. `as_form=True` starts it the way
    the Prefect UI's run form does: the server checks the parameters against the form.
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentFlowRunCreate

    scripted = responder()
    if scripted is not None:  # the fast test layer: the test runs the started flow body itself
        return scripted.start_run(deployment, parameters, idempotency_key)
    from prefect.states import Scheduled, to_state_create

    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        create = DeploymentFlowRunCreate(
            parameters=parameters,
            state=to_state_create(Scheduled()),
            idempotency_key=idempotency_key,
            enforce_parameter_schema=as_form,
        )
        response = client.request(
            "POST",
            "/deployments/{id}/create_flow_run",
            path_params={"id": found.id},
            json=create.model_dump(mode="json", exclude_unset=True),
        )
        return str(UUID(response.json()["id"]))


def start_period_run(case_id: int, deployment: str, *, now: datetime, url: str | None = None) -> str:
    """Start the run of a case that is one a contract and period (a renewal, a survey) — idempotent
    by `<kind>:<contract>:<period>`, so a repeated start gets the first run — and remember it on the
    case (unless one is remembered already); returns the run id."""
    with session_scope(url) as session:
        case = session.get(Case, case_id)
        assert case is not None and case.contract_id is not None
        key = f"{case.kind}:{case.contract_id}:{case.period}"
    run_id = start_deployment_run(deployment, {"case_id": case_id}, idempotency_key=key)
    remember_run(case_id, run_id, now=now, url=url)
    return run_id


def remember_run(
    case_id: int, run_id: str, *, now: datetime, url: str | None = None, event: str | None = None
) -> None:
    """The case's flow run, once started, is remembered on the case — unless one is already (a
    repeated start got the first run back anyway); `event`: the start also goes into the history
    (key "run-started", with the run id)."""
    with session_scope(url) as session:
        session.execute(
            sa.update(Case)
            .where(col(Case.id) == case_id, col(Case.flow_run_id).is_(None))
            .values(flow_run_id=run_id, updated_at=now)
        )
        if event is not None:
            append_event(session, case_id, event, at=now, data={"flow_run_id": run_id}, key="run-started")


def start_period_runs(kind: CaseKind, deployment: str, *, now: datetime, url: str | None = None) -> int:
    """Start the run of every open case of `kind` (one a contract and period) that has none yet,
    oldest first (`start_period_run`); returns how many."""
    with session_scope(url) as session:
        pending = session.exec(
            select(Case.id)
            .where(
                Case.kind == str(kind),
                col(Case.flow_run_id).is_(None),
                col(Case.closed_at).is_(None),
            )
            .order_by(col(Case.id))
        ).all()
    for case_id in pending:
        start_period_run(int(case_id), deployment, now=now, url=url)  # type: ignore[arg-type]
    return len(pending)


def start_repair(request: RepairRequest | dict[str, Any], *, idempotency_key: str | None = None) -> str:
    """Start a separate `repair` run (not a subflow: a run with a parent cannot suspend); returns its id.
    The one way a repair starts besides the Prefect-UI form: the CLI, inspections, 5-minute talks.

    The idempotency key makes a replayed start return the run started the first time.
    """
    req = request if isinstance(request, RepairRequest) else RepairRequest.model_validate(request)
    return start_deployment_run(
        REPAIR_DEPLOYMENT, {"request": req.model_dump(mode="json")}, idempotency_key=idempotency_key
    )


@step(
    "start-repair-run",
    title="新建维修流程 / start a repair flow",
    key="{idempotency_key}",
    transactional=False,
)  # a Prefect run, idempotent by its key
def start_repair_run(request: RepairRequest, idempotency_key: str) -> str:
    """`start_repair` as a step of a flow (a replay returns the run started the first time)."""
    return start_repair(request, idempotency_key=idempotency_key)


@step(
    "start-accident-run", title="转事故处理 / start the accident flow", transactional=False
)  # idempotent by its key
def start_accident_run(case_id: int, reason: str, idempotency_key: str) -> str:
    """Start the `accident` flow with this repair case as its link (it takes over the history)."""
    request = {"parent_case_id": case_id, "found_by": "repair", "handover_reason": reason}
    return start_deployment_run(ACCIDENT_DEPLOYMENT, {"request": request}, idempotency_key=idempotency_key)
