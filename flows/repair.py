"""故障维修服务流程 — the repair flow (PROCEDURES.md §2), from the customer's report to the
archived, approved report.

Started from the Prefect UI (deployment `repair`, the form is `RepairRequest`), from the command
line (`aftercare repair new`), or by another flow (`tasks.cases.start_repair`: inspections, 5-minute talks).
Whatever a person enters arrives through a form link of the approvals machinery; the flow body
only decides from those decisions and from task results (DESIGN.md §2), so it can be replayed.
"""

# No `from __future__ import annotations` here: the flow's parameter model (built by Prefect from
# the signature) must see the real RepairRequest class, however the runner loads this module.

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from deployments.run_forms import RepairRequestForm, use_form
from flows.steps import (
    answer_of,
    archive,
    ask_customer,
    ask_staff,
    callback,
    customer_accepts_plan,
    director_approves_plan,
    fill_form,
    final_approval,
    first_plan,
    five_minute_talk,
    parts_from_store,
    request_written_account,
    service_report_signed,
    sms_to_centre,
    start_after_service_clocks,
    subject,
    wait_for,
    written_account_received,
)
from models import CaseStatus, Role
from models.approvals import DecisionKind
from models.clocks import ClockAction
from models.forms import (
    Answer,
    DiagnosisForm,
    FaultReportForm,
    GuidanceForm,
    OnsiteForm,
    RepairForm,
    RiskyRefusedForm,
    VisitForm,
)
from models.parties import ROLE_LABELS_ZH
from rules.plans import Plan
from rules.sla import ClockKind
from tasks.board import name_run, run_name
from tasks.cases import (
    CaseFacts,
    IntakeError,
    RepairRequest,
    Tell,
    clock,
    load_case,
    problem_fixed_feedback,
    record,
    start_accident_run,
    take_request,
)
from tasks.parts import parts_of_case
from tasks.reports import issue, report_context, revise_plan
from tasks.timers import current_time

LEAD, ENGINEER, DIRECTOR, DISPATCHER = (
    Role.TECHNICAL_LEAD,
    Role.ENGINEER,
    Role.TECHNICAL_DIRECTOR,
    Role.DISPATCHER,
)


class RepairOutcome(BaseModel):
    case_id: int | None = None
    number: str = ""
    status: CaseStatus
    message: str = ""
    reports: list[int] = Field(default_factory=list)
    new_repairs: list[str] = Field(default_factory=list)
    accident_run: str | None = None


# --- the flow ---------------------------------------------------------------------------------


@flow(name="repair", flow_run_name=run_name, retries=0, persist_result=True, log_prints=True)
def repair(request: RepairRequest) -> RepairOutcome:
    """故障维修服务流程: from the customer's report to the archived, approved report."""
    from prefect.states import Failed

    # Intake: the dispatcher's form; the clocks start at the reported time. A request that cannot be
    # taken (unknown customer or case, a report time in the future or long past) ends the run at once.
    try:
        case_id = _take(request)
    except IntakeError as exc:
        return Failed(message=str(exc))  # type: ignore[return-value]  # a clear message, no traceback
    facts = _opened(case_id)
    diagnosis = _remote_diagnosis(case_id, facts)  # 1–2
    if diagnosis.value.solved_remotely:  # → straight to the report (step 12)
        done = _solved_remotely(case_id, diagnosis)
    else:
        on_site = _repaired_on_site(case_id, facts, diagnosis)  # 3–11
        if isinstance(on_site, RepairOutcome):  # handed over to the accident flow
            return on_site
        done = on_site
    reports = _reported_and_archived(case_id, facts, diagnosis.value, done)  # 12–17
    return RepairOutcome(
        case_id=case_id,
        number=facts.number,
        status=CaseStatus.ARCHIVED,
        reports=reports,
        new_repairs=done.new_repairs,
    )


# --- the phases of the flow, in the procedure's order -----------------------------------------
# Plain functions of the flow body (no steps of their own): they call steps in the same order the
# body did, so a case waiting under an older aftercare replays the same ledger keys.


@dataclass(frozen=True)
class Repaired:
    """Where the repair stands once the customer's business runs again (step 11 or solved remotely)."""

    now: datetime
    engineer: str  # who repaired: the engineer on site, or the lead who solved it remotely
    repaired_at: datetime
    restored_at: datetime
    plan: Plan | None = None  # None: solved remotely
    work: RepairForm | None = None
    new_repairs: list[str] = field(default_factory=list)


def _take(request: RepairRequest) -> int:
    """The request taken (raises IntakeError with the reason when it cannot be)."""
    entered = current_time()
    return take_request(
        request,
        request.reported_at or entered,
        str(flow_run.id),
        tell=[
            Tell(template="repair/opened", key="opened", roles=[DISPATCHER, LEAD, ENGINEER]),
            Tell(template="repair/received", key="received", customer=True),
        ],
        entered_at=entered,
    )


def _opened(case_id: int) -> CaseFacts:
    """The run named after its case; the response clocks started at the reported time."""
    name_run(case_id)  # "WX-000001 故障维修 北京某银行" in the Prefect UI from now on
    facts = load_case(case_id)
    for kind in (ClockKind.FIRST_CONTACT, ClockKind.REMOTE_RESPONSE, ClockKind.WORKAROUND, ClockKind.RESTORE):
        clock(case_id, kind, ClockAction.START, facts.reported_at)
    return facts


def _remote_diagnosis(case_id: int, facts: CaseFacts) -> Answer[DiagnosisForm]:
    """1–2. First contact and remote diagnosis by the technical lead, with the command log."""
    diagnosis = fill_form(
        case_id,
        "diagnosis",
        1,
        role=LEAD,
        form=DiagnosisForm,
        now=facts.reported_at,
        subject=subject(facts, "请联系客户并远程诊断"),
        content=facts.description,
    )
    now = diagnosis.at
    found = diagnosis.value
    record(
        case_id, "first_contact", found.contacted_at, diagnosis.by, {"fault_confirmed": found.fault_confirmed}
    )
    clock(case_id, ClockKind.FIRST_CONTACT, ClockAction.STOP, found.contacted_at)
    clock(case_id, ClockKind.REMOTE_RESPONSE, ClockAction.STOP, found.contacted_at)
    record(
        case_id,
        "remote_diagnosis",
        now,
        diagnosis.by,
        {"result": found.result, "command_log": found.command_log, "solved": found.solved_remotely},
    )
    # 业务先恢复: a workaround the lead gave remotely stops the workaround clock (§1, §2 step 11)
    if found.workaround:
        _workaround(case_id, found.workaround, found.workaround_at or now, diagnosis.by, remote=True)
    return diagnosis


def _solved_remotely(case_id: int, diagnosis: Answer[DiagnosisForm]) -> Repaired:
    now = diagnosis.at
    record(case_id, "repaired", now, diagnosis.by, {"remote": True})
    record(case_id, "restored", now, diagnosis.by, {"remote": True})
    clock(
        case_id, ClockKind.WORKAROUND, ClockAction.STOP, now
    )  # restored before any workaround: see _workaround
    clock(case_id, ClockKind.RESTORE, ClockAction.STOP, now)
    # §4.5: a problem an inspection found gets its result within 2 working days of the fix
    problem_fixed_feedback(case_id, now, now, diagnosis.value.result)
    return Repaired(now=now, engineer=diagnosis.by, repaired_at=now, restored_at=now)


def _repaired_on_site(
    case_id: int, facts: CaseFacts, diagnosis: Answer[DiagnosisForm]
) -> Repaired | RepairOutcome:
    """3–11: plan, parts, visit, arrival, the customer's consent, the repair, the business restored;
    a RepairOutcome when the director hands the case over to the accident flow."""
    # 3. Solution plan, approved by the technical director; spare parts from the store.
    plan, _ = first_plan(case_id, facts, now=diagnosis.at, text=diagnosis.value.plan, author=diagnosis.by)
    plan, now = director_approves_plan(case_id, facts, plan, now=diagnosis.at)
    parts = diagnosis.value.parts
    if parts:
        clock(case_id, ClockKind.SPARE_PART, ClockAction.START, now)
        parts, now = parts_from_store(case_id, facts, parts, diagnosis.by, now)
    now = _visit_booked(case_id, facts, plan, now)  # 4
    onsite, plan, now = _arrived(case_id, facts, plan, bool(parts), now)  # 5–6

    # 7. The customer accepts or objects; a loop until both sides sign the same version.
    plan, now = customer_accepts_plan(case_id, facts, plan, now=now, pause=ClockKind.RESTORE)

    # 001 §2.2.5.4: a reboot, a reinstall or any operation with data risk waits for the customer's
    # approval on a link; refused → recorded, and the lead decides how the repair goes on
    instructions, now = _risky_operations_approved(case_id, facts, onsite.value.risky_operations, now)

    # 8. Repair by the plan; on an anomaly the lead guides; still stuck → the director may hand over.
    done = _repair_work(case_id, facts, plan, instructions, now)
    if isinstance(done, RepairOutcome):
        return done
    answer, attempt = done
    now, work = answer.at, answer.value
    repaired_at = work.repaired_at or now
    record(case_id, "repaired", repaired_at, answer.by, {"work_done": work.work_done, "attempts": attempt})

    # 9. Preventive maintenance.  10. 5-minute talk: each further problem opens a new repair flow.
    record(case_id, "preventive_maintenance", now, answer.by, {"done": work.maintenance})
    new_repairs, now = five_minute_talk(case_id, facts, now=now, problems=work.problems)

    # 11. The customer's business is restored first.
    restored_at = work.restored_at or repaired_at
    record(case_id, "restored", restored_at, answer.by, {})
    clock(
        case_id, ClockKind.WORKAROUND, ClockAction.STOP, restored_at
    )  # no workaround came first: see _workaround
    clock(case_id, ClockKind.RESTORE, ClockAction.STOP, restored_at)
    # §4.5: a problem an inspection found gets its result within 2 working days of the fix (the
    # feedback goes out as the fix is recorded: a fix recorded late is a late feedback)
    problem_fixed_feedback(case_id, repaired_at, answer.at, work.work_done)
    return Repaired(
        now=now,
        engineer=answer.by,
        repaired_at=repaired_at,
        restored_at=restored_at,
        plan=plan,
        work=work,
        new_repairs=new_repairs,
    )


def _visit_booked(case_id: int, facts: CaseFacts, plan: Plan, now: datetime) -> datetime:
    """4. The centre books the visit with the customer and tells the coordinator."""
    visit = fill_form(
        case_id,
        "visit",
        1,
        role=DISPATCHER,
        form=VisitForm,
        now=now,
        subject=subject(facts, "请与客户预约上门时间"),
        content=plan.text,
    )
    now = visit.at
    visit_at = visit.value.visit_at
    record(
        case_id,
        "visit_booked",
        now,
        visit.by,
        {"visit_at": visit_at.isoformat(), "coordinator_joins": visit.value.coordinator_joins},
        tell=[
            Tell(
                template="repair/visit_booked",
                key="visit-booked",
                customer=True,
                context={"visit_at": visit_at},
            ),
            # the coordinator's own notice: whether to go along is an internal decision
            Tell(
                template="repair/visit_coordinator",
                key="visit-booked-coordinator",
                roles=[COORDINATOR_ROLE],
                context={"visit_at": visit_at},
            ),
        ],
    )
    # the arrival clock runs from the moment the customer is ready for us: the agreed time, if later
    clock(case_id, ClockKind.ARRIVAL, ClockAction.START, max(now, visit_at))
    return now


def _arrived(
    case_id: int, facts: CaseFacts, plan: Plan, parts: bool, now: datetime
) -> tuple[Answer[OnsiteForm], Plan, datetime]:
    """5–6. Arrival (clock by distance band) and on-site re-analysis; the customer signs the
    技术服务申请; a changed plan goes to the director."""
    onsite = fill_form(
        case_id,
        "onsite",
        1,
        role=ENGINEER,
        form=OnsiteForm,
        now=now,
        subject=subject(facts, "到场后请填写现场记录"),
        content=plan.text,
    )
    now = onsite.at
    arrived_at = onsite.value.arrived_at
    record(
        case_id,
        "arrived",
        arrived_at,
        onsite.by,
        {
            "room_rules_followed": onsite.value.room_rules_followed,
            "fault_reconfirmed": onsite.value.fault_reconfirmed,
        },
    )
    clock(case_id, ClockKind.ARRIVAL, ClockAction.STOP, arrived_at)
    if parts:
        clock(case_id, ClockKind.SPARE_PART, ClockAction.STOP, arrived_at)
    record(case_id, "onsite_analysis", now, onsite.by, {"findings": onsite.value.findings})
    if onsite.value.workaround:  # 业务先恢复 on site (one given remotely already stopped the clock)
        _workaround(
            case_id, onsite.value.workaround, onsite.value.workaround_at or now, onsite.by, remote=False
        )
    # 001 §2.2.5.2: the fault re-confirmed with the customer, who signs the 技术服务申请 on arrival
    _, now = service_report_signed(
        case_id,
        facts,
        now=now,
        kind="service_request",
        template="repair/service_request",
        context={
            "arrived_at": arrived_at,
            "engineer": onsite.by,
            "fault_reconfirmed": onsite.value.fault_reconfirmed,
            "findings": onsite.value.findings,
            "plan": plan.model_dump(),
            "risky_operations": onsite.value.risky_operations,
        },
    )
    revised = onsite.value.revised_plan
    if revised and revised != plan.text:
        plan = _onsite_revision(case_id, facts, plan, revised, onsite.by, now)
        plan, now = director_approves_plan(case_id, facts, plan, now=now, step="onsite-revision")
    return onsite, plan, now


def _repair_work(
    case_id: int, facts: CaseFacts, plan: Plan, instructions: str, now: datetime
) -> tuple[Answer[RepairForm], int] | RepairOutcome:
    """8. The engineer repairs by the plan; each anomaly goes to the lead, and one the lead cannot
    solve to the director, who may hand the case over (a RepairOutcome). Returns the completed
    repair record and the number of attempts."""
    attempt = 1
    while True:
        done = fill_form(
            case_id,
            f"repair-{attempt}",
            attempt,
            role=ENGINEER,
            form=RepairForm,
            now=now,
            subject=subject(facts, "请按方案维修并填写维修记录"),
            content="\n\n".join(t for t in (plan.text, instructions) if t),
        )
        now = done.at
        work = done.value
        if work.completed:
            return done, attempt
        record(
            case_id,
            "repair_anomaly",
            now,
            done.by,
            {"attempt": attempt, "anomaly": work.anomaly},
            key=f"anomaly:{attempt}",
        )
        guidance = fill_form(
            case_id,
            f"guidance-{attempt}",
            attempt,
            role=LEAD,
            form=GuidanceForm,
            now=now,
            subject=subject(facts, "维修遇到异常，请指导"),
            content=work.anomaly,
        )
        now = guidance.at
        record(
            case_id,
            "lead_guidance",
            now,
            guidance.by,
            guidance.value.model_dump(),
            key=f"guidance:{attempt}",
        )
        if not guidance.value.solvable:
            handover = wait_for(
                ask_staff(
                    case_id,
                    "handover",
                    attempt,
                    role=DIRECTOR,
                    now=now,
                    subject=subject(facts, "维修无法完成，是否转入事故处理流程"),
                    content=f"{work.anomaly}\n\n技术负责人：{guidance.value.guidance}",
                ),
                "handover",
                attempt,
            )
            now = handover.at
            if handover.decision == DecisionKind.APPROVED:
                return _hand_over(case_id, facts, handover.comment or work.anomaly, now)
            record(
                case_id,
                "handover_declined",
                now,
                handover.by,
                {"comment": handover.comment},
                key=f"handover:{attempt}",
            )
        attempt += 1


def _reported_and_archived(case_id: int, facts: CaseFacts, found: DiagnosisForm, done: Repaired) -> list[int]:
    """12–17: the signed service report, the fault report, the callback, the written account, the
    director's final approval and the archive. Returns the reports' ids."""
    service_report, signed_at = _service_report_signed(case_id, facts, found, done)  # 12

    # 13. SMS to the service centre.  Clocks after completion: callback 2 days, account 1 week, report 24 h.
    sms_to_centre(case_id, now=signed_at)
    start_after_service_clocks(case_id, signed_at)
    clock(case_id, ClockKind.FAULT_REPORT, ClockAction.START, done.repaired_at)
    # The fault-analysis report (故障分析报告, 1 working day after the restore, 003 §8.5.4) is this same
    # 故障处理报告: the form asks for the cause analysis (原因分析) with the symptoms, process, solution
    # and advice that 001 §2.2.6 wants, so one report filed meets both deliverables. The two clocks
    # stay apart because the contracts measure them differently: 24 h (wall-clock, or working time on
    # 5x8) from the repair, against one working day from the restore — on a Friday evening restore the
    # working day runs into Monday, while 24 h do not; a contract drops the one it does not promise
    # (`null` in its SLA policy) and the clock is then not started (tasks.clocks.applies).
    clock(case_id, ClockKind.ANALYSIS_REPORT, ClockAction.START, done.restored_at)
    fault_request = ask_staff(
        case_id,
        "fault-report",
        1,
        role=LEAD,
        kind="form",
        form=FaultReportForm,
        now=signed_at,
        subject=subject(facts, "请在24小时内提交故障处理报告"),
        content=facts.description,
    )
    account_request = request_written_account(case_id, facts, now=signed_at)

    # 15. Fault-handling report (故障处理报告) to the customer within 24 h of the repair — awaited
    # before the callback (14): its 24 h run out before the callback's 2 days.
    fault_report = _fault_report(case_id, fault_request, done)

    # 14. Callback within 2 days with the callback form (客户回访表).
    callback_form, now = callback(case_id, facts, completed_at=signed_at)

    # 16. The engineer's written account with the plan, within a week.
    account, now = written_account_received(case_id, account_request, plan=done.plan, now=now)

    # 17. Final approval by the technical director; archive.
    reports = [service_report, fault_report, callback_form, account]
    now = final_approval(case_id, facts, reports, now=now)
    archive(case_id, reports, now=now)
    return reports


def _service_report_signed(
    case_id: int, facts: CaseFacts, found: DiagnosisForm, done: Repaired
) -> tuple[int, datetime]:
    """12. The repair service report (维修服务报告), signed by the customer."""
    work = done.work
    times = report_context(case_id)
    return service_report_signed(
        case_id,
        facts,
        now=done.now,
        context={
            **times,
            "solved_remotely": found.solved_remotely,
            "diagnosis": found.result,
            "command_log": found.command_log,
            "plan": done.plan.model_dump() if done.plan else None,
            "work_done": (work.work_done if work else "") or found.result,
            "parts_used": _parts_used(case_id),
            "maintenance": work.maintenance if work else "",
            "further_problems": [p for p in (work.problems if work else "").splitlines() if p.strip()],
            "engineer": done.engineer,
        },
    )


def _fault_report(case_id: int, request: int, done: Repaired) -> int:
    """15. The lead's fault-handling report (故障处理报告), issued to the customer; its clocks stop."""
    fault = answer_of(FaultReportForm, wait_for(request, "fault-report", 1))
    report = issue(
        case_id,
        "fault_report",
        "repair/fault_report",
        {
            **report_context(case_id),
            **fault.value.model_dump(),
            **_people(done.engineer, done.work is not None, fault.by),
        },
        fault.at,
        fault.by,
        tell=[Tell(template="repair/fault_report", key="fault-report", customer=True)],
    )
    clock(case_id, ClockKind.FAULT_REPORT, ClockAction.STOP, fault.at)
    clock(case_id, ClockKind.ANALYSIS_REPORT, ClockAction.STOP, fault.at)
    return int(report["id"])


COORDINATOR_ROLE = Role.COORDINATOR


def _workaround(case_id: int, text: str, at: datetime, by: str, *, remote: bool) -> None:
    """业务先恢复 (001 §2.2.5.3, §2.2.5.8 "发出临时解决方案"): the workaround given to the customer
    and its time are recorded and the workaround clock (30/30/60 min by severity) stops there.

    What counts: the first workaround issued — by the lead during remote diagnosis or by the engineer
    on site. A service restored before any workaround stops the clock at the restore: the clock is
    there for the customer's business to run again as soon as possible, and a restore does that
    better than a workaround (the stop of an already stopped clock changes nothing)."""
    where = "remote" if remote else "onsite"
    record(
        case_id,
        "workaround",
        at,
        by,
        {"workaround": text, "where": where, "at": at.isoformat()},
        key=f"workaround:{where}",
    )
    clock(case_id, ClockKind.WORKAROUND, ClockAction.STOP, at)


def _risky_operations_approved(
    case_id: int, facts: CaseFacts, operations: str, now: datetime
) -> tuple[str, datetime]:
    """The customer approves or refuses the listed risky operations on a link (001 §2.2.5.4); a
    refusal is recorded and the technical lead decides how the repair goes on. Returns what the
    engineer is told with the plan ("" when nothing was listed) and the time."""
    if not operations:
        return "", now
    approval = ask_customer(
        case_id,
        "risky-operations",
        1,
        kind="approval",
        now=now,
        content=operations,
        subject=subject(facts, "现场维修需要您批准以下有数据风险的操作"),
    )
    decision = wait_for(approval, "risky-operations", 1)
    now = decision.at
    if decision.decision == DecisionKind.APPROVED:
        record(
            case_id,
            "risky_operations_approved",
            now,
            decision.by,
            {"operations": operations},
            key="risky-operations",
        )
        return f"客户已批准的操作：\n{operations}", now
    record(
        case_id,
        "risky_operations_refused",
        now,
        decision.by,
        {"operations": operations, "comment": decision.comment},
        key="risky-operations",
    )
    lead = fill_form(
        case_id,
        "risky-operations-refused",
        1,
        role=LEAD,
        form=RiskyRefusedForm,
        now=now,
        subject=subject(facts, "客户未批准有数据风险的操作，请决定如何继续"),
        content=f"{operations}\n\n客户意见：{decision.comment or '—'}",
    )
    now = lead.at
    record(
        case_id,
        "risky_operations_decided",
        now,
        lead.by,
        {"instruction": lead.value.instruction},
        key="risky-operations-decided",
    )
    return (
        f"客户未批准的操作（不得实施）：\n{operations}\n\n技术负责人处理意见：{lead.value.instruction}"
    ), now


def _onsite_revision(case_id: int, facts: CaseFacts, plan: Plan, text: str, by: str, now: datetime) -> Plan:
    new = revise_plan(plan, text, "onsite", by, "现场再分析")
    if new is None:
        return plan
    record(
        case_id,
        "plan_revised",
        now,
        by,
        {"version": new.version, "reason": "onsite"},
        key=f"plan-revised:v{new.version}",
    )
    return new


def _hand_over(case_id: int, facts: CaseFacts, reason: str, now: datetime) -> RepairOutcome:
    """The director decided the repair cannot be completed: the accident flow takes the case over."""
    run_id = start_accident_run(case_id, reason, f"{case_id}:handover")
    record(
        case_id,
        "handed_over",
        now,
        "技术总监",
        {"accident_run": run_id, "reason": reason},
        key="handed-over",
        status=CaseStatus.HANDED_OVER,
        tell=[
            Tell(
                template="repair/handed_over",
                key="handed-over",
                customer=True,
                roles=[DIRECTOR, COORDINATOR_ROLE, DISPATCHER],
                urgent=True,
                context={"reason": reason},
            )
        ],
    )
    return RepairOutcome(
        case_id=case_id, number=facts.number, status=CaseStatus.HANDED_OVER, accident_run=run_id
    )


def _parts_used(case_id: int) -> list[dict[str, Any]]:
    return parts_of_case(case_id)


# --- starting a repair from elsewhere ---------------------------------------------------------


def _people(engineer: str, on_site: bool, lead: str) -> dict[str, str]:
    """Who the fault report names, each under their own role: the service engineer who repaired
    on site (solved remotely: the technical lead who did) and the lead who wrote the report."""
    role = ROLE_LABELS_ZH[ENGINEER] if on_site else f"{ROLE_LABELS_ZH[LEAD]}（远程处理）"
    return {"engineer": engineer, "engineer_role": role, "lead": lead}


def deployments() -> list[Any]:
    # the dispatcher's run form: Chinese fields, customers and sites as choices read now (serve time)
    return [
        use_form(
            repair.to_deployment(
                name="repair",
                description="故障维修服务流程：客户报修 → 远程诊断 → 方案审批 → 上门维修 → 报告签字 → 回访 → 审批归档",
                tags=["repair", "故障维修"],
            ),
            RepairRequestForm,
        )
    ]
