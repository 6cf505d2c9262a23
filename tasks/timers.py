"""Multi-day waits (定时等待) and the one way a flow body learns "now".

`wait_until(case_id, when, key)` is called in a flow body: a task writes a `Timer` row, the run
suspends (its process exits, nothing is held), and the clock keeper's `fire_due_timers(now)`
marks the row fired and resumes the run once `when` has passed. The row is the truth; the resume
is only a wake-up (DESIGN.md §2), so a lost resume is repeated on the keeper's next tick.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import sqlalchemy as sa
from sqlmodel import col, select

from models import wallclock
from models.approvals import Timer
from models.db import session_scope
from tasks import prefect_api
from tasks.answering import responder
from tasks.board import suspend_announced
from tasks.ledger import as_if_woken, step

log = logging.getLogger("aftercare.timers")


# ---------------------------------------------------------------------------------------------
# Waking a suspended run (shared with tasks.approvals)


class Wake(StrEnum):
    RESUMED = "resumed"  # the run was suspended on this wait and is now rescheduled
    NOT_YET = "not_yet"  # the run has not suspended yet (or Prefect is unreachable): try again later
    GONE = "gone"  # the run is no longer waiting on this (finished, moved on, deleted): stop trying


def suspend_key(base: str, attempt: int) -> str:
    """The fixed suspend key of a wait; later attempts (after a refused input) carry their number."""
    return base if attempt == 1 else f"{base}-a{attempt}"


# A run that waits for whichever comes first — an answer or a timer (`either_key`) — suspends under
# both keys joined by this mark; each of the two wake-ups finds its own key in it.
EITHER = "--or--"


def either_key(*keys: str) -> str:
    """The suspend key of a wait on several things at once (each key as `suspend_key` made it)."""
    return EITHER.join(keys)


def _is_key_of(pause_key: str | None, base: str) -> bool:
    return pause_key is not None and any(
        part == base or re.fullmatch(re.escape(base) + r"-a\d+", part) is not None
        for part in pause_key.split(EITHER)
    )


def wake_run(flow_run_id: str, base_key: str, run_input: dict[str, Any] | None = None) -> Wake:
    """Resume `flow_run_id` if it is suspended on the wait `base_key`; never raises.

    Through the Prefect REST API with plain httpx (`tasks.prefect_api`): this runs in the approval
    web's request handlers too, and the web imports no Prefect (issue 26)."""
    if responder() is not None:  # the fast test layer: the waiting flow body is the caller, not suspended
        return Wake.RESUMED
    try:
        with prefect_api.session() as client:
            state = prefect_api.run_state(client, flow_run_id)
            if state.waiting:
                return Wake.NOT_YET  # not suspended yet, or already woken and replaying
            if not state.paused:
                return Wake.GONE  # completed, failed, cancelled
            if not _is_key_of(state.pause_key, base_key):
                return Wake.GONE  # suspended on a later wait: this one is behind it
            status, reason = prefect_api.resume(client, flow_run_id, run_input)
        if status != "ACCEPT":
            log.warning("resume of flow run %s refused: %s %s", flow_run_id, status, reason)
            return Wake.NOT_YET
        return Wake.RESUMED
    except prefect_api.RunNotFound:
        return Wake.GONE
    except Exception as exc:  # Prefect unreachable, a race with another wake: the next tick retries
        log.warning("could not resume flow run %s (%s): %s", flow_run_id, type(exc).__name__, exc)
        return Wake.NOT_YET


def current_run_id() -> str | None:
    """The flow run this task belongs to (None outside a flow)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return str(run_id) if run_id else None


# ---------------------------------------------------------------------------------------------
# Steps flows call


@step("current-time", title="当前时间 / now")
def current_time() -> datetime:
    """Now, read once: a replay of the flow sees the same instant (each call is its own step)."""
    return wallclock.now()


@step("set-timer", title="定时等待 / set a timer", key="{key}")
def set_timer(case_id: int | None, when: datetime, key: str) -> int:
    """Record the wait (idempotent per run and key)."""
    run_id = current_run_id()
    if run_id is None:
        raise RuntimeError("wait_until runs inside a flow run")
    with session_scope() as session:
        found = session.exec(select(Timer).where(Timer.flow_run_id == run_id, Timer.key == key)).first()
        if found is None:
            found = Timer(
                case_id=case_id, flow_run_id=run_id, key=key, due_at=when, created_at=wallclock.now()
            )
            session.add(found)
            session.flush()
        assert found.id is not None
        return found.id


@step("timer-fired", key="{timer_id}", fresh=bool)
def timer_fired(timer_id: int) -> bool:
    """Has the keeper fired the timer? (read again on every wake-up until it has; then recorded)."""
    with session_scope() as session:
        timer = session.get(Timer, timer_id)
        return timer is not None and timer.fired_at is not None


def timer_key(key: str) -> str:
    return f"timer-{key}"


def wait_until(case_id: int | None, when: datetime, key: str) -> None:
    """Wait, suspended and holding nothing, until the clock keeper fires the timer at `when`.

    Called in a flow body. `key` is fixed per step ("callback-2d"); inside a loop it carries
    the loop's count. A resume that comes early (someone pressed Resume in the UI) only makes
    the run look again and go back to sleep.
    """
    timer_id = set_timer(case_id, when, key)
    attempt = 1
    while not timer_fired(timer_id):
        scripted = responder()
        if scripted is not None:  # the fast test layer: its clock moves to the timer and fires it
            scripted.timer(timer_id)
            as_if_woken()
            continue
        suspend_announced(suspend_key(timer_key(key), attempt), timer_id=timer_id)  # says what it waits for
        attempt += 1


# ---------------------------------------------------------------------------------------------
# Keeper step


def fire_due_timers(now: datetime) -> int:
    """Fire every timer due by `now` (oldest first, each once) and wake its run; returns how many fired."""
    fired = 0
    with session_scope() as session:
        due = session.exec(
            select(Timer.id)
            .where(col(Timer.fired_at).is_(None), Timer.due_at <= now)
            .order_by(col(Timer.due_at), col(Timer.id))
        ).all()
        for timer_id in due:
            # conditional: two keepers (or a keeper and a replay) never fire one timer twice
            result = cast(
                "sa.CursorResult[Any]",
                session.execute(
                    sa.update(Timer)
                    .where(col(Timer.id) == timer_id, col(Timer.fired_at).is_(None))
                    .values(fired_at=now)
                ),
            )
            fired += result.rowcount or 0
    wake_fired_timers(now)
    return fired


def wake_fired_timers(now: datetime, limit: int = 500) -> int:
    """Resume the runs of fired timers not yet woken (also repairs lost resumes); returns how many."""
    with session_scope() as session:
        waiting = session.exec(
            select(Timer)
            .where(col(Timer.fired_at).is_not(None), col(Timer.resumed_at).is_(None))
            .order_by(col(Timer.due_at), col(Timer.id))
            .limit(limit)
        ).all()
    woken = 0
    for timer in waiting:
        outcome = wake_run(timer.flow_run_id, timer_key(timer.key))
        if outcome is Wake.NOT_YET:
            continue
        woken += outcome is Wake.RESUMED
        with session_scope() as session:
            session.execute(sa.update(Timer).where(col(Timer.id) == timer.id).values(resumed_at=now))
    return woken
