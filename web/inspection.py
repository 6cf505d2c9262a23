"""Inspection pages (巡检, PROCEDURES.md §4), on a phone:

- `/inspection/checklist/<token>` — the engineer's checklist (巡检检查表): the pre-checks (what
  changed since the last visit, backup confirmed, what the customer reported), then per device
  each item 正常/异常/不适用 with a note; each 异常 is either fixed on site with the customer's
  consent or becomes a repair with a severity. The link is the one every approval uses (same
  token, same `decide`); the page checks the form with `tasks.inspection.parse_checklist` first
  and, on bad input, shows what is wrong in Chinese and records nothing.
- `/summary/<token>` — the monthly service summary (阶段性服务总结) with the customer's rating,
  优/良/中/差 per item (PROCEDURES.md §8), stored by `tasks.summary.record_rating`.

The date agreement and re-confirmation are small forms served by the generic approvals page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from models.approvals import Approval, Channel
from models.db import session_scope
from models.inspection import RESULT_ZH, ItemResult, ServiceSummary
from tasks.approvals import Approver, approvers_of, decide, refusal
from tasks.inspection import InspectionError, parse_checklist
from tasks.links import CHECKLIST_PAGE, BadLink, ExpiredLink, check_csrf, csrf_token, verify_link
from tasks.render import _local_time
from tasks.summary import RATING_ITEMS, RATING_PURPOSE, RATING_VALUES, record_rating
from web.approvals import _open, _result_page, clock, expired_page, message_page
from web.pages import templates

router = APIRouter()

SEVERITIES = {1: "1级（业务中断）", 2: "2级（严重影响）", 3: "3级（一般）", 4: "4级（轻微）"}


# ---- the checklist -------------------------------------------------------------------------------


def _checklist(token: str, now: datetime) -> tuple[dict[str, Any] | None, Approval | None, str, str]:
    """(link data, approval row, approver name, problem outcome or "") for a checklist link."""
    data, problem = _open(token, now)
    if problem or data is None:
        return data, None, "", problem or "forged"
    who = Approver.parse(str(data["p"]))
    with session_scope() as session:
        row = session.get(Approval, int(data["a"]))
        if row is None or (row.form or {}).get("page") != CHECKLIST_PAGE:
            return data, None, "", "not_found"
        people = dict(approvers_of(session, row))
        if who not in people:
            return data, row, "", "not_entitled"
        return data, row, people[who].name, ""


def _bad_link(
    request: Request, token: str, data: dict[str, Any] | None, problem: str, row: Approval | None
) -> HTMLResponse:
    if problem == "expired" and data is not None:
        return expired_page(request, token, data)
    if problem == "not_found":
        return message_page(request, "not_found", "找不到此巡检检查表，链接可能有误。")
    if problem == "not_entitled":
        return message_page(request, "not_entitled", "您不是此巡检指定的工程师，无权填写。", approval=row)
    return message_page(request, "forged", "此链接或表单无效，未记录任何操作。请使用通知中收到的原始链接。")


FOLD_AFTER = 5  # a list longer than this is folded (<details>): the page stays short on a phone


def _page(
    request: Request,
    token: str,
    row: Approval,
    name: str,
    *,
    values: dict[str, str] | None = None,
    error: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    precheck = (row.form or {}).get("precheck") or {}
    if values is None and precheck.get(
        "changes"
    ):  # the changes since the last visit, prefilled for the engineer to edit
        values = {"pre_changes": "\n".join(precheck["changes"])}
    return templates.TemplateResponse(
        request,
        "inspection/checklist.html.j2",
        {
            "approval": row,
            "spec": row.form,
            "approver_name": name,
            "action": f"/{CHECKLIST_PAGE}/{token}",
            "csrf": csrf_token(token),
            "values": values or {},
            "error": error,
            "results": RESULT_ZH,
            "severities": SEVERITIES,
            "precheck": precheck,
            "fold_after": FOLD_AFTER,
        },
        status_code=status_code,
    )


def checklist_payload(spec: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """The posted form as the checklist payload `parse_checklist` reads; how each 异常 is handled must be chosen."""
    items, unhandled = [], []
    for t in spec.get("targets", []):
        for it in t["items"]:
            k = f"{t['target']}|{it['code']}"
            result = fields.get(f"r|{k}", "")
            handling = fields.get(f"h|{k}", "")
            if result == ItemResult.ABNORMAL and handling not in ("fixed", "repair"):
                unhandled.append(f"{t['label']}·{it['label']}")
            items.append(
                {
                    "target": t["target"],
                    "code": it["code"],
                    "result": result,
                    "note": fields.get(f"n|{k}", ""),
                    "fixed_on_site": handling == "fixed",
                    "severity": fields.get(f"s|{k}") or None,
                }
            )
    if unhandled:
        raise InspectionError(
            "以下异常项请选择「现场已处理（经客户同意）」或「转维修」：" + "、".join(unhandled[:10])
        )
    return {
        "prechecks": {
            "changes": fields.get("pre_changes", ""),
            "customer_reported": fields.get("pre_reported", ""),
            "backup_confirmed": fields.get("pre_backup") == "yes",
            "customer_agreed": fields.get("pre_agreed") == "yes",
            "agreed_by": fields.get("pre_agreed_by", ""),
            "risks": fields.get("pre_risks", ""),
        },
        "items": items,
    }


@router.get(f"/{CHECKLIST_PAGE}/{{token}}", response_class=HTMLResponse)
def checklist_form(request: Request, token: str, now: datetime = Depends(clock)) -> HTMLResponse:
    """The checklist form (opening it records nothing)."""
    data, row, name, problem = _checklist(token, now)
    if problem or row is None or data is None:
        return _bad_link(request, token, data, problem, row)
    with session_scope() as session:
        refused = refusal(session, row, now=now, content_hash=str(data["h"]))
    if refused is not None:
        return _result_page(request, refused, token)
    return _page(request, token, row, name)


@router.post(f"/{CHECKLIST_PAGE}/{{token}}", response_class=HTMLResponse)
async def checklist_submit(request: Request, token: str, now: datetime = Depends(clock)) -> HTMLResponse:
    """Check the checklist; good → recorded through `decide` (the run continues), bad → the errors, nothing recorded."""
    fields = {k: str(v).strip() for k, v in (await request.form()).items()}
    data, row, name, problem = _checklist(token, now)
    if not problem and not check_csrf(token, fields.get("csrf")):
        problem = "forged"
    if problem or row is None or data is None:
        return _bad_link(request, token, data, problem, row)
    try:
        payload = checklist_payload(row.form, fields)
        parse_checklist(row.form, payload)
    except InspectionError as exc:
        return _page(request, token, row, name, values=fields, error=str(exc), status_code=422)
    assert row.id is not None  # a row read from the database
    result = await run_in_threadpool(
        decide,
        row.id,
        "submitted",
        by=Approver.parse(str(data["p"])),
        comment=fields.get("comment", ""),
        payload=payload,
        channel=Channel.LINK,
        now=now,
        content_hash=str(data["h"]),
    )
    return _result_page(request, result, token)


# ---- the monthly service summary and its rating ------------------------------------------------------


def _summary_page(
    request: Request,
    token: str,
    row: ServiceSummary,
    *,
    values: dict[str, str] | None = None,
    error: str = "",
    message: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "inspection/summary.html.j2",
        {
            "summary": row,
            "items": RATING_ITEMS,
            "choices": RATING_VALUES,
            "action": f"/summary/{token}",
            "csrf": csrf_token(token),
            "values": values or {},
            "error": error,
            "message": message,
        },
        status_code=status_code,
    )


def _open_summary(
    request: Request, token: str, now: datetime
) -> tuple[ServiceSummary | None, HTMLResponse | None]:
    try:
        data = verify_link(token, RATING_PURPOSE, now=now)
    except ExpiredLink as exc:
        return None, message_page(
            request,
            "expired",
            f"此链接已于 {_local_time(exc.data['expires_at'])} 过期。如需查看或评价，请联系客户服务中心。",
        )
    except BadLink:
        return None, message_page(request, "forged", "此链接无效或已被篡改。请使用通知中收到的原始链接。")
    with session_scope() as session:
        row = session.get(ServiceSummary, int(data["s"]))
    if row is None:
        return None, message_page(request, "not_found", "找不到此服务总结，链接可能有误。")
    return row, None


@router.get("/summary/{token}", response_class=HTMLResponse)
def summary_view(request: Request, token: str, now: datetime = Depends(clock)) -> HTMLResponse:
    """The summary as issued, and the rating form (or the rating already given)."""
    row, bad = _open_summary(request, token, now)
    if bad is not None:
        return bad
    assert row is not None  # `_open_summary` gives either the row or the page saying why not
    return _summary_page(request, token, row)


@router.post("/summary/{token}", response_class=HTMLResponse)
async def summary_rate(request: Request, token: str, now: datetime = Depends(clock)) -> HTMLResponse:
    """Record the customer's rating (once); bad input → the page again with the error, nothing stored."""
    fields = {k: str(v).strip() for k, v in (await request.form()).items()}
    row, bad = _open_summary(request, token, now)
    if row is None or bad is not None:
        return bad  # type: ignore[return-value]
    if not check_csrf(token, fields.get("csrf")):
        return message_page(request, "forged", "此表单无效，未记录任何评价。请从通知中的链接重新打开页面。")
    rating = {k: fields[f"rate_{k}"] for k in RATING_ITEMS if fields.get(f"rate_{k}")}
    assert row.id is not None  # a row read from the database
    try:
        saved = await run_in_threadpool(
            record_rating, row.id, rating, by=fields.get("by", ""), comment=fields.get("comment", ""), now=now
        )
    except ValueError as exc:
        return _summary_page(
            request, token, row, values=fields, error=str(exc), status_code=409 if row.rated_at else 422
        )
    return _summary_page(request, token, saved, message="感谢您的评价，已记录。")
