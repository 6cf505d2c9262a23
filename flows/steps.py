"""Flow-body steps shared by the repair (§2) and accident (§3) procedures.

Written once, parameterised by `procedure` ("repair" | "accident"): plan approval by the
technical director, the customer accept/object loop over versioned plans, the 5-minute talk that
opens new repairs, the service report signed by the customer, the SMS to the centre, the callback
in 2 days with its form (客户回访表), the engineer's written account, the final approval and the
archive.

These are called from FLOW BODIES: they decide only from task results and decisions, never read
the clock or the database themselves. Time moves with the decisions: each step returns the moment
its decision was taken (`Decision.at`), which the next step uses as its `now`. Loops carry the
version or attempt number into every step name and task input (replays stay exact).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from pydantic import BaseModel

from models import Role
from models.approvals import DecisionKind
from models.cases import CASE_KIND_ZH, CaseStatus, paid_prefix
from models.clocks import ClockAction
from models.forms import (
    CALLBACK_ITEMS,
    AccountForm,
    Answer,
    CallbackForm,
    CorrectionForm,
    PartsForm,
    PlanForm,
    TalkForm,
    form_name,
    form_spec,
)
from models.reports import REPORT_TITLES_ZH
from rules.plans import Plan
from rules.sla import ClockKind
from tasks.approvals import ApprovalRequest, await_approval, dashed, request_approval, signature_step
from tasks.cases import CaseFacts, RepairRequest, Tell, assignees, clock, contact_of, record, start_repair_run
from tasks.parts import request_parts
from tasks.reports import bind_signature, first_plan_of, issue, report_bundle, revise_plan, set_report_status
from tasks.timers import wait_until

if TYPE_CHECKING:
    from tasks.approvals import Decision

F = TypeVar("F", bound=BaseModel)
V = TypeVar("V")  # a versioned document: a plan, a renewal quote

Procedure = Literal["repair", "accident", "drill", "assurance"]
PROCEDURE_ZH = {
    "repair": "故障维修",
    "accident": "事故处理",
    "drill": "应急演练",
    "assurance": "重要通信保障",
}
# Which document a plan is issued as (report kind, template): the repair's and the accident's
# 解决方案 by default; the drill's 演练方案 and 应急恢复方案 go through the same approval loops.
PLAN_DOCUMENT = ("solution_plan", "common/plan")


class Reviser(Protocol):
    """How a procedure's lead writes plan v+1 after the director or the customer sent v back."""

    def __call__(
        self, case_id: int, facts: CaseFacts, plan: Plan, *, reason: str, note: str, now: datetime
    ) -> tuple[Plan, datetime]: ...


# How long a link stays valid; a late answer can still be requested again from the web page.
STAFF_LINK = timedelta(days=3)
CUSTOMER_LINK = timedelta(days=7)
ACCOUNT_LINK = timedelta(
    days=14
)  # the written account / summary is due within a week; a late one is still taken

CALLBACK_AFTER = timedelta(days=1)  # the centre calls the day after: the customer has run a day on the fix


# --- the adapter to the approvals machinery (one place) -------------------------------------


def ask_staff(
    case_id: int,
    step: str,
    version: int,
    *,
    role: str,
    subject: str,
    content: str,
    now: datetime,
    kind: str = "approval",
    form: type[BaseModel] | dict[str, Any] | None = None,
    expires: timedelta = STAFF_LINK,
    template: str | None = None,
    context: dict[str, Any] | None = None,
    prefill: dict[str, str] | None = None,
) -> int:
    """Create a pending approval / form for the staff member the case assigns to `role`; returns its id.

    `form`: a registered form (models.forms; every answer is validated with it) or a page's own
    spec (the inspection checklist). `expires`: how long the link stays valid — at least as long
    as the step is given (an expired link can still be renewed from its page). `prefill`: what the
    form's page shows filled in (field → text), e.g. the current plan to revise."""
    staff = assignees(case_id, role)
    spec, name = _form(form)
    if prefill and spec is not None:
        spec = {**spec, "values": prefill}
    return request_approval(
        ApprovalRequest(
            case_id=case_id,
            step=step,
            version=version,
            subject=subject,
            content=content,
            kind=kind,
            approver_staff_ids=staff,
            approver_role=role,
            expires_at=now + expires,
            now=now,
            form=spec,
            form_name=name,
            template=template,
            context=context,
        )
    )


def ask_customer(
    case_id: int,
    step: str,
    version: int,
    *,
    subject: str,
    content: str,
    now: datetime,
    kind: str = "signature",
    form: type[BaseModel] | None = None,
    expires: timedelta = CUSTOMER_LINK,
) -> int:
    """Ask the customer contact to accept-and-sign or object (a signature), or to answer a small form.
    `expires`: how long the link stays valid (a renewal's answer: until the contract ends)."""
    contact = contact_of(case_id)
    spec, name = _form(form)
    return request_approval(
        ApprovalRequest(
            case_id=case_id,
            step=step,
            version=version,
            subject=subject,
            content=content,
            kind=kind,
            approver_contact_ids=[contact],
            approver_role="customer",
            expires_at=now + expires,
            now=now,
            form=spec,
            form_name=name,
        )
    )


def _form(form: type[BaseModel] | dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """(the page's field list, the registered form's name) of a step's form."""
    if form is None or isinstance(form, dict):
        return form, None
    return form_spec(form), form_name(form)


def wait_for(approval_id: int, step: str, version: int) -> Decision:
    """Suspend until the approval / signature / form is decided; returns the Decision."""
    return await_approval(approval_id, step, version)


def fill_form(
    case_id: int,
    step: str,
    version: int,
    *,
    role: str,
    subject: str,
    content: str,
    form: type[F],
    now: datetime,
    prefill: dict[str, str] | None = None,
) -> Answer[F]:
    """A staff member fills a form through their link (or the Prefect UI); returns the validated form.
    `prefill`: the form's fields shown already filled in on the link page."""
    approval_id = ask_staff(
        case_id,
        step,
        version,
        role=role,
        subject=subject,
        content=content,
        now=now,
        kind="form",
        form=form,
        prefill=prefill,
    )
    return answer_of(form, wait_for(approval_id, step, version))


def customer_form(
    case_id: int,
    step: str,
    version: int,
    *,
    subject: str,
    content: str,
    form: type[F],
    now: datetime,
    expires: timedelta = CUSTOMER_LINK,
) -> Answer[F]:
    """The customer answers a small form through their link; returns the validated form."""
    approval_id = ask_customer(
        case_id,
        step,
        version,
        subject=subject,
        content=content,
        now=now,
        kind="form",
        form=form,
        expires=expires,
    )
    return answer_of(form, wait_for(approval_id, step, version))


def answer_of(form: type[F], decision: Decision) -> Answer[F]:
    """The recorded answer read back as its form: `decide` validated it before recording, so this
    only restores the types (no check against "now" again: the answer is of its own moment)."""
    return Answer(
        value=form.model_validate(decision.payload), by=decision.by, at=decision.at, comment=decision.comment
    )


# --- the steps --------------------------------------------------------------------------------


def subject(facts: CaseFacts, text: str) -> str:
    """`【有偿服务】WX-000012 故障维修：text` — every message names the case and an out-of-contract mark."""
    kind = PROCEDURE_ZH.get(facts.kind) or CASE_KIND_ZH.get(facts.kind, "")  # type: ignore[call-overload]
    return f"{paid_prefix(facts)}{facts.number} {kind}：{text}"


def director_approves_plan(
    case_id: int,
    facts: CaseFacts,
    plan: Plan,
    *,
    now: datetime,
    procedure: Procedure = "repair",
    role: str = Role.TECHNICAL_DIRECTOR,
    step: str = "plan-approval",
    revise: Reviser | None = None,
    document: tuple[str, str] = PLAN_DOCUMENT,
) -> tuple[Plan, datetime]:
    """The technical director approves the plan, or sends it back for version v+1, which goes to the
    director again — until one version is approved (`revise`: how the procedure's plan is rewritten;
    the repair's free-text plan by default). The two ways back differ (PROCEDURES.md §2 step 3, §3
    step 3.2.2: the lead and the engineer make the plan, the director approves it):
    "要求修改" (revise) asks for changes to this plan — the lead's form comes filled in with it;
    "驳回" (rejected) refuses the plan as a whole — the lead and the engineer work out another plan
    on an empty form, and the engineer is told it was rejected and why. `document`: the report kind
    and template the plan is issued as."""

    def present(plan: Plan, now: datetime) -> str:
        return str(_issue_plan(case_id, document, plan, now)["text"])

    def rejected_tell(plan: Plan, decision: Decision) -> list[Tell]:
        return [
            Tell(
                template="plan_rejected",
                key=f"{step}:v{plan.version}:rejected",
                roles=[Role.ENGINEER],
                context={"version": plan.version, "reason": decision.comment, "what": _title(document)},
            )
        ]

    def rewrite(plan: Plan, decision: Decision, now: datetime) -> tuple[Plan, datetime]:
        rejected = decision.decision == DecisionKind.REJECTED
        return (revise or lead_revises_plan)(
            case_id,
            facts,
            plan,
            reason="rejected" if rejected else "director",
            note=decision.comment,
            now=now,
        )

    return approved_version(
        case_id,
        plan,
        now=now,
        step=step,
        role=role,
        version=lambda p: p.version,
        present=present,
        subject=lambda p: subject(facts, f"{_title(document)} v{p.version} 待技术总监审批"),
        revise=rewrite,
        rejected_tell=rejected_tell,
    )


def approved_version(
    case_id: int,
    item: V,
    *,
    now: datetime,
    step: str,
    role: str,
    version: Callable[[V], int],
    present: Callable[[V, datetime], str],
    subject: Callable[[V], str],
    revise: Callable[[V, Decision, datetime], tuple[V, datetime]],
    rejected_tell: Callable[[V, Decision], list[Tell]] | None = None,
    events: tuple[str, str] = ("plan_approved", "plan_returned"),
) -> tuple[V, datetime]:
    """A document approved by link, with the objection loop over its versions (the plan by the
    technical director, a renewal quote by the sales manager): version v is shown (`present`: the
    text the approver sees), the approver approves, asks for changes ("要求修改") or rejects ("驳回",
    `rejected_tell`: who is told), and anything but an approval is `revise`d into version v+1 and
    asked again — until one version is approved. Each answer is an event (`events`: approved,
    returned) keyed by step and version. Returns the approved item and the moment of approval."""
    while True:
        v = version(item)
        approval = ask_staff(
            case_id, step, v, role=role, now=now, content=present(item, now), subject=subject(item)
        )
        decision = wait_for(approval, step, v)
        now = decision.at
        if decision.decision == DecisionKind.APPROVED:
            record(
                case_id,
                events[0],
                now,
                decision.by,
                {"version": v, "step": step, "comment": decision.comment},
                key=f"{step}:v{v}",
            )
            return item, now
        rejected = decision.decision == DecisionKind.REJECTED
        record(
            case_id,
            events[1],
            now,
            decision.by,
            {"version": v, "step": step, "decision": decision.decision, "comment": decision.comment},
            key=f"{step}:v{v}",
            tell=rejected_tell(item, decision) if rejected and rejected_tell else None,
        )
        item, now = revise(item, decision, now)


def first_plan(
    case_id: int,
    facts: CaseFacts,
    *,
    now: datetime,
    text: str = "",
    author: str = "",
    step: str = "plan-v1",
    ask: str = "未远程解决，请填写解决方案",
    content: str | None = None,
    role: str = Role.TECHNICAL_LEAD,
) -> tuple[Plan, datetime]:
    """Plan v1: `text` already written (the repair's diagnosis form), or — left empty or unusable —
    the lead is asked for it on its own form (`step`-1, -2, …) until it can be read. Returns the plan
    and the time of the last answer."""
    plan, attempt, at = first_plan_of(text, author), 0, now
    while plan is None:
        attempt += 1
        answer = fill_form(
            case_id,
            f"{step}-{attempt}",
            1,
            role=role,
            form=PlanForm,
            now=at,
            subject=subject(facts, ask),
            content=facts.description if content is None else content,
        )
        plan, author, at = first_plan_of(answer.value.plan, answer.by), answer.by, answer.at
    record(case_id, "plan_written", now, author, {"version": 1}, key="plan:v1")
    return plan, at


def lead_revises_plan(
    case_id: int,
    facts: CaseFacts,
    plan: Plan,
    *,
    reason: str,
    note: str,
    now: datetime,
    role: str = Role.TECHNICAL_LEAD,
) -> tuple[Plan, datetime]:
    """The lead writes plan v+1 on the form (the old plan and the reason are on the page). A plan to
    revise comes filled in on the form; a rejected one does not (another plan is wanted)."""
    version = plan.version + 1
    attempt = 0
    while True:  # a "revision" identical to the old plan is asked for again, under a new step name
        step = f"plan-v{version}" if attempt == 0 else f"plan-v{version}-again{attempt}"
        if reason == "rejected":
            written = fill_form(
                case_id,
                step,
                version,
                role=role,
                form=PlanForm,
                now=now,
                subject=subject(
                    facts, f"解决方案 v{plan.version} 被驳回，请与工程师重新制定方案（v{version}）"
                ),
                content=f"驳回原因：{note or '—'}\n\n被驳回的方案 v{plan.version}（仅供对照，请勿照搬）：\n{plan.text}",
            )
        else:
            written = fill_form(
                case_id,
                step,
                version,
                role=role,
                form=PlanForm,
                now=now,
                subject=subject(facts, f"请修订解决方案（v{plan.version} → v{version}）"),
                content=f"修订原因：{note or '—'}\n\n当前方案 v{plan.version}：\n{plan.text}",
                prefill={"plan": plan.text},
            )
        now = written.at
        new = revise_plan(plan, written.value.plan, reason, written.by, note)
        if new is not None:
            record(
                case_id,
                "plan_revised",
                now,
                written.by,
                {"version": new.version, "reason": reason, "note": note, "parts": written.value.parts},
                key=f"plan-revised:v{new.version}",
            )
            return new, now
        attempt += 1
        note = "修订内容与原方案相同，请修改方案 / the revision was identical to the plan"


def customer_accepts_plan(
    case_id: int,
    facts: CaseFacts,
    plan: Plan,
    *,
    now: datetime,
    procedure: Procedure = "repair",
    revise: Reviser | None = None,
    pause: ClockKind | None = None,
    document: tuple[str, str] = PLAN_DOCUMENT,
    director_step: str = "plan-approval",
) -> tuple[Plan, datetime]:
    """PROCEDURES.md §2 step 7: the written plan goes to the customer, who signs or objects. Each
    objection → plan v+1 by the lead, re-confirmed by the director, resent — until both sides have
    signed the same version. `pause`: the clock that stands still while the plan is with the
    customer (the repair's restore clock: that wait is the customer's, not the provider's).
    `document`: as for `director_approves_plan`; `director_step`: its approval step."""

    def present(plan: Plan, now: datetime) -> dict[str, Any]:
        return _issue_plan(case_id, document, plan, now)

    def rewrite(plan: Plan, decision: Decision, now: datetime) -> tuple[Plan, datetime]:
        plan, now = (revise or lead_revises_plan)(
            case_id, facts, plan, reason="customer", note=decision.comment, now=now
        )
        return director_approves_plan(
            case_id,
            facts,
            plan,
            now=now,
            procedure=procedure,
            revise=revise,
            document=document,
            step=director_step,
        )

    return customer_signs_version(
        case_id,
        plan,
        now=now,
        kind=document[0],
        what=_title(document),
        version=lambda p: p.version,
        present=present,
        subject=lambda p: subject(facts, f"请确认{_title(document)} v{p.version}"),
        revise=rewrite,
        pause=pause,
    )


def customer_signs_version(
    case_id: int,
    item: V,
    *,
    now: datetime,
    kind: str,
    what: str,
    version: Callable[[V], int],
    present: Callable[[V, datetime], dict[str, Any]],
    subject: Callable[[V], str],
    revise: Callable[[V, Decision, datetime], tuple[V, datetime]],
    pause: ClockKind | None = None,
    events: tuple[str, str] = ("plan_signed", "plan_objected"),
    keys: tuple[str, str] = ("plan-signed", "plan-objected"),
) -> tuple[V, datetime]:
    """A document the customer signs in writing, with the objection loop over its versions (the
    solution plan, a renewal's 变更申请): version v is issued (`present`: the report `issue` made, of
    report kind `kind`), the customer signs it (bound to its hash) or objects, and an objection is
    `revise`d into version v+1 (re-approved inside `revise` where the procedure wants it) and sent
    again — until the customer signs one version. `pause`: a clock that stands still meanwhile."""
    while True:
        v = version(item)
        doc = present(item, now)
        step = signature_step(kind)
        approval = ask_customer(case_id, step, v, now=now, content=doc["sign_text"], subject=subject(item))
        if pause:
            clock(case_id, pause, ClockAction.PAUSE, now, f"{what} v{v} 等待客户确认")
        decision = wait_for(approval, step, v)
        now = decision.at
        if pause:
            clock(case_id, pause, ClockAction.RESUME, now, f"客户已答复{what} v{v}")
        if decision.decision == DecisionKind.SIGNED:
            bind_signature(doc["id"], decision.by, decision.payload or {}, now, contact_of(case_id))
            record(case_id, events[0], now, decision.by, {"version": v}, key=f"{keys[0]}:v{v}")
            return item, now
        record(
            case_id,
            events[1],
            now,
            decision.by,
            {"version": v, "comment": decision.comment},
            key=f"{keys[1]}:v{v}",
        )
        item, now = revise(item, decision, now)


def five_minute_talk(
    case_id: int, facts: CaseFacts, *, now: datetime, problems: str | None = None, role: str = Role.ENGINEER
) -> tuple[list[str], datetime]:
    """5分钟交流: each further problem found opens a new repair flow linked to this case.
    `problems` given (from a form already filled) → no separate form. Returns the new runs' ids."""
    if problems is None:
        talk = fill_form(
            case_id,
            "five-minute-talk",
            1,
            role=role,
            form=TalkForm,
            now=now,
            subject=subject(facts, "请填写5分钟交流记录"),
            content=facts.description,
        )
        now = talk.at
        problems = talk.value.problems
    found = split_problems(problems)
    record(
        case_id,
        "five_minute_talk",
        now,
        "engineer",
        {"problems": [p for _, p in found]},
        key="five-minute-talk",
    )
    runs = []
    for n, (severity, text) in enumerate(found, start=1):
        runs.append(start_linked_repair(case_id, facts, text, severity, n, now))
    return runs, now


def split_problems(text: str) -> list[tuple[int, str]]:
    """Lines of the talk form → (severity, description); `[2] text` sets the severity (default 4)."""
    import re

    found = []
    for line in (text or "").splitlines():
        line = line.strip(" -·•\t")
        if not line:
            continue
        match = re.match(r"^[\[【(（]\s*([1-4])\s*[\]】)）]\s*(.+)$", line)
        found.append((int(match[1]), match[2].strip()) if match else (4, line))
    return found


def start_linked_repair(
    case_id: int, facts: CaseFacts, description: str, severity: int, n: int, now: datetime
) -> str:
    """Start a new repair flow for a problem found in this case (the link is the parent case id)."""
    request = RepairRequest(
        customer=facts.customer_code,
        site=facts.site,
        reported_by=facts.contact_name or "客户",
        channel="现场",
        description=description,
        severity=severity,
        reported_at=now,
        parent_case_id=case_id,
    )
    return start_repair_run(request, idempotency_key=f"{case_id}:talk:{n}")


def service_report_signed(
    case_id: int,
    facts: CaseFacts,
    *,
    now: datetime,
    context: dict[str, Any],
    template: str = "repair/service_report",
    kind: str = "service_report",
    by: str = "服务工程师",
    role: str = Role.ENGINEER,
) -> tuple[int, datetime]:
    """PROCEDURES.md §2 step 12: the report is issued and the customer signs it (bound to its hash).
    An objection goes to the engineer, whose correction is issued as version v+1 and sent again."""
    version = 1
    corrections: list[str] = []
    while True:
        doc, approval = report_for_signature(
            case_id,
            facts,
            kind=kind,
            template=template,
            context={**context, "corrections": corrections},
            version=version,
            now=now,
            by=by,
        )
        decision = wait_for(approval, signature_step(kind), version)
        now = decision.at
        if decision.decision == DecisionKind.SIGNED:
            report_signed(case_id, doc["id"], decision, kind=kind, version=version)
            return doc["id"], now
        record(
            case_id,
            f"{kind}_objected",
            now,
            decision.by,
            {"version": version, "comment": decision.comment},
            key=f"{kind}-objected:v{version}",
        )
        fix = fill_form(
            case_id,
            f"{dashed(kind)}-correction",
            version,
            role=role,
            form=CorrectionForm,
            now=now,
            subject=subject(facts, f"客户对{doc['title']}有异议，请更正"),
            content=decision.comment,
        )
        now = fix.at
        corrections = [*corrections, fix.value.correction]
        version += 1


def report_for_signature(
    case_id: int,
    facts: CaseFacts,
    *,
    kind: str,
    template: str,
    context: dict[str, Any],
    version: int,
    now: datetime,
    by: str,
) -> tuple[dict[str, Any], int]:
    """Issue version `version` of a report and ask the customer to sign it or object on a link;
    returns (the issued report, the signature's approval id) — awaited by the caller (`wait_for`,
    or `await_approval_until` when silence has a deadline)."""
    doc = issue(case_id, kind, template, context, now, by, version)
    approval = ask_customer(
        case_id,
        signature_step(kind),
        version,
        now=now,
        content=doc["sign_text"],
        subject=subject(facts, f"请签收{doc['title']}"),
    )
    return doc, approval


def report_signed(case_id: int, report_id: int, decision: Decision, *, kind: str, version: int) -> None:
    """The customer's signature bound to the report's content, recorded as `<kind>_signed`."""
    bind_signature(report_id, decision.by, decision.payload or {}, decision.at, contact_of(case_id))
    record(
        case_id,
        f"{kind}_signed",
        decision.at,
        decision.by,
        {"report_id": report_id, "version": version},
        key=f"{kind}-signed",
    )


def parts_from_store(
    case_id: int,
    facts: CaseFacts,
    parts: str,
    by: str,
    now: datetime,
    *,
    step: str = "parts",
    role: str = Role.TECHNICAL_LEAD,
) -> tuple[str, datetime]:
    """The plan's spare parts go to the store (tasks.parts.request_parts: each line one stock move, a
    shortage told urgently to the parts keeper and the director). A list the store cannot take (an
    unreadable line, a code it does not stock) issues nothing and goes back to the lead, told why,
    until it can — or is left empty. `step` names the request and the correction forms
    (`parts`, `parts-1`, …; the accident's `accident-parts-v2`, …). Returns the list issued and the time."""
    attempt = 0
    while parts:
        issued = request_parts(case_id, parts, now, step if attempt == 0 else f"{step}-{attempt}", by)
        if "error" not in issued:
            break
        attempt += 1
        answer = fill_form(
            case_id,
            f"{step}-{attempt}",
            attempt,
            role=role,
            form=PartsForm,
            now=now,
            subject=subject(facts, "备件清单无法受理，请更正"),
            content=f"{issued['error']}\n\n原备件清单：{parts}",
        )
        now, parts, by = answer.at, answer.value.parts, answer.by
    return parts, now


def sms_to_centre(case_id: int, *, now: datetime, procedure: Procedure = "repair") -> None:
    """§2 step 13: the engineer tells the service centre by SMS that the task is done."""
    record(
        case_id,
        "sms_to_centre",
        now,
        "engineer",
        {},
        key="done-sms",
        tell=[
            Tell(
                template="repair/done_sms",
                key="done-sms",
                roles=[Role.DISPATCHER],
                context={"procedure": PROCEDURE_ZH[procedure]},
            )
        ],
    )


def start_after_service_clocks(case_id: int, completed_at: datetime) -> None:
    """The clocks that run from completion: callback (2 days), written account (1 week)."""
    clock(case_id, ClockKind.CALLBACK, ClockAction.START, completed_at)
    clock(case_id, ClockKind.WRITTEN_ACCOUNT, ClockAction.START, completed_at)


def request_written_account(
    case_id: int, facts: CaseFacts, *, now: datetime, role: str = Role.ENGINEER, what: str = "书面说明"
) -> int:
    """§2 step 16 / §3 step 9: ask for the written account (awaited later: it may take a week)."""
    return ask_staff(
        case_id,
        "written-account",
        1,
        role=role,
        kind="form",
        form=AccountForm,
        now=now,
        expires=ACCOUNT_LINK,
        subject=subject(facts, f"请在一周内提交{what}（含方案）"),
        content=facts.description,
    )


def written_account_received(
    case_id: int,
    approval_id: int,
    *,
    plan: Plan | None,
    now: datetime,
    kind: str = "written_account",
    template: str = "repair/written_account",
) -> tuple[int, datetime]:
    """Wait for the written account; store it as a report (`kind`, `template`) and stop its clock."""
    written = answer_of(AccountForm, wait_for(approval_id, "written-account", 1))
    doc = issue(
        case_id,
        kind,
        template,
        {
            "account": written.value.account,
            "engineer": written.by,
            "plan": plan.model_dump() if plan else None,
        },
        written.at,
        written.by,
    )
    clock(case_id, ClockKind.WRITTEN_ACCOUNT, ClockAction.STOP, written.at)
    return doc["id"], max(now, written.at)


def callback(
    case_id: int, facts: CaseFacts, *, completed_at: datetime, role: str = Role.DISPATCHER
) -> tuple[int, datetime]:
    """§2 step 14: the day after completion the centre calls the customer back and fills the callback
    form (客户回访表, scores 优/良/中/差); within 2 days; the coordinator is informed."""
    wait_until(case_id, completed_at + CALLBACK_AFTER, "callback-due")
    due = completed_at + CALLBACK_AFTER
    answer = fill_form(
        case_id,
        "callback",
        1,
        role=role,
        form=CallbackForm,
        now=due,
        subject=subject(facts, "请回访客户并填写客户回访表"),
        content=facts.description,
    )
    form = answer.value
    scores = [{"key": k, "label": label, "value": getattr(form, k)} for k, label in CALLBACK_ITEMS.items()]
    doc = issue(
        case_id,
        "callback_form",
        "common/callback_form",
        {"callback": {**form.model_dump(), "by": answer.by, "at": answer.at}, "scores": scores},
        answer.at,
        answer.by,
    )
    outcome = clock(case_id, ClockKind.CALLBACK, ClockAction.STOP, answer.at)
    record(
        case_id,
        "callback_done",
        answer.at,
        answer.by,
        {"scores": {s["key"]: s["value"] for s in scores}, "clock": outcome, "report_id": doc["id"]},
        key="callback",
        tell=[
            Tell(
                template="repair/callback_done",
                key="callback-done",
                roles=[Role.COORDINATOR],
                context={"scores": scores, "comments": form.comments},
            )
        ],
    )
    return doc["id"], answer.at


def final_approval(
    case_id: int,
    facts: CaseFacts,
    report_ids: list[int],
    *,
    now: datetime,
    role: str = Role.TECHNICAL_DIRECTOR,
    step: str = "final-approval",
    what: str = "报告、回访表与书面说明",
    answer_role: str = Role.DISPATCHER,
) -> datetime:
    """§2 step 17: the centre sends report, callback form and account to the director; a return
    ("revise"/"rejected") is recorded and sent again as the next version once `answer_role` (the
    centre for a repair, the drill lead for a 演练报告) has answered the correction form."""
    version = 1
    while True:
        content = report_bundle(report_ids)
        approval = ask_staff(
            case_id,
            step,
            version,
            role=role,
            now=now,
            content=content,
            subject=subject(facts, f"{what}待技术总监审批"),
        )
        decision = wait_for(approval, step, version)
        now = decision.at
        approved = decision.decision == DecisionKind.APPROVED
        record(
            case_id,
            "final_approved" if approved else "final_returned",
            now,
            decision.by,
            {"version": version, "comment": decision.comment},
            key=f"{step}:v{version}",
        )
        if approved:
            return now
        answer = fill_form(
            case_id,
            f"{step}-answer",
            version,
            role=answer_role,
            form=CorrectionForm,
            now=now,
            subject=subject(facts, "技术总监退回了报告，请补充"),
            content=decision.comment,
        )
        now = answer.at
        version += 1


def archive(case_id: int, report_ids: list[int], *, now: datetime, procedure: Procedure = "repair") -> None:
    """Everything approved is archived; the case is closed."""
    set_report_status(report_ids, "archived", now)
    record(
        case_id,
        "archived",
        now,
        "system",
        {"reports": report_ids},
        key="archived",
        status=CaseStatus.ARCHIVED,
    )


def _title(document: tuple[str, str]) -> str:
    return REPORT_TITLES_ZH.get(document[0], document[0])


def _issue_plan(case_id: int, document: tuple[str, str], plan: Plan, now: datetime) -> dict[str, Any]:
    """The plan's version issued as its report (`document`: kind, template) — what the director
    approves and what the customer signs are the same issue (one per version: `issue` is keyed by it)."""
    return issue(
        case_id, document[0], document[1], _plan_context(plan), now, plan.author or "技术负责人", plan.version
    )


def _plan_context(plan: Plan) -> dict[str, Any]:
    return {"plan": plan.model_dump(), "plan_reason": plan.reason_zh, "parts": ""}
