"""The case family (service request, accident, inspection, drill, renewal, complaint) and its
append-only event log.

One table holds every kind of case: they share customer, site, severity, status and history, and
the kinds' own fields live in `data`. Every change to a case is an `Event` (who, what, when,
data); events are never updated or deleted, so every figure can be recomputed from them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Field, Session, SQLModel

from models.base import json_field, utc_field
from models.db import insert_ignore


class CaseKind(StrEnum):
    REPAIR = "repair"  # 故障维修
    ACCIDENT = "accident"  # 事故处理
    INSPECTION = "inspection"  # 巡检
    DRILL = "drill"  # 应急演练
    RENEWAL = "renewal"  # 续费
    COMPLAINT = "complaint"  # 投诉
    SURVEY = "survey"  # 年度满意度调查
    ASSURANCE = "assurance"  # 重要通信保障 / 重大事件值守
    RECOVERY_PLAN = "recovery-plan"  # 应急恢复方案修订 between drills (flows.drill.recovery_plan)


CASE_PREFIX = {
    CaseKind.REPAIR: "WX",
    CaseKind.ACCIDENT: "SG",
    CaseKind.INSPECTION: "XJ",
    CaseKind.DRILL: "YL",
    CaseKind.RENEWAL: "XF",
    CaseKind.COMPLAINT: "TS",
    CaseKind.SURVEY: "MY",
    CaseKind.ASSURANCE: "BZ",
    CaseKind.RECOVERY_PLAN: "HF",
}

CASE_KIND_ZH = {
    CaseKind.REPAIR: "故障维修",
    CaseKind.ACCIDENT: "事故处理",
    CaseKind.INSPECTION: "巡检",
    CaseKind.DRILL: "应急演练",
    CaseKind.RENEWAL: "续费",
    CaseKind.COMPLAINT: "投诉",
    CaseKind.SURVEY: "满意度调查",
    CaseKind.ASSURANCE: "重要通信保障",
    CaseKind.RECOVERY_PLAN: "应急恢复方案修订",
}


class CaseStatus(StrEnum):
    """Where a case stands. Faults (repair, accident) go open → (handling → restored →) archived, or a
    repair is handed over to the accident flow; an inspection goes planned → scheduled/notified →
    on_site → submitted (→ rejected → submitted …) → registered, or is cancelled before the visit."""

    OPEN = "open"
    HANDLING = "handling"  # an accident's emergency team is at work
    RESTORED = "restored"  # the accident's business is running again
    ARCHIVED = "archived"
    HANDED_OVER = "handed_over"  # a repair that became an accident (the accident case goes on)
    CLOSED = "closed"
    CANCELLED = "cancelled"
    PLANNED = "planned"  # an inspection created by the planner, its day not agreed yet
    SCHEDULED = "scheduled"
    NOTIFIED = "notified"
    CONFIRMED = "confirmed"
    ON_SITE = "on_site"
    REPORT_PENDING = "report_pending"
    SUBMITTED = "submitted"
    REJECTED = "rejected"
    REGISTERED = "registered"

    @property
    def ends_case(self) -> bool:
        """A status the case is closed in (its clocks stop, `closed_at` is set)."""
        return self in ENDED_STATUSES


ENDED_STATUSES = frozenset(
    {CaseStatus.ARCHIVED, CaseStatus.HANDED_OVER, CaseStatus.CLOSED, CaseStatus.CANCELLED}
)

CASE_STATUS_ZH: dict[str, str] = {
    CaseStatus.PLANNED: "待约定日期",
    CaseStatus.SCHEDULED: "已约定日期",
    CaseStatus.NOTIFIED: "已通知客户",
    CaseStatus.CONFIRMED: "已确认时间",
    CaseStatus.ON_SITE: "现场巡检中",
    CaseStatus.REPORT_PENDING: "报告待签字",
    CaseStatus.SUBMITTED: "报告待登记",
    CaseStatus.REJECTED: "报告退回补充",
    CaseStatus.REGISTERED: "已登记",
    CaseStatus.CANCELLED: "已取消",
    CaseStatus.CLOSED: "已关闭",
    CaseStatus.OPEN: "处理中",
    CaseStatus.RESTORED: "业务已恢复",
}

_S = CaseStatus
# status → the statuses a case may move to from it (staying in the same status is always allowed: a
# replayed step writes it again); an ended status moves nowhere.
CASE_TRANSITIONS: dict[CaseStatus, frozenset[CaseStatus]] = {
    _S.OPEN: frozenset({_S.HANDLING, _S.RESTORED, _S.ARCHIVED, _S.HANDED_OVER, _S.CLOSED, _S.CANCELLED}),
    _S.HANDLING: frozenset({_S.RESTORED, _S.ARCHIVED, _S.HANDED_OVER, _S.CLOSED, _S.CANCELLED}),
    _S.RESTORED: frozenset({_S.HANDLING, _S.ARCHIVED, _S.CLOSED}),
    _S.PLANNED: frozenset({_S.SCHEDULED, _S.NOTIFIED, _S.CONFIRMED, _S.ON_SITE, _S.CANCELLED}),
    _S.SCHEDULED: frozenset({_S.NOTIFIED, _S.CONFIRMED, _S.ON_SITE, _S.CANCELLED}),
    _S.NOTIFIED: frozenset({_S.SCHEDULED, _S.CONFIRMED, _S.ON_SITE, _S.CANCELLED}),
    _S.CONFIRMED: frozenset({_S.SCHEDULED, _S.NOTIFIED, _S.ON_SITE, _S.CANCELLED}),
    _S.ON_SITE: frozenset({_S.REPORT_PENDING, _S.SUBMITTED, _S.REJECTED, _S.REGISTERED}),
    _S.REPORT_PENDING: frozenset({_S.SUBMITTED, _S.REJECTED, _S.REGISTERED}),
    _S.SUBMITTED: frozenset({_S.REGISTERED, _S.REJECTED}),
    _S.REJECTED: frozenset({_S.ON_SITE, _S.REPORT_PENDING, _S.SUBMITTED, _S.REGISTERED}),
    _S.REGISTERED: frozenset({_S.ARCHIVED, _S.CLOSED}),
    _S.ARCHIVED: frozenset(),
    _S.HANDED_OVER: frozenset(),
    _S.CLOSED: frozenset(),
    _S.CANCELLED: frozenset(),
}


class IllegalTransition(ValueError):
    """A case asked to move to a status its current one does not lead to."""


def check_transition(current: str, new: CaseStatus | str) -> CaseStatus:
    """`new` as a CaseStatus when a case in `current` may move to it; IllegalTransition otherwise."""
    try:
        target = CaseStatus(new)
        source = CaseStatus(current)
    except ValueError as exc:
        raise IllegalTransition(f"未知的案件状态 / unknown case status: {exc}") from exc
    if target != source and target not in CASE_TRANSITIONS[source]:
        raise IllegalTransition(
            f"案件状态不能从「{CASE_STATUS_ZH.get(source, source)}」变为「{CASE_STATUS_ZH.get(target, target)}」"
            f" / a case cannot move from {source} to {target}"
        )
    return target


class Case(SQLModel, table=True):
    # One inspection (or renewal, drill) per contract and period: `period` is NULL for kinds
    # that have none, and NULLs never collide in a unique constraint.
    __table_args__ = (
        sa.UniqueConstraint("kind", "contract_id", "period", name="uq_case_period"),
        # the keeper's stale-record sweep: open cases by last update
        sa.Index("ix_case_open_updated", "closed_at", "updated_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16, index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    site_id: int | None = Field(default=None, foreign_key="site.id")
    device_id: int | None = Field(default=None, foreign_key="device.id")
    contract_id: int | None = Field(default=None, foreign_key="contract.id", index=True)
    parent_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    period: str | None = Field(default=None, max_length=32)
    severity: int | None = Field(default=None, ge=1, le=4)
    status: str = Field(
        default=CaseStatus.OPEN, max_length=32, index=True
    )  # a CaseStatus; move_to changes it
    title: str = Field(default="", max_length=200)
    description: str = Field(default="", sa_type=sa.Text)
    channel: str = Field(default="", max_length=16)
    reported_by: str = Field(default="", max_length=100)
    reported_at: datetime = utc_field(nullable=False)
    out_of_contract: bool = Field(default=False)
    flow_run_id: str | None = Field(default=None, max_length=64, index=True)
    data: dict[str, Any] = json_field(default_factory=dict)
    created_at: datetime = utc_field(nullable=False)
    updated_at: datetime = utc_field(nullable=False)
    closed_at: datetime | None = utc_field()

    @property
    def number(self) -> str:
        """The number people quote: WX-000123 for repair 123."""
        return f"{CASE_PREFIX.get(CaseKind(self.kind), 'CS')}-{self.id:06d}"

    def move_to(self, status: CaseStatus, at: datetime) -> CaseStatus:
        """Set the status (checked against CASE_TRANSITIONS: IllegalTransition, nothing changed)."""
        self.status = check_transition(self.status, status)
        self.updated_at = at
        return CaseStatus(self.status)

    def reopen(self, at: datetime) -> None:
        """A closed complaint open again: the customer said in writing that they are not satisfied
        after it was closed (PROCEDURES.md §7: closed only when the customer is satisfied). The only
        way back from `closed`; any other case or status: IllegalTransition, nothing changed."""
        if self.kind != CaseKind.COMPLAINT or self.status != CaseStatus.CLOSED:
            raise IllegalTransition(
                f"只有已关闭的投诉可以重新打开 / only a closed complaint reopens ({self.kind})"
            )
        self.status, self.closed_at, self.updated_at = CaseStatus.OPEN, None, at


def paid_prefix(case: Case | dict[str, Any] | Any) -> str:
    """The mark every message about an out-of-contract case starts with (PROCEDURES.md §6 step 7);
    `case`: a Case, its facts (anything with `out_of_contract`) or their dict."""
    out = case.get("out_of_contract") if isinstance(case, dict) else getattr(case, "out_of_contract", False)
    return "【合同外·有偿服务】" if out else ""


class Event(SQLModel, table=True):
    """One entry of a case's history. Append-only: never updated, never deleted."""

    __table_args__ = (
        sa.Index("ix_event_case_at", "case_id", "at"),
        sa.UniqueConstraint("case_id", "key", name="uq_event_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id")
    at: datetime = utc_field(nullable=False)
    actor: str = Field(max_length=100, description="who: a staff name, a contact, or 'system'")
    kind: str = Field(max_length=60, index=True)
    # Idempotency: a step that records the same event twice (a replay) writes it once.
    key: str | None = Field(default=None, max_length=160)
    data: dict[str, Any] = json_field(default_factory=dict)


class Incident(SQLModel, table=True):
    """Something a dispatcher must look at (a notification that could not be sent, a stuck run)."""

    id: int | None = Field(default=None, primary_key=True)
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    kind: str = Field(max_length=40)
    message: str = Field(sa_type=sa.Text)
    data: dict[str, Any] = json_field(default_factory=dict)
    opened_at: datetime = utc_field(nullable=False)
    resolved_at: datetime | None = utc_field(index=True)
    resolved_by: str | None = Field(default=None, max_length=100)


class AppendOnlyError(RuntimeError):
    pass


@sa.event.listens_for(OrmSession, "before_flush")
def _events_are_append_only(session: OrmSession, _ctx: Any, _instances: Any) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, Event):
            raise AppendOnlyError("the event log is append-only: events are never changed or deleted")


def append_event(
    session: Session,
    case_id: int,
    kind: str,
    *,
    at: datetime,
    actor: str = "system",
    data: dict[str, Any] | None = None,
    key: str | None = None,
) -> Event:
    """Add an event to a case's history (in the caller's transaction).

    With a `key`, a second call for the same case and key returns the first event unchanged, so a
    replayed step records nothing twice.
    """
    if key is not None:
        from sqlmodel import select

        existing = session.exec(select(Event).where(Event.case_id == case_id, Event.key == key)).first()
        if existing is not None:
            return existing
    event = Event(case_id=case_id, kind=kind, at=at, actor=actor, data=data or {}, key=key)
    session.add(event)
    session.flush()
    return event


def add_opened_case(
    session: Session, case: Case, kind: str, *, at: datetime, actor: str, data: dict[str, Any]
) -> int:
    """A new case into the caller's transaction with its first history entry (event `kind`, key
    "opened": a replayed step opens nothing twice) — a repair, a complaint, an assurance. Returns
    the new case's id."""
    session.add(case)
    session.flush()
    assert case.id is not None
    append_event(session, case.id, kind, at=at, actor=actor, key="opened", data=data)
    return case.id


def add_period_case(
    session: Session,
    contract: Any,
    kind: str,
    period: str,
    *,
    status: str,
    title: str,
    description: str,
    channel: str,
    data: dict[str, Any],
    now: datetime,
    event: str,
    key: str,
    reported_by: str = "system",
    actor: str = "system",
    site_id: int | None = None,
) -> int | None:
    """The case of one contract (a models.contracts.Contract) and period — an inspection, a drill, a
    renewal, a survey — into the caller's transaction unless the unique (kind, contract_id, period)
    holds it already, with its first history entry (`event` under `key`, its data the case's).
    Returns the new case's id, or None when the period has its case."""
    values: dict[str, Any] = {
        "kind": kind,
        "customer_id": contract.customer_id,
        "contract_id": contract.id,
        "period": period,
        "status": status,
        "title": title,
        "description": description,
        "channel": channel,
        "reported_by": reported_by,
        "reported_at": now,
        "out_of_contract": False,
        "data": data,
        "created_at": now,
        "updated_at": now,
    }
    if site_id is not None:
        values["site_id"] = site_id
    case_id = insert_ignore(session, Case, values)
    if case_id is None:
        return None
    append_event(session, case_id, event, at=now, actor=actor, data=data, key=key)
    return int(case_id)
