"""Approvals, signatures, forms and timers: what a waiting procedure is waiting for.

One `Approval` row for every "a person acts through a link, then the procedure continues"
(DESIGN.md §2): a staff member approves a plan, a customer signs a report, someone fills in a
callback form. The row is the source of truth; a Prefect resume is only a wake-up. A `Timer` row
is a multi-day wait of one flow run; the clock keeper fires it when `due_at` passes.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import json_field, utc_field


class ApprovalKind(StrEnum):
    APPROVAL = "approval"  # staff approve / reject / ask for revision of a plan or report
    SIGNATURE = "signature"  # the customer accepts-and-signs or objects to a plan or report
    FORM = "form"  # someone fills in a form (callback survey, checklist)


# The fields of an answer given in Prefect's UI that are the approval's own, not a form's
# (tasks.ui_forms builds the UI forms around them; tasks.approvals reads the answer back).
UI_FIELDS = ("decision", "comment", "approver", "data")


class DecisionKind(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    REVISE = "revise"
    SIGNED = "signed"
    OBJECTED = "objected"
    SUBMITTED = "submitted"


ALLOWED_DECISIONS: dict[str, tuple[DecisionKind, ...]] = {
    ApprovalKind.APPROVAL: (DecisionKind.APPROVED, DecisionKind.REJECTED, DecisionKind.REVISE),
    ApprovalKind.SIGNATURE: (DecisionKind.SIGNED, DecisionKind.OBJECTED),
    ApprovalKind.FORM: (DecisionKind.SUBMITTED,),
}

DECISION_ZH: dict[str, str] = {
    DecisionKind.APPROVED: "批准",
    DecisionKind.REJECTED: "驳回",
    DecisionKind.REVISE: "要求修改",
    DecisionKind.SIGNED: "签字确认",
    DecisionKind.OBJECTED: "提出异议",
    DecisionKind.SUBMITTED: "提交",
}

KIND_ZH: dict[str, str] = {
    ApprovalKind.APPROVAL: "审批",
    ApprovalKind.SIGNATURE: "签字确认",
    ApprovalKind.FORM: "填写表单",
}


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    DECIDED = "decided"
    SUPERSEDED = "superseded"  # a newer version of the same step replaced it


class Channel(StrEnum):
    LINK = "link"  # the signed link of a notification
    PREFECT_UI = "prefect_ui"  # the suspended run's form in the Prefect UI
    CLI = "cli"  # `aftercare answer`, typed by an operator


# Where a decision is entered by someone other than the person it is recorded for (no link proves
# who typed it): the record says so and the person named is told (tasks.approvals.decide).
ENTERED_ON_BEHALF: dict[str, str] = {Channel.PREFECT_UI: "在 Prefect 界面", Channel.CLI: "在命令行"}


def content_hash(content: str) -> str:
    """SHA-256 of exactly the text shown to the approver."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


class Approval(SQLModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("case_id", "step", "version", name="uq_approval_step_version"),
        sa.Index("ix_approval_pending_resume", "status", "resumed_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    kind: str = Field(default=ApprovalKind.APPROVAL, max_length=16)
    step: str = Field(max_length=80, description="the procedure step, e.g. director-approval")
    version: int = Field(default=1, ge=1, description="what is approved: plan v3 → 3")
    subject: str = Field(max_length=200)
    content: str = Field(sa_type=sa.Text, description="exactly what the approver is shown")
    content_hash: str = Field(max_length=64)
    form: dict[str, Any] = json_field(default_factory=dict, description="fields of a form (kind=form)")
    form_name: str | None = Field(
        default=None,
        max_length=40,
        description="the form (models.forms registry) an answer is validated with",
    )
    # Who may decide: any one of these people; the role is what the procedure asked for.
    approver_role: str | None = Field(default=None, max_length=40)
    approver_staff_ids: list[int] = json_field(default_factory=list)
    approver_contact_ids: list[int] = json_field(default_factory=list)
    status: str = Field(default=ApprovalStatus.PENDING, max_length=16, index=True)
    superseded_by: int | None = Field(default=None, description="the version that replaced this one")
    created_at: datetime = utc_field(nullable=False)
    expires_at: datetime = utc_field(nullable=False)
    decided_at: datetime | None = utc_field()
    decided_by: str | None = Field(default=None, max_length=100, description="the decider's name")
    decided_by_staff_id: int | None = Field(default=None, foreign_key="staff.id")
    decided_by_contact_id: int | None = Field(default=None, foreign_key="contact.id")
    decision: str | None = Field(default=None, max_length=16)
    comment: str = Field(default="", sa_type=sa.Text)
    payload: dict[str, Any] = json_field(default_factory=dict, description="signature or form data")
    channel: str | None = Field(default=None, max_length=16)
    flow_run_id: str | None = Field(default=None, max_length=64, index=True)
    resumed_at: datetime | None = utc_field(description="when the waiting run was woken after the decision")
    link_renewed_at: datetime | None = utc_field(
        description="when a fresh link was last sent from an expired one's page (at most one per 10 minutes)"
    )

    @property
    def label(self) -> str:
        return f"{self.subject}（第 {self.version} 版）"


class Timer(SQLModel, table=True):
    """A multi-day wait of one flow run (`wait_until`); fired once by the clock keeper."""

    __table_args__ = (
        sa.UniqueConstraint("flow_run_id", "key", name="uq_timer_run_key"),
        sa.Index("ix_timer_due", "fired_at", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    flow_run_id: str = Field(max_length=64)
    key: str = Field(max_length=120, description="fixed per step, e.g. callback-2d")
    due_at: datetime = utc_field(nullable=False)
    created_at: datetime = utc_field(nullable=False)
    fired_at: datetime | None = utc_field()
    resumed_at: datetime | None = utc_field()
