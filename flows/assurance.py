"""重要通信保障 / 重大事件值守 — major-event assurance (001 §2.3.7, 002, 004 §四(4); PROCEDURES.md §5 "Related").

For a major event (a government meeting, a holiday peak, a bank's year-end settlement, a core
cut-over) the customer asks for an assurance period at least 3 weeks ahead; a shorter notice is
flagged and needs the technical director's approval. Provider and customer agree an assurance plan
(the lead writes it, the director approves it, the customer signs it — the plan approval and the
objection loop of flows.steps). The inspection before the period is an extra inspection of the
inspection flow. The duty roster (值班表: named engineers, phones, shifts) is asked of the project
coordinator a week before the period and sent to the customer before it. During the period every
new request of that customer (and site) is raised one level of severity at intake
(tasks.cases.open_case). Afterwards the lead writes a short assurance report, which the customer
signs; work beyond the contract is marked 有偿服务.

Started from the Prefect UI (deployment `assurance`, form deployments.run_forms.AssuranceRequestForm).
"""

# No `from __future__ import annotations` here: the flow's parameter model (built by Prefect from
# the signature) must see the real AssuranceRequest class.

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from deployments.run_forms import AssuranceRequestForm, use_form
from flows.steps import (
    STAFF_LINK,
    Procedure,
    answer_of,
    archive,
    ask_staff,
    customer_accepts_plan,
    director_approves_plan,
    fill_form,
    first_plan,
    service_report_signed,
    subject,
    wait_for,
)
from models import CaseStatus, Role
from models.approvals import DecisionKind
from models.forms import AssuranceReportForm, DutyRosterForm
from rules.assurance import roster_send_by
from tasks.approvals import await_approval_until
from tasks.assurance import (
    AssuranceRequest,
    assurance_facts,
    check_roster,
    is_assurance_cancelled,
    open_assurance,
    open_pre_inspection,
    period_requests,
    put_in_force,
    roster_prefill,
)
from tasks.board import name_run, run_name
from tasks.cases import CaseFacts, Tell, load_case, record
from tasks.inspection import start_run_step
from tasks.render import _local_time
from tasks.reports import issue
from tasks.timers import current_time, wait_until

LEAD, ENGINEER, DIRECTOR, DISPATCHER, COORDINATOR = (
    Role.TECHNICAL_LEAD,
    Role.ENGINEER,
    Role.TECHNICAL_DIRECTOR,
    Role.DISPATCHER,
    Role.COORDINATOR,
)
PROCEDURE: Procedure = "assurance"
# the plan the customer signs is a 重要通信保障方案, not a repair's 解决方案 (report kind and template)
ASSURANCE_PLAN_DOC = ("assurance_plan", "assurance/plan")


class AssuranceOutcome(BaseModel):
    case_id: int | None = None
    number: str = ""
    status: CaseStatus
    message: str = ""
    reports: list[int] = Field(default_factory=list)
    pre_inspection: str = ""


@flow(name="assurance", flow_run_name=run_name, retries=0, persist_result=True, log_prints=True)
def assurance(request: AssuranceRequest) -> AssuranceOutcome:
    """重要通信保障: request → (late: director) → plan agreed → pre-inspection → roster → period → report."""
    from prefect.states import Failed

    now = current_time()
    opened = open_assurance(request, now, str(flow_run.id))
    if opened["error"]:
        return Failed(message=opened["error"])  # type: ignore[return-value]  # a clear message, no traceback
    case_id = opened["case_id"]
    name_run(case_id)  # "BZ-000012 重要通信保障 北京某银行"
    facts = load_case(case_id)
    about = assurance_facts(case_id)
    record(
        case_id,
        "assurance_received",
        now,
        "system",
        {"late": opened["late"]},
        key="received",
        tell=[
            Tell(template="assurance/received", key="received", customer=True, context=_ctx(about)),
            Tell(
                template="assurance/opened",
                key="opened",
                roles=[DISPATCHER, LEAD, COORDINATOR],
                context=_ctx(about),
            ),
        ],
    )

    # 002: at least 3 weeks ahead; a shorter notice goes to the technical director first
    if opened["late"]:
        decision = wait_for(
            ask_staff(
                case_id,
                "late-request",
                1,
                role=DIRECTOR,
                now=now,
                subject=subject(facts, f"保障申请仅提前 {about['notice_days']} 天（不足 3 周），请审批"),
                content=_request_text(facts, about),
            ),
            "late-request",
            1,
        )
        now = decision.at
        if decision.decision != DecisionKind.APPROVED:
            record(
                case_id,
                "assurance_declined",
                now,
                decision.by,
                {"comment": decision.comment},
                key="late-request",
                status=CaseStatus.CANCELLED,
                tell=[
                    Tell(
                        template="assurance/declined",
                        key="declined",
                        customer=True,
                        roles=[DISPATCHER, COORDINATOR],
                        context={**_ctx(about), "reason": decision.comment},
                    )
                ],
            )
            return AssuranceOutcome(case_id=case_id, number=facts.number, status=CaseStatus.CANCELLED)
        record(
            case_id,
            "late_request_approved",
            now,
            decision.by,
            {"comment": decision.comment},
            key="late-request",
        )

    # the assurance plan: the lead writes it, the director approves it, the customer signs it
    plan, now = first_plan(
        case_id,
        facts,
        now=now,
        step="assurance-plan",
        ask="请与客户制定重要通信保障方案",
        content=_request_text(facts, about),
    )
    plan, now = director_approves_plan(
        case_id, facts, plan, now=now, procedure=PROCEDURE, document=ASSURANCE_PLAN_DOC
    )
    plan, now = customer_accepts_plan(
        case_id, facts, plan, now=now, procedure=PROCEDURE, document=ASSURANCE_PLAN_DOC
    )
    # (`aftercare assurance cancel` may call it off at any wait from here on: the run ends there)
    called_off = AssuranceOutcome(case_id=case_id, number=facts.number, status=CaseStatus.CANCELLED)
    if is_assurance_cancelled(case_id):  # called off while the customer had the plan
        return called_off
    put_in_force(case_id, now, plan.version)

    # the inspection before the period: an extra inspection of the inspection flow
    pre = open_pre_inspection(case_id, now)
    if pre["error"]:
        record(
            case_id,
            "pre_inspection_impossible",
            now,
            "system",
            {"reason": pre["error"]},
            key="pre-inspection",
            tell=[
                Tell(
                    template="assurance/no_pre_inspection",
                    key="no-pre-inspection",
                    roles=[DIRECTOR, COORDINATOR],
                    context={"reason": pre["error"]},
                )
            ],
        )
    else:
        start_run_step(pre["case_id"], now)

    # the duty roster: asked of the coordinator a week before, with the customer 3 days before the period
    ask_at, send_by = roster_send_by(about["start"], now)
    wait_until(case_id, ask_at, "roster-ask")
    if is_assurance_cancelled(case_id):
        return called_off
    got = _duty_roster(case_id, facts, about, max(now, ask_at), send_by)
    if got is None:
        return called_off
    roster, roster_id, now = got

    # the period: requests during it are raised at intake; its start and end are on the record
    wait_until(case_id, about["start"], "period-start")
    if is_assurance_cancelled(case_id):
        return called_off
    record(case_id, "assurance_started", about["start"], "system", {}, key="period-start")
    wait_until(case_id, about["end"], "period-end")
    if is_assurance_cancelled(case_id):
        return called_off
    record(case_id, "assurance_ended", about["end"], "system", {}, key="period-end")
    now = max(now, about["end"])

    # afterwards: the short assurance report, signed by the customer; extra effort is 有偿服务
    requests = period_requests(case_id)
    written = fill_form(
        case_id,
        "assurance-report",
        1,
        role=LEAD,
        form=AssuranceReportForm,
        now=now,
        subject=subject(facts, "保障期已结束，请填写重要通信保障报告"),
        content=_requests_text(requests),
    )
    now = written.at
    report_form = written.value
    if report_form.extra_effort:
        record(
            case_id,
            "paid_service",
            now,
            written.by,
            {"extra_effort": report_form.extra_effort, "hours": report_form.extra_hours},
            key="paid-service",
            tell=[
                Tell(
                    template="assurance/paid_service",
                    key="paid-service",
                    roles=[DIRECTOR, COORDINATOR],
                    context={"extra_effort": report_form.extra_effort, "hours": report_form.extra_hours},
                )
            ],
        )
    report_id, now = service_report_signed(
        case_id,
        facts,
        now=now,
        kind="assurance_report",
        template="assurance/report",
        by=written.by,
        role=LEAD,
        context={
            **_ctx(about),
            "plan": plan.model_dump(),
            "roster": roster,
            "requests": requests,
            "report": report_form.model_dump(),
            "author": written.by,
            "pre_inspection": pre,
        },
    )
    reports = [roster_id, report_id]
    archive(case_id, reports, now=now, procedure=PROCEDURE)
    return AssuranceOutcome(
        case_id=case_id,
        number=facts.number,
        status=CaseStatus.ARCHIVED,
        reports=reports,
        pre_inspection=pre.get("number", ""),
    )


def _duty_roster(
    case_id: int, facts: CaseFacts, about: dict[str, Any], now: datetime, send_by: datetime
) -> tuple[dict[str, Any], int, datetime] | None:
    """The coordinator fills the roster (a form, validated); one the period or the staff list refuses
    is asked again with the reasons; then it is issued as the 值班表 and sent to the customer. None:
    the assurance was called off meanwhile (nothing is sent)."""
    note, prefill, version, overdue = "", roster_prefill(case_id), 1, False
    while True:
        asked = ask_staff(
            case_id,
            "duty-roster",
            version,
            role=COORDINATOR,
            kind="form",
            form=DutyRosterForm,
            now=now,
            expires=max(STAFF_LINK, about["end"] - now),  # a roster is still wanted until the period ends
            subject=subject(facts, f"请编制值班表（须于 {_local_time(send_by)} 前发给客户）"),
            content=f"{note}保障期：{about['period']}；{about['event']}",
            prefill={"shifts": prefill},
        )
        decision = None
        if not overdue:  # the roster or the day it is due to the customer, whichever comes first
            decision = await_approval_until(
                asked, "duty-roster", version, case_id=case_id, when=send_by, key="roster-due"
            )
        if decision is None:
            if not overdue:  # due and not in: the director and the coordinator are told, once
                overdue = True
                record(
                    case_id,
                    "roster_overdue",
                    send_by,
                    "system",
                    {"send_by": send_by.isoformat()},
                    key="roster-overdue",
                    tell=[
                        Tell(
                            template="assurance/roster_overdue",
                            key="roster-overdue",
                            roles=[DIRECTOR, COORDINATOR],
                            urgent=True,
                            context={**_ctx(about), "send_by": send_by},
                        )
                    ],
                )
            decision = wait_for(asked, "duty-roster", version)
        answer = answer_of(DutyRosterForm, decision)
        now = answer.at
        if is_assurance_cancelled(case_id):
            return None
        checked = check_roster(case_id, answer.value.shifts)
        if not checked["problems"]:
            break
        note = "上次提交的值班表未通过检查：" + "；".join(checked["problems"]) + "\n"
        prefill, version = answer.value.shifts, version + 1
    roster = {
        **checked,
        "hotline": answer.value.hotline,
        "note": answer.value.note,
        "by": answer.by,
        "send_by": send_by,
    }
    doc = issue(
        case_id,
        "duty_roster",
        "assurance/duty_roster",
        {**_ctx(about), "roster": roster},
        now,
        answer.by,
        version,
        tell=[
            Tell(template="assurance/roster", key="roster", customer=True, context=_ctx(about)),
            Tell(
                template="assurance/roster_staff",
                key="roster-staff",
                roles=[ENGINEER, LEAD, DISPATCHER],
                context=_ctx(about),
            ),
        ],
    )
    record(
        case_id,
        "roster_sent",
        now,
        answer.by,
        {
            "report_id": doc["id"],
            "before_period": now < about["start"],
            "in_time": now <= send_by,
            "send_by": send_by.isoformat(),
        },
        key="roster-sent",
    )
    return roster, doc["id"], now


def _ctx(about: dict[str, Any]) -> dict[str, Any]:
    return {
        "assurance": {
            k: about[k] for k in ("event", "period", "sites", "onsite", "requirements", "start", "end")
        }
    }


def _request_text(facts: CaseFacts, about: dict[str, Any]) -> str:
    where = "现场值守" if about["onsite"] else "远程值守（电话即时响应）"
    return (
        f"保障事由：{about['event']}\n保障期：{about['period']}\n范围：{about['sites']}，{where}\n"
        f"客户申请：{facts.reported_by}，{_local_time(about['requested_at'])}（提前 {about['notice_days']} 天）\n"
        f"客户要求：{about['requirements'] or '—'}"
    )


def _requests_text(requests: list[dict[str, Any]]) -> str:
    if not requests:
        return "保障期间没有新的报修。"
    lines = [
        f"{r['number']} {_local_time(r['at'])} {r['title']}（级别 {r['reported']} → {r['raised']}）"
        for r in requests
    ]
    return "保障期间的报修（已按保障要求提升一级）：\n" + "\n".join(lines)


def deployments() -> list[Any]:
    return [
        use_form(
            assurance.to_deployment(
                name="assurance",
                description="重要通信保障 / 重大事件值守：客户提前3周申请 → 保障方案（技术总监审批、客户签字）"
                " → 保障前巡检 → 值班表 → 保障期间报修提升一级 → 保障报告",
                tags=["assurance", "重要通信保障"],
            ),
            AssuranceRequestForm,
        )
    ]
