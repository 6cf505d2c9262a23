"""The approval pages (审批页面): where a signed link lands, on a phone.

GET shows what is to be decided — the plan with its version, exactly the content whose hash is
on record — and records nothing (mail and chat apps open links to preview them). POST takes the
decision with a comment and goes through `tasks.approvals.decide`, the same function the Prefect
UI route uses. Every bad link answers with a clear page and records nothing.

`clock` is the pages' one source of "now": a FastAPI dependency, so a test passes a fixed time
with `app.dependency_overrides[clock]` instead of patching the clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from models import Case, wallclock
from models.approvals import KIND_ZH, Approval, ApprovalKind, Channel
from models.db import session_scope
from tasks.approvals import (
    LINK_PURPOSE,
    Approver,
    DecisionResult,
    approvers_of,
    decide,
    not_entitled_message,
    refusal,
    renew_link,
)
from tasks.devices import device_url
from tasks.links import BadLink, ExpiredLink, check_csrf, csrf_token, verify_link
from tasks.render import _local_time
from web.pages import templates

router = APIRouter()

DEVICE_FORMS = {"diagnosis", "onsite", "repair", "accident-maintenance"}  # forms that link the device page

STATUS = {
    "recorded": 200,
    "already_decided": 409,
    "superseded": 409,
    "content_changed": 409,
    "expired": 410,
    "not_entitled": 403,
    "invalid": 422,
    "not_found": 404,
    "too_soon": 429,
}
TITLES = {
    "recorded": "已提交",
    "already_decided": "已处理",
    "superseded": "已有新版本",
    "content_changed": "内容已更改",
    "expired": "链接已过期",
    "not_entitled": "无权处理",
    "invalid": "无法提交",
    "not_found": "找不到此事项",
    "forged": "链接无效",
    "too_soon": "新链接已发送",
}
TONE = {
    "recorded": "ok",
    "already_decided": "warn",
    "superseded": "warn",
    "expired": "warn",
    "too_soon": "warn",
}


def clock() -> datetime:
    """Now, for the pages (override in tests)."""
    return wallclock.now()


def message_page(
    request: Request,
    outcome: str,
    message: str,
    *,
    approval: Approval | None = None,
    renew_action: str | None = None,
    token: str = "",
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "approvals/message.html.j2",
        {
            "title": TITLES.get(outcome, "提示"),
            "message": message,
            "tone": TONE.get(outcome, "bad"),
            "approval": approval,
            "renew_action": renew_action,
            "csrf": csrf_token(token) if token else "",
        },
        status_code=403 if outcome == "forged" else STATUS.get(outcome, 400),
    )


def _open(token: str, now: datetime) -> tuple[dict[str, Any] | None, str | None]:
    """Verify the link: (data, None) when good; else (data or None, the reason)."""
    try:
        return verify_link(token, LINK_PURPOSE, now=now), None
    except ExpiredLink as exc:
        return exc.data, "expired"
    except BadLink:
        return None, "forged"


def _result_page(request: Request, result: DecisionResult, token: str) -> HTMLResponse:
    renew = f"/a/{token}/renew" if result.outcome == "expired" else None
    return message_page(
        request, result.outcome, result.message, approval=result.approval, renew_action=renew, token=token
    )


def _view(
    request: Request,
    token: str,
    data: dict[str, Any],
    *,
    error: str = "",
    comment: str = "",
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    who = Approver.parse(str(data["p"]))
    with session_scope() as session:
        row = session.get(Approval, int(data["a"]))
        if row is None:
            return message_page(request, "not_found", "找不到此审批事项，链接可能有误。")
        # the same checks decide() makes, shown before anyone types a comment
        refused = refusal(session, row, now=data["now"], content_hash=str(data["h"]))
        if refused is not None:
            return _result_page(request, refused, token)
        people = dict(approvers_of(session, row))
        if who not in people:
            return message_page(request, "not_entitled", not_entitled_message(session, row), approval=row)
        case = session.get(Case, row.case_id)
        context = {
            "approval": row,
            "kind_label": KIND_ZH.get(row.kind, "审批"),
            "approver_name": people[who].name,
            "case_number": case.number if case else "",
            "case_title": case.title if case else "",
            "action": f"/a/{token}",
            "csrf": csrf_token(token),
            "error": error,
            "comment": comment,
            "fields": (row.form or {}).get("fields", []),
            # the form's own prefill (e.g. the plan to revise) until the person posted their values
            "values": values if values is not None else dict((row.form or {}).get("values") or {}),
            "errors": errors or {},
            # the engineer sees the device's file and history from the forms of the work on it
            "device_link": device_url(case.device_id, now=data["now"])
            if case is not None and case.device_id is not None and row.form_name in DEVICE_FORMS
            else None,
        }
    return templates.TemplateResponse(request, "approvals/page.html.j2", context, status_code=status_code)


@router.get("/a/{token}", response_class=HTMLResponse)
def show(request: Request, token: str, now: datetime = Depends(clock)) -> HTMLResponse:
    """The approval page: what is to be decided, and the buttons."""
    data, problem = _open(token, now)
    if problem == "forged" or data is None:
        return message_page(
            request, "forged", "此链接无效或已被篡改，未记录任何操作。请使用通知中收到的原始链接。"
        )
    if problem == "expired":
        return expired_page(request, token, data)
    return _view(request, token, {**data, "now": now})


def expired_page(request: Request, token: str, data: dict[str, Any]) -> HTMLResponse:
    """An expired link (an approval's, an inspection checklist's): nothing recorded; the page offers
    a fresh link to the same approver."""
    return message_page(
        request,
        "expired",
        f"此链接已于 {_local_time(data['expires_at'])} 过期，未记录任何操作。",
        renew_action=f"/a/{token}/renew",
        token=token,
    )


@router.post("/a/{token}", response_class=HTMLResponse)
async def submit(request: Request, token: str, now: datetime = Depends(clock)) -> HTMLResponse:
    """Record the decision (through `decide`) and show the outcome."""
    form = await request.form()
    fields = {k: str(v) for k, v in form.items()}
    data, problem = _open(token, now)
    if problem == "forged" or data is None or not check_csrf(token, fields.get("csrf")):
        return message_page(
            request, "forged", "此链接或表单无效，未记录任何操作。请从通知中的链接重新打开页面。"
        )
    if problem == "expired":
        return expired_page(request, token, data)
    decision = fields.get("decision", "")
    comment = fields.get("comment", "")
    payload: dict[str, Any] | None = None
    values: dict[str, str] = {}
    with session_scope() as session:
        row = session.get(Approval, int(data["a"]))
        kind = row.kind if row else ApprovalKind.APPROVAL
        form_fields = (row.form or {}).get("fields", []) if row else []
    if kind == ApprovalKind.SIGNATURE:
        signer = fields.get("signer", "").strip()
        if decision == "signed" and not signer:
            return _view(
                request,
                token,
                {**data, "now": now},
                error="请输入签字人姓名。",
                comment=comment,
                errors={"signer": "必填"},
                status_code=422,
            )
        payload = {"signer": signer, "signed_at": now.isoformat()}
    elif kind == ApprovalKind.FORM:
        # as typed: decide() validates them with the step's form and refuses what does not fit
        values = {f["name"]: fields.get(f"f_{f['name']}", "") for f in form_fields}
        payload = dict(values)
    # decide() writes and calls Prefect: blocking work, kept off the event loop
    result = await run_in_threadpool(
        decide,
        int(data["a"]),
        decision,
        by=Approver.parse(str(data["p"])),
        comment=comment,
        payload=payload,
        channel=Channel.LINK,
        now=now,
        content_hash=str(data["h"]),
    )
    if result.outcome == "invalid":  # nothing recorded: the page again, with what was typed
        return _view(
            request,
            token,
            {**data, "now": now},
            error=result.message,
            comment=comment,
            values=values,
            errors=result.errors,
            status_code=422,
        )
    return _result_page(request, result, token)


@router.post("/a/{token}/renew", response_class=HTMLResponse)
async def renew(request: Request, token: str, now: datetime = Depends(clock)) -> HTMLResponse:
    """Send the same approver a fresh link (the old one expired)."""
    form = await request.form()
    data, problem = _open(token, now)
    if problem == "forged" or data is None or not check_csrf(token, str(form.get("csrf") or "")):
        return message_page(request, "forged", "此链接或表单无效，未发送新链接。")
    result = await run_in_threadpool(renew_link, int(data["a"]), Approver.parse(str(data["p"])), now=now)
    return message_page(
        request,
        result.outcome if not result.recorded else "recorded",
        result.message,
        approval=result.approval,
    )
