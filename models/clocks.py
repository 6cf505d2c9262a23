"""SLA clocks (服务时钟) and escalations (升级记录).

A `Clock` row is the running state of one SLA clock of a case (PROCEDURES.md §1): when it started,
when it runs out (`due_at`, moved on by pauses), its pauses, and whether it was met or breached.
The same facts are appended to the case's event log by `tasks.clocks`, so every figure can be
recomputed from the events. `next_check_at` is the keeper's index: the next moment something
about this clock can fire (its breach or its next ladder level); NULL once nothing is left.

An `Escalation` row is one step the keeper fired: a breach (level 0), a ladder level (1–4) or a
stale record. Unique per (clock, level), and unique by `key`: a step is fired once, whatever runs.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import json_field, utc_field


class ClockStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class ClockAction(StrEnum):
    """What a flow does to one SLA clock of its case (tasks.cases.clock)."""

    START = "start"
    PAUSE = "pause"  # waiting for the customer: the deadline moves on by the pause's length
    RESUME = "resume"
    STOP = "stop"


class Clock(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("case_id", "kind", name="uq_clock_case_kind"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    kind: str = Field(max_length=32, description="a row of the SLA table: first_contact, restore, …")
    severity: int = Field(ge=1, le=4)
    status: str = Field(default=ClockStatus.RUNNING, max_length=16)
    started_at: datetime = utc_field(nullable=False)
    # None: the policy sets no deadline for this severity (the clock still measures).
    due_at: datetime | None = utc_field()
    provisional: bool = Field(
        default=False, description="deadline rests on a year without official calendar data"
    )
    basis: str = Field(default="", max_length=80, description="how the deadline was computed, e.g. 4 小时")
    # The clock's terms, fixed at its start: the hours it counts in ({"service_hours": "5x8",
    # "start": "09:00", "end": "18:00", "lunch": null, "calendar": "cn", "tz": "Asia/Shanghai"},
    # needed to move it on after a pause) and "raise_severity" (a breach raises the case's severity).
    terms: dict[str, Any] = json_field(default_factory=dict)
    # Escalation ladder, effective times: [[level, iso-datetime], …]; empty for clocks without one.
    ladder: list[Any] = json_field(default_factory=list)
    level: int = Field(default=0, description="highest ladder level reached")
    paused_at: datetime | None = utc_field()
    pauses: list[Any] = json_field(default_factory=list)  # [{"from", "to", "reason"}]
    met_at: datetime | None = utc_field()
    breached_at: datetime | None = utc_field(description="when the deadline passed while the clock ran")
    stopped_at: datetime | None = utc_field()
    next_check_at: datetime | None = utc_field(index=True)


class Escalation(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("clock_id", "level", name="uq_escalation_clock_level"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(
        max_length=120, unique=True, description="clock:<id>:L<level> / clock:<id>:breach / stale:<case>:<n>"
    )
    clock_id: int | None = Field(default=None, foreign_key="clock.id", index=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    kind: str = Field(max_length=16, description="breach | ladder | stale")
    level: int = Field(description="0 for a breach, 1–4 for a ladder level")
    due_at: datetime = utc_field(nullable=False, description="when the step became due")
    fired_at: datetime = utc_field(nullable=False, description="the keeper's `now` when it fired")
    note: str = Field(default="", max_length=300)
