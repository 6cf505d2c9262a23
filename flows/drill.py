"""应急演练 — the emergency drill, PROCEDURES.md §5 [001 §2.3.8, §2.3.5.6; 000 §7; 004 §四(7)].

- `drill` (one run per drill): started by the planner for a scheduled drill (its case id), or from
  the Prefect UI form `drill` (customer, system, kind of drill, wished date). The system's emergency
  recovery plan (应急恢复方案, versioned) is written if it has none and approved by the technical
  director; the drill plan (演练方案) is approved by the director and accepted and signed by the
  customer with the repair plan's objection loop over versions (flows.steps); the day is agreed with
  the customer, both sides are told N working days ahead (default 5) and the customer re-confirms
  1 working day ahead — and may move or cancel, with a reason, as for an inspection. On the day the
  drill lead records each step's actual start, end and result on a phone form; a failed step may
  abort the drill (the roll-back recorded). The 演练报告 (within 2 working days: the drill_report
  clock, escalated when it runs out) compares each step with its expected time and the whole with
  the RTO/RPO; the customer signs it (objections corrected as new versions), the director approves
  it. Each gap becomes a new version of the recovery plan (director approval) and a training task
  for the customer's staff with its own due day; the next drill of the system shows whether the
  gaps were closed.
- `plan-drills` (daily, business time zone): for every contract in force the drill of the current
  period (per year as the contract says, default twice) is created once and its run started once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.schedules import Cron
from pydantic import BaseModel

from deployments.run_forms import DrillRequestForm, RecoveryRevisionForm, use_form
from flows import steps
from models.cases import CaseStatus
from models.clocks import ClockAction
from models.forms import (
    Answer,
    DrillDateForm,
    DrillEvaluationForm,
    DrillPlanForm,
    DrillStepForm,
    RecoveryPlanForm,
)
from models.parties import Role
from models.settings import business_timezone
from rules.plans import Plan
from rules.sla import ClockKind
from tasks.board import name_run, run_name
from tasks.cases import clock
from tasks.drill import (
    DEFAULT_START,
    DrillFacts,
    DrillRequest,
    RecoveryFacts,
    RecoveryRevisionRequest,
    cancel_drill_step,
    check_drill_day,
    create_training,
    drill_confirmed,
    drill_plan_agreed,
    drill_report_status,
    drill_started,
    drill_timeline,
    evaluate_drill,
    fix_drill_day,
    is_drill_cancelled,
    load_drill,
    load_recovery_revision,
    next_recovery_version,
    open_drill,
    open_recovery_revision,
    plan_drills_step,
    record_drill_plan,
    record_drill_step,
    record_recovery_plan,
    recovery_approved,
    recovery_in_force,
    recovery_prefill,
    recovery_rejected,
    recovery_revision_done,
    send_drill_notice,
    start_drill_runs_step,
)
from tasks.reports import issue
from tasks.timers import current_time, wait_until

PLAN_CRON = "45 1 * * *"  # daily 01:45 business time, after the inspections' planner
MAX_DATE_ROUNDS = 5  # after that many answers without a day both sides keep, the centre settles it by phone
DRILL_PLAN_DOC = ("drill_plan", "drill/plan")
RECOVERY_PLAN_DOC = ("recovery_plan", "drill/recovery_plan")
REPORT_STEP = "drill-report-approval"


@flow(name="drill", flow_run_name=run_name, retries=0, log_prints=True)
def drill(request: DrillRequest) -> str:
    """应急演练: recovery plan, drill plan, day and notice, the drill step by step, 演练报告, follow-up."""
    from prefect.states import Failed

    now = current_time()
    opened = open_drill(request, str(flow_run.get_id() or ""), now)
    if opened["error"]:
        return Failed(message=opened["error"])  # type: ignore[return-value]  # a clear message, no traceback
    case_id = int(opened["case_id"])
    name_run(case_id)
    facts = load_drill(case_id)
    if facts.status == CaseStatus.CANCELLED:
        return "cancelled"
    # 1. the system's recovery plan in force (written and approved first when it has none)
    recovery, now = recovery_plan_in_force(case_id, facts, now)
    # 3. the drill plan: director, then the customer (objections → new versions)
    version, plan_steps, now = agree_drill_plan(case_id, facts, recovery, now)
    # 2/4. the day, the notice N working days ahead, the re-confirmation 1 working day ahead
    start_at, now = schedule_drill(case_id, facts, now)
    if start_at is None:
        return "cancelled"
    # 5. the drill, step by step
    now = run_steps(case_id, facts, version, plan_steps, start_at)
    # 6. the 演练报告: customer signs, director approves
    report_id, evaluation, now = drill_report(case_id, facts, now)
    # 7. follow-up: each gap → a new version of the recovery plan; training tasks
    if evaluation["gaps"]:
        gaps = "；".join(evaluation["gaps"])
        _, now = write_and_approve_recovery(
            case_id,
            facts,
            next_recovery_version(case_id),
            reason=f"{facts.number} 演练发现的差距：{gaps}",
            prefill=recovery_prefill(recovery),
            now=now,
        )
    create_training(case_id, now)
    steps.archive(case_id, [report_id], now=now, procedure="drill")
    return "archived"


# ---- 1. the recovery plan -------------------------------------------------------------------------------


PlanWriter = Callable[[int, str, dict[str, str] | None, datetime], tuple[Plan, datetime]]


def _plan_on_form(
    case_id: int,
    facts: RecoveryFacts,
    *,
    step: Callable[[int], str],
    form: type[BaseModel],
    subject: Callable[[int], str],
    content: Callable[[str], str],
    store: Callable[[int, int, dict[str, Any], str, datetime, str], dict[str, Any]],
    prefill: Callable[[dict[str, Any]], dict[str, str]],
) -> tuple[PlanWriter, steps.Reviser]:
    """A plan the lead writes on a structured form, version by version (the recovery plan, the
    drill plan). `write(v, why, fill, now)`: version v asked for on the form (`step(v)`; `why`, the
    reason, shown through `content`; `fill`, the fields filled in) and stored (`store`). `revise`:
    the way back from the director or the customer — v+1 written, the form filled in with v
    (`prefill` of what was stored) unless v was rejected as a whole."""
    written: dict[int, dict[str, Any]] = {}

    def write(v: int, why: str, fill: dict[str, str] | None, now: datetime) -> tuple[Plan, datetime]:
        answer = steps.fill_form(
            case_id,
            step(v),
            v,
            role=Role.TECHNICAL_LEAD,
            form=form,
            now=now,
            prefill=fill,
            subject=steps.subject(facts, subject(v)),
            content=content(why),
        )
        recorded = store(case_id, v, answer.value.model_dump(), answer.by, answer.at, why)
        written[v] = recorded
        return Plan(version=v, text=recorded["text"], reason=why or "initial", author=answer.by), answer.at

    def revise(
        case_id: int, facts: Any, plan: Plan, *, reason: str, note: str, now: datetime
    ) -> tuple[Plan, datetime]:
        who = {"director": "技术总监要求修改", "rejected": "技术总监驳回"}.get(reason, "客户提出异议")
        fill = None if reason == "rejected" else prefill(written[plan.version])
        return write(plan.version + 1, f"第 {plan.version} 版{who}：{note or '—'}", fill, now)

    return write, revise


def recovery_plan_in_force(case_id: int, facts: DrillFacts, now: datetime) -> tuple[dict[str, Any], datetime]:
    found = recovery_in_force(case_id)
    if found is not None:
        return found, now
    written, now = write_and_approve_recovery(
        case_id, facts, next_recovery_version(case_id), reason="", prefill=None, now=now
    )
    assert written is not None  # a drill's rejection asks for another version, it does not end
    return written, now


class _Rejected(Exception):
    """The director rejected a revision that ends there (the version in force stays)."""

    def __init__(self, at: datetime) -> None:
        super().__init__("rejected")
        self.at = at


def write_and_approve_recovery(
    case_id: int,
    facts: RecoveryFacts,
    version: int,
    *,
    reason: str,
    prefill: dict[str, str] | None,
    now: datetime,
    rejected_ends: bool = False,
) -> tuple[dict[str, Any] | None, datetime]:
    """The lead writes recovery plan `version` on its form; the director approves it or sends it back
    (要求修改: the form filled in with it; 驳回: an empty form) for the next version. A rejected
    version is marked so (shown, never in force); with `rejected_ends` (a revision between drills)
    the rejection ends it: (None, the moment), the version in force unchanged."""
    write, revise = _plan_on_form(
        case_id,
        facts,
        step=lambda v: f"recovery-plan-v{v}",
        form=RecoveryPlanForm,
        subject=lambda v: f"请编写{facts.system}应急恢复方案（第 {v} 版）",
        content=lambda why: (
            why or f"{facts.customer} {facts.system} 尚无经批准的应急恢复方案，演练前请编写。"
        ),
        store=record_recovery_plan,
        prefill=recovery_prefill,
    )

    def returned(
        case_id: int, facts: Any, plan: Plan, *, reason: str, note: str, now: datetime
    ) -> tuple[Plan, datetime]:
        if reason == "rejected":
            recovery_rejected(case_id, plan.version, now)
            if rejected_ends:
                raise _Rejected(now)
        return revise(case_id, facts, plan, reason=reason, note=note, now=now)

    plan, now = write(version, reason, prefill, now)
    try:
        plan, now = steps.director_approves_plan(
            case_id,
            facts,
            plan,
            now=now,
            procedure="drill",
            step="recovery-plan-approval",
            revise=returned,
            document=RECOVERY_PLAN_DOC,
        )
    except _Rejected as rejected:
        return None, rejected.at
    return recovery_approved(case_id, plan.version, now), now


# ---- a revision between drills ----------------------------------------------------------------------------


@flow(name="recovery-plan", flow_run_name=run_name, retries=0, log_prints=True)
def recovery_plan(request: RecoveryRevisionRequest) -> str:
    """应急恢复方案修订 between drills: the lead revises the version in force on the plan's form (filled
    in with it), the technical director approves (要求修改 → another round; 驳回 → nothing changes)."""
    from prefect.states import Failed

    now = current_time()
    opened = open_recovery_revision(request, str(flow_run.get_id() or ""), now)
    if opened["error"]:
        return Failed(message=opened["error"])  # type: ignore[return-value]  # a clear message, no traceback
    case_id = int(opened["case_id"])
    name_run(case_id)
    facts = load_recovery_revision(case_id)
    in_force = recovery_in_force(case_id)
    written, now = write_and_approve_recovery(
        case_id,
        facts,
        next_recovery_version(case_id),
        reason=f"{facts.number} 修订：{request.reason.strip()}",
        prefill=recovery_prefill(in_force) if in_force else None,
        now=now,
        rejected_ends=True,
    )
    recovery_revision_done(case_id, CaseStatus.CLOSED if written else CaseStatus.CANCELLED, now)
    return "approved" if written else "rejected"


# ---- 3. the drill plan ------------------------------------------------------------------------------------


def agree_drill_plan(
    case_id: int, facts: DrillFacts, recovery: dict[str, Any], now: datetime
) -> tuple[int, list[dict[str, Any]], datetime]:
    """The lead writes the 演练方案; the director approves; the customer signs or objects (each
    objection: v+1 by the lead, re-approved by the director). Returns the signed version and its steps."""
    previous = facts.previous
    checks = ""
    if previous:
        gaps = "；".join(previous.get("gaps") or []) or "无"
        training = "；".join(
            f"{t['topic']}（{'已完成' if t['done'] else '未完成'}）" for t in previous.get("training") or []
        )
        checks = f"\n上次演练 {previous['number']} 的差距（本次须检查是否已关闭）：{gaps}" + (
            f"\n培训：{training}" if training else ""
        )

    write, revise = _plan_on_form(
        case_id,
        facts,
        step=lambda v: "drill-plan",
        form=DrillPlanForm,
        subject=lambda v: f"请编写演练方案（第 {v} 版）：{facts.system} {facts.drill_kind_zh}",
        content=lambda why: "\n".join(t for t in (why, recovery["text"], checks) if t),
        store=record_drill_plan,
        prefill=lambda recorded: recorded["prefill"],
    )

    plan, now = write(1, "", None, now)
    plan, now = steps.director_approves_plan(
        case_id,
        facts,
        plan,
        now=now,
        procedure="drill",
        step="drill-plan-approval",
        revise=revise,
        document=DRILL_PLAN_DOC,
    )
    plan, now = steps.customer_accepts_plan(
        case_id,
        facts,
        plan,
        now=now,
        procedure="drill",
        revise=revise,
        document=DRILL_PLAN_DOC,
        director_step="drill-plan-approval",
    )
    return plan.version, drill_plan_agreed(case_id, plan.version, now), now


# ---- 2/4. the day, the notice, the re-confirmation ----------------------------------------------------------


def _date_round(
    case_id: int,
    facts: DrillFacts,
    step: str,
    n: int,
    *,
    title: str,
    text: str,
    problem: str,
    now: datetime,
) -> tuple[Answer[DrillDateForm] | None, datetime]:
    """One round of a date question to the customer (the first agreement and the re-confirmation
    before the day ask alike): the day proposed (`text`, after why the last answer could not be
    arranged, `problem`), answered on the date form. None when the drill is off: cancelled elsewhere
    meanwhile, or cancelled by this answer (recorded here). Returns (the answer, its moment)."""
    answer = steps.customer_form(
        case_id,
        step,
        n,
        form=DrillDateForm,
        subject=steps.subject(facts, title),
        content=(f"无法安排：{problem}\n" if problem else "") + text,
        now=now,
    )
    if is_drill_cancelled(case_id):
        return None, answer.at
    if answer.value.action == "取消":
        cancel_drill_step(case_id, answer.value.reason, answer.by, answer.at)
        return None, answer.at
    return answer, answer.at


def agree_day(case_id: int, facts: DrillFacts, now: datetime) -> tuple[tuple[str, str, str] | None, datetime]:
    """The customer confirms the wished day, moves it (a reason; a day off confirmed) or cancels (a
    reason). Returns ((day, start, by) or None when cancelled, now)."""
    day, start, day_off, problem = facts.wished_day, DEFAULT_START, facts.day_off_ok, ""
    for n in range(1, MAX_DATE_ROUNDS + 1):
        answer, now = _date_round(
            case_id,
            facts,
            "drill-date",
            n,
            title=f"演练日期确认：{day} {start}",
            text=f"{facts.system} {facts.drill_kind_zh}拟于 {day} {start} 进行，"
            f"双方参演人员将提前 {facts.notice_working_days} 个工作日收到通知。请确认、改期或取消（改期、取消请写明原因）。",
            problem=problem,
            now=now,
        )
        if answer is None:
            return None, now
        form = answer.value
        if form.action == "改期":
            checked = check_drill_day(
                case_id, form.day, form.start or start, form.day_off_ok, now, form.reason, answer.by
            )
        else:
            checked = check_drill_day(case_id, day, form.start or start, day_off, now)
        problem = checked["problem"]
        if problem:
            continue
        if form.action == "改期":
            day, start, day_off = checked["day"], checked["start"], form.day_off_ok
            continue  # the moved day goes back to the customer as the new proposal
        return (checked["day"], checked["start"], answer.by), now
    cancel_drill_step(
        case_id,
        f"{MAX_DATE_ROUNDS} 次未能约定演练日期，由客户服务中心电话协调后重新安排",
        "客户服务中心",
        now,
    )
    return None, now


def schedule_drill(case_id: int, facts: DrillFacts, now: datetime) -> tuple[datetime | None, datetime]:
    """The agreed day; the notice to both sides N working days before; the customer's re-confirmation
    1 working day before (a move starts the notice again for the new day). Returns the start or None."""
    agreed, now = agree_day(case_id, facts, now)
    if agreed is None:
        return None, now
    day, start, by = agreed
    rnd = 1
    while True:
        fixed = fix_drill_day(case_id, rnd, day, start, by, now)
        notice_at = datetime.fromisoformat(fixed["notice_at"])
        wait_until(case_id, notice_at, f"drill-notice-{rnd}")
        if is_drill_cancelled(case_id):
            return None, now
        send_drill_notice(case_id, rnd, notice_at)
        reconfirm_at = datetime.fromisoformat(fixed["reconfirm_at"])
        wait_until(case_id, reconfirm_at, f"drill-reconfirm-day-{rnd}")
        if is_drill_cancelled(case_id):
            return None, now
        now, problem, moved = reconfirm_at, "", False
        for k in range(1, MAX_DATE_ROUNDS + 1):
            answer, now = _date_round(
                case_id,
                facts,
                f"drill-reconfirm-r{rnd}",
                k,
                title=f"演练时间再确认：{day} {start}",
                text=f"应急演练将于 {day} {start} 进行，请确认；如需改期或取消，请写明原因。",
                problem=problem,
                now=now,
            )
            if answer is None:
                return None, now
            form = answer.value
            if form.action == "确认":
                drill_confirmed(case_id, rnd, answer.by, now)
                break
            checked = check_drill_day(
                case_id, form.day, form.start or start, form.day_off_ok, now, form.reason, answer.by
            )
            problem = checked["problem"]
            if not problem:
                day, start, by, moved = checked["day"], checked["start"], answer.by, True
                break
        else:
            cancel_drill_step(case_id, "再确认时多次未能约定演练时间", "客户服务中心", now)
            return None, now
        if not moved:
            return datetime.fromisoformat(fixed["start_at"]), now
        rnd += 1


# ---- 5. running it ------------------------------------------------------------------------------------------


def run_steps(
    case_id: int, facts: DrillFacts, version: int, plan_steps: list[dict[str, Any]], start_at: datetime
) -> datetime:
    """On the day the drill lead records each step on the phone form as it happens; a failed step the
    lead aborts on ends the drill (its roll-back recorded). Returns the moment the drill ended."""
    wait_until(case_id, start_at, "drill-start")
    drill_started(case_id, start_at)
    now, total = start_at, len(plan_steps)
    for planned in plan_steps:
        n = int(planned["position"])
        answer = steps.fill_form(
            case_id,
            "drill-step",
            n,
            role=Role.TECHNICAL_LEAD,
            form=DrillStepForm,
            now=now,
            subject=steps.subject(facts, f"演练第 {n}/{total} 步：{planned['action']}"),
            content=f"第 {n} 步：{planned['action']}（负责人 {planned['owner'] or '—'}，预计 {planned['minutes']} 分钟）。"
            "请在本步完成时填写实际开始、结束时间和结果；失败且须中止演练时选择“中止演练”并填写回退情况。",
        )
        now = answer.at
        outcome = record_drill_step(
            case_id, version, n, planned, answer.value.model_dump(mode="json"), answer.by, now
        )
        if outcome["abort"]:
            break
    return now


# ---- 6. the 演练报告 ----------------------------------------------------------------------------------------


def drill_report(case_id: int, facts: DrillFacts, now: datetime) -> tuple[int, dict[str, Any], datetime]:
    """The lead's evaluation → the 演练报告 (its 2-working-day clock stops when it is issued) → the
    customer signs (objections corrected as new versions) → the director approves."""
    clock(case_id, ClockKind.DRILL_REPORT, ClockAction.START, now)
    answer = steps.fill_form(
        case_id,
        "drill-evaluation",
        1,
        role=Role.TECHNICAL_LEAD,
        form=DrillEvaluationForm,
        now=now,
        subject=steps.subject(facts, "请提交演练评估（演练报告须在 2 个工作日内出具）"),
        content=drill_timeline(case_id),
    )
    now = answer.at
    context = evaluate_drill(case_id, answer.value.model_dump(mode="json"), answer.by, now)
    # version 1 issued here so that its clock stops at the issue; service_report_signed finds it
    # (a report is issued once per case, kind and version) and takes it to the customer
    issue(case_id, "drill_report", "drill/report", {**context, "corrections": []}, now, answer.by, 1)
    clock(case_id, ClockKind.DRILL_REPORT, ClockAction.STOP, now)
    drill_report_status(case_id, CaseStatus.REPORT_PENDING, now)
    report_id, now = steps.service_report_signed(
        case_id,
        facts,
        now=now,
        context=context,
        template="drill/report",
        kind="drill_report",
        by=answer.by,
        role=Role.TECHNICAL_LEAD,
    )
    drill_report_status(case_id, CaseStatus.SUBMITTED, now)
    now = steps.final_approval(
        case_id,
        facts,
        [report_id],
        now=now,
        step=REPORT_STEP,
        what="演练报告",
        answer_role=Role.TECHNICAL_LEAD,  # the lead wrote the report; the director's return is theirs
    )
    drill_report_status(case_id, CaseStatus.REGISTERED, now)
    return report_id, context["evaluation"], now


# ---- the planner ----------------------------------------------------------------------------------------------


@flow(name="plan-drills", retries=0, log_prints=True)
def plan_drills_flow(now: datetime | None = None) -> dict[str, int]:
    """演练计划: create each contract's drill of the current period once and start its run once."""
    at = now or current_time()
    created = plan_drills_step(at)
    started = start_drill_runs_step(at)
    return {"created": created, "started": started}


def deployments() -> list[Any]:
    return [
        use_form(
            drill.to_deployment(
                name="drill",
                tags=["drill", "应急演练"],
                description="应急演练：选择客户、系统、演练类型与期望日期——应急恢复方案、演练方案审批与客户签字、"
                "提前通知与再确认、逐步记录、演练报告、差距跟进",
            ),
            DrillRequestForm,
        ),
        use_form(
            recovery_plan.to_deployment(
                name="recovery-plan",
                tags=["drill", "应急恢复方案"],
                description="应急恢复方案修订（两次演练之间）：选择客户、系统并写明修订原因——负责人在现行版本上修订，"
                "技术总监批准后成为新的现行版本（驳回则现行版本不变），各版本均保留可查",
            ),
            RecoveryRevisionForm,
        ),
        plan_drills_flow.to_deployment(
            name="plan-drills",
            schedules=[Cron(PLAN_CRON, timezone=business_timezone())],
            description="每日：为每个有效合同按约定频率（默认每年两次）创建本期应急演练并启动流程（每合同每周期一次）",
        ),
    ]
