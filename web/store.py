"""备件库 / the parts store page (`/store`): stock per part and location with each part's minimum (a
part below it in red), the parts at the vendor for repair, and the parts keeper's three forms —
receive (入库), send a defective part to the vendor (返修), take a repaired part back into stock.
Every staff person may look; only the parts keeper (or an administrator) acts. The logic is
`tasks.store`. "Now" is the staff pages' one clock, `web.staff.staff_now` (a FastAPI dependency a
test overrides with a fixed time), never the wall clock read here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from models import Role
from models.db import session_scope
from models.settings import business_timezone
from tasks.store import (
    StoreError,
    alert_low,
    back_from_vendor,
    levels,
    open_vendor_repairs,
    order_urgently,
    receive,
    send_to_vendor,
    waiting_for_parts,
)
from web.pages import templates
from web.staff import SessionNow, StaffUser, require_staff

router = APIRouter()
Keeper = Annotated[StaffUser, Depends(require_staff(Role.PARTS_KEEPER))]


def _page(
    user: StaffUser, now: datetime, *, error: str = "", done: str = "", status: int = 200
) -> HTMLResponse:
    with session_scope() as session:
        context: dict[str, Any] = {
            "user": user,
            "levels": levels(session),
            "away": open_vendor_repairs(session),
            "waiting": waiting_for_parts(session),
            "now": now,
            "may_act": user.may(Role.PARTS_KEEPER),
            "error": error,
            "done": done,
        }
        html = templates.get_template("store/page.html.j2").render(**context)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/store", response_class=HTMLResponse)
def store_page(
    user: Annotated[StaffUser, Depends(require_staff())], now: SessionNow, done: str = ""
) -> HTMLResponse:
    return _page(user, now, done=done[:200])


def whole(text: str) -> int:
    """A typed quantity; StoreError (shown on the page) when it is not a whole number."""
    try:
        return int(text.strip())
    except ValueError:
        raise StoreError(f"数量应为整数（不是 {text!r}）") from None


def _act(user: StaffUser, now: datetime, work: Any, message: str) -> Response:
    try:
        with session_scope() as session:
            work(session)
    except StoreError as exc:
        return _page(user, now, error=str(exc), status=400)
    return RedirectResponse(f"/store?done={message}", status_code=303)


@router.post("/store/receive")
def store_receive(
    user: Keeper,
    now: SessionNow,
    code: Annotated[str, Form(max_length=60)],
    quantity: Annotated[str, Form(max_length=20)],
    location: Annotated[str, Form(max_length=100)],
    note: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    def work(session: Any) -> None:
        stock = receive(
            session, code, whole(quantity), location=location, now=now, actor=user.name, note=note
        )
        alert_low(session, [stock.part_id], now=now)

    return _act(user, now, work, "已入库")


@router.post("/store/vendor")
def store_send(
    user: Keeper,
    now: SessionNow,
    code: Annotated[str, Form(max_length=60)],
    vendor: Annotated[str, Form(max_length=120)],
    serial: Annotated[str, Form(max_length=120)] = "",
    rma: Annotated[str, Form(max_length=60)] = "",
    quantity: Annotated[str, Form(max_length=20)] = "1",
    note: Annotated[str, Form(max_length=400)] = "",
) -> Response:
    def work(session: Any) -> None:
        send_to_vendor(
            session,
            code,
            vendor=vendor,
            serial=serial,
            rma=rma,
            quantity=whole(quantity),
            note=note,
            now=now,
            actor=user.name,
        )

    return _act(user, now, work, "已登记返修")


@router.post("/store/vendor/{repair_id:int}/back")
def store_back(
    user: Keeper, now: SessionNow, repair_id: int, location: Annotated[str, Form(max_length=100)]
) -> Response:
    def work(session: Any) -> None:
        back_from_vendor(session, repair_id, location=location, now=now, actor=user.name)

    return _act(user, now, work, "返修件已入库")


def local_moment(text: str) -> datetime:
    """A time typed on the page, in the business time zone ("2026-11-23 14:30"); StoreError if not one."""
    try:
        moment = datetime.strptime(text.strip().replace("T", " "), "%Y-%m-%d %H:%M")
    except ValueError:
        raise StoreError(f"预计到场时间格式应为 2026-11-23 14:30（不是 {text!r}）") from None
    return moment.replace(tzinfo=ZoneInfo(business_timezone()))


@router.post("/store/urgent/{case_id:int}")
def store_urgent(
    user: Keeper,
    now: SessionNow,
    case_id: int,
    parts: Annotated[str, Form(max_length=200)],
    vendor: Annotated[str, Form(max_length=120)],
    eta: Annotated[str, Form(max_length=40)],
) -> Response:
    def work(session: Any) -> None:
        order_urgently(
            session,
            case_id,
            parts=parts,
            vendor=vendor,
            eta=local_moment(eta),
            now=now,
            actor=user.name,
        )

    return _act(user, now, work, "已登记紧急采购")
