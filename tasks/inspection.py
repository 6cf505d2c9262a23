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
from typing import TYPE_CHECKING, Any, cast

import pendulum
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, select

from models.approvals import Approval, Timer
from models.assets import Device, SparePart, StockMove
from models.cases import CASE_KIND_ZH, Case, CaseKind, CaseStatus, Event, add_period_case, append_event
from models.contracts import Contract
from models.db import session_scope
from models.inspection import (
    COMMON,
    RESULT_ZH,
    ChecklistItem,
    ChecklistResult,
    ItemResult,
    checklist_for,
    ensure_checklists,
)
from models.parties import Contact, Customer, Role, Site
from models.reports import Report
from models.settings import business_timezone
from rules import inspection as rules
from rules.calendar import Calendar
from rules.sla import severity_text
from tasks.answering import responder
from tasks.cases import (
    CaseFacts,
    Channel,
    IntakeError,
    RepairRequest,
    RequiredText,
    blank_none,
    case_facts,
    customer_contact,
    find_customer,
    remember_run,
    set_status,
    start_repair_run,
)
from tasks.clocks import load_calendar
from tasks.ledger import step
from tasks.notify import Message, queue, queue_many
from tasks.people import staff_with_role
from tasks.timers import Wake, timer_key, wake_run

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

INSPECTION_DEPLOYMENT = "inspection/inspection"


class InspectionError(ValueError):
    """Bad input for an inspection step; the message says what, for a person."""


@dataclass
class PlanResult:
    created: list[int] = field(default_factory=list)  # case ids created by this call
    already: int = 0  # due periods that already had their inspection


def local_day(now: datetime, tz: str | None = None) -> date:
    """The calendar day of `now` in the contract's time zone (the business time zone by default)."""
    return pendulum.instance(now).in_timezone(tz or business_timezone()).date()


def calendar_for(session: Session, name: str = "cn") -> Calendar:
    """The working-day calendar of a contract, with the operator's overrides (tasks.clocks loads it)."""
    return load_calendar(session, name)


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
    site_id: int | None = None,
    requested_by: str = "",
) -> int | None:
    """Create the inspection case of one contract and period (in the caller's transaction).

    Returns the new case id, or None when that period already has its inspection. `site_id`: an
    inspection of one site only (an extra one on request); its checklist covers that site's devices.
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
    return add_period_case(
        session,
        contract,
        str(CaseKind.INSPECTION),
        period.label,
        status=CaseStatus.PLANNED,
        title=title,
        description=extra_reason,
        channel="schedule" if not extra_reason else "request",
        data=data,
        now=now,
        event="inspection_planned",
        key="planned",
        reported_by=requested_by or "system",
        site_id=site_id,
    )


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
                    calendars[contract.calendar],
                    planned_on=today,
                    window_start=d.window_start,
                    window_end=d.window_end,
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
            raise InspectionError(
                f"合同 {contract_code} 在 {day} 不在有效期内 / contract not active on that day"
            )
        return _create_extra(session, contract, day, reason.strip(), now=now)


def _create_extra(
    session: Session,
    contract: Contract,
    day: date,
    reason: str,
    *,
    now: datetime,
    site_id: int | None = None,
    requested_by: str = "",
) -> tuple[int, bool]:
    """The extra inspection of `contract` on `day` (one per contract and day): (case id, created?)."""
    period = rules.extra_period(day)
    case_id = create_inspection(
        session,
        contract,
        period,
        window_start=day,
        window_end=day,
        proposed=day,
        now=now,
        extra_reason=reason,
        site_id=site_id,
        requested_by=requested_by,
    )
    if case_id is not None:
        return case_id, True
    existing = session.exec(
        select(Case.id).where(
            Case.kind == str(CaseKind.INSPECTION),
            Case.contract_id == contract.id,
            Case.period == period.label,
        )
    ).one()
    return int(existing), False  # type: ignore[arg-type]


class ExtraInspectionRequest(BaseModel):
    """加做巡检申请 — what the dispatcher fills in when a customer asks for an extra inspection
    (before an important operation: an upgrade, a migration, a holiday peak)."""

    model_config = ConfigDict(title="加做巡检 / extra inspection")

    customer: RequiredText = Field(
        title="客户",
        description="客户名称或客户编码，如 BJYH 或 北京某银行数据中心",
        min_length=1,
        max_length=100,
    )
    site: str | None = Field(
        default=None,
        title="机房/站点",
        description="要巡检的站点名称；客户只有一个站点时可不填。检查表只含该站点的设备",
        max_length=100,
    )
    reason: RequiredText = Field(
        title="加做原因",
        description="客户为何要求加做巡检，如：5月23日核心系统升级前",
        min_length=2,
        max_length=400,
    )
    day: date | None = Field(
        default=None,
        title="建议巡检日期",
        description="须为工作日，且留出 3 个工作日通知期；不填为最早可安排的工作日。客户仍可确认或改期",
    )
    requested_by: str = Field(
        default="", title="提出人", description="客户方提出要求的人员姓名与电话", max_length=100
    )

    # the run form (deployments.run_forms) sends "" for a site or day left empty
    _blank = field_validator("site", "day", mode="before")(blank_none)


@dataclass(frozen=True)
class ExtraOpened:
    case_id: int
    number: str
    created: bool  # False: that contract already had an extra inspection on that day
    customer: str
    site: str
    contract: str
    day: date


def _site_of(session: Session, customer_id: int, customer_name: str, wanted: str | None) -> Any:
    """The customer's site by name (the only one when none is named); InspectionError says which exist."""
    sites = list(
        session.exec(select(Site).where(Site.customer_id == customer_id).order_by(col(Site.id))).all()
    )
    known = "、".join(s.name for s in sites) or "（无）"
    if wanted and wanted.strip():
        site = next((s for s in sites if s.name == wanted.strip()), None)
        if site is None:
            raise InspectionError(
                f"未知站点“{wanted.strip()}”；客户 {customer_name} 的站点：{known} / unknown site"
            )
        return site
    if len(sites) == 1:
        return sites[0]
    raise InspectionError(f"请指定站点；客户 {customer_name} 的站点：{known} / please name the site")


def open_extra_inspection(
    request: ExtraInspectionRequest, *, now: datetime, url: str | None = None
) -> ExtraOpened:
    """Register the extra inspection a customer asked for (idempotent per contract and day).

    The customer and site are looked up by name or code; the contract is the one in force on the
    day that covers the site's devices. A day that is not a working day or leaves no room for the
    3-working-day notice is refused with the earliest day that can be kept. InspectionError says
    what to correct, in Chinese.
    """
    with session_scope(url) as session:
        try:
            customer = find_customer(session, request.customer)
        except IntakeError as exc:
            raise InspectionError(str(exc)) from None
        assert customer.id is not None
        site = _site_of(session, customer.id, customer.name, request.site)
        contracts = list(
            session.exec(
                select(Contract)
                .where(Contract.customer_id == customer.id)
                .order_by(col(Contract.end_date).desc())
            ).all()
        )
        tz = contracts[0].timezone if contracts else business_timezone()
        today = local_day(now, tz)
        cal = calendar_for(session, contracts[0].calendar if contracts else "cn")
        earliest = rules.proposed_day(cal, planned_on=today, window_start=today, window_end=today)
        day = request.day or earliest
        if day < today:
            raise InspectionError(f"日期 {day} 已过 / the date is in the past")
        active = [c for c in contracts if c.is_active(day)]
        if not active:
            raise InspectionError(
                f"客户 {customer.name} 在 {day} 没有有效的服务合同，不能加做合同内巡检"
                f" / no contract in force on {day}"
            )
        at_site = {d for d in session.exec(select(Device.contract_id).where(Device.site_id == site.id)).all()}
        contract = next((c for c in active if c.id in at_site), active[0])
        try:
            rules.check_visit_day(calendar_for(session, contract.calendar), day, today=today)
        except rules.PlanningError as exc:
            raise InspectionError(f"{exc}；最早可安排 {earliest.isoformat()}") from None
        case_id, created = _create_extra(
            session,
            contract,
            day,
            request.reason,
            now=now,
            site_id=site.id,
            requested_by=request.requested_by.strip(),
        )
        if created and request.requested_by.strip():
            append_event(
                session,
                case_id,
                "extra_requested",
                at=now,
                actor=request.requested_by.strip(),
                data={"reason": request.reason, "site": site.name},
                key="extra-requested",
            )
        case = _case(session, case_id)
        return ExtraOpened(
            case_id=case_id,
            number=case.number,
            created=created,
            customer=customer.name,
            site=site.name,
            contract=contract.code,
            day=date.fromisoformat(case.data["proposed_day"]),
        )


def idempotency_key(contract_id: int, period: str) -> str:
    return f"inspection:{contract_id}:{period}"


def start_inspection_run(case_id: int, *, now: datetime, url: str | None = None) -> str:
    """Start the flow run of one inspection (idempotent by its key) and remember it; returns the run id.

    `run_deployment` with the case's idempotency key returns the existing run when one was already
    created (a crash between the start and the write below, or another worker), so the case ends
    up with one run whatever happens in between.
    """
    from prefect.deployments import run_deployment

    with session_scope(url) as session:
        case = _case(session, case_id)
        contract_id, period = case.contract_id, case.period
    assert contract_id is not None and period is not None
    scripted = responder()
    if scripted is not None:  # the fast test layer: the test runs the started flow body itself
        run_id = scripted.start_run(
            INSPECTION_DEPLOYMENT, {"case_id": case_id}, idempotency_key(contract_id, period)
        )
    else:
        # called from sync code, so `run_deployment` returns the FlowRun itself (not a coroutine)
        run_id = str(
            cast(
                "FlowRun",
                run_deployment(
                    INSPECTION_DEPLOYMENT,
                    parameters={"case_id": case_id},
                    idempotency_key=idempotency_key(contract_id, period),
                    as_subflow=False,
                    timeout=0,
                    flow_run_name=f"巡检 XJ-{case_id:06d} {period}",
                ),
            ).id
        )
    remember_run(case_id, run_id, now=now, url=url, event="inspection_run_started")
    return run_id


def start_inspection_runs(now: datetime, *, url: str | None = None, limit: int | None = None) -> int:
    """Start the flow run of every planned inspection that has none yet; returns how many were started."""
    with session_scope(url) as session:
        query = (
            select(Case.id)
            .where(
                Case.kind == str(CaseKind.INSPECTION),
                Case.flow_run_id == None,  # noqa: E711
                Case.status == CaseStatus.PLANNED,
            )  # noqa: E711
            .order_by(col(Case.id))
        )
        if limit:
            query = query.limit(limit)
        pending = list(session.exec(query).all())
    for case_id in pending:
        start_inspection_run(case_id, now=now, url=url)  # type: ignore[arg-type]
    return len(pending)


# ---- the steps of one inspection (tasks: each opens its own session) ------------------------------


PROBLEM_SEVERITY_DEFAULT = 3


def _case(session: Session, case_id: int) -> Case:
    case = session.get(Case, case_id)
    if case is None or case.kind != str(CaseKind.INSPECTION):
        raise InspectionError(f"巡检单 {case_id} 不存在 / no inspection {case_id}")
    return case


def checklist_spec(session: Session, case_id: int) -> dict[str, Any]:
    """What the engineer fills in: the site-level items once, then each device's class checklist."""
    case = _case(session, case_id)
    query = select(Device).where(Device.contract_id == case.contract_id)
    if case.site_id is not None:  # an inspection of one site (an extra one on request): that site's devices
        query = query.where(Device.site_id == case.site_id)
    devices = session.exec(query.order_by(col(Device.id))).all()

    site_ids = sorted({d.site_id for d in devices})
    site_id = case.site_id if case.site_id is not None else (site_ids[0] if site_ids else None)
    site = session.get(Site, site_id) if site_id is not None else None
    targets: list[dict[str, Any]] = [
        {
            "target": "site",
            "label": "机房与管理",
            "device_class": COMMON,
            "device_id": None,
            "serial": None,
            "site": site.name if site else None,
            "items": [{"code": i.code, "label": i.label} for i in checklist_for(session, COMMON)],
        }
    ]
    for d in devices:
        targets.append(
            {
                "target": f"device:{d.id}",
                "label": f"{d.model}（{d.serial}）",
                "device_class": d.device_class,
                "device_id": d.id,
                "serial": d.serial,
                "site": None,
                "items": [{"code": i.code, "label": i.label} for i in checklist_for(session, d.device_class)],
            }
        )
    return {"case_id": case_id, "number": case.number, "targets": targets}


FAULT_KINDS = (str(CaseKind.REPAIR), str(CaseKind.ACCIDENT))


def precheck_facts(session: Session, case_id: int) -> dict[str, Any]:
    """What the engineer starts the pre-checks from (PROCEDURES.md §4.2): the last inspection's
    findings for the same contract (and site, for an inspection of one site), the open fault cases of
    the devices inspected, and what changed since that visit (repairs closed, parts changed).

    {"last": {"number", "visit_day", "findings": [text]} or None, "open_cases": [text], "changes": [text]}."""
    case = _case(session, case_id)
    query = select(Device).where(Device.contract_id == case.contract_id)
    if case.site_id is not None:
        query = query.where(Device.site_id == case.site_id)
    devices = {d.id: d for d in session.exec(query).all()}
    label = {f"device:{i}": f"{d.model}（{d.serial}）" for i, d in devices.items()} | {"site": "机房与管理"}
    # the last visit: the latest earlier inspection of the contract with a checklist on record
    earlier = session.exec(
        select(Case)
        .where(
            Case.kind == str(CaseKind.INSPECTION),
            Case.contract_id == case.contract_id,
            Case.id != case_id,
            col(Case.id).in_(select(ChecklistResult.case_id)),
        )
        .order_by(col(Case.created_at).desc(), col(Case.id).desc())
    ).all()
    if case.site_id is not None:
        earlier = [c for c in earlier if c.site_id in (None, case.site_id)]
    last: dict[str, Any] | None = None
    since: datetime | None = None
    if earlier:
        prev = earlier[0]
        rows = session.exec(
            select(ChecklistResult)
            .where(ChecklistResult.case_id == prev.id)
            .order_by(col(ChecklistResult.version).desc(), col(ChecklistResult.id))
        ).all()
        version = rows[0].version
        rows = [r for r in rows if r.version == version and r.target in label]
        since = max((r.recorded_at for r in rows), default=None)
        findings = [
            f"{label[r.target]}·{r.item_label}：{r.note or '异常'}"
            f"（{'现场已处理' if r.fixed_on_site else '已转维修'}）"
            for r in rows
            if r.result == ItemResult.ABNORMAL
        ]
        last = {"number": prev.number, "visit_day": prev.data.get("visit_day", ""), "findings": findings}
    ids = [i for i in devices if i is not None]
    faults = session.exec(
        select(Case)
        .where(col(Case.kind).in_(FAULT_KINDS), col(Case.device_id).in_(ids))
        .order_by(col(Case.id))
    ).all()
    device_name = {i: f"{d.model}（{d.serial}）" for i, d in devices.items()}
    scheme = contract.severity_scheme if (contract := session.get(Contract, case.contract_id)) else None
    open_cases = [
        f"{c.number} {device_name.get(c.device_id, '')} {severity_text(scheme, c.severity)}：{c.title}"
        for c in faults
        if c.closed_at is None and c.status not in ("restored",)
    ]
    changes = [
        f"维修单 {c.number} 已结束（{local_day(c.closed_at)}）：{c.title}"
        for c in faults
        if c.closed_at is not None and (since is None or c.closed_at >= since)
    ]
    fault_ids = [c.id for c in faults]
    moves = session.exec(
        select(StockMove, SparePart, Case)
        .where(
            col(StockMove.case_id).in_(fault_ids),
            StockMove.quantity < 0,
            StockMove.part_id == SparePart.id,
            StockMove.case_id == Case.id,
        )
        .order_by(col(StockMove.at))
    ).all()
    changes += [
        f"更换备件 {part.name}×{-move.quantity}（{c.number}，{local_day(move.at)}）"
        for move, part, c in moves
        if since is None or move.at >= since
    ]
    return {"last": last, "open_cases": open_cases, "changes": changes}


def parse_checklist(spec: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Check a submitted checklist against its spec; the clean data, or InspectionError saying what is missing."""
    pre = payload.get("prechecks") or {}
    if not pre.get("backup_confirmed"):
        raise InspectionError("操作前须确认数据已备份（第3步）/ confirm the backup before any action")
    # [001 §2.3.3.6]: before any operation the risks and remedies are agreed with the customer's
    # maintenance staff, who permit it — who gave the permission is named
    agreed_by = str(pre.get("agreed_by") or "").strip()
    if not pre.get("customer_agreed") or not agreed_by:
        raise InspectionError(
            "操作前须与客户维护人员商定操作的风险和补救措施并获其许可：请勾选客户同意并填写同意人姓名"
        )
    if len(agreed_by) > 50:
        raise InspectionError("客户同意人姓名过长（最多50字）")
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
            clean.append(
                {
                    "target": t["target"],
                    "device_id": t["device_id"],
                    "device_class": t["device_class"],
                    "code": item["code"],
                    "label": item["label"],
                    "result": a["result"],
                    "note": note,
                    "fixed_on_site": fixed if a["result"] == ItemResult.ABNORMAL else False,
                    "severity": severity if a["result"] == ItemResult.ABNORMAL and not fixed else None,
                    "target_label": t["label"],
                    "serial": t.get("serial"),
                    "site": t.get("site"),
                }
            )
    if missing:
        raise InspectionError(
            "以下检查项未填写：" + "、".join(missing[:10]) + ("等" if len(missing) > 10 else "")
        )
    if errors:
        raise InspectionError("；".join(errors))
    return {
        "prechecks": {
            "changes": str(pre.get("changes") or ""),
            "customer_reported": str(pre.get("customer_reported") or ""),
            "backup_confirmed": True,
            "customer_agreed": True,
            "agreed_by": agreed_by,
            "risks": str(pre.get("risks") or "").strip(),
        },
        "items": clean,
    }


def store_checklist(
    session: Session, case_id: int, version: int, clean: dict[str, Any], *, at: datetime, by: str
) -> list[dict[str, Any]]:
    """Write the results of one submitted version (idempotent); returns the problems to start repairs for."""
    have = {
        (r.target, r.item_code)
        for r in session.exec(
            select(ChecklistResult).where(
                ChecklistResult.case_id == case_id, ChecklistResult.version == version
            )
        )
    }
    for it in clean["items"]:
        if (it["target"], it["code"]) in have:
            continue
        session.add(
            ChecklistResult(
                case_id=case_id,
                version=version,
                target=it["target"],
                device_id=it["device_id"],
                device_class=it["device_class"],
                item_code=it["code"],
                item_label=it["label"],
                result=it["result"],
                note=it["note"],
                fixed_on_site=it["fixed_on_site"],
                severity=it["severity"],
                recorded_at=at,
            )
        )
    append_event(
        session,
        case_id,
        "customer_agreed",
        at=at,
        actor=clean["prechecks"].get("agreed_by") or by,
        key=f"customer-agreed:v{version}",
        data={
            "version": version,
            "agreed_by": clean["prechecks"].get("agreed_by", ""),
            "risks": clean["prechecks"].get("risks", ""),
            "engineer": by,
        },
    )
    append_event(
        session,
        case_id,
        "checklist_submitted",
        at=at,
        actor=by,
        key=f"checklist:v{version}",
        data={
            "version": version,
            "prechecks": clean["prechecks"],
            "abnormal": sum(1 for i in clean["items"] if i["result"] == ItemResult.ABNORMAL),
        },
    )
    problems = [i for i in clean["items"] if i["result"] == ItemResult.ABNORMAL and not i["fixed_on_site"]]
    # PROCEDURES.md §4.5: each problem's repair tells the customer its number when it opens, and its
    # result within 2 working days of the fix (the feedback clock: tasks.cases.problem_fixed_feedback)
    return problems


# the engineer is on site or the report is out: the visit happened, there is nothing left to cancel
STARTED = (CaseStatus.ON_SITE, CaseStatus.SUBMITTED, CaseStatus.REJECTED)


def find_inspection(session: Session, number: str) -> Case:
    """An inspection by the number people quote (XJ-000123, or 123); InspectionError when there is none."""
    import re

    m = re.fullmatch(r"(?:XJ-?)?0*(\d+)", number.strip(), flags=re.IGNORECASE)
    if m is None:
        raise InspectionError(f"巡检单号应如 XJ-000123，不是 {number!r} / not an inspection number")
    return _case(session, int(m[1]))


def cancel_inspection(case_id: int, reason: str, *, by: str, now: datetime, url: str | None = None) -> bool:
    """The customer cancels: recorded, the period marked cancelled with the reason, everyone involved told.

    Returns False when it was already cancelled (a second click changes nothing).
    """
    if not reason.strip():
        raise InspectionError("请填写取消原因 / a reason is required")
    with session_scope(url) as session:
        case = _case(session, case_id)
        if case.status == CaseStatus.CANCELLED:
            return False
        if case.status in (CaseStatus.REGISTERED, CaseStatus.CLOSED):
            raise InspectionError(f"{case.number} 已完成，不能取消 / already done")
        if case.status in STARTED:
            raise InspectionError(
                f"{case.number} 工程师已到场巡检（状态 {case.status}），不能再取消 / the visit has begun"
            )
        case.data = {**case.data, "cancel_reason": reason.strip(), "cancelled_by": by}
        set_status(session, case_id, CaseStatus.CANCELLED, at=now)
        append_event(
            session,
            case_id,
            "inspection_cancelled",
            at=now,
            actor=by,
            key="cancelled",
            data={"reason": reason.strip(), "period": case.period},
        )
        people: list[Any] = []
        for role in (Role.DISPATCHER, Role.ENGINEER, Role.TECHNICAL_LEAD):
            people.extend(p for p in staff_with_role(session, role) if p not in people)
        people.append(customer_contact(session, case_id))
        queue(
            session,
            recipients=people,
            template="inspection/cancelled",
            key=f"{case_id}:cancelled",
            case_id=case_id,
            now=now,
            context={
                "number": case.number,
                "period": rules.period_words(case.period),
                "reason": reason.strip(),
                "by": by,
                "visit_day": case.data.get("visit_day") or case.data.get("proposed_day", ""),
            },
        )
        return True


@dataclass(frozen=True)
class InspectionFacts(CaseFacts):
    """An inspection's facts: the case's, and its period, proposed day and status."""

    period: str | None = None
    proposed_day: str = ""  # the planner always proposes one
    status: str = CaseStatus.PLANNED
    extra: bool = False


# "inspection-facts", not the "load-inspection" of old: that one recorded a dict, and a waiting case
# replays a recorded result as the type it was recorded with; under the new name it reads them anew.
@step("inspection-facts", title="巡检概况 / inspection facts")
def load_inspection(case_id: int) -> InspectionFacts:
    """The inspection's facts (customer, contract, period, proposed day), typed."""
    with session_scope() as session:
        case = _case(session, case_id)
        return InspectionFacts(
            **case_facts(session, case_id).as_dict(),
            period=case.period,
            proposed_day=case.data.get("proposed_day") or "",
            status=case.status,
            extra=bool(case.data.get("extra")),
        )


@step("fix-visit", title="约定巡检日期 / fix the visit")
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
            return (
                pendulum.datetime(d.year, d.month, d.day, t.hour, t.minute, tz=tz)
                .in_timezone("UTC")
                .isoformat()
            )

        out = {
            "visit_day": day,
            "start": f"{hh:02d}:{mm:02d}",
            "notice_at": moment(dates.notice_day, dtime(9, 0)),
            "reconfirm_at": moment(dates.reconfirm_day, dtime(10, 0)),
            "visit_at": moment(visit_day, dtime(hh, mm)),
        }
        case.data = {**case.data, **out}
        if (
            case.status != CaseStatus.CANCELLED
        ):  # a cancellation recorded meanwhile stands (the run checks it next)
            case.move_to(CaseStatus.SCHEDULED, at)
        case.updated_at = at
        session.add(case)
        append_event(
            session, case_id, "visit_agreed", at=at, actor=by, data=out, key=f"visit:{day}:{out['start']}"
        )
        return out


@step("is-cancelled", title="巡检是否已取消 / cancelled?")
def is_cancelled(case_id: int) -> bool:
    """Whether the customer cancelled meanwhile (each call, after a wait, is its own step)."""
    with session_scope() as session:
        return _case(session, case_id).status == CaseStatus.CANCELLED


@step("send-notice", title="巡检通知 / notice to the customer")
def send_notice(case_id: int, at: datetime) -> int:
    """The customer and the engineer are told of the visit (3 working days before it)."""
    return queue_notice(case_id, at=at)


def queue_notice(
    case_id: int, *, at: datetime, url: str | None = None, session: Session | None = None
) -> int:
    """Queue the notice of one inspection (idempotent by its key); returns the rows queued."""
    from contextlib import nullcontext

    with nullcontext(session) if session is not None else session_scope(url) as s:
        return queue_notices(s, [case_id], at=at)


def queue_notices(session: Session, case_ids: Sequence[int], *, at: datetime) -> int:
    """Queue the notices of many inspections in the caller's transaction (the month's batch).

    Who is told is looked up once for the batch (the engineer, each customer's contacts), the
    outbox rows go in through one `queue_many` statement, the status and the `notice` event in
    bulk. Idempotent: a case that already has its `notice` event is skipped, and the outbox key
    `<case>:notice` writes nothing twice either.
    """
    ids = sorted(set(case_ids))
    done = set(
        session.exec(select(Event.case_id).where(col(Event.case_id).in_(ids), Event.key == "notice")).all()
    )
    cases = [
        c
        for c in session.exec(select(Case).where(col(Case.id).in_(ids)).order_by(col(Case.id))).all()
        if c.kind == str(CaseKind.INSPECTION) and c.id not in done
    ]
    if len(ids) == 1 and not cases and not done:
        _case(session, ids[0])  # raises the Chinese "no such inspection"
    engineer = staff_with_role(session, Role.ENGINEER)[:1]
    # the contact a case names, else the customer's first contact — tasks.cases.customer_contact's
    # rule, applied to contacts loaded once for the whole batch
    contacts: dict[int, list[Contact]] = {}
    for c in session.exec(
        select(Contact)
        .where(col(Contact.customer_id).in_({c.customer_id for c in cases}))
        .order_by(col(Contact.is_primary).desc(), col(Contact.id))
    ):
        contacts.setdefault(c.customer_id, []).append(c)
    by_id = {c.id: c for group in contacts.values() for c in group}
    messages = []
    for case in cases:
        contact = by_id.get(case.data.get("contact_id")) or next(
            iter(contacts.get(case.customer_id, [])), None
        )
        if contact is None:
            raise InspectionError(f"{case.number} 的客户没有联系人，无法通知 / the customer has no contact")
        messages.append(
            Message(
                recipients=[contact, *engineer],
                template="inspection/notice",
                key=f"{case.id}:notice",
                case_id=case.id,
                now=at,
                context={
                    "number": case.number,
                    "period": rules.period_words(case.period),
                    "visit_day": case.data.get("visit_day") or case.data.get("proposed_day", ""),
                    "start": case.data.get("start", "09:30"),
                },
            )
        )
    rows = queue_many(session, messages)
    for case in cases:
        if case.status in (CaseStatus.PLANNED, CaseStatus.SCHEDULED):
            case.move_to(CaseStatus.NOTIFIED, at)
        assert case.id is not None  # loaded from the database
        session.add(Event(case_id=case.id, kind="notice_sent", at=at, actor="system", data={}, key="notice"))
    session.flush()
    return rows


@step("load-checklist-spec", title="巡检检查表 / checklist form")
def load_checklist_spec(case_id: int) -> dict[str, Any]:
    """The checklist the engineer fills in for this inspection (from the editable checklist table)."""
    with session_scope() as session:
        return checklist_spec(session, case_id)


@step("load-precheck", title="巡检前情况 / the last visit, open cases, changes since")
def load_precheck(case_id: int) -> dict[str, Any]:
    """The pre-check facts the checklist page shows the engineer (`precheck_facts`)."""
    with session_scope() as session:
        return precheck_facts(session, case_id)


@step("record-checklist", title="记录检查结果 / record the checklist", key="v{version}")
def record_checklist(
    case_id: int,
    version: int,
    payload: dict[str, Any],
    at: datetime,
    by: str,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store the submitted checklist: {"error": "" or why it was refused, "problems": those not fixed on site}.

    `spec`: the checklist the engineer was given (the form of the request); the items are data and
    may have been edited since, and the answers are checked against what was asked."""
    with session_scope() as session:
        try:
            clean = parse_checklist(spec or checklist_spec(session, case_id), payload)
        except InspectionError as exc:
            append_event(
                session,
                case_id,
                "checklist_refused",
                at=at,
                actor=by,
                key=f"checklist-refused:v{version}",
                data={"version": version, "error": str(exc)},
            )
            return {"error": str(exc), "problems": []}
        return {"error": "", "problems": store_checklist(session, case_id, version, clean, at=at, by=by)}


def record_move(
    session: Session, case_id: int, *, day: str, start: str, reason: str, by: str, at: datetime
) -> bool:
    """Record that the visit moved to `day` and why (case.data `delay_reason`, the summary's plan vs done).

    Returns False when nothing moved: the same day as already planned (only the time changed), or
    this very move already recorded (a replayed step). Any dated case: the drill moves its day with it.
    """
    case = session.get(Case, case_id)
    if case is None:
        raise InspectionError(f"案件 {case_id} 不存在 / no case {case_id}")
    moves = list(case.data.get("moves") or [])
    before = (
        (moves[-1]["to"] if moves else None)
        or case.data.get("visit_day")
        or case.data.get("proposed_day")
        or ""
    )
    if day == before:
        return False
    why = reason.strip() or "客户要求改期"
    move = {"from": before, "to": day, "start": start, "reason": why, "by": by, "at": at.isoformat()}
    event = append_event(
        session,
        case_id,
        "visit_moved",
        at=at,
        actor=by or "customer",
        data=move,
        key=f"moved:{len(moves) + 1}",
    )
    if event.data != move:  # this move recorded before (a replayed step): keep the first record
        return False
    case.data = {
        **case.data,
        "moves": [*moves, move],
        "delay_reason": f"客户改期（{before or '原定日期'} → {day}）：{why}",
    }
    case.updated_at = at
    session.add(case)
    return True


def _move_request(session: Session, case_id: int, at: datetime) -> tuple[str, str]:
    """The reason and the person of the customer's latest "改期" answer on the date form, up to `at`."""
    answers = session.exec(
        select(Approval)
        .where(
            Approval.case_id == case_id,
            col(Approval.step).startswith("date-v"),
            Approval.decided_at != None,  # noqa: E711
        )  # noqa: E711
        .order_by(col(Approval.decided_at).desc(), col(Approval.id).desc())
    ).all()
    for a in answers:
        if a.decided_at is not None and a.decided_at <= at:
            payload = a.payload or {}
            if payload.get("action") == "改期":
                return str(payload.get("reason") or ""), a.decided_by or ""
            break
    return "", ""


@step("check-moved-day", title="检查改期日期 / check the moved date")
def check_moved_day(
    case_id: int, day: str, start: str, at: datetime, reason: str | None = None, by: str | None = None
) -> dict[str, str]:
    """The customer's new date and time, checked (and a date that can be kept recorded as a move, with its reason)."""
    with session_scope() as session:
        out = _checked_day(session, case_id, day, start, at)
        if out["problem"]:
            return out
        # the reason: the one given, else what the customer wrote on the date form that asked for the move
        asked_reason, asked_by = _move_request(session, case_id, at)
        record_move(
            session,
            case_id,
            day=out["day"],
            start=out["start"],
            reason=reason or asked_reason,
            by=by or asked_by,
            at=at,
        )
    return out


def _checked_day(session: Session, case_id: int, day: str, start: str, at: datetime) -> dict[str, str]:
    """{"day", "start", "problem"}: problem is "" for a working day that leaves room for the notice."""
    import re

    out = {"day": day.strip(), "start": start.strip() or "09:30", "problem": ""}
    try:
        visit_day = date.fromisoformat(out["day"])
    except ValueError:
        return {**out, "problem": f"「{day}」不是有效日期，请按 2026-10-20 的格式填写"}
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", out["start"]):
        return {**out, "problem": f"「{start}」不是有效时间，请按 09:30 的格式填写"}
    contract = session.get(Contract, _case(session, case_id).contract_id)
    assert contract is not None
    try:
        rules.check_visit_day(
            calendar_for(session, contract.calendar), visit_day, today=local_day(at, contract.timezone)
        )
    except rules.PlanningError as exc:
        return {**out, "problem": str(exc)}
    return out


@step("dispatcher-proposal", title="调度员建议巡检日期 / the dispatcher proposes the date")
def dispatcher_proposal(case_id: int, day: str, start: str, by: str, at: datetime) -> dict[str, str]:
    """The day and time the dispatcher agreed with the customer by phone (or the planned suggestion),
    checked like any date; a day that can be kept becomes the case's proposal, on the record."""
    with session_scope() as session:
        out = _checked_day(session, case_id, day, start, at)
        if out["problem"]:
            return out
        case = _case(session, case_id)
        suggested = case.data.get("suggested_day") or case.data.get("proposed_day")
        case.data = {
            **case.data,
            "suggested_day": suggested,
            "proposed_day": out["day"],
            "proposed_start": out["start"],
        }
        case.updated_at = at
        session.add(case)
        append_event(
            session,
            case_id,
            "date_proposed",
            at=at,
            actor=by,
            data={"day": out["day"], "start": out["start"], "suggested": suggested},
            key="date-proposed",
        )
    return out


@step("propose-again", title="重新建议巡检日期 / propose the date again")
def propose_again(case_id: int, at: datetime) -> str:
    """The earliest day that, seen from `at`, still leaves room for the notice and the answer (the
    proposal confirmed too late for its own notice is replaced by this one)."""
    with session_scope() as session:
        contract = session.get(Contract, _case(session, case_id).contract_id)
        assert contract is not None
        today = local_day(at, contract.timezone)
        return rules.proposed_day(
            calendar_for(session, contract.calendar), planned_on=today, window_start=today, window_end=today
        ).isoformat()


@step("link-repair", title="关联维修单 / link the repair")
def link_repair(case_id: int, version: int, target: str, code: str, run_id: str) -> None:
    """Remember which repair run a checklist problem started."""
    with session_scope() as session:
        row = session.exec(
            select(ChecklistResult).where(
                ChecklistResult.case_id == case_id,
                ChecklistResult.version == version,
                ChecklistResult.target == target,
                ChecklistResult.item_code == code,
            )
        ).first()
        if row is not None and row.repair_run_id is None:
            row.repair_run_id = run_id
            session.add(row)


@step("inspection-report-context", title="巡检报告内容 / report context", key="v{version}")
def report_context(case_id: int, version: int) -> dict[str, Any]:
    """What the inspection report (巡检报告) shows: customer, date, work done, each device's state."""
    with session_scope() as session:
        case = _case(session, case_id)
        rows = session.exec(
            select(ChecklistResult)
            .where(ChecklistResult.case_id == case_id, ChecklistResult.version == version)
            .order_by(col(ChecklistResult.id))
        ).all()
        pre: dict[str, Any] = next(
            (
                e.data.get("prechecks", {})
                for e in session.exec(
                    select(Event).where(Event.case_id == case_id, Event.key == f"checklist:v{version}")
                )
            ),
            {},
        )
        spec = checklist_spec(session, case_id)
        labels = {t["target"]: t["label"] for t in spec["targets"]}
        targets: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            targets.setdefault(labels.get(r.target, r.target), []).append(
                {
                    "item": r.item_label,
                    "result": RESULT_ZH[ItemResult(r.result)],
                    "note": r.note,
                    "handling": "现场已处理"
                    if r.fixed_on_site
                    else ("已转维修" if r.result == ItemResult.ABNORMAL else ""),
                }
            )
        return {
            "visit_day": case.data.get("visit_day", ""),
            "period": rules.period_words(case.period),
            "prechecks": pre,
            "targets": [{"label": k, "items": v} for k, v in targets.items()],
        }


@step("cancel-step", title="取消巡检 / cancel")
def cancel_step(case_id: int, reason: str, by: str, at: datetime) -> bool:
    """The customer's cancellation, from a flow: recorded, everyone told."""
    return cancel_inspection(case_id, reason, by=by, now=at)


@step("start-problem-repair", title="巡检问题转维修 / start a repair", transactional=False)  # a Prefect run
def start_problem_repair(case_id: int, version: int, n: int, problem: dict[str, Any], at: datetime) -> str:
    """A problem not fixed on site becomes its own repair flow, linked to this inspection; returns the run id."""
    with session_scope() as session:
        case = _case(session, case_id)

        customer = session.get(Customer, case.customer_id)
        assert customer is not None
        code = customer.code
    request = RepairRequest(
        customer=code,
        site=problem.get("site"),
        device=problem.get("serial"),
        reported_by="巡检工程师",
        channel=Channel.INSPECTION,
        severity=int(problem.get("severity") or PROBLEM_SEVERITY_DEFAULT),
        reported_at=at,
        description=f"巡检发现：{problem['target_label']}·{problem['label']}：{problem['note']}",
        parent_case_id=case_id,
    )
    # keyed by the checklist item, not the version: a report sent back and filled in again starts no second repair
    return start_repair_run.fn(
        request, idempotency_key=f"{case_id}:checklist:{problem['target']}:{problem['code']}"
    )


# a batch committed per contract (idempotent), not one transaction
@step("plan-inspections-step", title="巡检计划 / plan the due inspections", transactional=False)
def plan_inspections_step(now: datetime) -> int:
    """Create the inspections due on `now` (idempotent); returns how many were new."""
    return len(plan_inspections(now).created)


@step("start-runs-step", title="启动巡检流程 / start the runs", transactional=False)  # Prefect runs
def start_runs_step(now: datetime) -> int:
    """Start the run of every planned inspection without one (idempotent by key)."""
    return start_inspection_runs(now)


# ---- an extra inspection on request (the `extra-inspection` deployment, `aftercare inspection extra`) ----


@step("open-extra-step", title="登记加做巡检 / register the extra inspection")
def open_extra_step(request: ExtraInspectionRequest, at: datetime) -> dict[str, Any]:
    """Register the extra inspection: {"error": "" or what to correct, "case_id", "number", ...}."""
    try:
        opened = open_extra_inspection(request, now=at)
    except InspectionError as exc:
        return {"error": str(exc)}
    return {
        "error": "",
        "case_id": opened.case_id,
        "number": opened.number,
        "created": opened.created,
        "customer": opened.customer,
        "site": opened.site,
        "day": opened.day.isoformat(),
    }


@step("start-run-step", title="启动巡检流程 / start its run", transactional=False)  # a Prefect run
def start_run_step(case_id: int, at: datetime) -> str:
    """Start the inspection's own run (idempotent by its key); returns the run id."""
    return start_inspection_run(case_id, now=at)


# ---- a cancellation from the centre (`aftercare inspection cancel`) -------------------------------


def end_waiting_run(case_id: int, now: datetime, *, url: str | None = None) -> str:
    """After a cancellation: let the inspection's (or a drill's: any dated case) run end now instead of
    waiting for a day or an answer that will not come. Returns what happened, for the person who cancelled.

    - Its timers (notice, re-confirmation, visit) are fired now: the run, woken here or by the
      keeper's next tick (the fired row is the truth, the wake only a wake-up), finds the
      inspection cancelled and completes with "cancelled".
    - A run waiting for a person's answer (the date form, the re-confirmation) is cancelled in
      Prefect: a suspended run holds no process, so nothing else needs stopping.
    - A run that is executing checks the cancellation after its next wait.
    Never raises for Prefect being unreachable: the timers are fired, the keeper wakes the run.
    """
    from uuid import UUID

    with session_scope(url) as session:
        case = session.get(Case, case_id)
        if case is None:
            raise InspectionError(f"案件 {case_id} 不存在 / no case {case_id}")
        run_id, what = case.flow_run_id, CASE_KIND_ZH.get(CaseKind(case.kind), "")
        session.execute(
            sa.update(Timer)
            .where(col(Timer.case_id) == case_id, col(Timer.fired_at).is_(None))
            .values(fired_at=now)
        )
        timers = [
            (t.id, t.flow_run_id, t.key)
            for t in session.exec(
                select(Timer).where(Timer.case_id == case_id, col(Timer.resumed_at).is_(None))
            )
        ]
    if not run_id:
        return "尚未启动流程 / no run yet"
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelling

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(run_id)).state
            if state is None or state.is_final():
                return "流程已结束 / the run has ended"
            on_timer = (state.state_details.pause_key or "").startswith(timer_key(""))
            if state.is_paused() and not on_timer:
                client.set_flow_run_state(UUID(run_id), Cancelling(message=f"{what}已取消 / cancelled"))
                return "等待中的流程已取消 / the waiting run is cancelled"
    except Exception as exc:  # Prefect unreachable: the timers are fired, the keeper wakes the run
        from prefect.exceptions import ObjectNotFound

        if isinstance(exc, ObjectNotFound):
            return "Prefect 中没有此流程 / no such run"
        return f"Prefect 不可达（{type(exc).__name__}），时钟守护将唤醒流程 / the keeper will wake the run"
    woken = False
    for timer_id, flow_run_id, key in timers:
        outcome = wake_run(flow_run_id, timer_key(key))
        if outcome is not Wake.NOT_YET:
            woken = woken or outcome is Wake.RESUMED
            with session_scope(url) as session:
                session.execute(sa.update(Timer).where(col(Timer.id) == timer_id).values(resumed_at=now))
    if woken:
        return "流程已唤醒，将以“已取消”结束 / the run is woken and ends as cancelled"
    return "流程将在下一步检查到取消后结束 / the run ends at its next check"


# ---- the editable checklists (`aftercare checklist ...`) ----------------------------------------

_CODE = r"[a-z][a-z0-9_]{0,39}"


def checklist_items(session: Session, kind: str | None = None) -> list[Any]:
    """Every checklist item (active or not), by device class and position; `kind` narrows to one class."""
    ensure_checklists(session)
    query = select(ChecklistItem)
    if kind:
        query = query.where(ChecklistItem.device_class == kind.strip())
    return list(
        session.exec(
            query.order_by(
                col(ChecklistItem.device_class), col(ChecklistItem.position), col(ChecklistItem.id)
            )
        ).all()
    )


def add_checklist_item(
    session: Session, kind: str, code: str, label: str, *, position: int | None = None
) -> Any:
    """Add an item to a device class's checklist (last, unless `position`); inspections asked for from now on get it."""
    import re

    kind, code, label = kind.strip(), code.strip(), label.strip()
    for name, value in (("设备类别 / kind", kind), ("编码 / code", code)):
        if not re.fullmatch(_CODE, value):
            raise InspectionError(f"{name} 应为小写字母开头的字母、数字或下划线（≤40 个），不是 {value!r}")
    if not label or len(label) > 200:
        raise InspectionError("请填写检查项名称（1–200 字）/ a label of 1–200 characters is required")
    items = checklist_items(session, kind)  # seeds an empty table first: an addition never hides the seed
    found = next((i for i in items if i.code == code), None)
    if found is not None:
        state = "启用" if found.active else "已停用，可用 checklist on 重新启用"
        raise InspectionError(f"{kind} 已有检查项 {code}（{found.label}，{state}）/ the item exists")
    item = ChecklistItem(
        device_class=kind,
        code=code,
        label=label,
        position=position if position is not None else max((i.position for i in items), default=-1) + 1,
    )
    session.add(item)
    session.flush()
    return item


def change_checklist_item(
    session: Session,
    code: str,
    *,
    kind: str | None = None,
    active: bool | None = None,
    label: str | None = None,
    position: int | None = None,
) -> list[Any]:
    """Switch an item off or on, rename or move it; `kind` picks the class when the code is in several.

    Returns the items changed. A change applies to checklists asked for from now on: a form already
    sent keeps the items it showed.
    """
    code = code.strip()
    found = [i for i in checklist_items(session, kind) if i.code == code]
    if not found:
        where = f"设备类别 {kind} 中" if kind else ""
        raise InspectionError(
            f"{where}没有编码为 {code!r} 的检查项（aftercare checklist show 可查看）/ no such item"
        )
    if len(found) > 1:
        kinds = "、".join(i.device_class for i in found)
        raise InspectionError(f"编码 {code} 在多个设备类别中：{kinds}；请用 --kind 指定 / name the kind")
    if label is not None and not (0 < len(label.strip()) <= 200):
        raise InspectionError("请填写检查项名称（1–200 字）/ a label of 1–200 characters is required")
    item: ChecklistItem = found[0]
    if active is not None:
        item.active = active
    if label is not None:
        item.label = label.strip()
    if position is not None:
        item.position = position
    session.add(item)
    session.flush()
    return found


# ---- the report when the customer does not sign ---------------------------------------------------


@step("report-version", title="巡检报告版本 / report version", key="{key}")
def report_version(case_id: int, key: str) -> int:
    """The version of the inspection report issued for `key` ("checklist-v2", "unsigned-v1"), or the next one.

    A checklist filled in again and a report re-issued with the department manager's note each
    become a new version of the one 巡检报告; the version the customer signs is the version the
    signature approval carries (web/reports.py finds it by that).
    """
    with session_scope() as session:
        reports = session.exec(
            select(Report).where(Report.case_id == case_id, Report.kind == "inspection_report")
        ).all()
        same = next((r.version for r in reports if (r.data or {}).get("report_key") == key), None)
        return same if same is not None else max((r.version for r in reports), default=0) + 1
