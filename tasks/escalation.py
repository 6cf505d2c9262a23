"""Escalation levels 3 and 4 act, not only notify (PROCEDURES.md §1 escalation; 001 §3.1) — on any
case whose restore clock climbs the ladder, a repair included, without waiting for the director to
hand it over to the accident flow.

- Level 3 (专家服务小组组成紧急抢修小组赴现场): the emergency team is formed and named on the case —
  the accident flow's own `form_expert_team`, not a copy.
- Level 4 (技术总监赴现场，协调原厂最资深工程师，启用同档次备机替代): the vendor's support is requested
  (the accident's `request_vendor_support`, call 1, unless the vendor is engaged already) and a
  standby machine is considered at half the restore time (`rules.accident.standby_due_at`): it goes
  out then if the restore clock still runs (the accident's `request_standby`).

The keeper stays the only writer of escalations: `tasks.clocks.fire_due_clocks` writes the
`Escalation` rows; this keeper step, run right after it, reads them and acts. Each action is
recorded once by its own unique event key (`team`, `vendor-support-1`, `standby`), so a duplicate
keeper, a keeper that was down for hours, or an accident that formed its team itself repeat nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from models import Case, Event
from models.clocks import Clock, ClockStatus, Escalation
from models.db import session_scope
from rules import accident as accident_rules
from rules.escalation import LEVEL_LABELS_ZH
from rules.sla import CLOCK_LABELS_ZH
from tasks.accident import form_expert_team, has_event, request_standby, request_vendor_support

log = logging.getLogger("aftercare.escalation")

TEAM_LEVEL, VENDOR_LEVEL = 3, 4
DIRECTOR_ZH = "技术总监"


def act_on_escalations(now: datetime) -> int:
    """Keeper step: carry out the actions of level-3 and level-4 escalations of open cases that are
    not done yet; returns how many actions were taken."""
    done = 0
    with session_scope() as session:
        # the last action of each level is recorded by an event with a fixed key: a level whose
        # action is recorded is not looked at again
        team_formed = (
            select(Event.id).where(Event.case_id == Escalation.case_id, Event.key == "team").exists()
        )
        standby_out = (
            select(Event.id)
            .where(Event.case_id == Escalation.case_id, Event.kind == "standby_machine_requested")
            .exists()
        )
        rows = session.exec(
            select(Escalation, Clock, Case)
            .join(Clock, col(Clock.id) == Escalation.clock_id)
            .join(Case, col(Case.id) == Escalation.case_id)
            .where(
                Escalation.kind == "ladder",
                col(Escalation.level) >= TEAM_LEVEL,
                col(Case.closed_at).is_(None),
                sa.or_(
                    sa.and_(col(Escalation.level) == TEAM_LEVEL, ~team_formed),
                    sa.and_(col(Escalation.level) >= VENDOR_LEVEL, ~standby_out),
                ),
            )
            .order_by(col(Escalation.due_at), col(Escalation.id))
        ).all()
        for escalation, clock, case in rows:
            if escalation.level == TEAM_LEVEL:
                done += _level_3(session, case, escalation)
            else:
                done += _level_4(session, case, clock, escalation, now)
    return done


def _level_3(session: Session, case: Case, escalation: Escalation) -> int:
    """The expert team formed and named on the case, dated when level 3 became due."""
    return 0 if form_expert_team(session, case, escalation.due_at) is None else 1


def _level_4(session: Session, case: Case, clock: Clock, escalation: Escalation, now: datetime) -> int:
    label = CLOCK_LABELS_ZH.get(clock.kind, clock.kind)
    done = 0
    if not case.data.get("vendor_engaged_at") and request_vendor_support(
        session,
        case,
        1,
        f"{LEVEL_LABELS_ZH[VENDOR_LEVEL]}升级：{label}未完成，技术总监协调原厂最资深工程师",
        escalation.due_at,
    ):
        done += 1
    if clock.due_at is None or has_event(session, int(case.id), "standby_machine_requested"):  # type: ignore[arg-type]
        return done
    # considered at half the restore time: at level 4 if that half has passed, else when it does
    at = max(escalation.due_at, accident_rules.standby_due_at(clock.started_at, clock.due_at))
    if clock.status == ClockStatus.STOPPED and clock.stopped_at is not None and clock.stopped_at <= at:
        return done  # restored before the standby was due: none goes out
    if at > now or clock.status == ClockStatus.PAUSED:
        return done  # a later tick looks again
    if request_standby(
        session,
        case,
        f"{LEVEL_LABELS_ZH[VENDOR_LEVEL]}升级，已过合同约定恢复时间的一半（{label}），仍未恢复",
        at,
        DIRECTOR_ZH,
    ):
        done += 1
    return done
