"""Device files and the spare-parts store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import json_field, utc_field


class Device(SQLModel, table=True):
    """A device file (设备档案): model, serial numbers, configuration, site, contract."""

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    contract_id: int | None = Field(default=None, foreign_key="contract.id", index=True)
    device_class: str = Field(max_length=40, description="server / storage / network / database / ups ...")
    model: str = Field(max_length=120)
    serial: str = Field(max_length=120, index=True)
    config: dict[str, Any] = json_field(default_factory=dict)


class SparePart(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=60, unique=True, index=True)
    name: str = Field(max_length=200)
    device_class: str = Field(default="", max_length=40)
    min_quantity: int = Field(default=0, ge=0, description="below this (all locations) the keeper is told")


class VendorRepair(SQLModel, table=True):
    """A defective part sent back to the vendor for repair or exchange (返修), until it comes back."""

    __tablename__ = "vendor_repair"

    id: int | None = Field(default=None, primary_key=True)
    part_id: int = Field(foreign_key="sparepart.id", index=True)
    quantity: int = Field(default=1, ge=1)
    serial: str = Field(default="", max_length=120, description="the defective part's serial number")
    vendor: str = Field(max_length=120)
    rma: str = Field(default="", max_length=60, description="the vendor's return number (返修单号)")
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    note: str = Field(default="", max_length=400)
    sent_at: datetime = utc_field(nullable=False)
    sent_by: str = Field(max_length=100)
    returned_at: datetime | None = utc_field(default=None, index=True)
    returned_by: str = Field(default="", max_length=100)
    returned_to: str = Field(default="", max_length=100, description="the stock location it went back to")


class Stock(SQLModel, table=True):
    """How many of a part lie at a location of the parts store."""

    __table_args__ = (
        sa.UniqueConstraint("part_id", "location"),
        sa.CheckConstraint("quantity >= 0", name="stock_not_negative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    part_id: int = Field(foreign_key="sparepart.id", index=True)
    location: str = Field(max_length=100)
    quantity: int = Field(default=0, ge=0)


class StockMove(SQLModel, table=True):
    """A part issued to (negative) or returned from (positive) a case; unique per (case, key)."""

    __table_args__ = (sa.UniqueConstraint("case_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    part_id: int = Field(foreign_key="sparepart.id", index=True)
    stock_id: int = Field(foreign_key="stock.id")
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    key: str = Field(max_length=120)
    quantity: int
    reason: str = Field(default="", max_length=200)
    at: datetime = utc_field(nullable=False)
