"""投诉处理流程 — complaints (PROCEDURES.md §7; 001 §2.4, 000 §8): a separate channel from the
hotline, first answer within 2 hours, closed within 15 days only when solved and the customer is
satisfied.

Started from the Prefect UI (deployment `complaint`, the form `ComplaintRequestForm`), by
`aftercare complaint new` or by the customer's public complaint page (both take the complaint first
and start the run with its `case_id`). The customer-service manager owns it; each time the
complaint goes up the customer's manager ladder (a breached clock, a customer not satisfied) the
manager there owns it from then on. The body decides only from step results (DESIGN.md §2).
"""

# No `from __future__ import annotations`: the flow's parameter model must be the real class.

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel

from deployments.run_forms import ComplaintRequestForm, use_form
from flows.steps import (
    Answer,
    answer_of,
    ask_staff,
    fill_form,
    report_for_signature,
    report_signed,
    subject,
    wait_for,
)
from models import CaseStatus, Role
from models.approvals import DecisionKind
from models.clocks import ClockAction
from models.forms import ComplaintAnswerForm, ComplaintCallForm, InvestigationForm
from models.reports import ReportKind
from rules.sla import ClockKind
from tasks.approvals import (
    Decision,
    await_approval_until,
    await_first_of,
    signature_step,
    withdraw_approval,
)
from tasks.board import name_run, run_name
from tasks.cases import CaseFacts, IntakeError, Tell, clock, load_case, record
from tasks.complaints import (
    OWNER,
    ComplaintRequest,
    Reopening,
    climb_ladder,
    complaint_brief,
    complaint_history,
    link_cases,
    reopening,
    take_complaint,
    working_days_after,
)
from tasks.timers import current_time

DIRECTOR = Role.TECHNICAL_DIRECTOR
REPLY = str(ReportKind.COMPLAINT_REPLY)
SILENCE_WORKING_DAYS = 3  # no answer to the resolution this long: the manager calls the customer


class ComplaintOutcome(BaseModel):
    case_id: int | None = None
    number: str = ""
    status: CaseStatus
    replies: int = 0
    closed_by_call: bool = False


class Resolution(BaseModel):
    """What an investigation (one or more rounds, approved where needed) settled on."""

    form: InvestigationForm
    by: str
    at: datetime
    round: int
    rounds: list[dict[str, Any]]
    approved_by: str = ""


@flow(name="complaint", flow_run_name=run_name, retries=0, persist_result=True, log_prints=True)
def complaint(request: ComplaintRequest) -> ComplaintOutcome:
    """投诉处理: intake, first answer in 2 h, investigation, resolution confirmed by the customer."""
    from prefect.states import Failed

    # 1–2. Intake (or adopt the complaint the page / the CLI took): number, acknowledgement, both
    # clocks started on the contract's calendar, the customer-service manager assigned.
    entered = current_time()
    try:
        case_id = take_complaint(request, request.reported_at or entered, str(flow_run.id))
    except IntakeError as exc:
        return Failed(message=str(exc))  # type: ignore[return-value]  # a clear message, no traceback
    name_run(case_id)
    facts = load_case(case_id)
    about = complaint_brief(case_id)
    brief = about.text
    now = facts.reported_at

    reopened = reopening(case_id)
    if reopened is None:
        first_answer, now = _first_answer(case_id, facts, brief, now)
        rounds: list[dict[str, Any]] = []
        previous: list[dict[str, Any]] = []
        last_round, reply, note = 0, 0, ""
    else:  # a "not satisfied" after the call closed it (tasks.complaints.late_reply_answer)
        first_answer, rounds, previous = reopened.first_answer, reopened.rounds, reopened.previous
        last_round = max((int(r["round"]) for r in rounds), default=0)
        reply, now = reopened.letters, reopened.at
        note = (
            f"客户在电话回访后书面答复对第 {reopened.reply} 版处理结果不满意，投诉已重新打开并升级至"
            f" {reopened.owner} 重新调查。客户意见：{reopened.comment or '—'}"
        )

    # 4–5. Investigation → resolution (投诉处理回复函) → the customer signs (satisfied) or not; not
    # satisfied reopens the investigation one level up the manager ladder. No answer within 3
    # working days: the manager calls and records the call.
    while True:
        found = _investigate(case_id, facts, brief, after=last_round, rounds=rounds, note=note, now=now)
        last_round, rounds, now = found.round, found.rounds, found.at
        reply += 1
        doc, approval = report_for_signature(
            case_id,
            facts,
            kind=REPLY,
            template="complaint/reply",
            context={
                **_reply_context(found, first_answer, previous),
                **complaint_history(case_id),
                "about": about.about,
                "about_engineer": about.engineer,
                "wish": about.wish,
            },
            version=reply,
            now=now,
            by=found.by,
        )
        decision, call = _answer_or_call(case_id, facts, brief, found, approval, reply, now)
        if decision is not None and decision.decision == DecisionKind.SIGNED:
            report_signed(case_id, doc["id"], decision, kind=REPLY, version=reply)
            return _close(
                case_id, facts, decision.at, decision.by, reply=reply, by_call=False, again=reopened
            )
        if call is not None:
            record(
                case_id,
                "complaint_call",
                call.value.called_at,
                call.by,
                {**call.value.model_dump(mode="json"), "reply": reply},
                key=f"call:{reply}",
            )
            if call.value.satisfied:
                return _close(case_id, facts, call.at, call.by, reply=reply, by_call=True, again=reopened)
            now, comment, by = call.at, call.value.notes, call.value.person
        else:
            assert decision is not None  # the customer's answer (objected), or the call above
            now, comment, by = decision.at, decision.comment, decision.by
        record(
            case_id,
            "complaint_not_satisfied",
            now,
            by,
            {"reply": reply, "comment": comment, "by_call": call is not None},
            key=f"not-satisfied:{reply}",
        )
        previous = [*previous, {"version": reply, "comment": comment}]
        owner = climb_ladder(case_id, now, "reopened", reply)
        note = f"客户对第 {reply} 版处理结果不满意，已升级至 {owner} 重新调查。客户意见：{comment or '—'}"


def _answer_or_call(
    case_id: int, facts: CaseFacts, brief: str, found: Resolution, approval: int, reply: int, now: datetime
) -> tuple[Decision | None, Answer[ComplaintCallForm] | None]:
    """The customer's answer to reply letter `reply` within 3 working days; after them the manager's
    call, unless the customer answers first. (the customer's decision, or None; the call, or None)"""
    silence_ends = working_days_after(case_id, now, SILENCE_WORKING_DAYS)
    decision = await_approval_until(
        approval,
        signature_step(REPLY),
        reply,
        case_id=case_id,
        when=silence_ends,
        key=f"complaint-silence-{reply}",
    )
    call: Answer[ComplaintCallForm] | None = None
    if decision is None:
        # the manager is asked to call; until the call is recorded the customer's own answer on
        # the reply letter's link still counts — and wins (it is theirs; the call is withdrawn)
        call_id = ask_staff(
            case_id,
            "complaint-call",
            reply,
            role=OWNER,
            kind="form",
            form=ComplaintCallForm,
            now=silence_ends,
            subject=subject(facts, f"客户 {SILENCE_WORKING_DAYS} 个工作日未确认处理结果，请电话回访并记录"),
            content=f"{brief}\n\n处理结果：\n{found.form.resolution}",
        )
        first_id, answered = await_first_of(
            [(approval, signature_step(REPLY), reply), (call_id, "complaint-call", reply)]
        )
        if first_id == approval:
            withdraw_approval(call_id)
            decision = answered
            record(
                case_id,
                "complaint_answered_before_call",
                answered.at,
                answered.by,
                {"reply": reply, "decision": answered.decision},
                key=f"answered-before-call:{reply}",
            )
        else:
            call = answer_of(ComplaintCallForm, answered)
    return decision, call


def _first_answer(
    case_id: int, facts: CaseFacts, brief: str, now: datetime
) -> tuple[dict[str, Any], datetime]:
    """The first answer to the customer (what will be done, by when); stops the 2 h clock."""
    # 3. First answer (what will be done, by when), sent to the customer; stops the 2 h clock.
    first = fill_form(
        case_id,
        "complaint-answer",
        1,
        role=OWNER,
        form=ComplaintAnswerForm,
        now=now,
        subject=subject(facts, "请在 2 小时内答复客户投诉"),
        content=brief,
    )
    answered_at = first.value.contacted_at or first.at
    clock(case_id, ClockKind.COMPLAINT_ANSWER, ClockAction.STOP, answered_at)
    record(
        case_id,
        "complaint_answered",
        answered_at,
        first.by,
        {"answer": first.value.answer, "done_by": first.value.done_by.isoformat()},
        key="first-answer",
        tell=[
            Tell(
                template="complaint/first_answer",
                key="first-answer",
                customer=True,
                urgent=True,
                context={"answer": first.value.answer, "done_by": first.value.done_by, "by": first.by},
            )
        ],
    )
    return {"by": first.by, "at": answered_at, "answer": first.value.answer}, first.at


def _investigate(
    case_id: int,
    facts: CaseFacts,
    brief: str,
    *,
    after: int,
    rounds: list[dict[str, Any]],
    note: str,
    now: datetime,
) -> Resolution:
    """Investigation rounds until one is complete — and approved by the director when it involves
    compensation, a change of engineer or a process change (a return means another round)."""
    n = after
    while True:
        n += 1
        answer = fill_form(
            case_id,
            "complaint-investigation",
            n,
            role=OWNER,
            form=InvestigationForm,
            now=now,
            subject=subject(facts, f"请调查投诉并提出处理结果（第 {n} 轮）"),
            content="\n\n".join(t for t in (note, brief) if t),
        )
        now, form = answer.at, answer.value
        linked = link_cases(case_id, form.linked_cases, now, n) if form.linked_cases else []
        record(
            case_id,
            "complaint_investigated",
            now,
            answer.by,
            {**form.model_dump(mode="json"), "round": n, "linked": linked},
            key=f"investigation:{n}",
        )
        rounds = [
            *rounds,
            {
                "round": n,
                "by": answer.by,
                "at": now,
                "facts": form.facts,
                "cause": form.cause,
                "responsibility": form.responsibility,
                "responsible": form.responsible,
                "linked": linked,
            },
        ]
        if not form.complete:
            note = f"第 {n} 轮调查未完成，请继续调查。"
            continue
        approved_by = ""
        if form.needs_director:
            approval = ask_staff(
                case_id,
                "complaint-director",
                n,
                role=DIRECTOR,
                now=now,
                subject=subject(facts, f"投诉处理结果待技术总监审批（{'、'.join(_measures(form))}）"),
                content=f"{brief}\n\n原因：{form.cause}\n责任：{form.responsibility}\n\n处理结果：\n{form.resolution}",
            )
            decision = wait_for(approval, "complaint-director", n)
            now = decision.at
            approved = decision.decision == DecisionKind.APPROVED
            record(
                case_id,
                "complaint_director_approved" if approved else "complaint_director_returned",
                now,
                decision.by,
                {"round": n, "decision": decision.decision, "comment": decision.comment},
                key=f"director:{n}",
            )
            if not approved:
                note = f"技术总监退回了第 {n} 轮的处理结果：{decision.comment or '—'}"
                continue
            approved_by = decision.by
        return Resolution(form=form, by=answer.by, at=now, round=n, rounds=rounds, approved_by=approved_by)


def _measures(form: InvestigationForm) -> list[str]:
    return [
        label
        for on, label in (
            (form.compensation, "赔偿"),
            (form.engineer_change, "更换服务工程师"),
            (form.process_change, "流程变更"),
        )
        if on
    ]


def _reply_context(
    found: Resolution, first_answer: dict[str, Any], previous: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "first_answer": first_answer,
        "rounds": found.rounds,
        "resolution": found.form.resolution,
        "measures": _measures(found.form),
        "approved_by": found.approved_by,
        "previous": previous,
        "manager": found.by,
        "engineer": found.by,  # the signature block's provider cell: the manager who answers
        "sign_role": "客服经理",
    }


def _close(
    case_id: int,
    facts: CaseFacts,
    at: datetime,
    by: str,
    *,
    reply: int,
    by_call: bool,
    again: Reopening | None = None,
) -> ComplaintOutcome:
    """Solved and the customer satisfied (signed, or said so on the manager's call): closed (`again`:
    closed once more after a reopening, under a key of its own)."""
    key = "closed" if again is None else f"closed:reopened-{again.times}"
    verdict = clock(case_id, ClockKind.COMPLAINT_CLOSE, ClockAction.STOP, at)
    record(
        case_id,
        "complaint_closed",
        at,
        by,
        {"satisfied": True, "by_call": by_call, "replies": reply, "close_clock": verdict},
        key=key,
        status=CaseStatus.CLOSED,
        tell=[Tell(template="complaint/closed", key=key, customer=True, context={"by_call": by_call})],
    )
    return ComplaintOutcome(
        case_id=case_id, number=facts.number, status=CaseStatus.CLOSED, replies=reply, closed_by_call=by_call
    )


def deployments() -> list[Any]:
    return [
        use_form(
            complaint.to_deployment(
                name="complaint",
                description="投诉处理流程：受理 → 2 小时内首次答复 → 调查 → 处理结果经客户确认 → 15 天内关闭",
                tags=["complaint", "投诉"],
            ),
            ComplaintRequestForm,
        )
    ]
