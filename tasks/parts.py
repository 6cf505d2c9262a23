"""The spare-parts store (备件库): issue parts to a case, record each move, escalate a shortage."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from models import Role, SparePart, Stock, StockMove, append_event
from models.cases import paid_prefix
from models.db import session_scope
from tasks.cases import case_facts, team_member
from tasks.ledger import step
from tasks.notify import queue
from tasks.store import alert_low


class PartsError(ValueError):
    """A part request that cannot be read (unknown part code, bad quantity)."""


@dataclass
class PartsResult:
    issued: list[dict[str, Any]] = field(default_factory=list)  # {code, name, quantity, location}
    short: list[dict[str, Any]] = field(default_factory=list)  # {code, name, wanted, available}

    @property
    def complete(self) -> bool:
        return not self.short

    def as_dict(self) -> dict[str, Any]:
        return {"issued": self.issued, "short": self.short, "complete": self.complete}


_LINE = re.compile(r"^\s*(?P<code>[A-Za-z0-9._/-]+?)\s*(?:[xX×*]\s*(?P<qty>-?\d+))?\s*$")


def parse_parts(text: str) -> list[tuple[str, int]]:
    """`"PSU-900W x1, HDD-1.2T x2"` (or one per line, or 、 between them as the accident plan's list is
    written; a code alone means 1) → [(code, qty)]."""
    items: list[tuple[str, int]] = []
    for raw in re.split(r"[,，、;；\n]", text or ""):
        if not raw.strip():
            continue
        match = _LINE.match(raw)
        if match is None:
            raise PartsError(f"看不懂的备件行：{raw.strip()}（格式：备件编码 x 数量） / unreadable part line")
        quantity = int(match["qty"] or 1)
        if quantity < 1:
            raise PartsError(f"备件数量必须大于 0：{raw.strip()} / quantity must be positive")
        items.append((match["code"].upper(), quantity))
    return items


def issue_parts(
    session: Session,
    case_id: int,
    items: list[tuple[str, int]],
    *,
    now: datetime,
    key: str,
    actor: str = "system",
) -> PartsResult:
    """Take the parts out of stock for a case (in the caller's transaction).

    Each line is one `StockMove` unique per (case, key:code): a replayed request issues nothing twice.
    The decrement is one conditional UPDATE, so two cases cannot both take the last part.
    """
    result = PartsResult()
    for code, wanted in items:
        part = session.exec(select(SparePart).where(SparePart.code == code)).first()
        if part is None:
            raise PartsError(f"备件库中没有编码为 {code} 的备件 / unknown part code")
        move_key = f"{key}:{code}"
        done = session.exec(
            select(StockMove).where(StockMove.case_id == case_id, StockMove.key == move_key)
        ).first()
        if done is not None:
            stock = session.get(Stock, done.stock_id)
            result.issued.append(
                {
                    "code": code,
                    "name": part.name,
                    "quantity": -done.quantity,
                    "location": stock.location if stock else "",
                }
            )
            continue
        stocks = list(
            session.exec(select(Stock).where(Stock.part_id == part.id).order_by(col(Stock.quantity).desc()))
        )
        taken = None
        for stock in stocks:
            updated = session.execute(
                sa.update(Stock)
                .where(col(Stock.id) == stock.id, col(Stock.quantity) >= wanted)
                .values(quantity=Stock.quantity - wanted)
            )
            if updated.rowcount == 1:  # type: ignore[attr-defined]
                taken = stock
                break
        if taken is None:
            result.short.append(
                {
                    "code": code,
                    "name": part.name,
                    "wanted": wanted,
                    "available": sum(s.quantity for s in stocks),
                }
            )
            continue
        session.add(
            StockMove(
                part_id=part.id,  # type: ignore[arg-type]
                stock_id=taken.id,  # type: ignore[arg-type]
                case_id=case_id,
                key=move_key,
                quantity=-wanted,
                reason="维修领用",
                at=now,
            )
        )
        result.issued.append(
            {"code": code, "name": part.name, "quantity": wanted, "location": taken.location}
        )
    session.flush()
    # a part issued below its minimum: the parts keepers are told (tasks.store, once a day per part)
    alert_low(
        session,
        [
            p.id
            for p in session.exec(
                select(SparePart).where(col(SparePart.code).in_([c for c, _ in items]))
            ).all()
            if p.id
        ],
        now=now,
    )
    append_event(
        session,
        case_id,
        "parts_issued" if result.complete else "parts_shortage",
        at=now,
        actor=actor,
        key=f"{key}:event",
        data=result.as_dict(),
    )
    return result


@step("request-parts", title="备件申请 / spare-part request", key="{key}")
def request_parts(
    case_id: int, parts: str, now: datetime, key: str = "parts", actor: str = "system"
) -> dict[str, Any]:
    """Issue the plan's spare parts from the store; a shortage is escalated to the keeper and director.
    An unreadable line or an unknown part code issues nothing and returns `{"error": ...}`."""
    try:
        items = parse_parts(parts)
        with session_scope() as session:
            result = issue_parts(session, case_id, items, now=now, key=key, actor=actor)
            _tell_store(session, case_id, key, now, result)
            return result.as_dict()
    except PartsError as exc:  # the transaction rolled back: no line of the request was taken
        return {"error": str(exc)}


def _tell_store(session: Session, case_id: int, key: str, now: datetime, result: PartsResult) -> None:
    """Issued → the parts keeper is told; short → the keeper and the director, urgently."""
    facts = case_facts(session, case_id)
    keeper = team_member(session, case_id, Role.PARTS_KEEPER)
    if result.complete:
        _queue(
            session,
            [keeper],
            "repair/parts_issued",
            facts,
            result,
            key=f"{case_id}:{key}:issued",
            case_id=case_id,
            now=now,
            urgent=False,
        )
    else:
        director = team_member(session, case_id, Role.TECHNICAL_DIRECTOR)
        _queue(
            session,
            [keeper, director],
            "repair/parts_shortage",
            facts,
            result,
            key=f"{case_id}:{key}:shortage",
            case_id=case_id,
            now=now,
            urgent=True,
        )


def _queue(
    session: Session,
    recipients: list[Any],
    template: str,
    facts: Any,
    result: PartsResult,
    *,
    key: str,
    case_id: int,
    now: datetime,
    urgent: bool,
) -> None:
    queue(
        session,
        recipients=recipients,
        template=template,
        context={"case": facts.as_dict(), "paid": paid_prefix(facts.as_dict()), **result.as_dict()},
        key=key,
        case_id=case_id,
        now=now,
        urgent=urgent,
    )


@step("parts-of-case", title="已领用备件 / parts used")
def parts_of_case(case_id: int) -> list[dict[str, Any]]:
    """The parts issued to a case (for the service report)."""
    with session_scope() as session:
        rows = session.exec(
            select(StockMove, SparePart)
            .where(StockMove.case_id == case_id, StockMove.part_id == SparePart.id)
            .order_by(col(StockMove.id))
        ).all()
        return [{"code": part.code, "name": part.name, "quantity": -move.quantity} for move, part in rows]
