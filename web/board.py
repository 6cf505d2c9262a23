"""调度看板 / the dispatcher's board at the web root: the open cases, each with what it waits for,
for whom, since and until when (the next deadline of its running clocks, a breach in red), its
severity, the paid-service mark, its reports and its Prefect run. Chinese, fits a phone, reloads
itself every minute (a `<meta http-equiv="refresh">`: the CSP runs no inline script).

The board names customers and carries live report links, so it is for staff only. Two keys open it:

- the staff login (`web.staff`): `/` is a staff page like the admin pages — not logged in, the
  browser is sent to `/login?next=/`;
- a staff link signed with the site's secret (`/board/<token>`, like the incidents page), printed by
  `aftercare board-link` — for a wall screen or a phone without a login.

An expired or forged link gets a Chinese 401 page. `/health` stays open.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from models import wallclock
from models.db import session_scope
from models.settings import get_settings
from tasks.board import board, lapsed_contracts
from tasks.links import BadLink, ExpiredLink, report_url, sign_link, verify_link
from web.pages import templates
from web.staff import StaffUser, require_staff

router = APIRouter()

PURPOSE = "board"
REFRESH_SECONDS = 60
LINK_DAYS = 30
BOARD_LIMIT = 500  # the oldest open cases; the page says so when there are more


def board_now() -> datetime:
    """The moment the board is drawn at (tests override this dependency with a fixed time)."""
    return wallclock.now()


Now = Annotated[datetime, Depends(board_now)]


def board_link(*, days: int = LINK_DAYS, now: datetime | None = None) -> str:
    """A staff link to the board, valid for `days` (`aftercare board-link`)."""
    moment = now or wallclock.now()
    return sign_link(PURPOSE, {"role": "staff"}, expires_at=moment + timedelta(days=days), path="board")


def _refused(reason: str) -> HTMLResponse:
    html = templates.get_template("board/refused.html.j2").render(reason=reason)
    return HTMLResponse(html, status_code=401)


def _page(now: datetime, *, refresh_url: str, user: StaffUser | None = None) -> HTMLResponse:
    settings = get_settings()
    ui = settings.prefect_url.removesuffix("/").removesuffix("/api")
    with session_scope() as session:
        cases = board(session, now=now, limit=BOARD_LIMIT)
        lapsed = lapsed_contracts(session, now=now)
    links: dict[int, str] = {r.report_id: report_url(r.report_id, now=now) for c in cases for r in c.reports}
    context: dict[str, Any] = {
        "cases": cases,
        "lapsed": lapsed,
        "now": now,
        "refresh": REFRESH_SECONDS,
        "refresh_url": refresh_url,
        "prefect_ui": ui,
        "report_links": links,
        "breached": sum(c.breached for c in cases),
        "truncated": len(cases) >= BOARD_LIMIT,
        "user": user,
    }
    html = templates.get_template("board/page.html.j2").render(**context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/", response_class=HTMLResponse)
def board_page(now: Now, user: Annotated[StaffUser, Depends(require_staff())]) -> HTMLResponse:
    """The board, for any logged-in staff person."""
    return _page(now, refresh_url="/", user=user)


@router.get("/board/{token}", response_class=HTMLResponse)
def board_by_link(token: str, now: Now) -> HTMLResponse:
    """The board, for whoever holds a staff link (`aftercare board-link`)."""
    try:
        verify_link(token, PURPOSE, now=now)
    except ExpiredLink:
        return _refused("此看板链接已过期，请用 aftercare board-link 重新生成。")
    except BadLink:
        return _refused("看板链接无效或已被篡改。")
    return _page(now, refresh_url=f"/board/{token}")
