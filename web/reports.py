"""Report pages: view a report (HTML / PDF) and sign it (typed name, drawn signature or a statement).

Links are signed tokens (tasks.links) salted per purpose: a view link cannot sign. Signing binds
to the hash of the content the customer was shown (a hidden field); if the report changed in
between, the page refuses and shows the new content. Signing (or objecting) on this page also
decides the pending signature approval of that report version, so the waiting flow continues —
through the one writer of decisions, `tasks.approvals.decide`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Response
from fastapi.responses import HTMLResponse
from sqlmodel import Session, col, select

from models import Contact, wallclock
from models.approvals import Approval
from models.db import session_scope, transaction
from models.reports import Report, Signature
from tasks.approvals import Approver, DecisionResult, decide, signature_step
from tasks.complaints import LateAnswer, late_reply_answer, start_complaint_run, start_reopened
from tasks.links import REPORT_SIGN, REPORT_VIEW, BadLink, ExpiredLink, check_csrf, csrf_token, verify_link
from tasks.pdf import PdfError
from tasks.reports import (
    ReportError,
    keep_unapplied_answer,
    report_pdf,
    sign_report,
    signed_content,
    signer_label,
    valid_signature,
)
from web.pages import templates

router = APIRouter()

STATUS_ZH = {"issued": "已出具", "superseded": "已被新版本取代", "approved": "已审批", "archived": "已归档"}


def page_now() -> datetime:
    """The moment a page acts at (tests override this dependency with a fixed time)."""
    return wallclock.now()


Now = Annotated[datetime, Depends(page_now)]


def _page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(f"reports/{name}.html.j2").render(**ctx), status_code=status)


def _message(title: str, message: str, status: int, css: str = "") -> HTMLResponse:
    return _page("message", status, page_title=title, message=message, css=css)


def _open(token: str, purpose: str, now: datetime) -> dict[str, Any] | HTMLResponse:
    try:
        return verify_link(token, purpose, now=now)
    except ExpiredLink:
        return _message(
            "链接已过期", "此链接已过期，请联系客户服务中心重新发送。/ This link has expired.", 410
        )
    except BadLink:
        return _message("链接无效", "链接无效或已被篡改。/ The link is invalid.", 403)


def _viewed_report(session: Session, token: str, now: datetime) -> Report | HTMLResponse:
    """The report a view link opens, or the page that says why it does not."""
    data = _open(token, REPORT_VIEW, now)
    if isinstance(data, HTMLResponse):
        return data
    report = session.get(Report, int(data["r"]))
    if report is None:
        return _message("报告不存在", "报告不存在。/ No such report.", 404)
    return report


@router.get("/reports/sign/{token}", response_class=HTMLResponse)
def sign_page(token: str, now: Now) -> HTMLResponse:
    data = _open(token, REPORT_SIGN, now)
    if isinstance(data, HTMLResponse):
        return data
    with session_scope() as session:
        return _sign_form(session, token, int(data["r"]), data.get("c"))


def _sign_form(
    session: Session,
    token: str,
    report_id: int,
    contact_id: int | None,
    *,
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    report = session.get(Report, report_id)
    if report is None:
        return _message("报告不存在", "报告不存在。/ No such report.", 404)
    contact = session.get(Contact, contact_id) if contact_id else None
    return _page(
        "sign",
        status,
        page_title=f"签字确认：{report.title}",
        report=report,
        csrf=csrf_token(token),
        contact_name=contact.name if contact else "",
        error=error,
        done=valid_signature(session, report_id),
    )


def complaint_starter() -> Callable[..., str]:
    """How a complaint reopened here starts its flow again (a Prefect run; tests pass their own)."""
    return start_complaint_run


@router.post("/reports/sign/{token}", response_class=HTMLResponse)
def sign_submit(
    token: str,
    now: Now,
    start: Annotated[Callable[..., str], Depends(complaint_starter)],
    csrf: Annotated[str, Form()] = "",
    content_hash: Annotated[str, Form()] = "",
    signer_name: Annotated[str, Form()] = "",
    method: Annotated[str, Form()] = "typed",
    image: Annotated[str, Form()] = "",
    statement: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    action: Annotated[str, Form()] = "sign",
) -> HTMLResponse:
    data = _open(token, REPORT_SIGN, now)
    if isinstance(data, HTMLResponse):
        return data
    if not check_csrf(token, csrf):
        return _message(
            "请求无效", "表单已失效，请重新打开链接。/ The form is stale; open the link again.", 403
        )
    report_id, contact_id = int(data["r"]), data.get("c")
    with session_scope() as session:
        report = session.get(Report, report_id)
        if report is None:
            return _message("报告不存在", "报告不存在。/ No such report.", 404)
        if action == "object":
            if not comment.strip():
                return _sign_form(
                    session, token, report_id, contact_id, error="提出异议时请写明意见", status=422
                )
            answer = Answer(
                report, contact_id, signer_name.strip(), comment.strip(), {}, now, satisfied=False
            )
            result = _decide(answer, "objected")
            if result is not None and result.outcome == "invalid":  # nothing recorded: the form, saying why
                return _sign_form(session, token, report_id, contact_id, error=result.message, status=422)
            return _after(
                answer, result, start, done=("已提交异议", "您的意见已提交，我们将修改后重新发给您。")
            )
        try:
            sig = sign_report(
                session,
                report_id,
                signed_hash=content_hash,
                signer_name=signer_name,
                method=method,
                image=image,
                statement=statement,
                contact_id=contact_id,
                now=now,
                channel="link",
            )
        except ReportError as exc:
            session.rollback()
            return _sign_form(session, token, report_id, contact_id, error=str(exc), status=422)
        payload = {
            "report_hash": sig.content_hash,
            "signer_name": sig.signer_name,
            "method": sig.method,
            "signature_id": sig.id,
            "statement": sig.statement,
            "channel": "link",
        }
    answer = Answer(report, contact_id, sig.signer_name, "", payload, now, satisfied=True)
    result = _decide(answer, "signed")
    return _after(answer, result, start, done=("签字成功", f"已签字：{sig.signer_name}。谢谢！"))


@dataclass(frozen=True)
class Answer:
    """What the customer answered on the sign page: signed (payload: the signature) or objected."""

    report: Report
    contact_id: int | None
    by: str
    comment: str
    payload: dict[str, Any]
    now: datetime
    satisfied: bool


def _after(
    answer: Answer, result: DecisionResult | None, start: Callable[..., str], *, done: tuple[str, str]
) -> HTMLResponse:
    """The page after an answer: taken by the waiting flow (`done`, the title and the words); a
    complaint reply letter answered after the manager's call (tasks.complaints.late_reply_answer);
    else, when the flow could not take it, kept and told (tasks.reports.keep_unapplied_answer) —
    never a confirmation of something nobody will read."""
    satisfied = answer.satisfied
    received = "已收到您的签字" if satisfied else "已收到您的意见"
    late = _late(answer, satisfied=satisfied)
    if late is not None:
        if late.reopened:
            start_reopened(late.case_id, late.reopened, now=answer.now, start=start)
        return _message(done[0] if satisfied else received, late.message, 200, "ok" if satisfied else "")
    if _taken(result, answer):
        return _message(*done, 200, "ok" if satisfied else "")
    if result is None and satisfied:  # no flow asked for this signature: the signed report is the record
        return _message(*done, 200, "ok")
    why = result.message if result is not None else "此报告当前没有等待您答复的处理步骤"
    kept = transaction(
        lambda session: keep_unapplied_answer(
            session,
            answer.report.id,  # type: ignore[arg-type]
            satisfied=satisfied,
            by=answer.by,
            comment=answer.comment,
            why=why,
            now=answer.now,
        )
    )
    return _message(received, kept, 200)


def _taken(result: DecisionResult | None, answer: Answer) -> bool:
    """The flow has this answer: recorded now, or the same answer recorded before (a second click)."""
    if result is None or result.recorded:
        return result is not None
    earlier = result.decision
    return (
        result.outcome == "already_decided"
        and earlier is not None
        and earlier.decision == ("signed" if answer.satisfied else "objected")
        and earlier.comment == answer.comment
    )


def _late(answer: Answer, *, satisfied: bool) -> LateAnswer | None:
    """A complaint reply letter answered after the manager's call decided it: kept in the history and
    told (tasks.complaints.late_reply_answer, one unit of work); None for any other answer."""
    return transaction(
        lambda session: late_reply_answer(
            session,
            answer.report.id,  # type: ignore[arg-type]
            satisfied=satisfied,
            by=answer.by,
            comment=answer.comment,
            now=answer.now,
        )
    )


def _decide(answer: Answer, decision: str) -> DecisionResult | None:
    """Decide the signature approval of this report version (the flow waiting on it continues);
    what `decide` said, or None when no approval of this version was ever asked for."""
    report = answer.report
    with session_scope() as session:
        row = session.exec(
            select(Approval)
            .where(
                Approval.case_id == report.case_id,
                Approval.step == signature_step(report.kind),
                Approval.version == report.version,
            )
            .order_by(col(Approval.id).desc())
        ).first()
    if row is None:
        return None
    # a sign link names the contact it went to; one without (a case that names no contact) went to
    # the customer's one contact asked to sign: the typed name signs for them (recorded in the payload)
    contacts = [int(answer.contact_id)] if answer.contact_id else row.approver_contact_ids
    return decide(
        row.id,  # type: ignore[arg-type]
        decision,
        by=Approver("contact", contacts[0]) if len(contacts) == 1 else answer.by,
        comment=answer.comment,
        payload=answer.payload,
        channel="link",
        now=answer.now,
        own_link=True,  # the sign link (30 days) was verified: the approval's 7-day link window is not this page's
    )


@router.get("/reports/{token}/pdf")
def report_pdf_page(token: str, now: Now) -> Response:
    with session_scope() as session:
        report = _viewed_report(session, token, now)
        if isinstance(report, HTMLResponse):
            return report
        content = signed_content(session, report)  # with the customer's signature, once signed
        name = f"report-{report.case_id}-{report.kind}-v{report.version}.pdf"
    try:
        pdf = report_pdf(report, content)  # printed in the PDF worker, outside the database session
    except PdfError as exc:
        return _message("PDF 生成失败", f"PDF 暂时无法生成，请稍后再试。/ {exc}", 503)
    return Response(
        pdf, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}"'}
    )


@router.get("/reports/{token}", response_class=HTMLResponse)
def report_page(token: str, now: Now) -> HTMLResponse:
    with session_scope() as session:
        report = _viewed_report(session, token, now)
        if isinstance(report, HTMLResponse):
            return report
        signature = valid_signature(session, report.id)  # type: ignore[arg-type]
        stale = (
            signature is None
            and session.exec(select(Signature).where(Signature.report_id == report.id)).first() is not None
        )
        return _page(
            "view",
            page_title=report.title,
            report=report,
            signature=signature,
            stale=stale,
            content=signed_content(session, report, signature),
            signer=signer_label(session, signature) if signature else "",
            status_zh=STATUS_ZH.get(report.status, report.status),
            pdf_url=f"/reports/{token}/pdf",
            sign_url="",
        )
