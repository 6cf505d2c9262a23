"""The emergency drill's steps (应急演练, PROCEDURES.md §5): opening a drill (scheduled per contract
and period, or on request), the recovery plan and the drill plan as versioned rows, the drill day on
the working-day calendar with its notice and re-confirmation, the results recorded step by step,
the evaluation behind the 演练报告, and the follow-up training.

Each `@step` opens its own session (tasks.ledger: the effect and the ledger row in one transaction).
Plain functions beside them (`plan_drills`, `open_drill_case`, …) are what the CLI and tests call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

import pendulum
import sqlalchemy as sa
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from models.cases import Case, CaseKind, CaseStatus, Event, add_period_case, append_event
from models.contracts import Contract
from models.db import insert_ignore, session_scope
from models.drill import DrillPlan, DrillStepResult, RecoveryPlan, StepResult, TrainingTask
from models.forms import DrillEvaluationForm, DrillPlanForm, DrillStepForm, RecoveryPlanForm
from models.parties import Customer, Role
from rules import drill as rules
from tasks.cases import (
    CaseFacts,
    IntakeError,
    blank_none,
    case_facts,
    contract_on,
    find_customer,
    queue_for_case,
    remember_run,
    set_status,
)
from tasks.clocks import load_calendar
from tasks.inspection import local_day, record_move
from tasks.ledger import step

DRILL_DEPLOYMENT = "drill/drill"
DEFAULT_SYSTEM = "核心业务系统"  # a scheduled drill of a customer without a recovery plan yet
DEFAULT_START = "09:30"
PARTICIPANT_ROLES = (Role.TECHNICAL_LEAD, Role.ENGINEER, Role.TECHNICAL_DIRECTOR)  # the provider's side
STARTED = frozenset(
    {CaseStatus.ON_SITE, CaseStatus.REPORT_PENDING, CaseStatus.SUBMITTED, CaseStatus.REGISTERED}
)


class DrillError(ValueError):
    """Bad input for a drill step; the message says what, for a person."""


def customer_in_contract(session: Session, name: str, now: datetime, what: str) -> tuple[Customer, Contract]:
    """The customer named on a drill's form and its contract in force `now` (tasks.cases.contract_on);
    DrillError says which is missing (`what`: what cannot be done without it)."""
    try:
        customer = find_customer(session, name)
    except IntakeError as exc:
        raise DrillError(str(exc)) from None
    contract, out_of_contract = contract_on(session, customer, now)
    if contract is None or out_of_contract:
        raise DrillError(f"{customer.name} 没有有效合同，无法{what} / no contract in force")
    return customer, contract


def read_kind(value: Any) -> Any:
    """A kind of drill as the form offers it ("主备切换演练") or its code ("failover")."""
    if isinstance(value, str):
        text = value.strip()
        for code, label in rules.DRILL_KINDS_ZH.items():
            if text in (code, label):
                return code
    return value


class DrillRequest(BaseModel):
    """What starts a drill run: a scheduled drill's case, or a request (the Prefect-UI form `drill`)."""

    case_id: int | None = None
    customer: str | None = Field(default=None, max_length=100)
    system: str = Field(default="", max_length=100)
    kind: str = Field(default="failover", max_length=40)
    wished_day: date | None = None
    day_off_ok: bool = False
    requested_by: str = Field(default="", max_length=100)

    _blank = field_validator("customer", mode="before")(blank_none)

    @field_validator("wished_day", mode="before")
    @classmethod
    def _day(cls, value: Any) -> Any:
        """The day as the run form sends it ("2026-12-19"); a day that does not exist is named in
        Chinese (pydantic's own message is English: the run's state message is what the dispatcher reads)."""
        value = blank_none(value)
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(f"无法识别的期望演练日期“{value}”，请写成 2026-12-19") from None
        return value

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        value = read_kind(value)
        if value not in rules.DRILL_KINDS_ZH:
            raise ValueError(f"未知的演练类型：{value}（可选：{'、'.join(rules.DRILL_KINDS_ZH.values())}）")
        return value

    @field_validator("day_off_ok", mode="before")
    @classmethod
    def _yes(cls, value: Any) -> Any:
        return {"是": True, "否": False, "": False}.get(value, value) if isinstance(value, str) else value


# ---- reading a drill ---------------------------------------------------------------------------------


def _case(session: Session, case_id: int) -> Case:
    case = session.get(Case, case_id)
    if case is None or case.kind != str(CaseKind.DRILL):
        raise DrillError(f"演练单 {case_id} 不存在 / no drill {case_id}")
    return case


PLAN_CASE_KINDS = frozenset({str(CaseKind.DRILL), str(CaseKind.RECOVERY_PLAN)})
MAX_VERSION_TRIES = 20  # writers of one system's plan at once, each taking the next free version


def _plan_case(session: Session, case_id: int) -> Case:
    """The case a recovery plan version is written on: a drill, or a revision between drills."""
    case = session.get(Case, case_id)
    if case is None or case.kind not in PLAN_CASE_KINDS:
        raise DrillError(f"工单 {case_id} 不存在 / no drill or recovery plan revision {case_id}")
    return case


def _contract(session: Session, case: Case) -> Contract:
    contract = session.get(Contract, case.contract_id)
    if contract is None:
        raise DrillError(f"{case.number} 没有合同 / the drill has no contract")
    return contract


@dataclass(frozen=True)
class RecoveryFacts(CaseFacts):
    """A case a recovery plan is written on (a drill, a revision between drills): the case's facts and
    the customer system the plan recovers."""

    system: str = ""


@dataclass(frozen=True)
class DrillFacts(RecoveryFacts):
    """A drill's facts: the case's, and its system, kind, period, days and what the last drill left open."""

    drill_kind: str = ""
    drill_kind_zh: str = ""
    period: str | None = None
    wished_day: str = ""
    status: str = CaseStatus.PLANNED
    notice_working_days: int = rules.NOTICE_WORKING_DAYS
    day_off_ok: bool = False  # the wished day is a day off, confirmed by whoever asked for it
    previous: dict[str, Any] = field(default_factory=dict)  # the last drill of the system: gaps, training


def previous_drill(session: Session, case: Case) -> dict[str, Any]:
    """The last finished drill of the same customer system: its gaps and whether its training is done
    (the next drill checks the gaps were closed, PROCEDURES.md §5 step 6)."""
    rows = session.exec(
        select(Case)
        .where(
            Case.kind == str(CaseKind.DRILL), Case.customer_id == case.customer_id, col(Case.id) != case.id
        )
        .order_by(col(Case.id).desc())
    ).all()
    for other in rows:
        evaluation = other.data.get("evaluation")
        if other.data.get("system") != case.data.get("system") or not evaluation:
            continue
        training = session.exec(select(TrainingTask).where(TrainingTask.case_id == other.id)).all()
        return {
            "number": other.number,
            "gaps": evaluation.get("gaps", []),
            "training": [
                {"topic": t.topic, "due_on": t.due_on.isoformat(), "done": t.done_at is not None}
                for t in training
            ],
        }
    return {}


def drill_facts(session: Session, case_id: int) -> DrillFacts:
    case = _case(session, case_id)
    settings = rules.drill_settings(_contract(session, case).sla_policy)
    kind = case.data.get("drill_kind", "failover")
    return DrillFacts(
        **case_facts(session, case_id).as_dict(),
        system=case.data.get("system", ""),
        drill_kind=kind,
        drill_kind_zh=rules.DRILL_KINDS_ZH.get(kind, kind),
        period=case.period,
        wished_day=case.data.get("wished_day", ""),
        status=case.status,
        notice_working_days=settings.notice_working_days,
        day_off_ok=bool(case.data.get("day_off_ok")),
        previous=previous_drill(session, case),
    )


@step("drill-facts", title="演练概况 / drill facts")
def load_drill(case_id: int) -> DrillFacts:
    """The drill's facts (typed)."""
    with session_scope() as session:
        return drill_facts(session, case_id)


@step("drill-cancelled", title="演练是否已取消 / cancelled?")
def is_drill_cancelled(case_id: int) -> bool:
    with session_scope() as session:
        return _case(session, case_id).status == CaseStatus.CANCELLED


# ---- opening a drill ----------------------------------------------------------------------------------


def create_drill(
    session: Session,
    contract: Contract,
    period: str,
    *,
    system: str,
    kind: str,
    wished_day: date,
    now: datetime,
    channel: str,
    requested_by: str = "",
    day_off_ok: bool = False,
) -> int | None:
    """The drill case of one contract and period (in the caller's transaction); None when it exists."""
    data = {
        "system": system,
        "drill_kind": kind,
        "wished_day": wished_day.isoformat(),
        "proposed_day": wished_day.isoformat(),  # the day a move starts from (tasks.inspection.record_move)
        "day_off_ok": day_off_ok,
    }
    return add_period_case(
        session,
        contract,
        str(CaseKind.DRILL),
        period,
        status=CaseStatus.PLANNED,
        title=f"应急演练 {system} {rules.DRILL_KINDS_ZH.get(kind, kind)}",
        description=f"{system}：{rules.DRILL_KINDS_ZH.get(kind, kind)}（期望日期 {wished_day}）",
        channel=channel,
        data=data,
        now=now,
        event="drill_planned",
        key="planned",
        reported_by=requested_by or "system",
        actor=requested_by or "system",
    )


def _latest_system(session: Session, customer_id: int) -> str:
    plan = session.exec(
        select(RecoveryPlan)
        .where(RecoveryPlan.customer_id == customer_id)
        .order_by(col(RecoveryPlan.id).desc())
    ).first()
    return plan.system if plan is not None else DEFAULT_SYSTEM


def plan_drills(now: datetime, *, url: str | None = None) -> list[int]:
    """For every contract in force that drills, the drill of the current period, created once
    (unique (kind, contract, period)); returns the new case ids."""
    created: list[int] = []
    with session_scope(url) as session:
        utc_day = now.date()
        contracts = session.exec(
            select(Contract).where(
                Contract.end_date >= date.fromordinal(utc_day.toordinal() - 1),
                Contract.start_date <= date.fromordinal(utc_day.toordinal() + 1),
            )
        ).all()
        for contract in contracts:
            try:
                settings = rules.drill_settings(contract.sla_policy)
            except rules.DrillRuleError:
                continue  # a contract's broken drill setting is refused where it is entered, not here
            today = local_day(now, contract.timezone)
            period = rules.due_drill_period(
                today,
                per_year=settings.per_year,
                contract_start=contract.start_date,
                contract_end=contract.end_date,
            )
            if period is None:
                continue
            cal = load_calendar(session, contract.calendar)
            wished = rules.proposed_drill_day(cal, today, period.end, settings.notice_working_days)
            case_id = create_drill(
                session,
                contract,
                period.label,
                system=_latest_system(session, contract.customer_id),
                kind="failover",
                wished_day=wished,
                now=now,
                channel="schedule",
            )
            if case_id is not None:
                created.append(case_id)
    return created


def idempotency_key(case: Case) -> str:
    return f"drill:{case.contract_id}:{case.period}"


def start_drill_run(case_id: int, *, now: datetime, url: str | None = None) -> str:
    """Start the run of one scheduled drill (idempotent by its contract and period); returns its id."""
    from tasks.cases import start_deployment_run

    with session_scope(url) as session:
        key = idempotency_key(_case(session, case_id))
    run_id = start_deployment_run(DRILL_DEPLOYMENT, {"request": {"case_id": case_id}}, idempotency_key=key)
    remember_run(case_id, run_id, now=now, url=url, event="drill_run_started")
    return run_id


def start_drill_runs(now: datetime, *, url: str | None = None) -> int:
    """Start the run of every planned drill without one; returns how many."""
    with session_scope(url) as session:
        pending = session.exec(
            select(Case.id).where(
                Case.kind == str(CaseKind.DRILL),
                col(Case.flow_run_id).is_(None),
                Case.status == CaseStatus.PLANNED,
            )
        ).all()
    for case_id in pending:
        start_drill_run(int(case_id), now=now, url=url)  # type: ignore[arg-type]
    return len(pending)


@step("plan-drills-step", title="演练计划 / plan the due drills", transactional=False)
def plan_drills_step(now: datetime) -> int:
    """Create the drills due on `now` (idempotent); returns how many were new."""
    return len(plan_drills(now))


@step("start-drill-runs-step", title="启动演练流程 / start the runs", transactional=False)
def start_drill_runs_step(now: datetime) -> int:
    """Start the run of every planned drill without one (idempotent by key)."""
    return start_drill_runs(now)


def open_drill_case(request: DrillRequest, *, run_id: str, now: datetime, url: str | None = None) -> int:
    """The drill this run carries: the scheduled case given (this run becomes its run), or a drill on
    request, checked and registered (one per contract, system-less day: `req-<day>`). DrillError says
    what to correct; nothing is written then."""
    with session_scope(url) as session:
        if request.case_id is not None:
            case = _case(session, request.case_id)
            if case.flow_run_id in (None, ""):
                case.flow_run_id = run_id
                session.add(case)
            return request.case_id
        if not request.customer:
            raise DrillError("请选择客户 / the customer is required")
        if not request.system.strip():
            raise DrillError("请填写演练的系统 / the system is required")
        if request.wished_day is None:
            raise DrillError("请填写期望的演练日期，如 2026-12-19 / the wished date is required")
        customer, contract = customer_in_contract(session, request.customer, now, "安排演练")
        settings = rules.drill_settings(contract.sla_policy)
        try:
            rules.check_drill_day(
                load_calendar(session, contract.calendar),
                request.wished_day,
                today=local_day(now, contract.timezone),
                notice_working_days=settings.notice_working_days,
                day_off_confirmed=request.day_off_ok,
            )
        except rules.DrillRuleError as exc:
            raise DrillError(f"期望日期无法安排：{exc}") from None
        period = f"req-{request.wished_day.isoformat()}"
        case_id = create_drill(
            session,
            contract,
            period,
            system=request.system.strip(),
            kind=request.kind,
            wished_day=request.wished_day,
            now=now,
            channel="request",
            requested_by=request.requested_by,
            day_off_ok=request.day_off_ok,
        )
        if case_id is None:  # the same request again (a form sent twice): that drill
            found = session.exec(
                select(Case).where(
                    Case.kind == str(CaseKind.DRILL), Case.contract_id == contract.id, Case.period == period
                )
            ).one()
            case_id = int(found.id)  # type: ignore[arg-type]
            if found.flow_run_id not in (None, "", run_id):
                raise DrillError(
                    f"{found.number} 已于该日登记，流程 {found.flow_run_id} / already registered"
                )
        case = _case(session, case_id)
        case.flow_run_id = run_id
        session.add(case)
        return case_id


@step("open-drill", title="登记演练 / register the drill")
def open_drill(request: DrillRequest, run_id: str, at: datetime) -> dict[str, Any]:
    """{"error": "" or what to correct, "case_id"}."""
    try:
        return {"error": "", "case_id": open_drill_case(request, run_id=run_id, now=at)}
    except (DrillError, rules.DrillRuleError) as exc:
        return {"error": str(exc), "case_id": None}


# ---- the recovery plan (versioned per customer system) --------------------------------------------------


def recovery_text(plan: RecoveryPlan) -> str:
    steps = "\n".join(
        f"  {s['position']}. {s['action']}（{s['owner'] or '—'}，预计 {s['minutes']} 分钟）"
        for s in plan.steps
    )
    return (
        f"应急恢复方案 v{plan.version}：{plan.system}\n"
        f"适用范围：{plan.scope}\n涉及系统与设备：{plan.devices}\n"
        f"恢复目标：RTO {plan.rto_minutes} 分钟，RPO {plan.rpo_minutes} 分钟\n"
        f"恢复步骤：\n{steps}\n联系人：{plan.contacts}"
        + (f"\n修订说明：{plan.reason}" if plan.reason else "")
    )


def _recovery_dict(plan: RecoveryPlan) -> dict[str, Any]:
    return {**plan.model_dump(mode="json"), "text": recovery_text(plan)}


def recovery_versions(session: Session, customer_id: int, system: str) -> list[RecoveryPlan]:
    """Every version of the system's recovery plan, oldest first (each kept and shown)."""
    return list(
        session.exec(
            select(RecoveryPlan)
            .where(RecoveryPlan.customer_id == customer_id, RecoveryPlan.system == system)
            .order_by(col(RecoveryPlan.version))
        ).all()
    )


@step("recovery-plan-in-force", title="应急恢复方案 / the recovery plan in force")
def recovery_in_force(case_id: int) -> dict[str, Any] | None:
    """The system's latest director-approved recovery plan (the one this drill exercises, noted on
    the case), or None when it has none yet."""
    with session_scope() as session:
        case = _plan_case(session, case_id)
        approved = [
            p
            for p in recovery_versions(session, case.customer_id, case.data.get("system", ""))
            if p.approved_at
        ]
        if not approved:
            return None
        case.data = {**case.data, "recovery_version": approved[-1].version}
        session.add(case)
        return _recovery_dict(approved[-1])


@step("record-recovery-plan", title="记录应急恢复方案 / store a recovery plan version", key="v{version}")
def record_recovery_plan(
    case_id: int, version: int, payload: dict[str, Any], by: str, at: datetime, reason: str = ""
) -> dict[str, Any]:
    """Store version `version` of the system's recovery plan (the form validated it); its text. When
    another revision or drill of the same system stored that number first, this one is stored as the
    next free number (`_insert_version`) and the case remembers which (`_stored_version`)."""
    form = RecoveryPlanForm.model_validate(payload)
    with session_scope() as session:
        case = _plan_case(session, case_id)
        system = case.data.get("system", "")
        existing = _plan_version(session, case, version)
        if existing is None or existing.case_id != case_id:
            existing = RecoveryPlan(
                customer_id=case.customer_id,
                system=system,
                version=version,
                scope=form.scope,
                devices=form.devices,
                rto_minutes=form.rto_minutes,
                rpo_minutes=form.rpo_minutes,
                steps=[s.model_dump() for s in rules.parse_steps(form.steps, what="恢复步骤")],
                contacts=form.contacts,
                reason="；".join(t for t in (reason, form.note) if t),
                case_id=case_id,
                created_by=by,
                created_at=at,
            )
            _insert_version(session, existing, version)
            stored = {**(case.data.get("recovery_versions") or {}), str(version): existing.version}
            case.data = {**case.data, "recovery_versions": stored}
            session.add(case)
        append_event(
            session,
            case_id,
            "recovery_plan_written",
            at=at,
            actor=by,
            data={"version": existing.version},
            key=f"recovery-v{version}",
        )
        return _recovery_dict(existing)


def _insert_version(session: Session, plan: RecoveryPlan, wanted: int) -> None:
    """Insert `plan` as version `wanted`, or as the next free number when another case's plan has it.
    Two writers of one system's plan race on the unique (customer, system, version): the insert runs
    in a SAVEPOINT and the loser takes the next number instead of failing (on PostgreSQL the second
    insert waits for the first's commit, then meets the unique violation; SQLite has one writer)."""
    for _ in range(MAX_VERSION_TRIES):
        taken = session.exec(
            select(func.max(RecoveryPlan.version)).where(
                RecoveryPlan.customer_id == plan.customer_id, RecoveryPlan.system == plan.system
            )
        ).one()
        plan.version = max(wanted, int(taken or 0) + 1)
        try:
            with session.begin_nested():
                session.add(plan)
                session.flush()
            return
        except IntegrityError:
            continue
    raise DrillError(f"无法为 {plan.system} 的应急恢复方案分配版本号，请稍后重试 / no free version number")


def _stored_version(case: Case, version: int) -> int:
    """The number version `version` of this case's plan form was stored under (record_recovery_plan)."""
    return int(((case.data or {}).get("recovery_versions") or {}).get(str(version), version))


def _plan_version(session: Session, case: Case, version: int) -> RecoveryPlan | None:
    """The stored recovery plan this case wrote as `version` (or, not written yet, the one with that number)."""
    return session.exec(
        select(RecoveryPlan).where(
            RecoveryPlan.customer_id == case.customer_id,
            RecoveryPlan.system == case.data.get("system", ""),
            RecoveryPlan.version == _stored_version(case, version),
        )
    ).first()


@step("recovery-plan-approved", title="应急恢复方案已批准 / recovery plan approved", key="v{version}")
def recovery_approved(case_id: int, version: int, at: datetime) -> dict[str, Any]:
    """Mark version `version` approved, by the director who approved it (flows.steps recorded the
    decision as the `plan_approved` event of the step `recovery-plan-approval`)."""
    with session_scope() as session:
        case = _plan_case(session, case_id)
        event = session.exec(
            select(Event).where(Event.case_id == case_id, Event.key == f"recovery-plan-approval:v{version}")
        ).first()
        by = event.actor if event is not None else "技术总监"
        plan = _plan_version(session, case, version)
        assert plan is not None, f"recovery plan v{version} of case {case_id} not stored"
        if plan.approved_at is None:
            plan.approved_by, plan.approved_at = by, at
            session.add(plan)
        case.data = {**case.data, "recovery_version": plan.version}
        session.add(case)
        return _recovery_dict(plan)


@step("next-recovery-version", title="应急恢复方案新版本号 / the next version")
def next_recovery_version(case_id: int) -> int:
    with session_scope() as session:
        case = _plan_case(session, case_id)
        found = recovery_versions(session, case.customer_id, case.data.get("system", ""))
        return (found[-1].version if found else 0) + 1


def recovery_prefill(plan: dict[str, Any]) -> dict[str, str]:
    """The form's fields filled with a recovery plan version (to revise it)."""
    return {
        "scope": plan["scope"],
        "devices": plan["devices"],
        "rto_minutes": str(plan["rto_minutes"]),
        "rpo_minutes": str(plan["rpo_minutes"]),
        "steps": rules.steps_text(plan["steps"]),
        "contacts": plan["contacts"],
    }


@step("recovery-plan-rejected", title="应急恢复方案被驳回 / recovery plan rejected", key="v{version}")
def recovery_rejected(case_id: int, version: int, at: datetime) -> None:
    """Mark version `version` rejected as a whole (驳回) by the director who said so (the decision is
    the step `recovery-plan-approval`'s event): kept and shown, never in force."""
    with session_scope() as session:
        case = _plan_case(session, case_id)
        event = session.exec(
            select(Event).where(Event.case_id == case_id, Event.key == f"recovery-plan-approval:v{version}")
        ).first()
        plan = _plan_version(session, case, version)
        assert plan is not None, f"recovery plan v{version} of case {case_id} not stored"
        if plan.rejected_at is None and plan.approved_at is None:
            plan.rejected_by, plan.rejected_at = (event.actor if event is not None else "技术总监"), at
            session.add(plan)


# ---- a revision of the recovery plan between drills (the run form `recovery-plan`) -------------------------


class RecoveryRevisionRequest(BaseModel):
    """What starts a revision of a system's recovery plan between drills (the Prefect-UI form)."""

    customer: str | None = Field(default=None, max_length=100)
    system: str = Field(default="", max_length=100)
    reason: str = Field(default="", max_length=300)
    requested_by: str = Field(default="", max_length=100)

    _blank = field_validator("customer", mode="before")(blank_none)


def open_revision_case(request: RecoveryRevisionRequest, *, run_id: str, now: datetime) -> int:
    """The revision case this run carries (a case of its own kind, so that it is never counted as a
    drill), under the customer's contract in force; one per run. DrillError says what to correct."""
    with session_scope() as session:
        if not request.customer:
            raise DrillError("请选择客户 / the customer is required")
        system, reason = request.system.strip(), request.reason.strip()
        if not system:
            raise DrillError("请填写系统 / the system is required")
        if not reason:
            raise DrillError("请填写修订原因 / the reason for the revision is required")
        customer, contract = customer_in_contract(session, request.customer, now, "修订应急恢复方案")
        period = "rev-" + run_id.replace("-", "")[:28]  # one revision per run (uq_case_period)
        # one revision of a system's plan at a time: two would both write the next version. The
        # customer's row is written first (a no-op UPDATE: a row lock on PostgreSQL, the database's
        # write lock on SQLite, whose reads alone take none), so of two revisions opened at the same
        # moment the second waits for the first's commit, then sees it and is refused.
        session.execute(sa.update(Customer).where(col(Customer.id) == customer.id).values(id=Customer.id))
        busy = open_revision_of(session, int(customer.id), system)  # type: ignore[arg-type]
        if busy is not None and busy.period != period:
            raise DrillError(revision_in_progress(busy, system))
        data = {"system": system, "reason": reason}
        case_id = add_period_case(
            session,
            contract,
            str(CaseKind.RECOVERY_PLAN),
            period,
            status=CaseStatus.OPEN,
            title=f"应急恢复方案修订 {system}",
            description=f"{system}：{reason}",
            channel="request",
            data=data,
            now=now,
            event="recovery_revision_requested",
            key="requested",
            reported_by=request.requested_by or "system",
            actor=request.requested_by or "system",
        )
        if case_id is None:  # the run again: its case
            found = session.exec(
                select(Case).where(
                    Case.kind == str(CaseKind.RECOVERY_PLAN),
                    Case.contract_id == contract.id,
                    Case.period == period,
                )
            ).one()
            case_id = int(found.id)  # type: ignore[arg-type]
        case = session.get(Case, case_id)
        assert case is not None
        case.flow_run_id = run_id
        session.add(case)
        return case_id


def open_revision_of(session: Session, customer_id: int, system: str) -> Case | None:
    """The customer's revision of `system`'s recovery plan still in progress (not closed or
    cancelled), or None."""
    cases = session.exec(
        select(Case)
        .where(
            Case.kind == str(CaseKind.RECOVERY_PLAN),
            Case.customer_id == customer_id,
            col(Case.closed_at).is_(None),
            col(Case.status).not_in((str(CaseStatus.CLOSED), str(CaseStatus.CANCELLED))),
        )
        .order_by(col(Case.id))
    ).all()
    return next((c for c in cases if (c.data or {}).get("system", "").strip() == system.strip()), None)


def revision_in_progress(case: Case, system: str) -> str:
    """The refusal of a second revision while `case` revises the same system's plan."""
    return (
        f"{system} 的应急恢复方案已有修订在进行中（{case.number}），请在该修订结束后再提出"
        f" / a revision of the {system} recovery plan is already in progress: {case.number}"
    )


@step("open-recovery-revision", title="登记应急恢复方案修订 / register the revision")
def open_recovery_revision(request: RecoveryRevisionRequest, run_id: str, at: datetime) -> dict[str, Any]:
    """{"error": "" or what to correct, "case_id"}."""
    try:
        return {"error": "", "case_id": open_revision_case(request, run_id=run_id, now=at)}
    except DrillError as exc:
        return {"error": str(exc), "case_id": None}


@step("recovery-revision-facts", title="修订概况 / revision facts")
def load_recovery_revision(case_id: int) -> RecoveryFacts:
    with session_scope() as session:
        case = _plan_case(session, case_id)
        return RecoveryFacts(**case_facts(session, case_id).as_dict(), system=case.data.get("system", ""))


@step("recovery-revision-done", title="修订结束 / the revision ends", key="{status}")
def recovery_revision_done(case_id: int, status: CaseStatus, at: datetime) -> None:
    """Closed: the new version is in force; cancelled: rejected, the version in force unchanged."""
    with session_scope() as session:
        set_status(session, case_id, status, at=at)


# ---- the drill plan (演练方案, versioned per drill) ----------------------------------------------------


def drill_plan_text(plan: DrillPlan, recovery: dict[str, Any] | None) -> str:
    steps = "\n".join(
        f"  {s['position']}. {s['action']}（{s['owner'] or '—'}，预计 {s['minutes']} 分钟）"
        for s in plan.steps
    )
    total = sum(int(s["minutes"]) for s in plan.steps)
    objective = (
        f"恢复目标（应急恢复方案 v{recovery['version']}）：RTO {recovery['rto_minutes']} 分钟，RPO {recovery['rpo_minutes']} 分钟\n"
        if recovery
        else ""
    )
    return (
        f"模拟故障：{plan.scenario}\n切换过程：{plan.failover}\n恢复（回切）过程：{plan.restore}\n"
        f"演练步骤（预计共 {total} 分钟）：\n{steps}\n{objective}"
        f"回退方案：{plan.rollback}\n客户业务窗口：{plan.business_window}\n参演人员：{plan.participants}"
    )


@step("record-drill-plan", title="记录演练方案 / store a drill plan version", key="v{version}")
def record_drill_plan(
    case_id: int, version: int, payload: dict[str, Any], by: str, at: datetime, reason: str = ""
) -> dict[str, Any]:
    """Store version `version` of the drill plan; {"text", "steps", "prefill"}."""
    form = DrillPlanForm.model_validate(payload)
    with session_scope() as session:
        case = _case(session, case_id)
        row = session.exec(
            select(DrillPlan).where(DrillPlan.case_id == case_id, DrillPlan.version == version)
        ).first()
        if row is None:
            row = DrillPlan(
                case_id=case_id,
                version=version,
                scenario=form.scenario,
                failover=form.failover,
                restore=form.restore,
                steps=[s.model_dump() for s in rules.parse_steps(form.steps, what="演练步骤")],
                rollback=form.rollback,
                business_window=form.business_window,
                participants=form.participants,
                reason=reason[:400],
                created_by=by,
                created_at=at,
            )
            session.add(row)
            session.flush()
        approved = [
            p
            for p in recovery_versions(session, case.customer_id, case.data.get("system", ""))
            if p.approved_at
        ]
        recovery = _recovery_dict(approved[-1]) if approved else None
        append_event(
            session,
            case_id,
            "drill_plan_written",
            at=at,
            actor=by,
            data={"version": version},
            key=f"drill-plan-v{version}",
        )
        return {
            "version": version,
            "text": drill_plan_text(row, recovery),
            "steps": row.steps,
            "prefill": {**form.model_dump(), "steps": rules.steps_text(row.steps)},
        }


@step("drill-plan-agreed", title="演练方案已确认 / the plan both sides signed", key="v{version}")
def drill_plan_agreed(case_id: int, version: int, at: datetime) -> list[dict[str, Any]]:
    """The signed version is the one run; returns its steps."""
    with session_scope() as session:
        case = _case(session, case_id)
        row = session.exec(
            select(DrillPlan).where(DrillPlan.case_id == case_id, DrillPlan.version == version)
        ).one()
        case.data = {**case.data, "plan_version": version}
        case.updated_at = at
        session.add(case)
        return list(row.steps)


# ---- the drill day: checked, fixed, moved, notified, cancelled ----------------------------------------


def _checked_day(
    session: Session, case: Case, day: str, start: str, day_off_ok: bool, at: datetime
) -> dict[str, str]:
    out = {"day": day.strip(), "start": start.strip() or DEFAULT_START, "problem": ""}
    try:
        drill_day = rules.read_day(out["day"])
        rules.read_clock(out["start"])
        contract = _contract(session, case)
        rules.check_drill_day(
            load_calendar(session, contract.calendar),
            drill_day,
            today=local_day(at, contract.timezone),
            notice_working_days=rules.drill_settings(contract.sla_policy).notice_working_days,
            day_off_confirmed=day_off_ok,
        )
    except rules.DrillRuleError as exc:
        out["problem"] = str(exc)
    return out


@step("check-drill-day", title="检查演练日期 / check the drill day")
def check_drill_day(
    case_id: int, day: str, start: str, day_off_ok: bool, at: datetime, reason: str = "", by: str = ""
) -> dict[str, str]:
    """{"day", "start", "problem"}; a day that can be kept and differs from the planned one is
    recorded as a move with its reason (the inspection's `record_move`: the same history and
    summary line)."""
    with session_scope() as session:
        case = _case(session, case_id)
        out = _checked_day(session, case, day, start, day_off_ok, at)
        if not out["problem"] and reason:
            record_move(session, case_id, day=out["day"], start=out["start"], reason=reason, by=by, at=at)
        return out


@step("fix-drill-day", title="约定演练日期 / fix the drill day", key="r{round}")
def fix_drill_day(case_id: int, round: int, day: str, start: str, by: str, at: datetime) -> dict[str, str]:
    """Record the agreed day; returns when to notify (N working days before, 09:00), re-confirm
    (1 working day before, 10:00) and start (UTC ISO)."""
    with session_scope() as session:
        case = _case(session, case_id)
        contract = _contract(session, case)
        cal = load_calendar(session, contract.calendar)
        settings = rules.drill_settings(contract.sla_policy)
        drill_day = rules.read_day(day)
        hh, mm = rules.read_clock(start or DEFAULT_START)
        dates = rules.drill_dates(cal, drill_day, notice_working_days=settings.notice_working_days)
        tz = contract.timezone

        def moment(d: date, t: time) -> str:
            return (
                pendulum.datetime(d.year, d.month, d.day, t.hour, t.minute, tz=tz)
                .in_timezone("UTC")
                .isoformat()
            )

        # a notice day already past (the day agreed late, inside its notice period only by a move the
        # customer asked for) is sent at once: the answer's own moment
        notice_at = max(datetime.fromisoformat(moment(dates.notice_day, time(9, 0))), at)
        reconfirm_at = max(datetime.fromisoformat(moment(dates.reconfirm_day, time(10, 0))), at)
        out = {
            "drill_day": day,
            "start": f"{hh:02d}:{mm:02d}",
            "notice_at": notice_at.isoformat(),
            "reconfirm_at": reconfirm_at.isoformat(),
            "start_at": moment(drill_day, time(hh, mm)),
        }
        case.data = {**case.data, **out, "visit_day": day}
        if case.status != CaseStatus.CANCELLED:
            case.move_to(CaseStatus.SCHEDULED, at)
        session.add(case)
        append_event(
            session, case_id, "drill_day_agreed", at=at, actor=by, data=out, key=f"day:r{round}:{day}"
        )
        return out


@step("send-drill-notice", title="演练通知 / notice to both sides", key="r{round}")
def send_drill_notice(case_id: int, round: int, at: datetime) -> int:
    """Both sides' participants are told the day (the customer's contact; the lead, engineer, director)."""
    with session_scope() as session:
        case = _case(session, case_id)
        rows = queue_for_case(
            session,
            case_id,
            template="drill/notice",
            key=f"notice:r{round}",
            now=at,
            roles=list(PARTICIPANT_ROLES),
            customer=True,
            urgent=False,
            context={
                "drill_day": case.data.get("drill_day", ""),
                "start": case.data.get("start", DEFAULT_START),
                "system": case.data.get("system", ""),
                "kind": rules.DRILL_KINDS_ZH.get(case.data.get("drill_kind", ""), ""),
            },
        )
        if case.status in (CaseStatus.PLANNED, CaseStatus.SCHEDULED):
            case.move_to(CaseStatus.NOTIFIED, at)
            session.add(case)
        append_event(
            session, case_id, "drill_notice_sent", at=at, data={"round": round}, key=f"notice:r{round}"
        )
        return rows


@step("drill-confirmed", title="演练时间已再确认 / re-confirmed", key="r{round}")
def drill_confirmed(case_id: int, round: int, by: str, at: datetime) -> None:
    with session_scope() as session:
        case = _case(session, case_id)
        if case.status != CaseStatus.CANCELLED:
            case.move_to(CaseStatus.CONFIRMED, at)
            session.add(case)
        append_event(session, case_id, "drill_reconfirmed", at=at, actor=by, key=f"reconfirmed:r{round}")


def find_drill(session: Session, number: str) -> Case:
    """A drill by the number people quote (YL-000123, or 123); DrillError when there is none."""
    import re

    m = re.fullmatch(r"(?:YL-?)?0*(\d+)", number.strip(), flags=re.IGNORECASE)
    if m is None:
        raise DrillError(f"演练单号应如 YL-000123，不是 {number!r} / not a drill number")
    return _case(session, int(m[1]))


def recovery_plan_listing(session: Session, customer: str, system: str | None = None) -> list[str]:
    """Every version of the customer's recovery plans (one system or all), as text lines: each
    version kept and shown, with who approved it and why it was made."""
    try:
        found = find_customer(session, customer)
    except IntakeError as exc:
        raise DrillError(str(exc)) from None
    query = select(RecoveryPlan).where(RecoveryPlan.customer_id == found.id)
    if system:
        query = query.where(RecoveryPlan.system == system.strip())
    rows = session.exec(query.order_by(col(RecoveryPlan.system), col(RecoveryPlan.version))).all()
    if not rows:
        raise DrillError(f"{found.name} 没有{system or ''}应急恢复方案 / no recovery plan")
    lines = []
    for plan in rows:
        approved = (
            f"{plan.approved_by} 于 {pendulum.instance(plan.approved_at).in_timezone('Asia/Shanghai'):%Y-%m-%d %H:%M} 批准"
            if plan.approved_at
            else "待批准"
        )
        lines.append(f"== {plan.system} v{plan.version}（{approved}；编写 {plan.created_by}）==")
        lines.extend("  " + line for line in recovery_text(plan).splitlines()[1:])
    return lines


def cancel_drill(case_id: int, reason: str, *, by: str, now: datetime, url: str | None = None) -> bool:
    """The customer cancels (with a reason): recorded, everyone involved told. False when already cancelled."""
    if not reason.strip():
        raise DrillError("请填写取消原因 / a reason is required")
    with session_scope(url) as session:
        case = _case(session, case_id)
        if case.status == CaseStatus.CANCELLED:
            return False
        if case.status in STARTED:
            raise DrillError(f"{case.number} 演练已开始，不能再取消 / the drill has begun")
        case.data = {**case.data, "cancel_reason": reason.strip(), "cancelled_by": by}
        session.add(case)
        set_status(session, case_id, CaseStatus.CANCELLED, at=now)
        append_event(
            session,
            case_id,
            "drill_cancelled",
            at=now,
            actor=by,
            key="cancelled",
            data={"reason": reason.strip()},
        )
        queue_for_case(
            session,
            case_id,
            template="drill/cancelled",
            key="cancelled",
            now=now,
            roles=[Role.DISPATCHER, *PARTICIPANT_ROLES],
            customer=True,
            urgent=False,
            context={
                "reason": reason.strip(),
                "by": by,
                "drill_day": case.data.get("drill_day") or case.data.get("wished_day", ""),
            },
        )
        return True


@step("cancel-drill", title="取消演练 / cancel")
def cancel_drill_step(case_id: int, reason: str, by: str, at: datetime) -> bool:
    return cancel_drill(case_id, reason, by=by, now=at)


# ---- running it ------------------------------------------------------------------------------------------


@step("drill-started", title="演练开始 / the drill begins")
def drill_started(case_id: int, at: datetime) -> None:
    with session_scope() as session:
        set_status(session, case_id, CaseStatus.ON_SITE, at=at)
        append_event(session, case_id, "drill_started", at=at, key="started")


@step("record-drill-step", title="记录演练步骤 / record a step", key="{position}")
def record_drill_step(
    case_id: int,
    plan_version: int,
    position: int,
    planned: dict[str, Any],
    payload: dict[str, Any],
    by: str,
    at: datetime,
) -> dict[str, Any]:
    """Store one step as it happened; {"result", "abort", "minutes", "over"} (over: minutes past the expected)."""
    form = DrillStepForm.model_validate(payload)
    minutes = rules.duration_minutes(form.started_at, form.ended_at)
    with session_scope() as session:
        row = session.exec(
            select(DrillStepResult).where(
                DrillStepResult.case_id == case_id, DrillStepResult.position == position
            )
        ).first()
        if row is None:
            session.add(
                DrillStepResult(
                    case_id=case_id,
                    plan_version=plan_version,
                    position=position,
                    action=planned["action"],
                    expected_minutes=int(planned["minutes"]),
                    started_at=form.started_at,
                    ended_at=form.ended_at,
                    result=StepResult(form.result),
                    note=form.note,
                    rollback=form.rollback,
                    recorded_by=by,
                    recorded_at=at,
                )
            )
        abort = form.result == StepResult.FAILED and form.abort
        case = _case(session, case_id)
        case.updated_at = at  # the drill moves on: not a stale record
        session.add(case)
        append_event(
            session,
            case_id,
            "drill_aborted" if abort else "drill_step_recorded",
            at=at,
            actor=by,
            key=f"step:{position}",
            data={"position": position, "result": form.result, "minutes": minutes, "rollback": form.rollback},
        )
        return {
            "result": form.result,
            "abort": abort,
            "minutes": minutes,
            "over": round(minutes - int(planned["minutes"]), 1),
        }


def step_results(session: Session, case_id: int) -> list[dict[str, Any]]:
    rows = session.exec(
        select(DrillStepResult)
        .where(DrillStepResult.case_id == case_id)
        .order_by(col(DrillStepResult.position))
    ).all()
    return [r.model_dump() for r in rows]


@step("drill-timeline", title="演练时间线 / the timeline so far")
def drill_timeline(case_id: int) -> str:
    """The steps recorded, for the evaluation form's page."""
    with session_scope() as session:
        return "\n".join(
            f"{r['position']}. {r['action']}：{r['result']}，实际 {rules.duration_minutes(r['started_at'], r['ended_at'])} 分钟"
            f"（预计 {r['expected_minutes']}）"
            for r in step_results(session, case_id)
        )


# ---- the evaluation and the report -------------------------------------------------------------------------


@step("drill-evaluation", title="演练评估 / evaluate the drill")
def evaluate_drill(case_id: int, payload: dict[str, Any], by: str, at: datetime) -> dict[str, Any]:
    """The evaluation against the recovery objectives, kept on the case; the 演练报告's context."""
    form = DrillEvaluationForm.model_validate(payload)
    with session_scope() as session:
        case = _case(session, case_id)
        version = int(case.data.get("plan_version") or 1)
        plan = session.exec(
            select(DrillPlan).where(DrillPlan.case_id == case_id, DrillPlan.version == version)
        ).one()
        recovery = next(
            (
                p
                for p in recovery_versions(session, case.customer_id, case.data.get("system", ""))
                if p.version == case.data.get("recovery_version")
            ),
            None,
        )
        results = step_results(session, case_id)
        planned = [rules.StepLine.model_validate(s) for s in plan.steps]
        figures = rules.evaluate(
            planned,
            results,
            rto_minutes=recovery.rto_minutes if recovery else 0,
            rpo_minutes=recovery.rpo_minutes if recovery else 0,
            data_loss_minutes=form.data_loss_minutes,
        )
        aborted = next((r for r in results if r["rollback"]), None)
        evaluation = {
            **figures,
            "gaps": rules.split_lines(form.gaps),
            "meets_need": form.meets_need,
            "improvements": form.improvements,
            "training": [
                {"topic": t, "due_on": d.isoformat()}
                for t, d in rules.parse_training(form.training, today=local_day(at))
            ],
            "by": by,
            "at": at.isoformat(),
        }
        case.data = {**case.data, "evaluation": evaluation}
        case.updated_at = at
        session.add(case)
        append_event(
            session,
            case_id,
            "drill_evaluated",
            at=at,
            actor=by,
            key="evaluated",
            data={
                k: evaluation[k] for k in ("rto_met", "rpo_met", "completed", "meets_need", "actual_total")
            },
        )
        return {
            "drill": {
                "system": case.data.get("system", ""),
                "kind": rules.DRILL_KINDS_ZH.get(case.data.get("drill_kind", ""), ""),
                "day": case.data.get("drill_day", ""),
                "start": case.data.get("start", ""),
                "period": case.period,
            },
            "plan": {**plan.model_dump(mode="json"), "steps": plan.steps},
            "recovery": _recovery_dict(recovery) if recovery else None,
            # the timeline table: each planned step with what happened (None: not run)
            "timeline": [
                {**o, "ran": next((r for r in results if r["position"] == o["position"]), None)}
                for o in figures["steps"]
            ],
            "evaluation": evaluation,
            "aborted": {"position": aborted["position"], "rollback": aborted["rollback"]}
            if aborted
            else None,
            "previous": previous_drill(session, case),
            "lead": by,
        }


@step("drill-report-status", title="演练报告状态 / report status", key="{status}")
def drill_report_status(case_id: int, status: CaseStatus, at: datetime) -> None:
    with session_scope() as session:
        set_status(session, case_id, status, at=at)


# ---- follow-up ---------------------------------------------------------------------------------------------


@step("drill-training", title="客户人员培训任务 / training tasks")
def create_training(case_id: int, at: datetime) -> int:
    """One training task per line of the evaluation, each with its due day; the lead and the customer
    are told. Returns how many."""
    with session_scope() as session:
        case = _case(session, case_id)
        lines = (case.data.get("evaluation") or {}).get("training") or []
        for t in lines:
            insert_ignore(
                session,
                TrainingTask,
                {
                    "case_id": case_id,
                    "customer_id": case.customer_id,
                    "system": case.data.get("system", ""),
                    "topic": t["topic"],
                    "due_on": date.fromisoformat(t["due_on"]),
                    "created_at": at,
                },
            )
        if lines:
            queue_for_case(
                session,
                case_id,
                template="drill/training",
                key="training",
                now=at,
                roles=[Role.TECHNICAL_LEAD],
                customer=True,
                urgent=False,
                context={"training": lines, "system": case.data.get("system", "")},
            )
            append_event(
                session, case_id, "training_planned", at=at, key="training", data={"training": lines}
            )
        return len(lines)


def drill_events(session: Session, case_id: int) -> list[Event]:
    return list(session.exec(select(Event).where(Event.case_id == case_id).order_by(col(Event.id))).all())


# ---- the monthly summary (阶段性服务总结) ----------------------------------------------------------------


def drills_in_period(session: Session, customer_id: int, first: date, last: date) -> list[dict[str, Any]]:
    """The customer's drills whose day (agreed, else wished) falls in first..last, for the summary:
    what was drilled, its state, and the objectives met or missed."""
    from models.cases import CASE_STATUS_ZH

    rows = []
    for case in session.exec(
        select(Case)
        .where(Case.customer_id == customer_id, Case.kind == str(CaseKind.DRILL))
        .order_by(col(Case.id))
    ).all():
        day = date.fromisoformat(case.data.get("drill_day") or case.data.get("wished_day") or "1970-01-01")
        if not first <= day <= last:
            continue
        evaluation = case.data.get("evaluation") or {}
        rows.append(
            {
                "number": case.number,
                "day": day.isoformat(),
                "system": case.data.get("system", ""),
                "kind": rules.DRILL_KINDS_ZH.get(case.data.get("drill_kind", ""), ""),
                "status": "已取消（" + str(case.data.get("cancel_reason", "")) + "）"
                if case.status == CaseStatus.CANCELLED
                else CASE_STATUS_ZH.get(case.status, case.status),
                "evaluated": bool(evaluation),
                "rto_met": bool(evaluation.get("rto_met")),
                "rpo_met": bool(evaluation.get("rpo_met")),
                "meets_need": bool(evaluation.get("meets_need")),
                "gaps": len(evaluation.get("gaps") or []),
            }
        )
    return rows


# ---- training tasks: due reminders, done ------------------------------------------------------------------


def remind_due_training(now: datetime, *, url: str | None = None) -> int:
    """Clock-keeper step: a training task whose due day has come and that is not done is told once to
    the drill's lead and the coordinator (and the customer's contact); returns how many."""
    told = 0
    with session_scope(url) as session:
        due = session.exec(
            select(TrainingTask).where(
                col(TrainingTask.done_at).is_(None),
                col(TrainingTask.reminded_at).is_(None),
                TrainingTask.due_on <= local_day(now),
            )
        ).all()
        for task in due:
            queue_for_case(
                session,
                task.case_id,
                template="drill/training_due",
                key=f"training-due:{task.id}",
                now=now,
                roles=[Role.TECHNICAL_LEAD, Role.COORDINATOR],
                customer=True,
                urgent=False,
                context={"topic": task.topic, "due_on": task.due_on.isoformat(), "system": task.system},
            )
            task.reminded_at = now
            session.add(task)
            told += 1
    return told


def training_done(task_id: int, *, by: str, now: datetime, url: str | None = None) -> bool:
    """Mark a training task done (False when it already was); the next drill shows it closed."""
    if not by.strip():
        raise DrillError("请填写完成培训的负责人 / who held the training")
    with session_scope(url) as session:
        task = session.get(TrainingTask, task_id)
        if task is None:
            raise DrillError(f"培训任务 {task_id} 不存在 / no training task {task_id}")
        if task.done_at is not None:
            return False
        task.done_at, task.done_by = now, by.strip()
        session.add(task)
        append_event(
            session,
            task.case_id,
            "training_done",
            at=now,
            actor=by.strip(),
            key=f"training-done:{task_id}",
            data={"topic": task.topic, "due_on": task.due_on.isoformat()},
        )
        return True
