"""设备档案 / the device page: the device, its customer, site and contract, and every case, inspection
finding, part change and drill touching it, newest first (`tasks.devices.device_file`).

Two ways in: staff logged in (`/devices/<id>`, any role), and the engineer on a diagnosis or
on-site form through the signed link the form page carries (`/devices/link/<token>`, read-only).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from models import wallclock
from models.db import session_scope
from tasks.devices import DEVICE_LINK, config_lines, device_file
from tasks.links import BadLink, ExpiredLink, verify_link
from web.pages import templates
from web.staff import StaffUser, require_staff

router = APIRouter()


def device_now() -> datetime:
    """The moment a device link is checked at (tests override this dependency)."""
    return wallclock.now()


def _page(device_id: int, user: StaffUser | None) -> HTMLResponse:
    with session_scope() as session:
        found = device_file(session, device_id)
        if found is None:
            return _message("设备不存在", "没有这台设备，可能已从设备档案中删除。", 404)
        context: dict[str, Any] = {"file": found, "config": config_lines(found.device.config), "user": user}
        html = templates.get_template("devices/page.html.j2").render(**context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _message(title: str, message: str, status: int) -> HTMLResponse:
    html = templates.get_template("staff/refused.html.j2").render(title=title, message=message)
    return HTMLResponse(html, status_code=status)


@router.get("/devices/{device_id:int}", response_class=HTMLResponse)
def device_page(device_id: int, user: Annotated[StaffUser, Depends(require_staff())]) -> HTMLResponse:
    return _page(device_id, user)


@router.get("/devices/link/{token}", response_class=HTMLResponse)
def device_by_link(token: str, now: Annotated[datetime, Depends(device_now)]) -> HTMLResponse:
    try:
        data = verify_link(token, DEVICE_LINK, now=now)
    except ExpiredLink:
        return _message("链接已过期", "此设备档案链接已过期，请从最新的表单链接重新打开。", 410)
    except BadLink:
        return _message("链接无效", "链接无效或已被篡改。", 403)
    return _page(int(data["d"]), None)
