"""The customer's complaint page (投诉与建议, PROCEDURES.md §7): a channel of its own, apart from the
repair hotline, with no login.

Each customer has one signed link (`tasks.links.complaint_url`), printed under every notice and on
every report it receives. GET shows the form, the provider's managers published to the customer
(lowest to highest) and the customer's open complaints; a complaint whose first answer is overdue
(2 h) can be sent straight to those managers. POST takes a complaint: the form is bound to the page
(CSRF field), a flood from one link is refused (`tasks.complaints.PAGE_LIMIT_*`, counted in the
database so every web process sees the same count), and so is a flood of refused posts, per link and
per address (`tasks.complaints.REFUSED_LIMIT_*`), and every field is validated by
`ComplaintRequest` — a refused field is named by its Chinese label on a 422 page with what was
typed, never a traceback. A complaint taken gets its number (TS-…) and acknowledgement at once; its
flow is started through `starter` (a dependency, as `clock` is: tests pass their own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from models import Incident, wallclock
from models.db import session_scope
from models.forms import explain
from tasks.cases import IntakeError
from tasks.complaints import (
    ABOUT_CHOICES,
    ComplaintRequest,
    TooMany,
    check_refused_posts,
    note_refused_post,
    page_view,
    start_complaint_run,
    straight_to_managers,
    take_from_page,
)
from tasks.links import BadLink, ExpiredLink, check_csrf, complaint_customer, csrf_token
from web.pages import templates

log = logging.getLogger("aftercare.web.complaints")
router = APIRouter()

FORM_FIELDS = ("complainant", "about", "case_ref", "engineer", "description", "wish")
LABELS = {name: ComplaintRequest.model_fields[name].title or name for name in FORM_FIELDS}

Starter = Callable[[int, ComplaintRequest], str]


def clock() -> datetime:
    """Now, for the page (override in tests)."""
    return wallclock.now()


def starter() -> Starter:
    """How a complaint taken here starts its flow (a Prefect run; override in tests)."""
    return start_complaint_run


def _message(
    request: Request, title: str, message: str, *, tone: str = "bad", status: int = 400
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "complaints/message.html.j2",
        {"title": title, "message": message, "tone": tone},
        status_code=status,
    )


def _customer(token: str, now: datetime) -> tuple[str | None, str]:
    try:
        return complaint_customer(token, now=now), ""
    except ExpiredLink:
        return None, "此投诉链接已过期。请使用最近一次通知或报告上的投诉链接，或直接致电客户服务中心。"
    except BadLink:
        return None, "此链接无效或已被篡改。请使用通知或报告上的投诉链接。"


def _page(
    request: Request,
    token: str,
    code: str,
    now: datetime,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    error: str = "",
    notice: str = "",
    status: int = 200,
) -> HTMLResponse:
    with session_scope() as session:
        view = page_view(session, code, now=now)
        context: dict[str, Any] = {
            "customer_name": view["customer"].name,
            "managers": view["managers"],
            "complaints": view["complaints"],
            "requests": view["requests"],
        }
    context.update(
        {
            "action": f"/complaint/{token}",
            "managers_action": f"/complaint/{token}/managers",
            "csrf": csrf_token(token),
            "about_choices": ABOUT_CHOICES,
            "labels": LABELS,
            "values": values or {},
            "errors": errors or {},
            "error": error,
            "notice": notice,
        }
    )
    return templates.TemplateResponse(request, "complaints/page.html.j2", context, status_code=status)


@router.get("/complaint/{token}", response_class=HTMLResponse)
def show(request: Request, token: str, now: datetime = Depends(clock)) -> HTMLResponse:
    """The complaint form, the published managers and the customer's open complaints."""
    code, problem = _customer(token, now)
    if code is None:
        return _message(request, "链接无效", problem, status=403)
    return _page(request, token, code, now)


@router.post("/complaint/{token}", response_class=HTMLResponse)
async def submit(
    request: Request, token: str, now: datetime = Depends(clock), start: Starter = Depends(starter)
) -> HTMLResponse:
    """Take the complaint: number, acknowledgement, clocks — then its flow is started."""
    form = await request.form()
    fields = {k: str(v) for k, v in form.items()}
    code, problem = _customer(token, now)
    address = request.client.host if request.client else ""

    def flooded() -> str:
        with session_scope() as session:
            try:
                check_refused_posts(session, code or "", address, now=now)
            except TooMany as exc:
                return str(exc)
            return ""

    def refused() -> None:
        with session_scope() as session:
            note_refused_post(session, code or "", address, now=now)

    too_many = await run_in_threadpool(flooded)
    if too_many:
        return _message(request, "提交过于频繁", too_many, tone="warn", status=429)
    if code is None or not check_csrf(token, fields.get("csrf")):
        await run_in_threadpool(refused)
        return _message(
            request,
            "链接无效",
            problem or "此表单无效，未记录任何内容。请从投诉链接重新打开页面。",
            status=403,
        )
    values = {name: fields.get(name, "") for name in FORM_FIELDS}

    def take() -> tuple[int, str, ComplaintRequest]:
        with session_scope() as session:
            case, taken = take_from_page(session, code, values, now=now)
            return int(case.id), case.number, taken  # type: ignore[arg-type]

    try:
        case_id, number, taken = await run_in_threadpool(take)
    except TooMany as exc:
        return _message(request, "提交过于频繁", str(exc), tone="warn", status=429)
    except ValidationError as exc:
        await run_in_threadpool(refused)
        explained = explain(exc, ComplaintRequest)
        errors = {k: v for k, v in explained.errors.items() if k in FORM_FIELDS}
        message = "请更正以下内容后再提交：" + "；".join(
            f"「{LABELS.get(k, k)}」{v}" for k, v in errors.items()
        )
        return _page(request, token, code, now, values=values, errors=errors, error=message, status=422)
    except IntakeError as exc:
        await run_in_threadpool(refused)
        return _page(request, token, code, now, values=values, error=str(exc), status=422)
    try:
        await run_in_threadpool(start, case_id, taken)
    except (
        Exception
    ) as exc:  # the complaint is recorded; the keeper starts its flow (tasks.complaints.start_unstarted)
        log.warning("complaint %s taken, its flow not started: %s: %s", number, type(exc).__name__, exc)
        with session_scope() as session:
            session.add(
                Incident(
                    case_id=case_id,
                    kind="run_not_started",
                    message=f"投诉 {number} 已受理，但投诉流程未能启动：{type(exc).__name__}",
                    opened_at=now,
                )
            )
    with session_scope() as session:
        view = page_view(session, code, now=now)
        row = next((c for c in view["complaints"] if c["id"] == case_id), None)
    return templates.TemplateResponse(
        request,
        "complaints/taken.html.j2",
        {"number": number, "complaint": row, "back": f"/complaint/{token}"},
    )


@router.post("/complaint/{token}/managers", response_class=HTMLResponse)
async def to_managers(request: Request, token: str, now: datetime = Depends(clock)) -> HTMLResponse:
    """An overdue complaint (no first answer in 2 h) goes straight to the managers on the ladder."""
    form = await request.form()
    code, problem = _customer(token, now)
    if code is None or not check_csrf(token, str(form.get("csrf") or "")):
        return _message(request, "链接无效", problem or "此表单无效，未记录任何内容。", status=403)
    try:
        case_id = int(str(form.get("case") or ""))
    except ValueError:
        return _message(request, "无法提交", "请从投诉列表中选择要转交的投诉。", status=422)

    def send() -> str:
        with session_scope() as session:
            return straight_to_managers(session, code, case_id, now=now)

    try:
        said = await run_in_threadpool(send)
    except IntakeError as exc:
        return _page(request, token, code, now, error=str(exc), status=409)
    return _page(request, token, code, now, notice=said)
