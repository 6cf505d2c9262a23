"""Parties: customers, their sites and contacts, and the provider's staff with their roles."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Field, SQLModel

from models.base import json_field, utc_field


class Role(StrEnum):
    """Roles of PROCEDURES.md §1; a person may hold several."""

    DISPATCHER = "dispatcher"  # 客户服务中心 / 客服专员 / 值班人员
    TECHNICAL_LEAD = "technical_lead"  # 项目技术负责人
    ENGINEER = "engineer"  # 服务工程师
    SENIOR_ENGINEER = "senior_engineer"  # 高级工程师
    EXPERT = "expert"  # 专家服务小组 / 紧急抢修小组
    TECHNICAL_DIRECTOR = "technical_director"  # 技术总监
    COORDINATOR = "coordinator"  # 项目总协调人
    GENERAL_MANAGER = "general_manager"  # 总经理
    PARTS_KEEPER = "parts_keeper"  # 备件管理员
    VENDOR = "vendor"  # 原厂商
    SUPERVISION = "supervision"  # 监理
    DEPARTMENT_MANAGER = "department_manager"  # 部门经理 (signs for an unsigned inspection report, §4 step 6)
    ACCOUNT_MANAGER = "account_manager"  # 客户经理: the contracts (back office, issue 23), their renewal (§6)
    ADMINISTRATOR = "administrator"  # 系统管理员: every back-office page and account
    SERVICE_MANAGER = "service_manager"  # 客服经理: owns complaints (PROCEDURES.md §7)
    SALES_MANAGER = "sales_manager"  # 销售经理 (approves renewal quotes; the account managers' manager)


ROLE_LABELS_ZH: dict[Role, str] = {
    Role.DISPATCHER: "客户服务中心",
    Role.TECHNICAL_LEAD: "项目技术负责人",
    Role.ENGINEER: "服务工程师",
    Role.SENIOR_ENGINEER: "高级工程师",
    Role.EXPERT: "专家服务小组",
    Role.TECHNICAL_DIRECTOR: "技术总监",
    Role.COORDINATOR: "项目总协调人",
    Role.GENERAL_MANAGER: "总经理",
    Role.PARTS_KEEPER: "备件管理员",
    Role.VENDOR: "原厂商技术支持",
    Role.SUPERVISION: "监理",
    Role.DEPARTMENT_MANAGER: "部门经理",
    Role.ACCOUNT_MANAGER: "客户经理",
    Role.ADMINISTRATOR: "系统管理员",
    Role.SERVICE_MANAGER: "客服经理",
    Role.SALES_MANAGER: "销售经理",
}


class Customer(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True, index=True)
    name: str = Field(max_length=200, index=True)
    created_at: datetime = utc_field(nullable=False)
    # The provider's managers published to this customer, lowest to highest (staff ids) [001 §2.4;
    # 000 §8]: a complaint not answered in time, or reopened, goes one step up this list.
    manager_ladder: list[int] = json_field(default_factory=list)


class Site(SQLModel, table=True):
    """A machine room; `distance_km` from the nearest service point picks the arrival clock."""

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    name: str = Field(max_length=200)
    address: str = Field(default="", max_length=400)
    service_point: str = Field(default="", max_length=100)
    distance_km: float = Field(default=0.0, ge=0)
    same_city: bool = Field(default=True)
    room_rules: str = Field(
        default="", max_length=400, description="machine-room rules: shoe covers, anti-static mat"
    )


class Contact(SQLModel, table=True):
    """A person at the customer (客户维护负责人 and others)."""

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    name: str = Field(max_length=100)
    title: str = Field(default="", max_length=100)
    phone: str = Field(default="", max_length=40)
    email: str = Field(default="", max_length=200)
    is_primary: bool = Field(default=False)
    notify_urls: list[str] = json_field(default_factory=list)  # Apprise URLs
    quiet_start: time | None = Field(default=None, sa_type=sa.Time)
    quiet_end: time | None = Field(default=None, sa_type=sa.Time)


class Staff(SQLModel, table=True):
    """A person of the provider; `roles` holds Role values."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    phone: str = Field(default="", max_length=40)
    email: str = Field(default="", max_length=200)
    roles: list[str] = json_field(default_factory=list)
    notify_urls: list[str] = json_field(default_factory=list)  # Apprise URLs
    quiet_start: time | None = Field(default=None, sa_type=sa.Time)
    quiet_end: time | None = Field(default=None, sa_type=sa.Time)
    active: bool = Field(default=True)
    # whom this person reports to (the renewal escalates to the account manager's manager)
    manager_id: int | None = Field(default=None, foreign_key="staff.id")

    def has_role(self, role: Role | str) -> bool:
        return str(role) in self.roles


# --- addresses are checked whenever they are written -----------------------------------------------

_CHECKED = ("notify_urls", "quiet_start", "quiet_end")


PersonCheck = Callable[["Staff | Contact"], object]
_person_checks: list[PersonCheck] = []


def register_person_check(check: PersonCheck) -> PersonCheck:
    """Run `check` on every Staff or Contact written whose addresses or quiet hours changed.

    The layer that knows aftercare's channels (`tasks.channels.validate_person`, e.g. `smsgw://`)
    registers itself here when it is imported, so models/ never imports tasks/. `tasks.people`
    imports it, so every process that handles people has the check. Idempotent."""
    if check not in _person_checks:
        _person_checks.append(check)
    return check


@sa.event.listens_for(OrmSession, "before_flush")
def _check_people(session: OrmSession, _flush_context: object, _instances: object) -> None:
    """Refuse a Staff or Contact whose notification addresses or quiet hours are not usable, on every
    write through a session (seed, admin, import, a script), not only where a form checks them.

    The checks raise (ChannelError with the reasons) before anything is written. A person loaded and
    changed elsewhere is checked only when these fields changed.
    """
    for person in (*session.new, *session.dirty):
        if not isinstance(person, Staff | Contact):
            continue
        state = sa.inspect(person, raiseerr=True)  # typed Optional under SQLAlchemy 2.0 without raiseerr
        if person in session.new or any(state.attrs[name].history.has_changes() for name in _CHECKED):
            for check in _person_checks:
                check(person)
