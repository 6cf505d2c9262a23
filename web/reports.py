"""Report pages: view a report (HTML / PDF) and sign it (typed name, drawn signature or a statement).

Links are signed tokens (tasks.links) salted per purpose: a view link cannot sign. Signing binds
to the hash of the content the customer was shown (a hidden field); if the report changed in
between, the page refuses and shows the new content. Signing (or objecting) on this page also
decides the pending signature approval of that report version, so the waiting flow continues —
through the one writer of decisions, `tasks.approvals.decide`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Response
from fastapi.responses import HTMLResponse
from sqlmodel import Session, select

from models import Contact, wallclock
from models.approvals import Approval, ApprovalStatus
from models.db import session_scope, transaction
from models.reports import Report, Signature
from tasks.approvals import Approver, decide, signature_step
from tasks.complaints import LateAnswer, late_reply_answer, start_complaint_run, start_reopened
from tasks.links import REPORT_SIGN, REPORT_VIEW, BadLink, ExpiredLink, check_csrf, csrf_token, verify_link
from tasks.pdf import PdfError
from tasks.reports import ReportError, report_pdf, sign_report, signed_content, signer_label, valid_signature
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
            refused = _decide(
                report,
                "objected",
                contact_id=contact_id,
                by=signer_name.strip(),
                comment=comment.strip(),
                payload={},
                now=now,
            )
            if refused:  # nothing recorded (an over-long comment …): the form again, saying why
                return _sign_form(session, token, report_id, contact_id, error=refused, status=422)
            late = _late(report_id, satisfied=False, by=signer_name.strip(), comment=comment.strip(), now=now)
            if late is not None:
                if late.reopened:
                    start_reopened(late.case_id, late.reopened, now=now, start=start)
                return _message("已收到您的意见", late.message, 200)
            return _message("已提交异议", "您的意见已提交，我们将修改后重新发给您。", 200)
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
    _decide(report, "signed", contact_id=contact_id, by=sig.signer_name, comment="", payload=payload, now=now)
    late = _late(report_id, satisfied=True, by=sig.signer_name, comment="", now=now)
    return _message("签字成功", late.message if late else f"已签字：{sig.signer_name}。谢谢！", 200, "ok")


def _late(report_id: int, *, satisfied: bool, by: str, comment: str, now: datetime) -> LateAnswer | None:
    """A complaint reply letter answered after the manager's call decided it: kept in the history and
    told (tasks.complaints.late_reply_answer, one unit of work); None for any other answer."""
    return transaction(
        lambda session: late_reply_answer(
            session, report_id, satisfied=satisfied, by=by, comment=comment, now=now
        )
    )


def _decide(
    report: Report,
    decision: str,
    *,
    contact_id: int | None,
    by: str,
    comment: str,
    payload: dict[str, Any],
    now: datetime,
) -> str:
    """Decide the pending signature approval of this report version (if a flow waits on one);
    returns why an answer was refused as invalid ("" otherwise)."""
    with session_scope() as session:
        pending = session.exec(
            select(Approval).where(
                Approval.case_id == report.case_id,
                Approval.step == signature_step(report.kind),
                Approval.version == report.version,
                Approval.status == ApprovalStatus.PENDING,
            )
        ).first()
    if pending is not None:
        who = Approver("contact", int(contact_id)) if contact_id else by
        result = decide(
            pending.id,  # type: ignore[arg-type]
            decision,
            by=who,
            comment=comment,
            payload=payload,
            channel="link",
            now=now,
            own_link=True,  # the sign link (30 days) was verified: the approval's 7-day link window is not this page's
        )
        if result.outcome == "invalid":
            return result.message
    return ""


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
