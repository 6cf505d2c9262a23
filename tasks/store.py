"""备件库 / the spare-parts store beyond issuing to a case (tasks.parts): receiving stock, sending
defective parts back to the vendor (返修) and taking them back into stock, the stock levels with
each part's minimum, and the alert to the parts keepers when a part falls below it
[001 §1.3 备件管理; 003 §8.6.4.4, §8.6.5.3].

Every movement is a `StockMove` (receipts and returns positive) with its audit row; a part below
its minimum (all locations together) queues one message to every active parts keeper, once per
part and day (the outbox's idempotency key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, func, select

from models import Case, Event, Role, SparePart, Stock, StockMove, append_event
from models.assets import VendorRepair
from models.clocks import Clock, ClockStatus
from models.settings import business_timezone
from tasks.accounts import audit
from tasks.notify import queue
from tasks.people import staff_with_role

MAX_QUANTITY = 100_000


class StoreError(ValueError):
    """A store action that cannot be done; the message (Chinese) says why."""


@dataclass(frozen=True)
class Level:
    part: SparePart
    on_hand: int
    locations: list[tuple[str, int]]
    at_vendor: int

    @property
    def low(self) -> bool:
        return self.on_hand < self.part.min_quantity


def find_part(session: Session, code: str) -> SparePart:
    part = session.exec(select(SparePart).where(SparePart.code == code.strip())).first()
    if part is None or part.id is None:
        raise StoreError(f"没有备件编码 {code!r}")
    return part


def _quantity(quantity: int) -> int:
    if not isinstance(quantity, int) or quantity < 1 or quantity > MAX_QUANTITY:
        raise StoreError(f"数量应为 1–{MAX_QUANTITY} 的整数")
    return quantity


def _location(location: str) -> str:
    place = location.strip()
    if not place or len(place) > 100:
        raise StoreError("请填写库位（最多 100 个字符）")
    return place


def _move_key(session: Session, kind: str, part_id: int, now: datetime) -> str:
    count = session.exec(
        select(func.count()).select_from(StockMove).where(StockMove.part_id == part_id)
    ).one()
    return f"{kind}:{part_id}:{int(now.timestamp())}:{count}"


def _put(session: Session, part: SparePart, location: str, quantity: int) -> Stock:
    stock = session.exec(select(Stock).where(Stock.part_id == part.id, Stock.location == location)).first()
    if stock is None:
        stock = Stock(part_id=part.id, location=location, quantity=0)  # type: ignore[arg-type]
    stock.quantity += quantity
    session.add(stock)
    session.flush()
    return stock


def receive(
    session: Session, code: str, quantity: int, *, location: str, now: datetime, actor: str, note: str = ""
) -> Stock:
    """Parts delivered into the store (入库)."""
    part = find_part(session, code)
    stock = _put(session, part, _location(location), _quantity(quantity))
    session.add(
        StockMove(
            part_id=part.id,  # type: ignore[arg-type]
            stock_id=stock.id,  # type: ignore[arg-type]
            key=_move_key(session, "receive", part.id, now),  # type: ignore[arg-type]
            quantity=quantity,
            reason=("入库：" + note.strip())[:200] if note.strip() else "入库",
            at=now,
        )
    )
    audit(
        session,
        now=now,
        actor=actor,
        action="receive",
        record="stock",
        record_id=str(stock.id),
        changes={"part": part.code, "location": stock.location, "quantity": quantity, "note": note.strip()},
        source="store",
    )
    return stock


def send_to_vendor(
    session: Session,
    code: str,
    *,
    vendor: str,
    now: datetime,
    actor: str,
    quantity: int = 1,
    serial: str = "",
    rma: str = "",
    case_id: int | None = None,
    note: str = "",
) -> VendorRepair:
    """A defective part sent to the vendor (返修). It was taken off the device, not out of stock."""
    part = find_part(session, code)
    if not vendor.strip() or len(vendor.strip()) > 120:
        raise StoreError("请填写原厂商或维修商（最多 120 个字符）")
    for value, name, limit in ((serial, "序列号", 120), (rma, "返修单号", 60), (note, "备注", 400)):
        if len(value.strip()) > limit:
            raise StoreError(f"{name}最多 {limit} 个字符")
    row = VendorRepair(
        part_id=part.id,  # type: ignore[arg-type]
        quantity=_quantity(quantity),
        serial=serial.strip(),
        vendor=vendor.strip(),
        rma=rma.strip(),
        case_id=case_id,
        note=note.strip(),
        sent_at=now,
        sent_by=actor,
    )
    session.add(row)
    session.flush()
    audit(
        session,
        now=now,
        actor=actor,
        action="send",
        record="vendor_repair",
        record_id=str(row.id),
        changes={
            "part": part.code,
            "vendor": row.vendor,
            "serial": row.serial,
            "rma": row.rma,
            "quantity": row.quantity,
        },
        source="store",
    )
    return row


def back_from_vendor(session: Session, repair_id: int, *, location: str, now: datetime, actor: str) -> Stock:
    """The repaired (or exchanged) part is back: into stock at `location`."""
    row = session.get(VendorRepair, repair_id)
    if row is None:
        raise StoreError(f"没有返修记录 #{repair_id}")
    if row.returned_at is not None:
        raise StoreError(f"返修记录 #{repair_id} 已于 {row.returned_at:%Y-%m-%d} 返回入库")
    part = session.get(SparePart, row.part_id)
    assert part is not None
    place = _location(location)
    stock = _put(session, part, place, row.quantity)
    session.add(
        StockMove(
            part_id=part.id,  # type: ignore[arg-type]
            stock_id=stock.id,  # type: ignore[arg-type]
            key=f"vendor-return:{row.id}",
            quantity=row.quantity,
            reason=f"返修返回 {row.vendor} {row.rma}".strip()[:200],
            at=now,
        )
    )
    row.returned_at, row.returned_by, row.returned_to = now, actor, place
    session.add(row)
    audit(
        session,
        now=now,
        actor=actor,
        action="return",
        record="vendor_repair",
        record_id=str(row.id),
        changes={"part": part.code, "location": place, "quantity": row.quantity},
        source="store",
    )
    return stock


def levels(session: Session) -> list[Level]:
    """Every part with its stock per location, what is at the vendor, and whether it is below its minimum."""
    parts = session.exec(select(SparePart).order_by(col(SparePart.code))).all()
    stocks = session.exec(select(Stock).order_by(col(Stock.location))).all()
    away = session.exec(
        select(VendorRepair.part_id, func.sum(VendorRepair.quantity))
        .where(col(VendorRepair.returned_at).is_(None))
        .group_by(col(VendorRepair.part_id))
    ).all()
    at_vendor = {pid: int(total or 0) for pid, total in away}
    out = []
    for part in parts:
        places = [(s.location, s.quantity) for s in stocks if s.part_id == part.id]
        out.append(Level(part, sum(q for _, q in places), places, at_vendor.get(part.id or 0, 0)))
    return out


def open_vendor_repairs(session: Session) -> list[tuple[VendorRepair, SparePart]]:
    rows = session.exec(
        select(VendorRepair, SparePart)
        .join(SparePart, col(SparePart.id) == VendorRepair.part_id)
        .where(col(VendorRepair.returned_at).is_(None))
        .order_by(col(VendorRepair.sent_at))
    ).all()
    return [(r, p) for r, p in rows]


def alert_low(session: Session, part_ids: list[int], *, now: datetime) -> list[str]:
    """Tell the parts keepers about each of these parts that is below its minimum (once a day each);
    returns the codes that are low."""
    low = [lv for lv in levels(session) if lv.part.id in set(part_ids) and lv.low]
    keepers = staff_with_role(session, Role.PARTS_KEEPER)
    day = now.astimezone(_tz()).date().isoformat()
    for level in low:
        queue(
            session,
            recipients=keepers,
            template="store/low_stock",
            context={"part": level.part, "on_hand": level.on_hand, "at_vendor": level.at_vendor},
            key=f"low-stock:{level.part.code}:{day}",
            case_id=None,
            now=now,
        )
    return [lv.part.code for lv in low]


@dataclass(frozen=True)
class PartsWait:
    """A case whose spare-part clock runs (备件到场, 4 h): what it lacks and what was ordered."""

    case: Case
    clock: Clock
    short: list[dict[str, object]]
    orders: list[Event]


def waiting_for_parts(session: Session) -> list[PartsWait]:
    """Every case whose spare-part clock is still running (or paused), soonest deadline first."""
    clocks = session.exec(
        select(Clock)
        .where(
            Clock.kind == "spare_part",
            col(Clock.status).in_([ClockStatus.RUNNING.value, ClockStatus.PAUSED.value]),
        )
        .order_by(col(Clock.due_at))
    ).all()
    out = []
    for clock in clocks:
        case = session.get(Case, clock.case_id)
        if case is None:
            continue
        events = session.exec(
            select(Event)
            .where(
                Event.case_id == clock.case_id, col(Event.kind).in_(["parts_shortage", "parts_procurement"])
            )
            .order_by(col(Event.at), col(Event.id))
        ).all()
        shortages = [e for e in events if e.kind == "parts_shortage"]
        short = list(shortages[-1].data.get("short") or []) if shortages else []
        out.append(PartsWait(case, clock, short, [e for e in events if e.kind == "parts_procurement"]))
    return out


def order_urgently(
    session: Session, case_id: int, *, parts: str, vendor: str, eta: datetime, now: datetime, actor: str
) -> Event:
    """The parts keeper's emergency procurement for a case waiting for a part (紧急采购): recorded in
    the case's history with the expected arrival, said to be late when it is after the 4 h deadline."""
    case = session.get(Case, case_id)
    if case is None:
        raise StoreError(f"没有工单 #{case_id}")
    if not parts.strip() or len(parts.strip()) > 200:
        raise StoreError("请填写采购的备件（最多 200 个字符）")
    if not vendor.strip() or len(vendor.strip()) > 120:
        raise StoreError("请填写供货方（最多 120 个字符）")
    if eta.tzinfo is None:
        raise StoreError("预计到场时间应带时区")
    if eta <= now:
        raise StoreError("预计到场时间应晚于现在")
    clock = session.exec(
        select(Clock)
        .where(Clock.case_id == case_id, Clock.kind == "spare_part")
        .order_by(col(Clock.id).desc())
    ).first()
    late = clock is not None and clock.due_at is not None and eta > clock.due_at
    count = session.exec(
        select(func.count())
        .select_from(Event)
        .where(Event.case_id == case_id, Event.kind == "parts_procurement")
    ).one()
    local = eta.astimezone(_tz())
    event = append_event(
        session,
        case_id,
        "parts_procurement",
        at=now,
        actor=actor,
        key=f"parts-procurement:{int(count) + 1}",
        data={
            "parts": parts.strip(),
            "vendor": vendor.strip(),
            "eta": eta.isoformat(),
            "eta_zh": f"{local:%m-%d %H:%M}",
            "late_zh": "（晚于4小时时限）" if late else "",
        },
    )
    audit(
        session,
        now=now,
        actor=actor,
        action="procure",
        record="case",
        record_id=str(case_id),
        changes={"parts": parts.strip(), "vendor": vendor.strip(), "eta": eta.isoformat(), "late": late},
        source="store",
    )
    return event


def _tz():  # noqa: ANN202 - ZoneInfo
    from zoneinfo import ZoneInfo

    return ZoneInfo(business_timezone())
