"""事故处理服务流程 — the accident-handling procedure, PROCEDURES.md §3 [001 §2.2, 003 §8.5.5].

Started from the Prefect UI (deployment `accident`, form `AccidentRequest`) or by hand-over from a
repair that cannot complete (`tasks.cases.start_accident_run`: the accident links to the repair and
carries its history). The steps shared with the repair flow (director approval, the customer's
accept/object loop, 5-minute talk, signed service report, SMS, callback, written account, archive)
come from `flows.steps`; this file holds only what is the accident's own.

Recurring work while the accident lasts — the hourly progress update, the vendor's daily report,
the standby machine at half the restore time — is done by the clock keeper's accident steps
(`tasks.accident.send_*`), driven by the case's state, so the flow can stay suspended on people.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from deployments.run_forms import AccidentRequestForm, use_form
from flows import steps
from models import Role
from models.approvals import DecisionKind
from models.clocks import ClockAction
from models.forms import AccidentMaintenanceForm, AccidentPlanForm, ExecutionForm, PlanTestForm, ReviewForm
from rules.plans import Plan
from rules.sla import ClockKind
from tasks.accident import (
    AccidentRequest,
    accident_report_context,
    call_director_on_site,
    form_team,
    gm_signed_off,
    open_accident,
    record_execution,
    record_plan,
    record_review,
    record_test_result,
    request_standby_machine,
    review_returned,
    set_stage,
    start_vendor_support,
    window_expired,
)
from tasks.board import name_run, run_name
from tasks.cases import CaseFacts, IntakeError, clock, load_case, record
from tasks.parts import parts_of_case
from tasks.timers import current_time


@flow(name="accident", flow_run_name=run_name, retries=0, persist_result=True, log_prints=True)
def accident(request: AccidentRequest) -> dict[str, Any]:
    """事故处理服务流程: from the accident to the general manager's sign-off and the archive."""
    from prefect.states import Failed

    # the steps start from the moment the dispatcher entered (a hand-over: from now)
    entered = current_time()
    now = request.reported_at or entered
    # 1. the lead goes on site at once; the centre informs the coordinator (a request that cannot be
    # taken ends the run at once, nothing written)
    try:
        case_id = open_accident(request, now, str(flow_run.get_id() or ""), entered_at=entered)
    except IntakeError as exc:
        return Failed(message=str(exc))  # type: ignore[return-value]  # a clear message, no traceback
    name_run(case_id)  # "SG-000002 事故处理 北京某银行" in the Prefect UI from now on
    facts = load_case(case_id)
    # 2. the emergency accident team; the coordinator is the customer's single contact
    form_team(case_id, now)
    # 2–6. plans until one restores the service (hourly updates run in the keeper meanwhile)
    plan, now = plans_until_restored(case_id, facts, now)
    # 7. preventive maintenance, on its form (what was maintained, shown in the accident report);
    # 5-minute talk (each further problem opens a repair flow)
    upkeep = steps.fill_form(
        case_id,
        "maintenance",
        1,
        role=Role.TECHNICAL_LEAD,
        form=AccidentMaintenanceForm,
        now=now,
        content=plan.text,
        subject=steps.subject(facts, "业务已恢复，请做预防性维护并登记维护内容"),
    )
    now = upkeep.at
    maintenance = {
        **upkeep.value.model_dump(mode="json"),
        "done_at": (upkeep.value.done_at or upkeep.at).isoformat(),
        "by": upkeep.by,
        "plan_version": plan.version,
    }
    record(
        case_id,
        "preventive_maintenance",
        upkeep.value.done_at or now,
        upkeep.by,
        maintenance,
        key="preventive-maintenance",
    )
    _, now = steps.five_minute_talk(case_id, facts, now=now, role=Role.TECHNICAL_LEAD)
    # 8. accident service report signed by the customer; SMS to the centre; callback within 2 days
    context = {
        **accident_report_context(case_id),
        "parts_used": parts_of_case(case_id),
        "maintenance": {**maintenance, "done_at": upkeep.value.done_at or upkeep.at},
    }
    report_id, now = steps.service_report_signed(
        case_id,
        facts,
        now=now,
        context=context,
        template="accident/service_report",
        kind="accident_report",
        by="紧急抢修小组",
        role=Role.TECHNICAL_LEAD,
    )
    steps.sms_to_centre(case_id, now=now, procedure="accident")
    steps.start_after_service_clocks(case_id, now)
    # 9. the team's accident summary with the plan, within 1 week (asked now, awaited after the callback)
    summary_request = steps.request_written_account(
        case_id, facts, now=now, role=Role.TECHNICAL_LEAD, what="事故总结"
    )
    callback_id, now = steps.callback(case_id, facts, completed_at=now)
    summary_id, now = steps.written_account_received(
        case_id, summary_request, plan=plan, now=now, kind="accident_summary", template="accident/summary"
    )
    # 10. technical review meeting, written report to the general manager, sign-off, archive
    review_id, now = review_until_signed_off(case_id, facts, now)
    reports = [report_id, callback_id, summary_id, review_id]
    steps.archive(case_id, reports, now=now, procedure="accident")
    return {"case_id": case_id, "number": facts.number, "plan_version": plan.version, "reports": reports}


def plans_until_restored(case_id: int, facts: CaseFacts, now: datetime) -> tuple[Plan, datetime]:
    """§3 steps 2–5: plan → director → (test) → customer → execute; a failed test or execution means
    another plan, and out of the customer's tolerated window the director starts vendor support."""
    written: dict[int, dict[str, Any]] = {}  # version → the recorded structured plan

    def write(version: int, reason: str, now: datetime) -> tuple[Plan, datetime]:
        plan, recorded, now = write_plan(case_id, facts, version, reason, now)
        written[plan.version] = recorded
        return plan, now

    def revise(
        case_id: int, facts: CaseFacts, plan: Plan, *, reason: str, note: str, now: datetime
    ) -> tuple[Plan, datetime]:
        # the director or the customer sent plan v back: the lead writes v+1 on the accident plan form
        who = {"director": "技术总监要求修改", "rejected": "技术总监驳回"}.get(reason, "客户异议")
        return write(plan.version + 1, f"第 {plan.version} 版{who}：{note or '—'}", now)

    plan, now = write(1, "", now)
    attempt, vendor_calls = 0, 0
    parts_on_the_way = False  # issued for a plan whose execution has not come yet (a failed test in between)
    while True:
        attempt += 1
        plan, now = steps.director_approves_plan(
            case_id, facts, plan, now=now, procedure="accident", revise=revise
        )
        # the approved plan's spare parts are issued through the parts store, as the repair's are
        # (shortage alert to the keeper and the director; the 4 h spare-part clock from the approval)
        parts = "、".join(written[plan.version]["plan"]["spare_parts"])
        if parts:
            parts_on_the_way = True
            clock(case_id, ClockKind.SPARE_PART, ClockAction.START, now)
            _, now = steps.parts_from_store(
                case_id,
                facts,
                parts,
                plan.author or "紧急抢修小组",
                now,
                step=f"accident-parts-v{plan.version}",
            )
        if written[plan.version]["needs_testing"]:
            set_stage(case_id, "testing", now)
            test = steps.fill_form(
                case_id,
                "plan-test",
                plan.version,
                role=Role.TECHNICAL_DIRECTOR,
                form=PlanTestForm,
                now=now,
                content=plan.text,
                subject=steps.subject(facts, f"请安排测试事故处理方案第 {plan.version} 版"),
            )
            now = test.at
            note = test.value.note
            if not record_test_result(case_id, plan.version, test.value.passed, note, test.by, now):
                reason = f"第 {plan.version} 版方案测试失败：{note}"
                vendor_calls += vendor_support_if_out_of_window(case_id, vendor_calls + 1, reason, now)
                plan, now = write(plan.version + 1, reason, now)
                continue
        set_stage(case_id, "customer", now)
        plan, now = steps.customer_accepts_plan(
            case_id, facts, plan, now=now, procedure="accident", revise=revise
        )
        set_stage(case_id, "executing", now)
        done = steps.fill_form(
            case_id,
            "plan-execution",
            plan.version,
            role=Role.TECHNICAL_LEAD,
            form=ExecutionForm,
            now=now,
            subject=steps.subject(facts, f"请登记第 {plan.version} 版方案的实施结果"),
            content=plan.text,
        )
        now = done.at
        note = done.value.note
        if (
            parts_on_the_way
        ):  # the parts reached the site for this execution (the time typed, or the answer's)
            clock(case_id, ClockKind.SPARE_PART, ClockAction.STOP, done.value.parts_arrived_at or done.at)
            parts_on_the_way = False
        result = record_execution(case_id, plan.version, done.value.result, note, done.by, now)
        if result == "restored":
            return plan, now
        # failed or partial: the director comes on site, the team looks for another plan
        if done.value.standby_needed:
            request_standby_machine(
                case_id, f"第 {plan.version} 版方案实施后无法按时恢复：{note}", now, done.by
            )
        call_director_on_site(case_id, attempt, plan.version, result, note, now)
        reason = f"第 {plan.version} 版方案实施结果：{'部分恢复' if result == 'partial' else '失败'}。{note}"
        vendor_calls += vendor_support_if_out_of_window(case_id, vendor_calls + 1, reason, now)
        plan, now = write(plan.version + 1, reason, now)


def write_plan(
    case_id: int, facts: CaseFacts, version: int, reason: str, now: datetime
) -> tuple[Plan, dict[str, Any], datetime]:
    """The lead writes plan `version` on the accident plan form (steps, minutes, tools, parts, risk,
    testing). An incomplete form is not taken: the lead gets the form again with what is missing."""
    problem = ""
    for attempt in range(100):
        step = f"accident-plan-v{version}" + (f"-again{attempt}" if attempt else "")
        written = steps.fill_form(
            case_id,
            step,
            version,
            role=Role.TECHNICAL_LEAD,
            form=AccidentPlanForm,
            now=now,
            subject=steps.subject(facts, f"请提交事故处理方案（第 {version} 版）"),
            content="\n\n".join(t for t in (problem, reason or facts.description) if t),
        )
        now = written.at
        recorded = record_plan(case_id, version, written.value.model_dump(), written.by, now, reason)
        if "error" not in recorded:
            plan = Plan(version=version, text=recorded["text"], reason=reason or "initial", author=written.by)
            return plan, recorded, now
        problem = f"上次提交的方案未被接受 / not accepted: {recorded['error']}"
    raise RuntimeError(f"plan v{version} of case {case_id}: 100 incomplete forms")


def vendor_support_if_out_of_window(case_id: int, call: int, reason: str, at: datetime) -> int:
    """No working plan within the customer's tolerated window → the director starts vendor support."""
    if window_expired(case_id, at):
        start_vendor_support(case_id, call, f"超出客户可容忍时间。{reason}", at)
        return 1
    return 0


def review_until_signed_off(case_id: int, facts: CaseFacts, now: datetime) -> tuple[int, datetime]:
    """§3 step 10: the director records the technical review meeting and reports in writing to the
    general manager; a GM who does not sign sends it back to the director for the next version."""
    version, comment = 0, ""
    while True:
        version += 1
        held = steps.fill_form(
            case_id,
            "review-meeting",
            version,
            role=Role.TECHNICAL_DIRECTOR,
            form=ReviewForm,
            now=now,
            subject=steps.subject(facts, f"请召开技术评审会议并提交评审报告（第 {version} 版）"),
            content=f"总经理意见：{comment}" if comment else facts.description,
        )
        now = held.at
        review = record_review(case_id, version, held.value.model_dump(), held.by, now, comment)
        approval = steps.ask_staff(
            case_id,
            "gm-sign-off",
            version,
            role=Role.GENERAL_MANAGER,
            now=now,
            content=review["content"],
            subject=steps.subject(facts, f"技术评审报告第 {version} 版待总经理签批"),
        )
        decision = steps.wait_for(approval, "gm-sign-off", version)
        now = decision.at
        if decision.decision == DecisionKind.APPROVED:
            gm_signed_off(case_id, version, decision.by, now)
            return review["report_id"], now
        review_returned(case_id, version, decision.by, decision.comment, now)
        comment = decision.comment or "未签批"


def deployments() -> list[Any]:
    # the dispatcher's run form: Chinese fields, customers and sites as choices read now (serve time)
    return [
        use_form(
            accident.to_deployment(
                name="accident",
                description="事故处理服务流程：紧急抢修小组、事故处理方案及审批、测试、原厂商支持、备机、每小时进展通报、"
                "事故处理服务报告、回访、事故总结、技术评审与总经理签批。",
                tags=["事故处理"],
            ),
            AccidentRequestForm,
        )
    ]
