"""故障维修服务流程 — the repair flow (PROCEDURES.md §2), from the customer's report to the
archived, approved report.

Started from the Prefect UI (deployment `repair`, the form is `RepairRequest`), from the command
line (`aftercare repair new`), or by another flow (`tasks.cases.start_repair`: inspections, 5-minute talks).
Whatever a person enters arrives through a form link of the approvals machinery; the flow body
only decides from those decisions and from task results (DESIGN.md §2), so it can be replayed.
"""

# No `from __future__ import annotations` here: the flow's parameter model (built by Prefect from
# the signature) must see the real RepairRequest class, however the runner loads this module.

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from flows.steps import (
    archive,
    ask_staff,
    callback,
    customer_accepts_plan,
    director_approves_plan,
    fill_form,
    final_approval,
    five_minute_talk,
    request_written_account,
    service_report_signed,
    sms_to_centre,
    start_after_service_clocks,
    subject,
    wait_for,
    written_account_received,
)
from models import Role
from rules.plans import Plan
from tasks.cases import (
    IntakeError,
    RepairRequest,
    clock,
    load_case,
    record,
    start_accident_run,
    take_request,
)
from tasks.parts import request_parts
from tasks.reports import first_plan_of, issue, report_context

LEAD, ENGINEER, DIRECTOR, DISPATCHER = Role.TECHNICAL_LEAD, Role.ENGINEER, Role.TECHNICAL_DIRECTOR, Role.DISPATCHER


# --- the forms of the repair flow ---------------------------------------------------------------


class DiagnosisForm(BaseModel):
    """远程诊断 — the technical lead calls the customer and logs in remotely."""

    contacted_at: datetime = Field(title="首次联系客户时间", description="电话联系客户并确认故障的时间")
    fault_confirmed: bool = Field(default=True, title="已与客户确认故障")
    result: str = Field(title="诊断结论", min_length=2)
    command_log: str = Field(default="", title="远程操作命令记录", description="远程登录执行的命令与输出，随报告提交")
    solved_remotely: bool = Field(default=False, title="已远程解决")
    plan: str = Field(default="", title="解决方案", description="未远程解决时填写：措施、步骤、时间安排（由技术总监审批）")
    parts: str = Field(default="", title="所需备件", description="硬件故障：备件编码 x 数量，如 PSU-900W x1")


class VisitForm(BaseModel):
    """预约上门 — the centre books the visit with the customer and tells the coordinator."""

    visit_at: datetime = Field(title="预约上门时间")
    coordinator_joins: bool = Field(default=False, title="项目总协调人随同前往")
    note: str = Field(default="", title="备注", description="已准备维修服务报告单和工具等")


class OnsiteForm(BaseModel):
    """到场与现场再分析 — the engineer arrives, re-confirms with the customer and re-analyses."""

    arrived_at: datetime = Field(title="到场时间")
    room_rules_followed: bool = Field(default=True, title="已按机房规定进入（鞋套、防静电垫）")
    findings: str = Field(title="现场再分析结论", min_length=2)
    revised_plan: str = Field(default="", title="修订后的方案", description="方案需要修改时填写；不改则留空")


class RepairForm(BaseModel):
    """维修记录 — repair, preventive maintenance, the 5-minute talk and the restore, as done on site."""

    completed: bool = Field(title="已按方案修复")
    work_done: str = Field(title="维修内容", min_length=2)
    anomaly: str = Field(default="", title="异常情况", description="未能修复时说明现象，技术负责人将给予指导")
    repaired_at: datetime | None = Field(default=None, title="修复时间")
    maintenance: str = Field(default="", title="预防性维护", description="对所修设备做的预防性维护")
    problems: str = Field(default="", title="5分钟交流发现的其他问题",
                          description="每行一个，可写 [级别] 开头；每个问题都会新建维修单")
    restored_at: datetime | None = Field(default=None, title="业务恢复时间")


class GuidanceForm(BaseModel):
    """技术指导 — the lead guides the engineer on an anomaly."""

    guidance: str = Field(title="指导意见", min_length=2)
    solvable: bool = Field(title="按指导可以继续维修", description="否：请技术总监决定是否转入事故处理流程")


class FaultReportForm(BaseModel):
    """故障处理报告 — the parts PROCEDURES.md §2 step 15 requires (times come from the record)."""

    customer_engineer: str = Field(title="客户工程师", min_length=1)
    symptoms: str = Field(title="故障现象", min_length=2)
    business_impact: str = Field(title="业务影响", min_length=2)
    process: str = Field(title="处理过程", min_length=2)
    cause: str = Field(title="原因分析", min_length=2)
    solution: str = Field(title="解决方案", min_length=2)
    advice: str = Field(title="预防建议", min_length=2)


class RepairOutcome(BaseModel):
    case_id: int | None = None
    number: str = ""
    status: str
    message: str = ""
    reports: list[int] = Field(default_factory=list)
    new_repairs: list[str] = Field(default_factory=list)
    accident_run: str | None = None


# --- the flow ---------------------------------------------------------------------------------


@flow(name="repair", retries=0, persist_result=True, log_prints=True)
def repair(request: RepairRequest) -> RepairOutcome:
    """故障维修服务流程: from the customer's report to the archived, approved report."""
    from prefect.states import Failed

    from tasks.timers import current_time

    # Intake: the dispatcher's form; the clocks start at the reported time.
    now = request.reported_at or current_time("intake")
    try:
        case_id = take_request(request, now, str(flow_run.id), tell=[
            {"template": "repair/opened", "key": "opened", "roles": [DISPATCHER, LEAD, ENGINEER]},
            {"template": "repair/received", "key": "received", "customer": True}])
    except IntakeError as exc:
        return Failed(message=str(exc))  # type: ignore[return-value]  # a clear message, no traceback
    facts = load_case(case_id)
    now = facts["reported_at"]
    for kind in ("first_contact", "remote_response", "restore"):
        clock(case_id, kind, "start", now)

    # 1–2. First contact and remote diagnosis by the technical lead, with the command log.
    diagnosis = fill_form(case_id, "diagnosis", 1, role=LEAD, form=DiagnosisForm, now=now,
                          subject=subject(facts, "请联系客户并远程诊断"), content=facts["description"])
    now = diagnosis.at
    found = diagnosis.payload
    contacted_at = _when(found.get("contacted_at"), now)
    record(case_id, "first_contact", contacted_at, diagnosis.by, {"fault_confirmed": found.get("fault_confirmed", True)})
    clock(case_id, "first_contact", "stop", contacted_at)
    clock(case_id, "remote_response", "stop", contacted_at)
    record(case_id, "remote_diagnosis", now, diagnosis.by,
           {"result": found.get("result", ""), "command_log": found.get("command_log", ""),
            "solved": bool(found.get("solved_remotely"))})

    plan: Plan | None = None
    work: dict[str, Any] = {}
    new_repairs: list[str] = []
    if found.get("solved_remotely"):  # → straight to the report (step 12)
        record(case_id, "repaired", now, diagnosis.by, {"remote": True})
        record(case_id, "restored", now, diagnosis.by, {"remote": True})
        clock(case_id, "restore", "stop", now)
        repaired_at = now
    else:
        # 3. Solution plan, approved by the technical director; spare parts from the store.
        plan = _first_plan(case_id, facts, found.get("plan", ""), diagnosis.by, now)
        plan, now = director_approves_plan(case_id, facts, plan, now=now)
        parts = found.get("parts", "").strip()
        if parts:
            clock(case_id, "spare_part", "start", now)
            parts, now = _issue_parts(case_id, facts, parts, diagnosis.by, now)

        # 4. The centre books the visit with the customer and tells the coordinator.
        visit = fill_form(case_id, "visit", 1, role=DISPATCHER, form=VisitForm, now=now,
                          subject=subject(facts, "请与客户预约上门时间"), content=plan.text)
        now = visit.at
        visit_at = _when(visit.payload.get("visit_at"), now)
        record(case_id, "visit_booked", now, visit.by, {"visit_at": visit_at.isoformat(),
                                                        "coordinator_joins": visit.payload.get("coordinator_joins")},
               tell=[{"template": "repair/visit_booked", "key": "visit-booked", "roles": [COORDINATOR_ROLE],
                      "customer": True, "context": {"visit_at": visit_at}}])
        # the arrival clock runs from the moment the customer is ready for us: the agreed time, if later
        clock(case_id, "arrival", "start", max(now, visit_at))

        # 5–6. Arrival (clock by distance band) and on-site re-analysis; a changed plan goes to the director.
        onsite = fill_form(case_id, "onsite", 1, role=ENGINEER, form=OnsiteForm, now=now,
                           subject=subject(facts, "到场后请填写现场记录"), content=plan.text)
        now = onsite.at
        arrived_at = _when(onsite.payload.get("arrived_at"), now)
        record(case_id, "arrived", arrived_at, onsite.by, {"room_rules_followed": onsite.payload.get("room_rules_followed")})
        clock(case_id, "arrival", "stop", arrived_at)
        if parts:
            clock(case_id, "spare_part", "stop", arrived_at)
        record(case_id, "onsite_analysis", now, onsite.by, {"findings": onsite.payload.get("findings", "")})
        revised = (onsite.payload.get("revised_plan") or "").strip()
        if revised and revised != plan.text:
            plan = _onsite_revision(case_id, facts, plan, revised, onsite.by, now)
            plan, now = director_approves_plan(case_id, facts, plan, now=now, step="onsite-revision")

        # 7. The customer accepts or objects; a loop until both sides sign the same version.
        plan, now = customer_accepts_plan(case_id, facts, plan, now=now, pause="restore")

        # 8. Repair by the plan; on an anomaly the lead guides; still stuck → the director may hand over.
        attempt = 1
        while True:
            done = fill_form(case_id, f"repair-{attempt}", attempt, role=ENGINEER, form=RepairForm, now=now,
                             subject=subject(facts, "请按方案维修并填写维修记录"), content=plan.text)
            now = done.at
            work = done.payload
            if work.get("completed"):
                break
            record(case_id, "repair_anomaly", now, done.by, {"attempt": attempt, "anomaly": work.get("anomaly", "")},
                   key=f"anomaly:{attempt}")
            guidance = fill_form(case_id, f"guidance-{attempt}", attempt, role=LEAD, form=GuidanceForm, now=now,
                                 subject=subject(facts, "维修遇到异常，请指导"), content=work.get("anomaly", ""))
            now = guidance.at
            record(case_id, "lead_guidance", now, guidance.by, dict(guidance.payload), key=f"guidance:{attempt}")
            if not guidance.payload.get("solvable"):
                handover = wait_for(ask_staff(case_id, "handover", attempt, role=DIRECTOR, now=now,
                                              subject=subject(facts, "维修无法完成，是否转入事故处理流程"),
                                              content=f"{work.get('anomaly', '')}\n\n技术负责人：{guidance.payload.get('guidance', '')}"),
                                    "handover", attempt)
                now = handover.at
                if handover.decision == "approved":
                    return _hand_over(case_id, facts, handover.comment or work.get("anomaly", ""), now)
                record(case_id, "handover_declined", now, handover.by, {"comment": handover.comment}, key=f"handover:{attempt}")
            attempt += 1
        repaired_at = _when(work.get("repaired_at"), now)
        record(case_id, "repaired", repaired_at, done.by, {"work_done": work.get("work_done", ""), "attempts": attempt})

        # 9. Preventive maintenance.  10. 5-minute talk: each further problem opens a new repair flow.
        record(case_id, "preventive_maintenance", now, done.by, {"done": work.get("maintenance", "")})
        new_repairs, now = five_minute_talk(case_id, facts, now=now, problems=work.get("problems", ""))

        # 11. The customer's business is restored first.
        restored_at = _when(work.get("restored_at"), repaired_at)
        record(case_id, "restored", restored_at, done.by, {})
        clock(case_id, "restore", "stop", restored_at)

    # 12. Repair service report (维修服务报告), signed by the customer.
    times = report_context(case_id, 1)
    service_report, now = service_report_signed(case_id, facts, now=now, context={
        **times, "solved_remotely": bool(found.get("solved_remotely")), "diagnosis": found.get("result", ""),
        "command_log": found.get("command_log", ""), "plan": plan.model_dump() if plan else None,
        "work_done": work.get("work_done") or found.get("result", ""), "parts_used": _parts_used(case_id),
        "maintenance": work.get("maintenance", ""), "further_problems": [p for p in (work.get("problems") or "").splitlines() if p.strip()],
        "engineer": diagnosis.by if not work else done.by,
    })

    # 13. SMS to the service centre.  Clocks after completion: callback 2 days, account 1 week, report 24 h.
    signed_at = now
    sms_to_centre(case_id, now=now)
    start_after_service_clocks(case_id, now)
    clock(case_id, "fault_report", "start", repaired_at)
    fault_request = ask_staff(case_id, "fault-report", 1, role=LEAD, kind="form", form=FaultReportForm, now=now,
                              subject=subject(facts, "请在24小时内提交故障处理报告"), content=facts["description"])
    account_request = request_written_account(case_id, facts, now=now)

    # 15. Fault-handling report (故障处理报告) to the customer within 24 h of the repair — awaited
    # before the callback (14): its 24 h run out before the callback's 2 days.
    fault = wait_for(fault_request, "fault-report", 1)
    fault_report = issue(case_id, "fault_report", "repair/fault_report",
                         {**report_context(case_id, 2), **fault.payload, "engineer": fault.by}, fault.at, fault.by,
                         tell=[{"template": "repair/fault_report", "key": "fault-report", "customer": True}])
    clock(case_id, "fault_report", "stop", fault.at)

    # 14. Callback within 2 days with the callback form (客户回访表).
    callback_form, now = callback(case_id, facts, completed_at=signed_at)

    # 16. The engineer's written account with the plan, within a week.
    account, now = written_account_received(case_id, account_request, plan=plan, now=now)

    # 17. Final approval by the technical director; archive.
    reports = [service_report, fault_report["id"], callback_form, account]
    now = final_approval(case_id, facts, reports, now=now)
    archive(case_id, reports, now=now)
    return RepairOutcome(case_id=case_id, number=facts["number"], status="archived", reports=reports,
                         new_repairs=new_repairs)


COORDINATOR_ROLE = Role.COORDINATOR


def _first_plan(case_id: int, facts: dict[str, Any], text: str, author: str, now: datetime) -> Plan:
    """Plan v1 from the diagnosis form; left empty or unusable → the lead is asked for it on its own form."""
    from flows.steps import PlanForm

    plan, attempt = first_plan_of(text, author), 0
    while plan is None:
        attempt += 1
        answer = fill_form(case_id, f"plan-v1-{attempt}", 1, role=LEAD, form=PlanForm, now=now,
                           subject=subject(facts, "未远程解决，请填写解决方案"), content=facts["description"])
        plan, author = first_plan_of(answer.payload.get("plan", ""), answer.by), answer.by
    record(case_id, "plan_written", now, author, {"version": 1}, key="plan:v1")
    return plan


def _issue_parts(case_id: int, facts: dict[str, Any], parts: str, by: str, now: datetime) -> tuple[str, datetime]:
    """The parts request goes to the store; a list it cannot take (an unreadable line, a code it does
    not stock) issues nothing and goes back to the lead, told why, until it can — or is left empty."""
    from flows.steps import PartsForm

    attempt = 0
    while parts:
        issued = request_parts(case_id, parts, now, "parts" if attempt == 0 else f"parts-{attempt}", by)
        if "error" not in issued:
            break
        attempt += 1
        answer = fill_form(case_id, f"parts-{attempt}", attempt, role=LEAD, form=PartsForm, now=now,
                           subject=subject(facts, "备件清单无法受理，请更正"),
                           content=f"{issued['error']}\n\n原备件清单：{parts}")
        now, parts, by = answer.at, answer.payload.get("parts", "").strip(), answer.by
    return parts, now


def _onsite_revision(case_id: int, facts: dict[str, Any], plan: Plan, text: str, by: str, now: datetime) -> Plan:
    from tasks.reports import revise_plan

    new = revise_plan(plan, text, "onsite", by, "现场再分析")
    if new is None:
        return plan
    record(case_id, "plan_revised", now, by, {"version": new.version, "reason": "onsite"}, key=f"plan-revised:v{new.version}")
    return new


def _hand_over(case_id: int, facts: dict[str, Any], reason: str, now: datetime) -> RepairOutcome:
    """The director decided the repair cannot be completed: the accident flow takes the case over."""
    run_id = start_accident_run(case_id, reason, f"{case_id}:handover")
    record(case_id, "handed_over", now, "技术总监", {"accident_run": run_id, "reason": reason}, key="handed-over",
           status="handed_over", tell=[{"template": "repair/handed_over", "key": "handed-over", "customer": True,
                                        "roles": [DIRECTOR, COORDINATOR_ROLE, DISPATCHER], "urgent": True,
                                        "context": {"reason": reason}}])
    return RepairOutcome(case_id=case_id, number=facts["number"], status="handed_over", accident_run=run_id)


def _when(value: Any, default: datetime) -> datetime:
    """A time from a form (ISO text, local time when naive) — or `default` when left empty."""
    if not value:
        return default
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        import pendulum

        moment = pendulum.instance(moment, tz="Asia/Shanghai")
    from datetime import UTC

    return moment.astimezone(UTC)


def _parts_used(case_id: int) -> list[dict[str, Any]]:
    from tasks.parts import parts_of_case

    return parts_of_case(case_id)


# --- starting a repair from elsewhere ---------------------------------------------------------


def deployments() -> list[Any]:
    return [repair.to_deployment(
        name="repair",
        description="故障维修服务流程：客户报修 → 远程诊断 → 方案审批 → 上门维修 → 报告签字 → 回访 → 审批归档",
        tags=["repair", "故障维修"],
    )]
