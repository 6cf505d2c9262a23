"""Contract renewal outreach (续费与合同管理 / 续约), PROCEDURES.md §6 [000 §8; 002; 003 §8.1.3].

- `plan-renewals` (daily, business time zone): every contract term gets exactly one renewal case on
  the working day 60 days before its end (rules.renewal.open_day), assigned to the contract's
  account manager, and its run is started once.
- `renewal` (one run per case): the account manager's quote (the previous fee beside the new one)
  → the sales manager approves it by link (approve / send back / reject: the objection loop over
  versions, flows.steps.approved_version) → the 续约通知函 goes to the customer's contact with a
  link to answer renew / change / end; while unanswered the clock keeper follows up every 7 days,
  escalates to the account manager's manager 30 and 15 days before the end and reminds the
  customer 7 days before (tasks.renewal.outreach_step) → renew: a new contract version, its terms
  in force from the new start; change: the 变更申请 the customer confirms in writing (signature),
  then renewed with the changed terms; end: the written notice (60 days before the end, else
  refused on the form), then the handover checklist signed by both sides; no answer by the end:
  the contract lapses (new requests are paid service, as before).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from prefect import flow
from prefect.schedules import Cron

from flows import steps
from models.approvals import DecisionKind
from models.cases import CaseStatus
from models.forms import HandoverForm, QuoteForm, RenewalAnswerForm
from models.parties import Role
from models.settings import business_timezone
from tasks.approvals import Decision
from tasks.board import run_name
from tasks.cases import Tell, record
from tasks.renewal import (
    ANSWER_STEP,
    Quote,
    RenewalFacts,
    apply_terms,
    days_before_end,
    load_renewal,
    notice_sent,
    open_cases,
    open_renewals_step,
    quote_context,
    quote_prefill,
    quote_text,
    record_renewal,
    start_renewal_runs_step,
    terms_start,
    warranty_inspections_step,
)
from tasks.reports import issue
from tasks.timers import current_time, wait_until

PLAN_CRON = "40 1 * * *"  # daily 01:40 business time, after the inspection planner
AM = Role.ACCOUNT_MANAGER
BOSS = Role.SALES_MANAGER


@flow(name="plan-renewals", retries=0, log_prints=True)
def plan_renewals_flow(now: datetime | None = None) -> dict[str, int]:
    """续约计划: open each contract term's renewal 60 days before its end, once, and start its run; plan the
    full inspection before each warranty ends (质保期满巡检, through the inspection flow)."""
    at = now or current_time()
    return {
        "created": open_renewals_step(at),
        "started": start_renewal_runs_step(at),
        "warranty_inspections": warranty_inspections_step(at),
    }


def subject(facts: RenewalFacts, text: str) -> str:
    return f"{facts.number} 续约 {facts.contract_code}：{text}"


def draft_quote(
    case_id: int, facts: RenewalFacts, now: datetime, *, version: int, previous: Quote | None, note: str
) -> tuple[Quote, datetime]:
    """The account manager fills the quote form (prefilled with the previous version or the contract)."""
    prev = facts.previous
    answer = steps.fill_form(
        case_id,
        f"renewal-quote-v{version}",
        version,
        role=AM,
        form=QuoteForm,
        now=now,
        subject=subject(facts, f"请填写续约报价 v{version}"),
        content=(f"修改原因：{note}\n" if note else "")
        + f"原合同 {facts.contract_start} 至 {facts.contract_end}，费用 {prev.get('fee', '—')} 元，"
        f"{prev.get('service_hours', '')}，巡检{prev.get('inspection_frequency', '')}，SLA {prev.get('sla_level', '')}。"
        "请按现行价格报价。",
        prefill=quote_prefill(facts, previous),
    )
    quote = Quote(version=version, form=answer.value, by=answer.by, reason=note)
    record(
        case_id,
        "renewal_quote_drafted",
        answer.at,
        answer.by,
        {"version": version, "fee": str(answer.value.fee), "previous_fee": prev.get("fee")},
        key=f"quote:v{version}",
    )
    return quote, answer.at


def manager_approves(
    case_id: int, facts: RenewalFacts, quote: Quote, now: datetime
) -> tuple[Quote, datetime]:
    """The sales manager approves the quote by link; sent back or rejected → the next version."""

    def revise(q: Quote, decision: Decision, at: datetime) -> tuple[Quote, datetime]:
        return draft_quote(
            case_id,
            facts,
            at,
            version=q.version + 1,
            previous=None if decision.decision == DecisionKind.REJECTED else q,
            note=decision.comment,
        )

    return steps.approved_version(
        case_id,
        quote,
        now=now,
        step="quote-approval",
        role=BOSS,
        version=lambda q: q.version,
        present=lambda q, _at: quote_text(facts, q),
        subject=lambda q: subject(facts, f"续约报价 v{q.version} 待审批"),
        revise=revise,
        rejected_tell=lambda q, d: [
            Tell(
                template="renewal/quote_rejected",
                key=f"quote-approval:v{q.version}:rejected",
                roles=[AM],
                context={"version": q.version, "reason": d.comment},
            )
        ],
        events=("quote_approved", "quote_returned"),
    )


def send_notice(
    case_id: int, facts: RenewalFacts, quote: Quote, now: datetime, round_: int
) -> tuple[Decision, datetime]:
    """The 续约通知函 to the customer's contact, with the link to answer; waits for the answer (the
    keeper follows up meanwhile and settles it as lapsed when the end passes)."""
    doc = issue(
        case_id,
        "renewal_notice",
        "renewal/notice",
        quote_context(facts, quote),
        now,
        facts.account_manager or "客户经理",
        round_,
    )
    notice_sent(case_id, doc["id"], now)
    end = date.fromisoformat(facts.contract_end)
    until_end = datetime.combine(end + timedelta(days=2), datetime.min.time(), tzinfo=now.tzinfo) - now
    approval = steps.ask_customer(
        case_id,
        f"{ANSWER_STEP}-v{round_}",
        round_,
        kind="form",
        form=RenewalAnswerForm,
        now=now,
        expires=max(until_end, steps.CUSTOMER_LINK),
        subject=subject(facts, "续约通知函：请答复续约、变更或终止"),
        content=doc["text"],
    )
    decision = steps.wait_for(approval, f"{ANSWER_STEP}-v{round_}", round_)
    return decision, decision.at


def renew(
    case_id: int, facts: RenewalFacts, quote: Quote, by: str, now: datetime, outcome: str = "renewed"
) -> str:
    """The new term recorded as a contract version; its terms take effect on its first day. `outcome`:
    "renewed" as quoted, "changed" after a signed 变更申请 (the KPIs count the two apart)."""
    version = record_renewal(case_id, quote, by, now)
    record(
        case_id,
        "renewed",
        now,
        by,
        {
            "version": version,
            "start": quote.form.start_date.isoformat(),
            "end": quote.form.end_date.isoformat(),
        },
        key="renewed",
        tell=[
            Tell(
                template="renewal/renewed",
                key="renewed",
                roles=[AM, BOSS],
                customer=True,
                context={
                    "start": quote.form.start_date.isoformat(),
                    "end": quote.form.end_date.isoformat(),
                    "fee": str(quote.form.fee),
                },
                urgent=False,
            )
        ],
    )
    wait_until(case_id, terms_start(case_id, version), "terms-effective")
    start = current_time()
    apply_terms(case_id, version, start)
    record(
        case_id,
        "renewal_closed",
        start,
        "system",
        {"outcome": outcome},
        key="closed",
        status=CaseStatus.CLOSED,
    )
    return outcome


def change(
    case_id: int, facts: RenewalFacts, quote: Quote, request: str, now: datetime
) -> tuple[Quote, datetime]:
    """变更申请: the account manager writes the changed quote, the manager approves it, and the
    customer confirms the 变更申请 in writing (signs); an objection → the next version."""

    def revised(q: Quote, note: str, at: datetime) -> tuple[Quote, datetime]:
        q, at = draft_quote(case_id, facts, at, version=q.version + 1, previous=q, note=note)
        return manager_approves(case_id, facts, q, at)

    quote, now = revised(quote, f"客户申请变更：{request}", now)

    def present(q: Quote, at: datetime) -> dict[str, Any]:
        return issue(
            case_id,
            "change_request",
            "renewal/change_request",
            {**quote_context(facts, q), "request": request},
            at,
            facts.account_manager or "客户经理",
            q.version,
        )

    return steps.customer_signs_version(
        case_id,
        quote,
        now=now,
        kind="change_request",
        what="变更申请",
        version=lambda q: q.version,
        present=present,
        subject=lambda q: subject(facts, f"请确认变更申请 v{q.version}（书面签字）"),
        revise=lambda q, d, at: revised(q, f"客户对变更申请的意见：{d.comment}", at),
        events=("change_request_signed", "change_request_objected"),
        keys=("change-signed", "change-objected"),
    )


def end_contract(case_id: int, facts: RenewalFacts, reason: str, by: str, now: datetime) -> str:
    """The written notice to end (its 60 days checked on the form), then the handover checklist,
    approved by the provider's manager and signed by the customer."""
    record(
        case_id,
        "termination_notice",
        now,
        by,
        {"reason": reason, "contract_end": facts.contract_end, "notice_deadline": facts.notice_deadline},
        key="termination-notice",
        tell=[
            Tell(
                template="renewal/ending",
                key="ending",
                roles=[AM, BOSS],
                context={"reason": reason, "end": facts.contract_end},
                urgent=False,
            )
        ],
    )
    cases = open_cases(case_id)
    filled = steps.fill_form(
        case_id,
        "handover",
        1,
        role=AM,
        form=HandoverForm,
        now=now,
        subject=subject(facts, "合同终止：请填写移交清单"),
        content=f"客户书面通知终止合同，原因：{reason}\n合同 {facts.contract_end} 到期。\n未结工单：\n{cases}",
        prefill={"open_cases": cases},
    )
    now = filled.at
    context = {**filled.value.model_dump(mode="json"), "reason": reason, "contract_end": facts.contract_end}
    context |= {"account_manager": filled.by, "sign_role": "客户经理", "engineer": filled.by}

    def present(version: int, at: datetime) -> dict[str, Any]:
        return issue(case_id, "handover", "renewal/handover", context, at, filled.by, version)

    def approve_and_present(version: int, at: datetime) -> str:
        return str(present(version, at)["text"])

    def back(version: int, decision: Decision, at: datetime) -> tuple[int, datetime]:
        raise_note = decision.comment
        again = steps.fill_form(
            case_id,
            "handover",
            version + 1,
            role=AM,
            form=HandoverForm,
            now=at,
            subject=subject(facts, f"移交清单被退回，请修改（v{version + 1}）"),
            content=raise_note,
            prefill={k: str(v) for k, v in filled.value.model_dump(mode="json").items()},
        )
        context.update(again.value.model_dump(mode="json"))
        return version + 1, again.at

    version, now = steps.approved_version(
        case_id,
        1,
        now=now,
        step="handover-approval",
        role=BOSS,
        version=lambda v: v,
        present=approve_and_present,
        subject=lambda v: subject(facts, f"合同终止移交清单 v{v} 待确认（我方签字）"),
        revise=back,
        events=("handover_approved", "handover_returned"),
    )
    version, now = steps.customer_signs_version(
        case_id,
        version,
        now=now,
        kind="handover",
        what="移交清单",
        version=lambda v: v,
        present=present,
        subject=lambda v: subject(facts, f"请签收合同终止移交清单 v{v}"),
        revise=lambda v, d, at: back(v, d, at),
        events=("handover_signed", "handover_objected"),
        keys=("handover-signed", "handover-objected"),
    )
    record(
        case_id, "renewal_closed", now, "system", {"outcome": "ended"}, key="closed", status=CaseStatus.CLOSED
    )
    return "ended"


@flow(name="renewal", flow_run_name=run_name, retries=0, log_prints=True)
def renewal(case_id: int) -> str:
    """续约: quote, manager's approval, the 续约通知函, the customer's answer, renew / change / end."""
    facts = load_renewal(case_id)
    now = current_time()
    quote, now = draft_quote(case_id, facts, now, version=1, previous=None, note="")
    quote, now = manager_approves(case_id, facts, quote, now)
    decision, now = send_notice(case_id, facts, quote, now, 1)
    if (decision.payload or {}).get("lapsed"):
        record(
            case_id,
            "contract_lapsed",
            now,
            "system",
            {"contract_end": facts.contract_end},
            key="lapsed",
            tell=[Tell(template="renewal/lapsed_board", key="lapsed", roles=[Role.DISPATCHER], urgent=False)],
            status=CaseStatus.CLOSED,
        )
        return "lapsed"
    answer = steps.answer_of(RenewalAnswerForm, decision)
    record(
        case_id,
        "renewal_answered",
        now,
        answer.by,
        {
            "choice": answer.value.choice,
            "change": answer.value.change,
            "reason": answer.value.reason,
            "days_before_end": days_before_end(case_id, now),
        },
        key="answered",
    )
    if answer.value.choice == "续约":
        return renew(case_id, facts, quote, answer.by, now)
    if answer.value.choice == "变更":
        quote, now = change(case_id, facts, quote, answer.value.change, now)
        return renew(case_id, facts, quote, answer.by, now, outcome="changed")
    return end_contract(case_id, facts, answer.value.reason, answer.by, now)


def deployments() -> list[Any]:
    return [
        renewal.to_deployment(
            name="renewal", description="续约：报价、经理审批、续约通知函、客户答复（续约/变更/终止）与跟进"
        ),
        plan_renewals_flow.to_deployment(
            name="plan-renewals",
            schedules=[Cron(PLAN_CRON, timezone=business_timezone())],
            description="每日：合同到期前60天（工作日）为每个合同期创建续约工单并启动流程（每合同每期一次）；质保期满前45天内安排质保期满巡检",
        ),
    ]
