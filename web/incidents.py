"""事件 / incidents: the dispatcher's list of what needs a person (notifications that could not be
sent, and any other open Incident rows), with "resend" and "resolved" buttons.

Reached through a signed link (purpose "incidents") that `aftercare outbox` prints: the page shows
customer names, so it is never open to whoever finds the URL. `?format=json` gives the same list
as JSON for a monitoring screen.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlmodel import col

from models.cases import Incident
from models.db import session_scope
from models.outbox import STATUS_ZH, Notification, NotificationStatus
from models.wallclock import now as wall_now
from tasks.channels import ChannelError
from tasks.links import BadLink, check_csrf, csrf_token, sign_link, verify_link
from tasks.notify import OutboxError, open_incidents, outbox_counts, resolve_incident, retry_failed
from web.pages import templates

router = APIRouter()
PURPOSE = "incidents"


def incidents_link(*, days: int = 30) -> str:
    """A signed link to the incidents page, valid for `days` (printed by `aftercare outbox`)."""
    from datetime import timedelta

    return sign_link(
        PURPOSE, {"role": "dispatcher"}, expires_at=wall_now() + timedelta(days=days), path="incidents"
    )


def _check(token: str) -> dict[str, Any]:
    try:
        return verify_link(token, PURPOSE, now=wall_now())
    except BadLink as exc:
        raise HTTPException(
            status_code=403, detail=f"链接无效或已过期 / link invalid or expired: {exc}"
        ) from exc


def _listing() -> dict[str, Any]:
    with session_scope() as session:
        incidents = open_incidents(session)
        ids = [i.data.get("notification_id") for i in incidents if i.data.get("notification_id")]
        rows = (
            {n.id: n for n in session.query(Notification).filter(col(Notification.id).in_(ids)).all()}
            if ids
            else {}
        )
        counts = outbox_counts(session)
    items = []
    for inc in incidents:
        row = rows.get(inc.data.get("notification_id"))
        items.append(
            {
                "id": inc.id,
                "case_id": inc.case_id,
                "kind": inc.kind,
                "message": inc.message,
                "opened_at": inc.opened_at.isoformat(),
                "notification_id": row.id if row else None,
                "can_resend": bool(row and row.status == "failed"),
                "address": row.address if row else None,
            }
        )
    return {
        "open_incidents": items,
        "outbox": {STATUS_ZH.get(NotificationStatus(k), k): v for k, v in counts.items()},
        "outbox_raw": counts,
    }


@router.get("/incidents/{token}")
def incidents_page(token: str, request: Request, format: str = "html") -> Any:
    _check(token)
    listing = _listing()
    if format == "json":
        return JSONResponse({"open_incidents": listing["open_incidents"], "outbox": listing["outbox_raw"]})
    html = templates.get_template("incidents.html.j2").render(token=token, csrf=csrf_token(token), **listing)
    return HTMLResponse(html)


@router.post("/incidents/{token}/{incident_id}")
def incident_action(
    token: str,
    incident_id: int,
    action: str = Form(...),
    by: str = Form(""),
    address: str = Form(""),
    csrf: str = Form(""),
) -> Any:
    _check(token)
    if not check_csrf(token, csrf):
        raise HTTPException(status_code=403, detail="表单已失效，请刷新页面 / stale form, reload the page")
    who = by.strip() or "调度员"
    moment = wall_now()
    try:
        with session_scope() as session:
            if action == "resend":
                incident = session.get(Incident, incident_id)
                nid = incident.data.get("notification_id") if incident else None
                if nid is None:
                    raise OutboxError(f"事件 #{incident_id} 不是通知失败 / not a failed notification")
                retry_failed(session, nid, now=moment, by=who, address=address.strip() or None)
            elif action == "resolve":
                resolve_incident(session, incident_id, now=moment, by=who)
            else:
                raise OutboxError(f"未知操作 / unknown action {action!r}")
    except (OutboxError, ChannelError) as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return RedirectResponse(f"/incidents/{token}", status_code=303)
