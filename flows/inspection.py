"""Monthly inspection (巡检, preventive maintenance), PROCEDURES.md §4 steps 1–6, and the daily
planner that fires it for every contract.

- `plan-inspections` (daily, business time zone): for every active contract, the inspection of each
  period due by its frequency is created once (unique (kind, contract, period)) and its run is
  started once (Prefect idempotency key `inspection:<contract>:<period>`).
- `inspection` (one run per case): the date is agreed with the customer, the customer is notified
  3 working days before and the exact time re-confirmed 2 days before; the customer may cancel.
  On the day the engineer fills the checklist on the phone form (pre-checks first); each problem
  not fixed on site starts its own repair flow; the inspection report goes to the customer for
  signature (unsigned: the reason, signed off by the department manager); the centre registers
  the report or rejects it back to the engineer.
- `extra-inspection` (a dispatcher's form in the Prefect UI, or `aftercare inspection extra`): an
  extra inspection the customer asked for before an important operation, registered and started.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.schedules import Cron

from deployments.run_forms import ExtraInspectionForm, use_form
from flows import steps
from flows.summary import month_end_flow
from models.approvals import DecisionKind
from models.cases import CaseStatus
from models.forms import DateForm, ProposalForm, ReconfirmForm, UnsignedForm
from models.parties import Role
from models.settings import business_timezone
from tasks.board import name_run, run_name
from tasks.cases import contact_of, record
from tasks.inspection import (
    ExtraInspectionRequest,
    InspectionFacts,
    cancel_step,
    check_moved_day,
    dispatcher_proposal,
    fix_visit,
    is_cancelled,
    link_repair,
    load_checklist_spec,
    load_inspection,
    load_precheck,
    open_extra_step,
    plan_inspections_step,
    propose_again,
    record_checklist,
    report_context,
    report_version,
    send_notice,
    start_problem_repair,
    start_run_step,
    start_runs_step,
)
from tasks.links import CHECKLIST_PAGE
from tasks.reports import bind_signature, issue
from tasks.timers import current_time, wait_until

PLAN_CRON = "15 1 * * *"  # daily 01:15 business time (settings.timezone), before the working day starts
MAX_DATE_ROUNDS = 5  # after that many moves the dispatcher settles the date by phone
# PROCEDURES.md §4 step 6: an unsigned report needs the department manager's signature.
DEPARTMENT_MANAGER = Role.DEPARTMENT_MANAGER


# ---- the planner ------------------------------------------------------------------------------


@flow(name="plan-inspections", retries=0, log_prints=True)
def plan_inspections_flow(now: datetime | None = None) -> dict[str, int]:
    """巡检计划: create each contract's due inspections once and start their runs once."""
    at = now or current_time()
    created = plan_inspections_step(at)
    started = start_runs_step(at)
    return {"created": created, "started": started}


# ---- one inspection ---------------------------------------------------------------------------


def agree_date(case_id: int, facts: InspectionFacts, now: datetime) -> tuple[dict[str, str] | None, datetime]:
    """Step 1: the dispatcher's proposal goes to the customer, who confirms, moves or cancels it."""
    day, start, now = dispatcher_proposes(case_id, facts, now)
    problem = ""
    for n in range(1, MAX_DATE_ROUNDS + 1):
        decision = steps.customer_form(
            case_id,
            f"date-v{n}",
            n,
            form=DateForm,
            subject=f"{facts.number} 巡检日期确认：{day} {start}",
            content=(f"您提出的日期无法安排：{problem}\n" if problem else "")
            + f"客户服务中心建议于 {day} {start} 到场巡检（周期 {facts.period}）。请确认、改期或取消。",
            now=now,
        )
        now = decision.at
        answer = decision.value
        if is_cancelled(case_id):  # the centre cancelled while the form was open
            return None, now
        if answer.action == "取消":
            cancel_step(case_id, answer.reason or "客户取消", decision.by, now)
            return None, now
        if answer.action == "改期":
            # the moved date goes back to the customer as the new proposal, on the record; a date
            # that cannot be kept (not a working day, too soon for the notice) is explained instead
            moved = check_moved_day(case_id, answer.day, answer.start or start, now)
            problem = moved["problem"]
            if not problem:
                day, start = moved["day"], moved["start"]
            continue
        # a confirmation is checked too: another time of day must be readable, and a proposal confirmed
        # so late that its 3-working-day notice has passed gives way to the earliest day that still can
        checked = check_moved_day(case_id, day, answer.start or start, now)
        problem = checked["problem"]
        if problem:
            if (answer.start or start) == start:  # the proposed day itself can no longer be kept
                day = propose_again(case_id, now)
            continue
        return fix_visit(case_id, day, checked["start"], decision.by, now), now
    return fix_visit(case_id, day, start, "客户服务中心", now), now


def dispatcher_proposes(case_id: int, facts: InspectionFacts, now: datetime) -> tuple[str, str, datetime]:
    """The dispatcher agrees the day with the customer by phone and proposes it (empty: the day the
    planner suggested); a day that cannot be kept is explained and asked for again."""
    suggested, problem = facts.proposed_day, ""
    for n in range(1, MAX_DATE_ROUNDS + 1):
        answer = steps.fill_form(
            case_id,
            "date-proposal",
            n,
            role=Role.DISPATCHER,
            form=ProposalForm,
            now=now,
            subject=f"{facts.number} 请与客户商定巡检日期（建议 {suggested}）",
            content=(f"上次填写的日期无法安排：{problem}\n" if problem else "")
            + f"{facts.customer} 本期（{facts.period}）巡检，系统建议 {suggested} 09:30。"
            "电话与客户商定后填写日期；留空即采用建议日期。",
        )
        now = answer.at
        form = answer.value
        proposed = dispatcher_proposal(case_id, form.day or suggested, form.start or "09:30", answer.by, now)
        if not proposed["problem"]:
            return proposed["day"], proposed["start"], now
        problem = proposed["problem"]
    return suggested, "09:30", now


def issue_report(
    case_id: int, version: int, now: datetime, by: str, unsigned: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The 巡检报告 of checklist `version`; with `unsigned`, re-issued as a new version that shows why the
    customer did not sign and the department manager's sign-off."""
    key = f"unsigned-v{version}" if unsigned else f"checklist-v{version}"
    context = {**report_context(case_id, version), "report_key": key, "unsigned": unsigned}
    return issue(
        case_id, "inspection_report", "inspection/report", context, now, by, report_version(case_id, key)
    )


def report_signed_or_explained(
    case_id: int, facts: InspectionFacts, version: int, doc: dict[str, Any], now: datetime
) -> tuple[bool, dict[str, Any], datetime]:
    """Step 6: the customer signs the report; unsigned → the reason, signed off by the department manager,
    written into a new version of the report. Returns (signed?, the report as it stands, now)."""
    step = "inspection-report-signature"
    # the text with the report page's signing link: the customer signs there (drawn or ticked), bound to the
    # hash; the approval carries the report's version (the signing page finds it by that)
    approval = steps.ask_customer(
        case_id,
        step,
        doc["version"],
        subject=f"{facts.number} 请签收巡检报告",
        content=doc["sign_text"],
        now=now,
    )
    decision = steps.wait_for(approval, step, doc["version"])
    now = decision.at
    if decision.decision == DecisionKind.SIGNED:
        bind_signature(doc["id"], decision.by, decision.payload or {}, now, contact_of(case_id))
        record(
            case_id,
            "report_signed",
            now,
            decision.by,
            {"version": version, "report_version": doc["version"]},
            key=f"report-signed:v{version}",
            status=CaseStatus.SUBMITTED,
        )
        return True, doc, now
    explained = steps.fill_form(
        case_id,
        f"unsigned-v{version}",
        version,
        role=DEPARTMENT_MANAGER,
        subject=f"{facts.number} 巡检报告客户未签字，请说明并签字",
        content=f"客户意见：{decision.comment or '—'}",
        form=UnsignedForm,
        now=now,
    )
    now = explained.at
    reason = explained.value.reason
    record(
        case_id,
        "report_unsigned",
        now,
        explained.by,
        {"version": version, "reason": reason, "customer_comment": decision.comment},
        key=f"report-unsigned:v{version}",
        status=CaseStatus.SUBMITTED,
    )
    unsigned = {
        "reason": reason,
        "manager": explained.by,
        "at": explained.at,
        "customer_comment": decision.comment,
        "signed_version": doc["version"],
    }
    return False, issue_report(case_id, version, now, explained.by, unsigned), now


@flow(name="inspection", flow_run_name=run_name, retries=0, log_prints=True)
def inspection(case_id: int) -> str:
    """巡检: agree the date, notify, re-confirm, check on site, report, register."""
    facts = load_inspection(case_id)
    if facts.status == CaseStatus.CANCELLED:
        return "cancelled"
    now = current_time()

    # 1. the date, the notice 3 working days before, the re-confirmation 2 days before
    visit, now = agree_date(case_id, facts, now)
    if visit is None:
        return "cancelled"
    notice_at = datetime.fromisoformat(visit["notice_at"])
    wait_until(case_id, notice_at, "notice")
    if is_cancelled(case_id):
        return "cancelled"
    send_notice(case_id, notice_at)
    reconfirm_at = datetime.fromisoformat(visit["reconfirm_at"])
    wait_until(case_id, reconfirm_at, "reconfirm")
    if is_cancelled(case_id):
        return "cancelled"
    answer = steps.customer_form(
        case_id,
        "reconfirm",
        1,
        form=ReconfirmForm,
        subject=f"{facts.number} 巡检时间再确认：{visit['visit_day']}",
        content=f"我方将于 {visit['visit_day']} {visit['start']} 到场巡检，请确认到场时间。",
        now=reconfirm_at,
    )
    if is_cancelled(case_id):  # the centre cancelled while the form was open
        return "cancelled"
    if answer.value.action == "取消":
        cancel_step(case_id, answer.value.reason or "客户取消", answer.by, answer.at)
        return "cancelled"
    visit_at = datetime.fromisoformat(visit["visit_at"])
    wait_until(case_id, visit_at, "visit")
    if is_cancelled(case_id):
        return "cancelled"
    record(case_id, "on_site", visit_at, "engineer", {}, key="on-site", status=CaseStatus.ON_SITE)
    now = visit_at

    # 2–6. pre-checks and checklist; problems become repairs; the report; the centre registers it
    version, note = 1, ""
    precheck = load_precheck(
        case_id
    )  # the last visit's findings, open cases, changes since: shown on the page
    while True:
        spec = load_checklist_spec(case_id)
        step = f"checklist-v{version}"
        filled = steps.wait_for(
            steps.ask_staff(
                case_id,
                step,
                version,
                role=Role.ENGINEER,
                subject=f"{facts.number} 请填写巡检检查表",
                content=note + "巡检前确认数据已备份；逐项填写 正常/异常/不适用。",
                now=now,
                kind="form",
                form={**spec, "page": CHECKLIST_PAGE, "precheck": precheck},
                template="inspection/checklist_request",
                context={"page": CHECKLIST_PAGE},
            ),
            step,
            version,
        )
        now = filled.at
        checked = record_checklist(case_id, version, filled.payload or {}, now, filled.by, spec)
        if checked["error"]:  # only possible from the Prefect UI form: the web page checks before recording
            note, version = f"上次提交的检查表未通过检查：{checked['error']}\n", version + 1
            continue
        problems = checked["problems"]
        for n, problem in enumerate(problems, start=1):
            run_id = start_problem_repair(case_id, version, n, problem, now)
            link_repair(case_id, version, problem["target"], problem["code"], run_id)
        doc = issue_report(case_id, version, now, filled.by)
        _signed, doc, now = report_signed_or_explained(case_id, facts, version, doc, now)
        step = f"register-v{version}"
        check = steps.wait_for(
            steps.ask_staff(
                case_id,
                step,
                version,
                role=Role.DISPATCHER,
                subject=f"{facts.number} 巡检报告待登记",
                content=doc["text"],
                now=now,
            ),
            step,
            version,
        )
        now = check.at
        if check.decision == DecisionKind.APPROVED:
            record(
                case_id,
                "report_registered",
                now,
                check.by,
                {"version": version},
                key="registered",
                status=CaseStatus.REGISTERED,
            )
            return "registered"
        record(
            case_id,
            "report_rejected",
            now,
            check.by,
            {"version": version, "comment": check.comment},
            key=f"rejected:v{version}",
            status=CaseStatus.REJECTED,
        )
        note, version = f"巡检报告被退回：{check.comment}\n", version + 1


# ---- an extra inspection on request -------------------------------------------------------------


@flow(name="extra-inspection", flow_run_name=run_name, retries=0, log_prints=True)
def extra_inspection(request: ExtraInspectionRequest) -> str:
    """加做巡检: the inspection a customer asks for before an important operation, registered and started
    (its own `inspection` run then agrees the date with the customer like every other inspection)."""
    from prefect.states import Failed

    now = current_time()
    opened = open_extra_step(request, now)
    if opened["error"]:
        return Failed(message=opened["error"])  # type: ignore[return-value]  # a clear message, no traceback
    name_run(opened["case_id"], "加做巡检")  # "XJ-000003 加做巡检 北京某银行"
    run_id = start_run_step(opened["case_id"], now)
    again = "" if opened["created"] else "（该合同当天已有加做巡检，未重复登记）"
    print(
        f"{opened['number']} 加做巡检已登记{again}：{opened['customer']} · {opened['site']}，建议日期 {opened['day']}；"
        f"巡检流程 {run_id}"
    )
    return opened["number"]


# ---- deployments --------------------------------------------------------------------------------


def deployments() -> list[Any]:
    return [
        inspection.to_deployment(
            name="inspection", description="巡检：约定日期、通知、检查表、报告签字与登记"
        ),
        use_form(
            extra_inspection.to_deployment(
                name="extra-inspection",
                tags=["inspection", "巡检"],
                description="加做巡检：客户在重要业务操作前要求的巡检——填写客户、站点、原因（与建议日期），登记并启动巡检流程",
            ),
            ExtraInspectionForm,
        ),
        plan_inspections_flow.to_deployment(
            name="plan-inspections",
            schedules=[Cron(PLAN_CRON, timezone=business_timezone())],
            description="每日：为每个有效合同按频率创建到期的巡检并启动流程（每合同每周期一次）",
        ),
        month_end_flow.to_deployment(
            name="month-end",
            schedules=[Cron("30 2 * * *", timezone=business_timezone())],
            description="月末：未交巡检报告清单、阶段性服务总结（月末后5个工作日内）、季度分析报告",
        ),
    ]
