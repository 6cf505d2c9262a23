"""The step ledger (DESIGN.md §2, "Replay from our own step ledger"): one row per finished step
of a flow run, written in the same transaction as the step's effect (`tasks.ledger`).

Keyed by the **flow run id**, not the case id: a repair's intake step runs before its case
exists, an extra inspection registers its case in a step, and a run the keeper reschedules after
a crash keeps its id — the run id is the one identity every step of a replay already has. A new
run of the same case (never made by aftercare itself) replays nothing, which is what it should do.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import utc_field


class StepRecord(SQLModel, table=True):
    """A finished step of a flow run and its result (type-tagged JSON, `tasks.ledger.encode`)."""

    __tablename__ = "step_record"
    __table_args__ = (sa.UniqueConstraint("flow_run_id", "key", name="uq_step_record_run_key"),)

    id: int | None = Field(default=None, primary_key=True)
    flow_run_id: str = Field(
        max_length=64, description="the Prefect flow run whose replay this step belongs to"
    )
    key: str = Field(
        max_length=300, description="step name, its own key (step/version/attempt) and occurrence"
    )
    result_json: str = Field(default="", sa_type=sa.Text)
    created_at: datetime = utc_field(nullable=False)
