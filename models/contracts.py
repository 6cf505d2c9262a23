"""Service contracts: dates, service hours, inspection frequency, SLA policy and calendar."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import json_field, utc_field
from models.settings import business_timezone
from rules.inspection import Period, periods_between


class ServiceHours(StrEnum):
    H7X24 = "7x24"
    H5X8 = "5x8"


class InspectionFrequency(StrEnum):
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    CUSTOM = "custom"  # every `inspection_every_months` months
    NONE = "none"


class SeverityScheme(StrEnum):
    """The two severity schemes of PROCEDURES.md §1."""

    OUTAGE = "outage"  # [001 §2.2.2] 特大 / 重大 / 严重 / 一般
    BUSINESS = "business"  # [003 §8.5.1] 一级 / 二级 / 三级 / 四级


class Contract(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=40, unique=True, index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    start_date: date
    end_date: date = Field(index=True)
    service_hours: str = Field(default=ServiceHours.H7X24, max_length=8)
    inspection_frequency: str = Field(default=InspectionFrequency.MONTHLY, max_length=16)
    inspection_every_months: int = Field(default=1, ge=1, le=24)
    severity_scheme: str = Field(default=SeverityScheme.OUTAGE, max_length=16)
    # Overrides of the default SLA table (rules/sla.py reads it); empty = the defaults of PROCEDURES.md.
    sla_policy: dict[str, Any] = json_field(default_factory=dict)
    calendar: str = Field(default="cn", max_length=32, description="working-day calendar name")
    timezone: str = Field(default_factory=business_timezone, max_length=64)
    warranty_until: date | None = None
    fee: float = Field(default=0.0, sa_type=sa.Numeric(14, 2))
    restore_tolerance_hours: float | None = Field(
        default=None, description="customer's tolerated window, accidents"
    )
    created_at: datetime = utc_field(nullable=False)
    # 客户经理: the renewal case is assigned to them (PROCEDURES.md §6)
    account_manager_id: int | None = Field(default=None, foreign_key="staff.id")

    def is_active(self, day: date) -> bool:
        return self.start_date <= day <= self.end_date

    def inspection_periods(self, first: date, last: date) -> list[Period]:
        """The regular inspection periods this contract covers between two days (plan vs done)."""
        return periods_between(
            first,
            last,
            frequency=self.inspection_frequency,
            contract_start=self.start_date,
            contract_end=self.end_date,
            every_months=self.inspection_every_months,
        )


class CalendarOverride(SQLModel, table=True):
    """An operator's correction to the official calendar: a holiday or a make-up working day. Wins."""

    __table_args__ = (sa.UniqueConstraint("calendar", "day"),)

    id: int | None = Field(default=None, primary_key=True)
    calendar: str = Field(default="cn", max_length=32)
    day: date = Field(index=True)
    working: bool = Field(description="True: a make-up working day (调休上班); False: a day off")
    note: str = Field(default="", max_length=200)
    created_at: datetime = utc_field(nullable=False)


class CalendarYear(SQLModel, table=True):
    """A year whose official holiday notice (国务院办公厅节假日安排) the operator has entered as
    overrides: deadlines in it are no longer provisional."""

    __table_args__ = (sa.UniqueConstraint("calendar", "year"),)

    id: int | None = Field(default=None, primary_key=True)
    calendar: str = Field(default="cn", max_length=32)
    year: int
    note: str = Field(default="", max_length=200, description="e.g. 国办发明电〔2026〕x号")
    confirmed_at: datetime = utc_field(nullable=False)


class ContractVersion(SQLModel, table=True):
    """One term of a contract with the terms that held in it (合同版本): the history a renewal keeps.

    The `Contract` row holds the terms in force; each renewal appends the new term here (and the
    term it follows, as version 1, when it was not recorded yet), so what held on any day can be
    read back (`terms_on`) — an SLA clock started on a day counts with that day's terms."""

    __table_args__ = (sa.UniqueConstraint("contract_id", "version", name="uq_contract_version"),)

    id: int | None = Field(default=None, primary_key=True)
    contract_id: int = Field(foreign_key="contract.id", index=True)
    version: int = Field(ge=1)
    start_date: date
    end_date: date
    service_hours: str = Field(default=ServiceHours.H7X24, max_length=8)
    inspection_frequency: str = Field(default=InspectionFrequency.MONTHLY, max_length=16)
    inspection_every_months: int = Field(default=1, ge=1, le=24)
    sla_policy: dict[str, Any] = json_field(default_factory=dict)
    sla_level: str = Field(default="", max_length=40, description="e.g. 标准 / 高级")
    scope: str = Field(default="", sa_type=sa.Text, description="the devices and services covered")
    fee: float = Field(default=0.0, sa_type=sa.Numeric(14, 2))
    case_id: int | None = Field(default=None, foreign_key="case.id", description="the renewal that made it")
    recorded_by: str = Field(default="system", max_length=100)
    recorded_at: datetime = utc_field(nullable=False)


def terms_on(versions: list[ContractVersion], contract: Contract, day: date) -> Contract | ContractVersion:
    """The terms in force on `day`: the version whose term holds it, else the contract row."""
    for version in sorted(versions, key=lambda v: v.version, reverse=True):
        if version.start_date <= day <= version.end_date:
            return version
    return contract
