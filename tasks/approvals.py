"""Approvals, signatures and forms (审批 / 签字确认 / 表单): a person acts through a link, then the
procedure continues (DESIGN.md §2).

- `request_approval(...)` (task): records what is to be approved — its version and the hash of
  exactly the content shown — and who may decide, and queues each approver a signed link, in one
  transaction.
- `await_approval(approval_id, step, version)` (flow body): returns the decision once recorded;
  until then the run is suspended with a typed form (the Prefect-UI route) and holds nothing.
- `decide(...)`: the only writer of decisions. The link page and the Prefect-UI form both call it;
  it commits the decision, then wakes the run. A wake that fails (the run had not finished
  suspending, Prefect was down) is repeated by the keeper's `reconcile(now)`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from models import Case, Contact, Staff, append_event, wallclock
from models.approvals import (
    ALLOWED_DECISIONS,
    DECISION_ZH,
    ENTERED_ON_BEHALF,
    KIND_ZH,
    UI_FIELDS,
    Approval,
    ApprovalKind,
    ApprovalStatus,
    Channel,
    DecisionKind,
    content_hash,
)
from models.db import retrying, session_scope, transaction
from models.forms import COMMENT_MAX, SIGNER_MAX, AnswerError, validate_answer
from models.forms import FORMS as FORM_MODELS
from models.parties import ROLE_LABELS_ZH, Role
from tasks.answering import responder
from tasks.board import suspend_announced
from tasks.ledger import as_if_woken, step
from tasks.links import sign_link
from tasks.notify import queue
from tasks.people import first_with_role, staff_with_role
from tasks.render import _local_time
from tasks.timers import (
    Wake,
    current_run_id,
    either_key,
    set_timer,
    suspend_key,
    timer_fired,
    timer_key,
    wake_run,
)

log = logging.getLogger("aftercare.approvals")

LINK_PURPOSE = "a"  # links look like <base>/a/<token>


def dashed(name: str) -> str:
    """A step name as Prefect may key it: a suspended run's input schema is kept under a key made of
    the step name, and such keys may hold only lowercase letters, digits and dashes."""
    return name.replace("_", "-")


def signature_step(report_kind: str) -> str:
    """The approval step of the customer's signature on a report kind ("service-report-signature")."""
    return f"{dashed(report_kind)}-signature"


_MIN_WINDOW = timedelta(days=1)  # a renewed link lives at least this long
RENEW_EVERY = timedelta(
    minutes=10
)  # at most one fresh link per approval in this long (a page reloaded, a bot)


class Decision(BaseModel):
    """What the person decided (the value `await_approval` returns to the flow)."""

    approval_id: int
    version: int
    decision: DecisionKind
    by: str = Field(description="the decider's name")
    comment: str = ""
    at: datetime
    payload: dict[str, Any] = Field(default_factory=dict)
    channel: str = Channel.LINK

    @property
    def approved(self) -> bool:
        return self.decision in (DecisionKind.APPROVED, DecisionKind.SIGNED, DecisionKind.SUBMITTED)


@dataclass(frozen=True)
class Approver:
    """One person who may act: a staff member or a customer contact."""

    kind: Literal["staff", "contact"]
    id: int

    @property
    def code(self) -> str:
        return f"{self.kind[0]}:{self.id}"

    @classmethod
    def parse(cls, code: str) -> Approver:
        kind, _, ident = code.partition(":")
        return cls("staff" if kind == "s" else "contact", int(ident))


Outcome = Literal[
    "recorded",
    "already_decided",
    "superseded",
    "expired",
    "not_entitled",
    "invalid",
    "content_changed",
    "not_found",
    "too_soon",
]


@dataclass
class DecisionResult:
    outcome: Outcome
    message: str  # Chinese, for the page or the run log
    approval: Approval | None = None
    decision: Decision | None = None
    resumed: bool = False
    newer_version: int | None = None
    errors: dict[str, str] = field(default_factory=dict)  # an "invalid" answer: field → Chinese reason

    @property
    def recorded(self) -> bool:
        return self.outcome == "recorded"


# ---------------------------------------------------------------------------------------------
# The answer of the Prefect-UI forms (tasks.ui_forms), read back: Chinese values, as people pick them

ZH_TO_DECISION = {label: code for code, label in DECISION_ZH.items()}


STEP_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def approval_key(step: str, version: int) -> str:
    """The suspend key of an approval wait: fixed per step and version ("director-approval-v2")."""
    return f"{step}-v{version}"


def run_input_for(row: Approval) -> dict[str, Any]:
    """The form input a decided approval resumes its run with (matches the saved form schema)."""
    assert row.decision is not None  # only decided approvals resume their run
    value: dict[str, Any] = {
        "decision": DECISION_ZH[DecisionKind(row.decision)],
        "comment": row.comment or "",
        "approver": row.decided_by or "?",
    }
    if row.kind == ApprovalKind.FORM and not row.form_name:
        value["data"] = row.payload or {}  # a page's own form (the checklist): the generic UI form
    return value


def decision_of(row: Approval) -> Decision | None:
    if row.decision is None or row.decided_at is None:
        return None
    assert row.id is not None
    return Decision(
        approval_id=row.id,
        version=row.version,
        decision=DecisionKind(row.decision),
        by=row.decided_by or "",
        comment=row.comment,
        at=row.decided_at,
        payload=row.payload or {},
        channel=row.channel or Channel.LINK,
    )


# ---------------------------------------------------------------------------------------------
# Links


def approval_link(row: Approval, who: Approver) -> str:
    """The signed link one approver receives: binds approval, approver, content hash and expiry."""
    return sign_link(
        LINK_PURPOSE, {"a": row.id, "p": who.code, "h": row.content_hash[:16]}, expires_at=row.expires_at
    )


def approvers_of(session: Session, row: Approval) -> list[tuple[Approver, Staff | Contact]]:
    people: list[tuple[Approver, Staff | Contact]] = []
    for sid in row.approver_staff_ids:
        staff = session.get(Staff, sid)
        if staff is not None:
            people.append((Approver("staff", sid), staff))
    for cid in row.approver_contact_ids:
        contact = session.get(Contact, cid)
        if contact is not None:
            people.append((Approver("contact", cid), contact))
    return people


def _notify(
    session: Session,
    row: Approval,
    who: Approver,
    person: Staff | Contact,
    *,
    template: str,
    key: str,
    now: datetime,
    urgent: bool,
    extra: dict[str, Any] | None = None,
) -> None:
    case = session.get(Case, row.case_id)
    number = case.number if case else ""
    context = {
        "recipient": person.name,
        "case_number": number,
        "case_title": case.title if case else "",
        "kind": KIND_ZH.get(row.kind, row.kind),
        "subject": row.subject,
        # the subject names the case once (most subjects start with the case number already) …
        "subject_line": row.subject
        if number and number in row.subject
        else f"{number} {row.subject}".strip(),
        # … and the body says what is asked without the case prefix ("请与客户预约上门时间")
        "task": _task_of(row.subject, number),
        "version": row.version,
        "role": ROLE_LABELS_ZH.get(Role(row.approver_role), row.approver_role)
        if row.approver_role in set(Role)
        else "",
        "link": approval_link(row, who),
        "expires_at": row.expires_at,
        "summary": _summary(row.content),
        **(extra or {}),
    }
    queue(
        session,
        recipients=[person],
        template=template,
        context=context,
        key=key,
        case_id=row.case_id,
        now=now,
        urgent=urgent,
    )


def _task_of(subject: str, number: str) -> str:
    """What a subject asks for, without its case prefix: "【合同外·有偿服务】WX-000012 故障维修：请填写…" →
    "请填写…" (subjects are made by flows.steps.subject, or "<number> <text>")."""
    if not number or number not in subject:
        return subject.strip()
    rest = subject.split(number, 1)[1].strip()
    head, sep, tail = rest.partition("：")
    return (tail if sep and " " not in head and len(head) <= 8 else rest).strip() or subject.strip()


def _summary(content: str, limit: int = 160) -> str:
    text = " ".join(content.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Requesting


class ApprovalRequest(BaseModel):
    """What is asked, of whom, until when: one approval, signature or form (`open_approval`).

    `approver_staff_ids` / `approver_contact_ids` name the approvers; with neither, every staff
    member with `approver_role`. `form`: a page's own spec (the inspection checklist) or the page's
    prefilled values; `form_name`: the registered form (models.forms) every answer is validated with.
    `template`: the notification (default `<kind>_request`), `context`: what it adds to it."""

    case_id: int
    step: str
    version: int
    subject: str
    content: str
    kind: ApprovalKind = ApprovalKind.APPROVAL
    approver_staff_ids: list[int] = Field(default_factory=list)
    approver_contact_ids: list[int] = Field(default_factory=list)
    approver_role: str | None = None
    expires_at: datetime
    now: datetime
    flow_run_id: str | None = None
    form: dict[str, Any] | None = None
    form_name: str | None = None
    template: str | None = None
    context: dict[str, Any] | None = None
    urgent: bool = False


def _check(request: ApprovalRequest) -> None:
    """A request the machinery cannot serve is a programming error: said before anything is written."""
    step, version = request.step, request.version
    if not STEP_NAME.fullmatch(step):
        # the step names the suspend key and Prefect's run-input keys: lowercase, digits and dashes
        raise ValueError(
            f"approval step {step!r}: use lowercase letters, digits and dashes (e.g. 'director-approval')"
        )
    if request.kind not in ALLOWED_DECISIONS:
        raise ValueError(f"unknown approval kind {request.kind!r}: approval, signature or form")
    if request.form_name is not None and request.form_name not in FORM_MODELS:
        raise ValueError(f"unknown form {request.form_name!r}: register it in models.forms")
    if (
        request.kind == ApprovalKind.FORM
        and request.form_name is None
        and not (request.form or {}).get("page")
    ):
        # every answer is validated by its form before it is recorded: a form approval names its
        # registered form, or the page of its own that checks it (the inspection checklist)
        raise ValueError(f"form approval {step} v{version} names no registered form (models.forms)")


def open_approval(session: Session, request: ApprovalRequest) -> Approval:
    """`request_approval` in the caller's transaction (plain function: benches and tests use it)."""
    _check(request)
    case_id, step, version = request.case_id, request.step, request.version
    found = session.exec(
        select(Approval).where(
            Approval.case_id == case_id, Approval.step == step, Approval.version == version
        )
    ).first()
    if found is not None:  # a replay, or the step asked twice: nothing new, same row
        if (
            request.flow_run_id
            and found.flow_run_id != request.flow_run_id
            and found.status == ApprovalStatus.PENDING
        ):
            found.flow_run_id = request.flow_run_id
            session.add(found)
        return found

    staff_ids = list(request.approver_staff_ids)
    if not staff_ids and not request.approver_contact_ids and request.approver_role:
        staff_ids = [s.id for s in staff_with_role(session, request.approver_role) if s.id is not None]
        if not staff_ids:
            first_with_role(session, request.approver_role)  # raises NobodyForRole with the Chinese message
    if not staff_ids and not request.approver_contact_ids:
        raise ValueError(f"approval {step} v{version} of case {case_id} names no approver")

    row = Approval(
        case_id=case_id,
        kind=str(request.kind),
        step=step,
        version=version,
        subject=request.subject,
        content=request.content,
        content_hash=content_hash(request.content),
        form=request.form or {},
        form_name=request.form_name,
        approver_role=request.approver_role,
        approver_staff_ids=staff_ids,
        approver_contact_ids=list(request.approver_contact_ids),
        created_at=request.now,
        expires_at=request.expires_at,
        flow_run_id=request.flow_run_id,
    )
    session.add(row)
    session.flush()
    # an older version still waiting is replaced: its links now answer "v{version} replaced it"
    session.execute(
        sa.update(Approval)
        .where(
            col(Approval.case_id) == case_id,
            col(Approval.step) == step,
            col(Approval.version) < version,
            col(Approval.status) == ApprovalStatus.PENDING,
        )
        .values(status=ApprovalStatus.SUPERSEDED, superseded_by=version)
    )
    _announce(session, row, request)
    return row


def _announce(session: Session, row: Approval, request: ApprovalRequest) -> None:
    """The case's history says what was asked of whom; each approver gets a signed link."""
    append_event(
        session,
        row.case_id,
        f"{row.kind}_requested",
        at=request.now,
        data={
            "approval_id": row.id,
            "step": row.step,
            "version": row.version,
            "subject": row.subject,
            "content_hash": row.content_hash,
            "approvers": [w.code for w, _ in approvers_of(session, row)],
        },
        key=f"approval:{row.id}:requested",
    )
    for who, person in approvers_of(session, row):
        _notify(
            session,
            row,
            who,
            person,
            template=request.template or f"{row.kind}_request",
            key=f"approval:{row.id}:request:{who.code}",
            now=request.now,
            urgent=request.urgent,
            extra=request.context,
        )


@step(
    "request-approval",
    title="审批请求 / request an approval",
    key=lambda args: f"{args['request'].step}-v{args['request'].version}",
)
def request_approval(request: ApprovalRequest) -> int:
    """Record what is to be approved and send each approver a signed link (one transaction); the
    approval's id. The run waiting for it is this flow run unless the request names one."""
    if not request.flow_run_id:
        request = request.model_copy(update={"flow_run_id": current_run_id()})
    with session_scope() as session:
        row = open_approval(session, request)
        assert row.id is not None
        return row.id


# ---------------------------------------------------------------------------------------------
# Waiting (flow body)


class ApprovalState(BaseModel):
    kind: str
    decision: Decision | None = None
    form_name: str | None = None


@step("approval-status", key="{approval_id}", fresh=lambda state: state.decision is not None)
def approval_status(approval_id: int) -> ApprovalState:
    """Read whether the approval is decided (read again on every wake-up until it is; then recorded)."""
    with session_scope() as session:
        row = session.get(Approval, approval_id)
        if row is None:
            raise LookupError(f"approval {approval_id} does not exist")
        return ApprovalState(kind=row.kind, decision=decision_of(row), form_name=row.form_name)


@step("settle-approval", title="记录审批结果 / settle the approval", key="{approval_id}")
def settle_approval(approval_id: int, reply: dict[str, Any]) -> Decision | None:
    """After a wake-up: the recorded decision, or record the one submitted in the Prefect UI form."""
    from prefect import get_run_logger

    with session_scope() as session:
        row = session.get(Approval, approval_id)
        found = decision_of(row) if row is not None else None
    if found is not None:
        return found
    code = ZH_TO_DECISION.get(str(reply.get("decision", "")), str(reply.get("decision", "")))
    result = decide(
        approval_id,
        code,
        by=str(reply.get("approver", "")),
        comment=str(reply.get("comment", "")),
        payload=reply.get("data") or {k: v for k, v in reply.items() if k not in UI_FIELDS} or None,
        channel=Channel.PREFECT_UI,
        now=wallclock.now(),  # when the run received the answer: the decision's time (a link's expiry does not apply)
        wake=False,
    )
    if not result.recorded:
        get_run_logger().warning("审批未记录 / decision not recorded: %s", result.message)
        return None
    return result.decision


def await_approval(approval_id: int, step: str, version: int) -> Decision:
    """Wait, suspended and holding nothing, until the approval is decided; returns the decision.

    Called in a flow body. The run shows a typed form in the Prefect UI; the link page decides
    through the same `decide`. A refused UI input (not an approver, …) suspends again under the
    next attempt's key.
    """
    attempt = 1
    while True:
        state = approval_status(approval_id)
        if state.decision is not None:
            return state.decision
        scripted = responder()
        if scripted is not None:  # the fast test layer: its script answers through decide(), read it again
            scripted.approval(approval_id)
            as_if_woken()
            continue
        # the Prefect-UI forms build on Prefect's RunInput: imported here, in the flow run, so that
        # the approval web, which imports this module for `decide`, never imports Prefect (issue 26)
        from tasks.ui_forms import ui_form

        reply = suspend_announced(  # the run's state and artifact say what it waits for, from whom
            suspend_key(approval_key(step, version), attempt),
            ui_form(state.kind, state.form_name),
            approval_id=approval_id,
        )
        decision = settle_approval(approval_id, reply.model_dump(mode="json"))
        if decision is not None:
            return decision
        attempt += 1


def await_approval_until(
    approval_id: int, step: str, version: int, *, case_id: int, when: datetime, key: str
) -> Decision | None:
    """Wait for the approval or for `when`, whichever comes first: the decision, or None when the
    time came with nothing decided (the complaint's resolution: the customer's answer, or after 3
    working days the manager's call). Called in a flow body.

    The run suspends once under both keys (`either_key`): the decision's wake-up and the timer's
    each find their own key in it. It waits for no Prefect-UI input (a timer's resume brings none):
    the answer comes through the link, `aftercare answer`, or `decide`; the run reads it on waking."""
    timer_id = set_timer(case_id, when, key)
    attempt = 1
    while True:
        state = approval_status(approval_id)
        if state.decision is not None:
            return state.decision
        if timer_fired(timer_id):
            return None
        scripted = responder()
        if scripted is not None:  # the fast test layer: an answer if one is scripted, else the time passes
            scripted.either(approval_id, timer_id)
            as_if_woken()
            continue
        suspend_announced(
            either_key(
                suspend_key(approval_key(step, version), attempt), suspend_key(timer_key(key), attempt)
            ),
            approval_id=approval_id,
        )
        attempt += 1


def await_first_of(waits: list[tuple[int, str, int]]) -> tuple[int, Decision]:
    """Wait for whichever of several approvals (id, step, version) is decided first; returns its id
    and decision. Earlier entries win when several are decided by the time the run reads them (the
    complaint: the customer's own answer to the reply letter over the manager's call not yet
    recorded). Called in a flow body; like `await_approval_until` it suspends once under all the
    keys (`either_key`) and reads the answers on waking (no Prefect-UI input)."""
    attempt = 1
    while True:
        for approval_id, _, _ in waits:
            state = approval_status(approval_id)
            if state.decision is not None:
                return approval_id, state.decision
        scripted = responder()
        if scripted is not None:  # the fast test layer: the answer its script gives first
            scripted.first_of([approval_id for approval_id, _, _ in waits])
            as_if_woken()
            continue
        suspend_announced(
            either_key(*(suspend_key(approval_key(step, version), attempt) for _, step, version in waits)),
            approval_id=waits[0][0],
        )
        attempt += 1


@step("withdraw-approval", title="撤回待办 / withdraw an approval", key="{approval_id}")
def withdraw_approval(approval_id: int) -> bool:
    """A pending approval no longer needed (the customer answered before the manager's call was
    recorded): its links say so and record nothing. False when it was decided already."""
    with session_scope() as session:
        row = session.get(Approval, approval_id)
        if row is None or row.decision is not None or row.status != ApprovalStatus.PENDING:
            return False
        row.status = ApprovalStatus.SUPERSEDED
        row.superseded_by = None
        session.add(row)
        return True


# ---------------------------------------------------------------------------------------------
# Deciding (the link page and the Prefect-UI form)


def _local(at: datetime | None) -> str:
    return _local_time(at)


def _already_message(row: Approval) -> str:
    verb = DECISION_ZH.get(str(row.decision), str(row.decision))
    via = (
        f"（{entered_on_behalf(row.decided_by or '', row.channel)}）"
        if row.channel in ENTERED_ON_BEHALF
        else ""
    )
    who = row.decided_by
    # a signature names who signed (the name typed on the page) on behalf of the contact asked to sign
    signer = str((row.payload or {}).get("signer_name") or (row.payload or {}).get("signer") or "").strip()
    if row.kind == ApprovalKind.SIGNATURE and signer and signer != who:
        who = f"{signer}（代表 {who}）"
    return f"已由 {who} 于 {_local(row.decided_at)} {verb}{via}"


def entered_on_behalf(name: str, channel: str | None = Channel.PREFECT_UI) -> str:
    """How the record names a decision typed into the Prefect UI or on the command line: someone
    entered it for `name` (neither proves who typed it; `name` is told so — see `decide`)."""
    return f"{ENTERED_ON_BEHALF.get(str(channel), '')}代 {name} 录入"


def _resolve_decider(
    session: Session, row: Approval, by: Approver | str
) -> tuple[Approver, Staff | Contact] | None:
    """The entitled person behind `by` (an Approver from a link, or a name typed in the UI form)."""
    people = approvers_of(session, row)
    if isinstance(by, Approver):
        match = [(w, p) for w, p in people if w == by]
    else:
        match = [(w, p) for w, p in people if p.name == by.strip()]
    if not match:
        return None
    who, person = match[0]
    if isinstance(person, Staff) and (
        not person.active
        or (
            row.approver_role
            and not person.has_role(row.approver_role)
            and not _assigned(session, row.case_id, row.approver_role, person)
        )
    ):
        return None
    return who, person


def _assigned(session: Session, case_id: int, role: str, person: Staff) -> bool:
    """Whether the case made this person act in `role` without them holding it: a complaint taken up
    the customer's manager ladder is owned by the manager there (tasks.clocks.move_up_ladder records
    them under `acting`). Only that record counts: a person merely left in the team after losing the
    role is refused as before."""
    case = session.get(Case, case_id)
    return case is not None and ((case.data or {}).get("acting") or {}).get(str(role)) == person.id


WITHDRAWN_MESSAGE = "此事项已不再需要处理（已另行完成），未记录任何操作。"


def not_entitled_message(session: Session, row: Approval) -> str:
    """Why this person may not decide, in Chinese: a complaint's form handed up the manager ladder
    names the manager who has it now (tasks.clocks.move_up_ladder); else "not an approver"."""
    case = session.get(Case, row.case_id)
    acting = ((case.data or {}).get("acting") or {}).get(str(row.approver_role)) if case else None
    holder = session.get(Staff, acting) if acting else None
    if holder is not None and holder.id in row.approver_staff_ids:
        return f"此事项已随投诉升级转交 {holder.name} 处理，您无需再处理；未记录任何操作。"
    return "您不是此事项指定的审批人，无权处理。"


def refusal(
    session: Session, row: Approval, *, now: datetime, content_hash: str | None = None, link: bool = True
) -> DecisionResult | None:
    """Why nobody can decide this approval now (replaced, decided, content changed, expired), or None.

    `expires_at` is the validity of the approval's *links* (a person asks for a new one and the
    window moves on; the run waits regardless). It is judged at `now`, the decision's time passed
    in by the caller, and only for a decision made through a link (`link=True`): a decision in the
    Prefect UI (staff signed in to Prefect, no link involved) is not refused for an expired link, nor
    one through a link of its own the caller verified (the report's sign link, `decide(own_link=)`)."""
    newest = session.exec(
        select(func.max(Approval.version)).where(Approval.case_id == row.case_id, Approval.step == row.step)
    ).one()
    if row.status == ApprovalStatus.SUPERSEDED and not row.superseded_by and (newest or 0) <= row.version:
        return DecisionResult("superseded", WITHDRAWN_MESSAGE, row)  # withdraw_approval
    if row.status == ApprovalStatus.SUPERSEDED or (newest or 0) > row.version:
        newer = row.superseded_by or newest
        return DecisionResult(
            "superseded", f"此方案已被 v{newer} 取代，请打开最新版本的链接。", row, newer_version=newer
        )
    if row.decision is not None:
        return DecisionResult("already_decided", _already_message(row), row, decision_of(row))
    if content_hash and not row.content_hash.startswith(content_hash):
        return DecisionResult("content_changed", "此事项的内容已更改，此链接不再有效，请使用新链接。", row)
    if link and now >= row.expires_at:
        return DecisionResult("expired", f"此链接已于 {_local(row.expires_at)} 过期，未记录任何操作。", row)
    return None


# Its own unit of work (models.db.retrying, within the caller's deadline): a page that wrote
# something first (a report's signature) waits here instead of running again from the top.
@retrying
def decide(
    approval_id: int,
    decision: str,
    *,
    by: Approver | str,
    comment: str = "",
    payload: dict[str, Any] | None = None,
    channel: str,
    now: datetime,
    content_hash: str | None = None,
    wake: bool = True,
    own_link: bool = False,
) -> DecisionResult:
    """Record a decision (once, by an entitled person, on the current version) and wake the run.

    Refusals record nothing and say why, in Chinese. `content_hash` (a prefix is enough), when
    given, must match what is on record: a link made for other content is refused. `own_link`: the
    decision comes through a link of the caller's own that the caller verified (the report's sign
    link, tasks.links.REPORT_LINK_LIFETIME): the approval's link window (`expires_at`) does not
    apply — the run waits regardless, and an answer on a still-valid sign link is the customer's.
    """
    with session_scope() as session:
        row = session.get(Approval, approval_id)
        if row is None:
            return DecisionResult("not_found", "找不到此审批事项，链接可能有误。")
        checked = _checked_decision(
            session,
            row,
            decision,
            by=by,
            comment=comment,
            payload=payload,
            channel=channel,
            now=now,
            content_hash=content_hash,
            own_link=own_link,
        )
        if isinstance(checked, DecisionResult):
            return checked  # refused: nothing recorded
        who, person, data = checked
        # conditional write: of two simultaneous clicks exactly one is recorded
        written = cast(
            "sa.CursorResult[Any]",
            session.execute(
                sa.update(Approval)
                .where(col(Approval.id) == approval_id, col(Approval.decision).is_(None))
                .values(
                    decision=str(decision),
                    decided_at=now,
                    decided_by=person.name[:100],
                    comment=comment.strip(),
                    decided_by_staff_id=who.id if who.kind == "staff" else None,
                    decided_by_contact_id=who.id if who.kind == "contact" else None,
                    payload=data,
                    channel=str(channel),
                    status=ApprovalStatus.DECIDED,
                    resumed_at=None if wake else now,
                )
            ),
        ).rowcount
        session.expire(row)
        session.refresh(row)
        if not written:
            return DecisionResult("already_decided", _already_message(row), row, decision_of(row))
        _recorded(session, row, who, person, decision, channel, now)
    result = DecisionResult(
        "recorded", f"已记录：{DECISION_ZH[DecisionKind(decision)]}。流程将继续。", row, decision_of(row)
    )
    if wake:
        result.resumed = wake_approval(row, now) is Wake.RESUMED
    return result


def _checked_decision(
    session: Session,
    row: Approval,
    decision: str,
    *,
    by: Approver | str,
    comment: str,
    payload: dict[str, Any] | None,
    channel: str,
    now: datetime,
    content_hash: str | None,
    own_link: bool = False,
) -> DecisionResult | tuple[Approver, Staff | Contact, dict[str, Any]]:
    """A decision that may be recorded: (who decides, that person, the checked answer); else the
    refusal, in Chinese, with nothing recorded. `own_link`: see `decide`."""
    by_link = channel not in ENTERED_ON_BEHALF and not own_link
    refused = refusal(session, row, now=now, content_hash=content_hash, link=by_link)
    if refused is not None:
        return refused
    allowed = ALLOWED_DECISIONS[row.kind]
    if decision not in allowed:
        choices = "、".join(DECISION_ZH[d] for d in allowed)
        return DecisionResult("invalid", f"「{decision}」不是此事项的可选操作（可选：{choices}）。", row)
    decider = _resolve_decider(session, row, by)
    if decider is None:
        return DecisionResult("not_entitled", not_entitled_message(session, row), row)
    who, person = decider
    if (
        decision in (DecisionKind.REJECTED, DecisionKind.REVISE, DecisionKind.OBJECTED)
        and not comment.strip()
    ):
        return DecisionResult(
            "invalid", "驳回、要求修改或提出异议时请写明原因。", row, errors={"comment": "请写明原因"}
        )
    try:
        data = _checked_payload(session, row, decision, comment, payload, now)
    except AnswerError as exc:
        return DecisionResult("invalid", f"未记录，请更正：{exc}", row, errors=exc.errors)
    if row.kind == ApprovalKind.SIGNATURE:
        data["content_hash"] = row.content_hash  # the signature binds to exactly what was shown
    return who, person, data


def _recorded(
    session: Session,
    row: Approval,
    who: Approver,
    person: Staff | Contact,
    decision: str,
    channel: str,
    now: datetime,
) -> None:
    """The recorded decision in the case's history; entered on someone's behalf, they are told."""
    on_behalf = channel in ENTERED_ON_BEHALF
    entered = entered_on_behalf(person.name, channel)
    append_event(
        session,
        row.case_id,
        f"{row.kind}_decided",
        at=now,
        actor=entered if on_behalf else person.name,
        data={
            "approval_id": row.id,
            "step": row.step,
            "version": row.version,
            "decision": str(decision),
            "comment": row.comment,
            "channel": str(channel),
            **({"entered": entered} if on_behalf else {}),
        },
        key=f"approval:{row.id}:decided",
    )
    if on_behalf:
        # whoever reached the Prefect UI typed a name: the person named is told at once (same
        # transaction), so a decision nobody of theirs made does not go unnoticed
        _notify(
            session,
            row,
            who,
            person,
            template="approval_entered_for_you",
            key=f"approval:{row.id}:entered-for:{who.code}",
            now=now,
            urgent=True,
            extra={
                "decision": DECISION_ZH[DecisionKind(decision)],
                "comment": row.comment,
                "decided_at": now,
                "entered": entered,
            },
        )


def _checked_payload(
    session: Session,
    row: Approval,
    decision: str,
    comment: str,
    payload: dict[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """The answer as it will be recorded, validated before anything is written (DESIGN.md §2
    "Typed answers"): the comment's length, the signer's name, and a form's values through the form
    the row names (`models.forms`) — a refused field raises AnswerError with its Chinese reason."""
    errors: dict[str, str] = {}
    labels = {
        "comment": "备注" if row.kind == ApprovalKind.FORM else "意见",
        "signer": "签字人",
        "data": "表单内容",
    }
    if len(comment.strip()) > COMMENT_MAX:
        errors["comment"] = f"不能超过 {COMMENT_MAX} 个字"
    data = dict(payload or {}) if isinstance(payload, dict) or payload is None else None
    if data is None:
        raise AnswerError({"data": "格式不对：应为 字段名 → 内容"}, labels)
    signer = data.get("signer") or data.get("signer_name")
    if row.kind == ApprovalKind.SIGNATURE and isinstance(signer, str) and len(signer.strip()) > SIGNER_MAX:
        errors["signer"] = f"不能超过 {SIGNER_MAX} 个字"
    if row.kind == ApprovalKind.FORM and row.form_name and decision == DecisionKind.SUBMITTED:
        model = FORM_MODELS.get(row.form_name)
        if model is None:
            raise AnswerError({"data": f"此表单（{row.form_name}）已不再使用，请联系客户服务中心"}, labels)
        case = session.get(Case, row.case_id)
        try:
            data = validate_answer(
                model,
                data,
                now=now,
                not_before=case.reported_at if case else None,
                case_data=case.data if case else None,
            ).model_dump(mode="json")
        except AnswerError as exc:
            errors.update(exc.errors)
            labels.update(exc.labels)
    if errors:
        raise AnswerError(errors, labels)
    return data


def wake_approval(row: Approval, now: datetime) -> Wake:
    """Resume the run waiting on a decided approval; records when it was woken."""
    if not row.flow_run_id:
        outcome = Wake.GONE
    else:
        outcome = wake_run(row.flow_run_id, approval_key(row.step, row.version), run_input_for(row))
    if outcome is not Wake.NOT_YET:
        # its own unit of work: the run is already woken, so a busy database must not re-run the click
        transaction(
            lambda session: session.execute(
                sa.update(Approval).where(col(Approval.id) == row.id).values(resumed_at=now)
            )
        )
    return outcome


def renew_link(approval_id: int, who: Approver, *, now: datetime) -> DecisionResult:
    """Send the same approver a fresh link to a still-open approval whose link expired — at most one
    per approval in `RENEW_EVERY`; a second request is told when the last one went out."""
    with session_scope() as session:
        # First statement of the transaction, so it takes the write lock before reading anything:
        # of two web processes asking at once, exactly one claims the send (SQLite and PostgreSQL).
        claimed = cast(
            "sa.CursorResult[Any]",
            session.execute(
                sa.update(Approval)
                .where(
                    col(Approval.id) == approval_id,
                    sa.or_(
                        col(Approval.link_renewed_at).is_(None),
                        col(Approval.link_renewed_at) <= now - RENEW_EVERY,
                    ),
                )
                .values(link_renewed_at=now)
                .execution_options(synchronize_session=False)
            ),
        ).rowcount
        row = session.get(Approval, approval_id)
        if row is None:
            return DecisionResult("not_found", "找不到此审批事项。")
        match = [(w, p) for w, p in approvers_of(session, row) if w == who]
        refused: DecisionResult | None = None
        if row.status == ApprovalStatus.SUPERSEDED and not row.superseded_by:
            refused = DecisionResult("superseded", WITHDRAWN_MESSAGE, row)
        elif row.status == ApprovalStatus.SUPERSEDED:
            refused = DecisionResult(
                "superseded",
                f"此方案已被 v{row.superseded_by} 取代，无需新链接。",
                row,
                newer_version=row.superseded_by,
            )
        elif row.decision is not None:
            refused = DecisionResult("already_decided", _already_message(row), row, decision_of(row))
        elif not match:
            refused = DecisionResult("not_entitled", not_entitled_message(session, row), row)
        if refused is not None:  # nothing is sent: the claim is given back
            session.expunge(row)
            session.rollback()
            return refused
        if not claimed:
            last = row.link_renewed_at or now
            return DecisionResult(
                "too_soon",
                f"新链接已于 {_local(last)} 发送给 {match[0][1].name}，请查看您的通知（短信、微信或邮件）。"
                f"为免重复打扰，10 分钟内不再重复发送；如仍未收到，请于 {_local(last + RENEW_EVERY)} 后再试，"
                "或联系客户服务中心。",
                row,
            )
        if now >= row.expires_at:
            # the same validity window again, from now
            row.expires_at = now + max(row.expires_at - row.created_at, _MIN_WINDOW)
            session.add(row)
            session.flush()
        stamp = int(now.timestamp())
        append_event(
            session,
            row.case_id,
            "approval_link_renewed",
            at=now,
            actor=match[0][1].name,
            data={"approval_id": row.id, "expires_at": row.expires_at.isoformat()},
            key=f"approval:{row.id}:renew:{who.code}:{stamp}",
        )
        _notify(
            session,
            row,
            who,
            match[0][1],
            template="approval_link_renewed",
            key=f"approval:{row.id}:renew:{who.code}:{stamp}",
            now=now,
            urgent=True,
        )
    return DecisionResult(
        "recorded", f"新链接已发送给 {match[0][1].name}，有效期至 {_local(row.expires_at)}。", row
    )


# ---------------------------------------------------------------------------------------------
# Keeper step


def reconcile(now: datetime, limit: int = 500) -> int:
    """Wake every run whose approval is decided but which was not woken; returns how many woke.

    Covers a link clicked before the run had finished suspending, a wake lost to a crash or an
    unreachable Prefect server.
    """
    with session_scope() as session:
        rows = session.exec(
            select(Approval)
            .where(
                col(Approval.decision).is_not(None),
                col(Approval.resumed_at).is_(None),
                col(Approval.flow_run_id).is_not(None),
            )
            .order_by(col(Approval.decided_at))
            .limit(limit)
        ).all()
    return sum(wake_approval(row, now) is Wake.RESUMED for row in rows)
