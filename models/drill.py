"""Emergency drills (应急演练, PROCEDURES.md §5): the customer system's emergency recovery plan
(应急恢复方案, versioned), each drill's plan versions (演练方案), the results recorded step by step
while the drill runs, and the training tasks its gaps lead to.

The drill itself is a `Case` of kind `drill` (one per contract and period, `uq_case_period`); its
facts (system, kind of drill, wished day, agreed day, notice times) live in `Case.data`.
Every version of a plan is a row of its own and is never changed: a revision is version v+1.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import json_field, utc_field


class StepResult(StrEnum):
    SUCCESS = "成功"
    FAILED = "失败"


class RecoveryPlan(SQLModel, table=True):
    """应急恢复方案 of one customer system, one row per version (v1, v2 … each kept and shown)."""

    __tablename__ = "recovery_plan"
    __table_args__ = (
        sa.UniqueConstraint("customer_id", "system", "version", name="uq_recovery_plan_version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    system: str = Field(max_length=100, description="the customer's system the plan recovers")
    version: int = Field(ge=1)
    scope: str = Field(sa_type=sa.Text)
    devices: str = Field(default="", sa_type=sa.Text, description="systems and devices covered")
    rto_minutes: int = Field(gt=0, description="recovery time objective")
    rpo_minutes: int = Field(ge=0, description="recovery point objective (data that may be lost)")
    steps: list[dict[str, Any]] = json_field(
        default_factory=list, description="[{position, action, owner, minutes}] (rules.drill.StepLine)"
    )
    contacts: str = Field(default="", sa_type=sa.Text)
    reason: str = Field(default="", max_length=400, description="why this version was made")
    case_id: int | None = Field(default=None, foreign_key="case.id", description="the drill that led to it")
    created_by: str = Field(default="", max_length=100)
    created_at: datetime = utc_field(nullable=False)
    approved_by: str | None = Field(default=None, max_length=100)
    approved_at: datetime | None = utc_field()
    rejected_by: str | None = Field(default=None, max_length=100, description="the director who rejected it")
    rejected_at: datetime | None = utc_field(description="rejected as a whole (驳回): never in force")


class DrillPlan(SQLModel, table=True):
    """演练方案 of one drill, one row per version (the version both sides signed is the one run)."""

    __tablename__ = "drill_plan"
    __table_args__ = (sa.UniqueConstraint("case_id", "version", name="uq_drill_plan_version"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    version: int = Field(ge=1)
    scenario: str = Field(sa_type=sa.Text, description="the simulated failure")
    failover: str = Field(sa_type=sa.Text)
    restore: str = Field(sa_type=sa.Text)
    steps: list[dict[str, Any]] = json_field(default_factory=list)
    rollback: str = Field(sa_type=sa.Text, description="how to roll back if the drill itself goes wrong")
    business_window: str = Field(max_length=200)
    participants: str = Field(default="", sa_type=sa.Text)
    reason: str = Field(default="", max_length=400)
    created_by: str = Field(default="", max_length=100)
    created_at: datetime = utc_field(nullable=False)


class DrillStepResult(SQLModel, table=True):
    """One step of a drill as it happened: actual start, end, result (the drill lead's phone form)."""

    __tablename__ = "drill_step_result"
    __table_args__ = (sa.UniqueConstraint("case_id", "position", name="uq_drill_step_result"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    plan_version: int
    position: int = Field(ge=1)
    action: str = Field(max_length=200)
    expected_minutes: int
    started_at: datetime = utc_field(nullable=False)
    ended_at: datetime = utc_field(nullable=False)
    result: str = Field(max_length=8, description="a StepResult")
    note: str = Field(default="", sa_type=sa.Text)
    rollback: str = Field(
        default="", sa_type=sa.Text, description="the roll-back done when the drill was aborted"
    )
    recorded_by: str = Field(default="", max_length=100)
    recorded_at: datetime = utc_field(nullable=False)


class TrainingTask(SQLModel, table=True):
    """A training of the customer's staff a drill's gap calls for, with its own due day."""

    __tablename__ = "training_task"
    __table_args__ = (sa.UniqueConstraint("case_id", "topic", name="uq_training_task"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    system: str = Field(max_length=100)
    topic: str = Field(max_length=200)
    due_on: date
    created_at: datetime = utc_field(nullable=False)
    reminded_at: datetime | None = utc_field(description="the lead was told it is due (once)")
    done_at: datetime | None = utc_field()
    done_by: str = Field(default="", max_length=100)
