"""What a dispatcher sees of the running procedures: the board's rows, the flow runs' names and
what a suspended run says it waits for (调度看板 / 流程运行名称 / 等待说明).

One description of a wait serves three readers: the board at the web root (`board(...)`), the
Suspended state's message in the Prefect UI and the case's markdown artifact there
(`suspend_announced(...)`, the one place a waiting run announces itself):

    等待客户 李先生 签收维修服务报告（链接已发送，2026-11-25 10:00 前有效）
    等待回访时间到 2026-11-24 10:00

Runs are named after their case — `WX-000001 故障维修 北京某银行` — by `run_name` (the flows'
`flow_run_name`, evaluated by Prefect each time a run's process starts) and, right after intake
made the case, by `name_run(case_id)`.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, overload

from sqlmodel import Session, col, select

from models import Case, CaseKind, Contact, Contract, Customer, Site, Staff
from models.approvals import Approval, ApprovalKind, ApprovalStatus, Timer
from models.cases import CASE_KIND_ZH, ENDED_STATUSES, CaseStatus
from models.clocks import Clock, ClockStatus
from models.db import session_scope
from models.parties import ROLE_LABELS_ZH, Role
from models.reports import REPORT_TITLES_ZH, Report
from models.settings import get_settings
from rules.kpi import CLOCK_ZH
from rules.sla import severity_text
from tasks.render import _local_time

log = logging.getLogger("aftercare.board")

T = TypeVar("T")

# A case in one of these has nothing left to wait for, even where `closed_at` is not set
# (a registered inspection stays on record as such).
DONE_STATUSES = ENDED_STATUSES | {CaseStatus.REGISTERED}

# The run-name word of each procedure (the flow's name → Chinese).
PROCEDURE_ZH: dict[str, str] = {
    "repair": "故障维修",
    "accident": "事故处理",
    "inspection": "巡检",
    "extra-inspection": "加做巡检",
    "assurance": "重要通信保障",
    "drill": "应急演练",
    "survey-now": "发起满意度调查",
}

# What a timer of `wait_until` waits for (its key, without a loop count).
TIMER_ZH: dict[str, str] = {
    "callback-due": "回访时间",
    "notice": "巡检通知日",
    "reconfirm": "巡检再确认日",
    "visit": "巡检日",
    "roster-ask": "值班表编制日",
    "roster-due": "值班表发给客户的期限",
    "period-start": "保障期开始",
    "period-end": "保障期结束",
    "drill-notice": "演练通知日",
    "drill-reconfirm-day": "演练再确认日",
    "drill-start": "演练开始时间",
}

# ---------------------------------------------------------------------------------------------
# One wait, in words


@dataclass(frozen=True)
class Waiting:
    """One thing a case waits for: a person's answer (approval, signature, form) or a timer."""

    kind: str  # approval | signature | form | timer
    what: str  # the step, in Chinese: 签收维修服务报告
    who: str  # 客户 李先生 / 技术总监 赵六 / "" for a timer
    since: datetime
    until: datetime | None  # the link's validity (a person) or the timer's due time
    text: str  # the sentence: 等待客户 李先生 签收维修服务报告（链接已发送，… 前有效）
    flow_run_id: str | None = None


_CASE_PREFIX = re.compile(r"^(【[^】]*】)?\s*[A-Z]{2}-\d+\s*")
_PROCEDURE_PREFIX = re.compile(r"^(" + "|".join(CASE_KIND_ZH.values()) + r")[：:]\s*")
_AWAITS_APPROVAL = re.compile(r"^(.+?)\s*待\S*?(审批|签批)$")


def step_words(subject: str) -> str:
    """The step of an approval's subject, as an action: "【…】WX-000012 故障维修：请签收维修服务报告"
    → "签收维修服务报告"; "维修遇到异常，请指导" → "指导（维修遇到异常）"."""
    text = _PROCEDURE_PREFIX.sub("", _CASE_PREFIX.sub("", subject.strip()), count=1).strip()
    if text.startswith("请"):
        return text[1:]
    asked = re.fullmatch(r"(.+?)[，,]\s*请(.+)", text)
    if asked:
        return f"{asked[2]}（{asked[1]}）"
    return text.replace("请", "", 1)


def _people(session: Session, row: Approval) -> str:
    if row.approver_contact_ids:
        names = [c.name for c in (session.get(Contact, i) for i in row.approver_contact_ids) if c is not None]
        return f"客户 {'、'.join(names)}" if names else "客户"
    names = [s.name for s in (session.get(Staff, i) for i in row.approver_staff_ids) if s is not None]
    role = ROLE_LABELS_ZH.get(Role(row.approver_role), "") if row.approver_role in set(Role) else ""
    return " ".join(part for part in (role, "、".join(names)) if part)


def approval_waiting(session: Session, row: Approval) -> Waiting:
    """What a pending approval, signature or form waits for, and from whom."""
    who = _people(session, row)
    action = step_words(row.subject)
    awaited = _AWAITS_APPROVAL.fullmatch(action)
    if awaited:  # "解决方案 v1 待技术总监审批" → 审批：解决方案 v1
        what = f"{awaited[2]}：{awaited[1]}"
    elif row.kind == ApprovalKind.APPROVAL and "审批" not in action:
        what = f"审批：{action}"
    else:
        what = action
    until = f"（链接已发送，{_local_time(row.expires_at)} 前有效）"
    return Waiting(
        kind=row.kind,
        what=what,
        who=who,
        since=row.created_at,
        until=row.expires_at,
        text=f"等待{who} {what}{until}",
        flow_run_id=row.flow_run_id,
    )


def timer_waiting(timer: Timer) -> Waiting:
    """What a timer waits for: the moment it is due."""
    base = re.sub(r"-\d+$", "", timer.key)
    label = TIMER_ZH.get(base, "定时")
    return Waiting(
        kind="timer",
        what=f"{label}到 {_local_time(timer.due_at)}",
        who="",
        since=timer.created_at,
        until=timer.due_at,
        text=f"等待{label}到 {_local_time(timer.due_at)}",
        flow_run_id=timer.flow_run_id,
    )


# ---------------------------------------------------------------------------------------------
# The board


@dataclass
class ClockLine:
    kind: str
    label: str
    due_at: datetime | None
    breached: bool
    provisional: bool
    paused: bool


@dataclass
class ReportLink:
    title: str
    version: int
    report_id: int
    status: str


@dataclass
class BoardCase:
    """One open case as the board shows it."""

    id: int
    number: str
    kind: str
    kind_zh: str
    customer: str
    site: str
    title: str
    severity: int | None
    severity_text: str  # the level said once, in the contract's scheme: "1 级（特大故障）", "三级"
    paid: bool
    paid_reason: str
    status: str
    reported_at: datetime
    updated_at: datetime
    flow_run_id: str | None
    waits: list[Waiting] = field(default_factory=list)
    clocks: list[ClockLine] = field(default_factory=list)
    reports: list[ReportLink] = field(default_factory=list)

    @property
    def deadline(self) -> ClockLine | None:
        """The next deadline of its running clocks (a breached one first: it is the most urgent)."""
        running = [c for c in self.clocks if c.due_at is not None and not c.paused]
        return min(running, key=lambda c: (not c.breached, c.due_at)) if running else None

    @property
    def breached(self) -> bool:
        return any(c.breached for c in self.clocks)

    @property
    def since(self) -> datetime:
        """Since when it waits: its oldest pending wait, else its last change."""
        return min((w.since for w in self.waits), default=self.updated_at)

    @property
    def run_id(self) -> str | None:
        """The Prefect run to open: the one its current wait belongs to, else the case's run."""
        return next((w.flow_run_id for w in self.waits if w.flow_run_id), None) or self.flow_run_id


def open_cases(session: Session, limit: int) -> list[Case]:
    query = (
        select(Case)
        .where(col(Case.closed_at).is_(None), col(Case.status).not_in(DONE_STATUSES))
        .order_by(col(Case.reported_at))
        .limit(limit)
    )
    return list(session.exec(query).all())


LAPSED_DAYS = 30  # how long the board lists a contract that ended without renewal


@dataclass(frozen=True)
class LapsedContract:
    """A contract that ended recently and was not renewed: its customer's new requests are paid service."""

    code: str
    customer: str
    end: str


def lapsed_contracts(session: Session, *, now: datetime, days: int = LAPSED_DAYS) -> list[LapsedContract]:
    """Contracts ended within the last `days` days (business time zone) whose customer has no contract
    in force today (PROCEDURES.md §6 step 7: the dispatcher must see that new requests are paid)."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    today = now.astimezone(ZoneInfo(get_settings().timezone)).date()
    ended = session.exec(
        select(Contract, Customer)
        .join(Customer, col(Customer.id) == col(Contract.customer_id))
        .where(Contract.end_date < today, Contract.end_date >= today - timedelta(days=days))
        .order_by(col(Contract.end_date).desc())
    ).all()
    found = []
    for contract, customer in ended:
        active = session.exec(
            select(Contract.id).where(
                Contract.customer_id == customer.id, Contract.start_date <= today, Contract.end_date >= today
            )
        ).first()
        if active is None:
            found.append(LapsedContract(contract.code, customer.name, contract.end_date.isoformat()))
    return found


def board(session: Session, *, now: datetime, limit: int = 500) -> list[BoardCase]:
    """The open cases, each with what it waits for, for whom, since and until when; the most
    urgent first (a breached clock, then the nearest deadline, then severity)."""
    cases = open_cases(session, limit)
    ids = [c.id for c in cases if c.id is not None]
    if not ids:
        return []
    customers = {
        c.id: c
        for c in session.exec(select(Customer).where(col(Customer.id).in_({c.customer_id for c in cases})))
    }
    contract_ids = {c.contract_id for c in cases if c.contract_id is not None}
    schemes = {
        k.id: k.severity_scheme
        for k in session.exec(select(Contract).where(col(Contract.id).in_(contract_ids)))
    }
    site_ids = {c.site_id for c in cases if c.site_id is not None}
    sites = (
        {s.id: s for s in session.exec(select(Site).where(col(Site.id).in_(site_ids)))} if site_ids else {}
    )

    waits: dict[int, list[Waiting]] = defaultdict(list)
    pending = session.exec(
        select(Approval)
        .where(col(Approval.case_id).in_(ids), Approval.status == ApprovalStatus.PENDING)
        .order_by(col(Approval.created_at), col(Approval.id))
    )
    for row in pending:
        waits[row.case_id].append(approval_waiting(session, row))
    timers = session.exec(
        select(Timer)
        .where(col(Timer.case_id).in_(ids), col(Timer.fired_at).is_(None))
        .order_by(col(Timer.due_at))
    )
    for timer in timers:
        if timer.case_id is not None:
            waits[timer.case_id].append(timer_waiting(timer))

    clocks: dict[int, list[ClockLine]] = defaultdict(list)
    running = session.exec(
        select(Clock)
        .where(col(Clock.case_id).in_(ids), col(Clock.status).in_([ClockStatus.RUNNING, ClockStatus.PAUSED]))
        .order_by(col(Clock.due_at))
    )
    for clock in running:
        breached = clock.breached_at is not None or (
            clock.status == ClockStatus.RUNNING and clock.due_at is not None and clock.due_at <= now
        )
        clocks[clock.case_id].append(
            ClockLine(
                kind=clock.kind,
                label=CLOCK_ZH.get(clock.kind, clock.kind),
                due_at=clock.due_at,
                breached=breached,
                provisional=clock.provisional,
                paused=clock.status == ClockStatus.PAUSED,
            )
        )

    reports: dict[int, dict[str, ReportLink]] = defaultdict(dict)
    for report in session.exec(
        select(Report).where(col(Report.case_id).in_(ids)).order_by(col(Report.kind), col(Report.version))
    ):
        assert report.id is not None
        reports[report.case_id][report.kind] = ReportLink(  # the newest version of each kind
            title=report.title or REPORT_TITLES_ZH.get(report.kind, report.kind),
            version=report.version,
            report_id=report.id,
            status=report.status,
        )

    out = []
    for case in cases:
        assert case.id is not None
        customer = customers.get(case.customer_id)
        site = sites.get(case.site_id) if case.site_id else None
        out.append(
            BoardCase(
                id=case.id,
                number=case.number,
                kind=case.kind,
                kind_zh=CASE_KIND_ZH.get(CaseKind(case.kind), case.kind)
                if case.kind in set(CaseKind)
                else case.kind,
                customer=customer.name if customer else "",
                site=site.name if site else "",
                title=case.title,
                severity=case.severity,
                severity_text=severity_text(
                    schemes.get(case.contract_id) if case.contract_id else None, case.severity
                ),
                paid=case.out_of_contract,
                paid_reason=str(case.data.get("paid_service_reason") or ""),
                status=case.status,
                reported_at=case.reported_at,
                updated_at=case.updated_at,
                flow_run_id=case.flow_run_id,
                waits=waits.get(case.id, []),
                clocks=clocks.get(case.id, []),
                reports=list(reports.get(case.id, {}).values()),
            )
        )
    far = datetime.max.replace(tzinfo=now.tzinfo)
    out.sort(
        key=lambda c: (
            not c.breached,
            c.deadline.due_at if c.deadline and c.deadline.due_at else far,
            c.severity or 5,
            c.reported_at,
        )
    )
    return out


# ---------------------------------------------------------------------------------------------
# Run names


def case_run_name(session: Session, case: Case, procedure: str | None = None) -> str:
    """`WX-000001 故障维修 北京某银行`: what the Prefect UI lists the case's run as."""
    customer = session.get(Customer, case.customer_id)
    kind = procedure or (
        CASE_KIND_ZH.get(CaseKind(case.kind), case.kind) if case.kind in set(CaseKind) else case.kind
    )
    return " ".join(part for part in (case.number, kind, customer.name if customer else "") if part)


def _requested_customer(parameters: dict[str, Any]) -> str:
    request = parameters.get("request")
    if isinstance(request, dict):
        return str(request.get("customer") or "")
    return str(getattr(request, "customer", "") or "")


def run_name() -> str:
    """The flows' `flow_run_name`: the run's case once it exists (found by the run's id, or the
    `case_id` parameter); before intake the procedure and the customer as entered. Never raises:
    a name is not worth a failed run."""
    from prefect.runtime import flow_run

    flow_name = str(flow_run.flow_name or "")
    procedure = PROCEDURE_ZH.get(flow_name, flow_name)
    parameters: dict[str, Any] = {}
    try:
        parameters = dict(flow_run.parameters or {})
        with session_scope() as session:
            case = None
            if isinstance(parameters.get("case_id"), int):
                case = session.get(Case, parameters["case_id"])
            elif flow_run.id:
                case = session.exec(select(Case).where(Case.flow_run_id == str(flow_run.id))).first()
            if case is not None:
                return case_run_name(session, case, procedure if flow_name == "extra-inspection" else None)
    except Exception as exc:  # noqa: BLE001 - the database unreachable at start: the name can wait
        log.warning("flow run name: case not read (%s): %s", type(exc).__name__, exc)
    return " ".join(part for part in (procedure, _requested_customer(parameters)) if part) or flow_name


def name_run(case_id: int, procedure: str | None = None) -> None:
    """Name the current flow run after its case, right after intake made it (a replay finds the
    name already set by `run_name` and changes nothing). Never raises."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    try:
        with session_scope() as session:
            case = session.get(Case, case_id)
            if case is None:
                return
            name = case_run_name(session, case, procedure)
        if context.flow_run.name == name:
            return
        with get_client(sync_client=True) as client:
            client.set_flow_run_name(context.flow_run.id, name)
        context.flow_run.name = name
    except Exception as exc:  # noqa: BLE001 - a run without its case's name still runs
        log.warning("flow run of case %s not renamed (%s): %s", case_id, type(exc).__name__, exc)


# ---------------------------------------------------------------------------------------------
# Announcing a wait: the Suspended state's message and the case's artifact


def describe_wait(
    *, approval_id: int | None = None, timer_id: int | None = None
) -> tuple[Case, Waiting] | None:
    """The case and the sentence of a wait (None if it cannot be read: the wait goes on unannounced)."""
    try:
        with session_scope() as session:
            waiting: Waiting | None = None
            case_id: int | None = None
            if approval_id is not None:
                row = session.get(Approval, approval_id)
                if row is not None:
                    waiting, case_id = approval_waiting(session, row), row.case_id
            elif timer_id is not None:
                timer = session.get(Timer, timer_id)
                if timer is not None:
                    waiting, case_id = timer_waiting(timer), timer.case_id
            case = session.get(Case, case_id) if case_id is not None else None
            if waiting is None or case is None:
                return None
            session.expunge(case)
            return case, waiting
    except Exception as exc:  # noqa: BLE001 - a wait must not fail for want of its description
        log.warning("wait not described (%s): %s", type(exc).__name__, exc)
        return None


def artifact_markdown(case: Case, waiting: Waiting, customer: str) -> str:
    """The case's artifact in the Prefect UI: what the run waits for, for whom, since and until when."""
    rows = [
        ("工单", f"{case.number} {CASE_KIND_ZH.get(CaseKind(case.kind), case.kind)}"),
        ("客户", customer),
        ("等待", waiting.what),
        ("等待谁", waiting.who or "—（定时，到时自动继续）"),
        ("开始等待", _local_time(waiting.since)),
        ("链接有效期至" if waiting.kind != "timer" else "到期时间", _local_time(waiting.until)),
    ]
    if case.out_of_contract:
        rows.append(("服务性质", "合同外 · 有偿服务"))

    def cell(text: str) -> str:  # a table cell: no pipe, no line break
        return " ".join(text.replace("|", "｜").split())

    lines = [f"### {cell(waiting.text)}", "", "| 项目 | 内容 |", "|---|---|"]
    lines += [f"| {label} | {cell(value)} |" for label, value in rows]
    lines += ["", f"调度看板：{get_settings().web_base_url}/"]
    return "\n".join(lines)


def _publish(case: Case, waiting: Waiting) -> None:
    """The case's markdown artifact (key per case: each wait is a new version of it). Never raises."""
    from prefect.artifacts import create_markdown_artifact

    try:
        with session_scope() as session:
            customer = session.get(Customer, case.customer_id)
            name = customer.name if customer else ""
        create_markdown_artifact(
            markdown=artifact_markdown(case, waiting, name),
            key=f"case-{case.number.lower()}",
            description=waiting.text,
        )
    except Exception as exc:  # noqa: BLE001 - the run waits all the same
        from prefect import get_run_logger

        get_run_logger().warning("artifact of %s not written (%s): %s", case.number, type(exc).__name__, exc)


@overload
def suspend_announced(
    key: str, wait_for_input: None = None, *, approval_id: int | None = None, timer_id: int | None = None
) -> None: ...


@overload
def suspend_announced(
    key: str, wait_for_input: type[T], *, approval_id: int | None = None, timer_id: int | None = None
) -> T: ...


def suspend_announced(
    key: str,
    wait_for_input: type[T] | None = None,
    *,
    approval_id: int | None = None,
    timer_id: int | None = None,
) -> T | None:
    """Prefect's `suspend_flow_run(wait_for_input, key=key)` — whose Suspended state carries, in
    Chinese, what the run waits for and from whom — and, once suspended, the case's artifact.

    Prefect 3.8's `suspend_flow_run` proposes `Suspended(pause_key=…)` with no message, and a
    message cannot be added afterwards (a second Suspended is refused; forcing one could undo a
    resume that came in between). So these are Prefect's own steps of `suspend_flow_run` with a
    message in the proposed state: propose → already fired and resumed: return the input → else
    save the input schema, mark the suspension, raise `Pause` (the engine ends the process).
    Called in a flow body: the description is read here, not in a task, because it decides
    nothing (the run continues the same whatever it says) and a replay that reaches a fired wait
    only reads it; the artifact is written only when the run really suspends.
    """
    from prefect import get_run_logger
    from prefect._flow_run_suspension import mark_flow_run_suspension_requested
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.exceptions import Abort, Pause
    from prefect.input import keyset_from_paused_state
    from prefect.input.run_input import run_input_subclass_from_type
    from prefect.states import State, Suspended
    from prefect.utilities.engine import propose_state_sync

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("Flow runs can only be suspended from within a flow run.")
    found = describe_wait(approval_id=approval_id, timer_id=timer_id)
    state: State[Any] = Suspended(pause_key=key, message=found[1].text if found else None)
    form = run_input_subclass_from_type(wait_for_input) if wait_for_input is not None else None
    keyset: Any = keyset_from_paused_state(state) if form is not None else None
    state.state_details.run_input_keyset = keyset
    with get_client(sync_client=True) as client:
        try:
            state = propose_state_sync(client=client, state=state, flow_run_id=context.flow_run.id)
        except Abort as exc:
            raise RuntimeError(f"Flow run cannot be suspended: {exc}") from exc
        if state.is_running():  # this wait fired before and the run was resumed: its answer
            return form.load(keyset) if form is not None and keyset is not None else None  # type: ignore[return-value]
        if not state.is_paused():
            raise RuntimeError(f"Flow run cannot be suspended. Received unexpected state from API: {state}")
        if form is not None and keyset is not None:
            form.save(keyset)
    if found:
        get_run_logger(context=context).info("挂起 / suspended: %s", found[1].text)
        _publish(*found)
    mark_flow_run_suspension_requested(context.flow_run.id, state)
    raise Pause(state=state)
