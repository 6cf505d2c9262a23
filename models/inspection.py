"""Inspection checklists (巡检检查表) as data, and the results an engineer records against them.

`ChecklistItem` rows are the editable checklist per device class (PROCEDURES.md §4 step 4); an
empty table is filled once from `models/seeds/inspection_checklists.json`. `ChecklistResult` holds
one answer per item per device (or per site for the 'common' items) per submitted version of the
form, so a report rejected back to the engineer keeps its earlier answers.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, func, select

from models.base import json_field, utc_field

SEED_FILE = Path(__file__).parent / "seeds" / "inspection_checklists.json"
COMMON = "common"  # site-level items asked once per inspection


class ItemResult(StrEnum):
    NORMAL = "normal"  # 正常
    ABNORMAL = "abnormal"  # 异常
    NA = "na"  # 不适用


RESULT_ZH = {ItemResult.NORMAL: "正常", ItemResult.ABNORMAL: "异常", ItemResult.NA: "不适用"}


class ChecklistItem(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("device_class", "code", name="uq_checklist_item"),)

    id: int | None = Field(default=None, primary_key=True)
    device_class: str = Field(
        max_length=40, index=True, description="server / storage / network / ... or 'common'"
    )
    code: str = Field(max_length=40)
    label: str = Field(max_length=200)
    position: int = Field(default=0)
    active: bool = Field(default=True)


class ChecklistResult(SQLModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("case_id", "version", "target", "item_code", name="uq_checklist_result"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    version: int = Field(default=1)
    target: str = Field(max_length=40, description="'site' or 'device:<id>'")
    device_id: int | None = Field(default=None, foreign_key="device.id")
    device_class: str = Field(max_length=40)
    item_code: str = Field(max_length=40)
    item_label: str = Field(max_length=200)
    result: str = Field(max_length=12)
    note: str = Field(default="", sa_type=sa.Text)
    fixed_on_site: bool = Field(default=False)
    severity: int | None = Field(default=None, ge=1, le=4)
    repair_case_id: int | None = Field(default=None, foreign_key="case.id")
    repair_run_id: str | None = Field(
        default=None, max_length=64, description="the repair flow run started for it"
    )
    recorded_at: datetime = utc_field(nullable=False)


def ensure_checklists(session: Session) -> int:
    """Fill an empty checklist table from the seed file; returns the rows added (0 when not empty)."""
    if (session.exec(select(func.count()).select_from(ChecklistItem)).one() or 0) > 0:
        return 0
    data = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    added = 0
    for device_class, items in data.items():
        if device_class.startswith("_"):
            continue
        for pos, (code, label) in enumerate(items):
            session.add(ChecklistItem(device_class=device_class, code=code, label=label, position=pos))
            added += 1
    session.flush()
    return added


def checklist_for(session: Session, device_class: str) -> list[ChecklistItem]:
    """The active items of one device class, in order."""
    ensure_checklists(session)
    return list(
        session.exec(
            select(ChecklistItem)
            .where(ChecklistItem.device_class == device_class, ChecklistItem.active == True)  # noqa: E712
            .order_by(col(ChecklistItem.position), col(ChecklistItem.id))
        ).all()
    )


class ServiceSummary(SQLModel, table=True):
    """A monthly service summary (阶段性服务总结) or quarterly analysis for one customer and period.

    One row per (customer, kind, period): the month-end run that issues it twice writes it once.
    The rendered text is kept with its hash (what the customer rated is what was sent).
    """

    __table_args__ = (sa.UniqueConstraint("customer_id", "kind", "period", name="uq_service_summary"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    kind: str = Field(max_length=12, description="monthly / quarterly")
    period: str = Field(max_length=16, description="2026-03 or 2026-Q1")
    due_by: date = Field(description="5 working days after the period's end")
    issued_at: datetime = utc_field(nullable=False)
    late: bool = Field(default=False)
    content_html: str = Field(default="", sa_type=sa.Text)
    content_hash: str = Field(default="", max_length=64)
    figures: dict[str, Any] = json_field(default_factory=dict)
    rating: dict[str, Any] = json_field(default_factory=dict)
    rated_at: datetime | None = utc_field()
    rated_by: str = Field(default="", max_length=100)


def open_problems(session: Session, case_id: int) -> list[ChecklistResult]:
    """The checklist rows of an inspection that became repairs (every version)."""
    return list(
        session.exec(
            select(ChecklistResult)
            .where(
                ChecklistResult.case_id == case_id,
                ChecklistResult.result == str(ItemResult.ABNORMAL),
                ChecklistResult.fixed_on_site == False,  # noqa: E712
            )  # noqa: E712
            .order_by(col(ChecklistResult.id))
        ).all()
    )


def all_fed_back(session: Session, case_id: int) -> bool:
    """Every problem of the inspection has its repair (the feedback clock may stop)."""
    rows = open_problems(session, case_id)
    return bool(rows) and all(r.repair_case_id is not None for r in rows)
