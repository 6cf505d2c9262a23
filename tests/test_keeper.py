"""The clock keeper: a tick runs every step and reports one that fails;
a keeper restarted mid-ladder, a duplicate keeper, or one that was down for 3 hours fires every
overdue step once, in order."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from flows.clock_keeper import KEEPER_STEPS, clock_keeper, sleep_seconds, step_name, tick
from models import Case
from models.clocks import Clock, Escalation
from models.db import session_scope
from models.outbox import Notification
from rules.calendar import add_working_days
from tasks.clocks import escalate_stale_records, fire_due_clocks, start_clock

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=SH).astimezone(UTC)  # Monday 10:00
ROOT = Path(__file__).resolve().parent.parent
CLOCK_STEPS = [fire_due_clocks, escalate_stale_records]


def new_restore_clock(session: Session, severity: int = 2, at: datetime = T0) -> int:
    case = Case(
        kind="repair",
        customer_id=1,
        site_id=1,
        contract_id=1,
        severity=severity,
        title="数据库主机宕机",
        reported_at=at,
        created_at=at,
        updated_at=at,
    )
    session.add(case)
    session.commit()
    clock = start_clock(session, case.id, "restore", started_at=at, severity=severity)  # type: ignore[arg-type]
    session.commit()
    return clock.id  # type: ignore[return-value]


def fired(session: Session, clock_id: int) -> list[tuple[int, datetime, datetime]]:
    """(level, due_at, fired_at) of a clock's escalations in the order they were written."""
    rows = session.exec(
        select(Escalation).where(Escalation.clock_id == clock_id).order_by(Escalation.id)
    ).all()
    return [(e.level, e.due_at, e.fired_at) for e in rows]


def notification_keys(session: Session) -> list[str]:
    """Distinct notification keys in the order their first row was written."""
    keys: list[str] = []
    for key in session.exec(select(Notification.key).order_by(Notification.id)).all():
        if key not in keys:
            keys.append(key)
    return keys


def test_tick_reports_a_failing_step_and_runs_the_others(demo: str, caplog: pytest.LogCaptureFixture) -> None:
    with session_scope() as s:
        clock_id = new_restore_clock(s)
    caplog.set_level(logging.WARNING, logger="aftercare.keeper")
    # a real function that raises when handed a datetime: a failing step
    result = tick(T0 + timedelta(minutes=1), steps=[add_working_days, *CLOCK_STEPS])  # type: ignore[list-item]
    assert [e["step"] for e in result["errors"]] == ["rules.calendar.add_working_days"]
    assert "TypeError" in result["errors"][0]["error"] or "CalendarError" in result["errors"][0]["error"]
    assert result["steps"]["tasks.clocks.fire_due_clocks"] == 1  # the other steps still ran
    assert "rules.calendar.add_working_days failed" in caplog.text
    with session_scope() as s:
        assert [lv for lv, _, _ in fired(s, clock_id)] == [1]


def test_default_steps_include_every_area_and_a_tick_never_crashes(demo: str) -> None:
    for name in (
        "tasks.timers.fire_due_timers",
        "tasks.approvals.reconcile",
        "tasks.clocks.fire_due_clocks",
        "tasks.notify.send_due_step",
    ):
        assert name in {step_name(step) for step in KEEPER_STEPS}
    result = tick(T0)
    assert set(result["steps"]) == {step_name(step) for step in KEEPER_STEPS}
    assert result["errors"] == [], result["errors"]


def test_keeper_down_for_3_hours_catches_up_each_step_once_in_order(demo: str) -> None:
    with session_scope() as s:
        clock_id = new_restore_clock(s, severity=2)  # ladder 10:00, 12:00, 14:00; breach 14:00
    tick(T0 + timedelta(hours=1, minutes=30), steps=CLOCK_STEPS)  # the last tick before the outage
    back = T0 + timedelta(hours=4, minutes=30)  # 3 hours later
    result = tick(back, steps=CLOCK_STEPS)
    assert result["steps"]["tasks.clocks.fire_due_clocks"] == 3
    with session_scope() as s:
        assert fired(s, clock_id) == [
            (1, T0, T0 + timedelta(hours=1, minutes=30)),
            (2, T0 + timedelta(hours=2), back),
            (0, T0 + timedelta(hours=4), back),  # the breach before level 3 due at the same moment
            (3, T0 + timedelta(hours=4), back),
        ]
        # level 1 (where the case starts) is recorded without a message
        assert notification_keys(s) == [
            f"clock:{clock_id}:L2",
            f"clock:{clock_id}:breach",
            f"clock:{clock_id}:L3",
        ]
        clock = s.get(Clock, clock_id)
        assert clock is not None and clock.level == 3 and clock.next_check_at == T0 + timedelta(days=1)
    # ticking again — at the same moment or later — repeats nothing
    assert tick(back, steps=CLOCK_STEPS)["done"] == 0
    assert tick(back + timedelta(hours=1), steps=CLOCK_STEPS)["done"] == 0


def test_keeper_restarted_mid_ladder_fires_the_rest_once(demo: str) -> None:
    with session_scope() as s:
        clock_id = new_restore_clock(s, severity=1)
    assert tick(T0 + timedelta(hours=2, minutes=30), steps=CLOCK_STEPS)["done"] == 2  # L1, L2
    # a new keeper process: it replays the last tick, then carries on
    script = (
        "import json, sys; from datetime import datetime; from flows.clock_keeper import tick\n"
        "from tasks.clocks import escalate_stale_records, fire_due_clocks\n"
        "steps = [fire_due_clocks, escalate_stale_records]\n"
        "out = [tick(datetime.fromisoformat(t), steps=steps) for t in sys.argv[1:]]\n"
        "print(json.dumps([[r['done'], len(r['errors'])] for r in out]))\n"
    )
    times = [(T0 + timedelta(hours=2, minutes=30)).isoformat(), (T0 + timedelta(hours=5)).isoformat()]
    proc = subprocess.run(
        [sys.executable, "-c", script, *times],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
        [0, 0],
        [2, 0],
    ]  # replay: nothing; then breach + L3
    with session_scope() as s:
        assert [lv for lv, _, _ in fired(s, clock_id)] == [1, 2, 0, 3]
        assert len(notification_keys(s)) == 3  # L2, breach, L3 (level 1 is recorded without a message)


def test_duplicate_keepers_fire_each_step_once(demo: str) -> None:
    with session_scope() as s:
        clock_ids = [new_restore_clock(s, severity=2) for _ in range(20)]
    later = T0 + timedelta(days=2)
    results: list[dict] = []  # type: ignore[type-arg]
    barrier = threading.Barrier(2)

    def keeper() -> None:
        barrier.wait()
        results.append(tick(later, steps=CLOCK_STEPS))

    threads = [threading.Thread(target=keeper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(not r["errors"] for r in results), results
    # each clock: L1-L4 and its breach, written once between the two keepers
    assert sum(r["steps"]["tasks.clocks.fire_due_clocks"] for r in results) == 20 * 5
    with session_scope() as s:
        for clock_id in clock_ids:
            assert sorted(lv for lv, _, _ in fired(s, clock_id)) == [0, 1, 2, 3, 4]
        keys = s.exec(select(Notification.idempotency_key)).all()
        assert len(keys) == len(set(keys))


def test_keeper_sleeps_until_the_next_due_time_capped() -> None:
    assert sleep_seconds(T0, T0 + timedelta(seconds=1.5)) == 1.5
    assert sleep_seconds(T0, T0 + timedelta(hours=1)) == 5.0
    assert sleep_seconds(T0, T0 - timedelta(seconds=3)) == 0.0
    assert sleep_seconds(T0, None) == 5.0


def test_keeper_flow_loop_reads_the_wall_clock_and_ticks(demo: str) -> None:
    # a clock started long ago: the loop's own `now` (the wall clock) is past all of it
    with session_scope() as s:
        clock_id = new_restore_clock(s, severity=2, at=datetime(2026, 1, 5, 2, 0, tzinfo=UTC))
    assert clock_keeper.fn(max_ticks=1) == 1
    with session_scope() as s:
        assert sorted(lv for lv, _, _ in fired(s, clock_id)) == [0, 1, 2, 3, 4]


# --- the keeper hosted in a process that stays up (the runner under `aftercare up`) -------------


def test_a_hosted_keeper_waits_for_a_free_lease_runs_as_one_flow_run_and_releases_it_when_stopped(
    demo: str, prefect_server: str
) -> None:
    """issue 26: the keeper lives on a thread of the runner process (flows.clock_keeper.host) instead
    of an interpreter of its own; still exactly one keeper by the lease, still a flow run in Prefect."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    from flows.clock_keeper import HOST_STOP, KEEPER_LEASE, LEASE_TTL, host, lease_holder, stop_hosting
    from models.leases import take
    from models.wallclock import now

    with session_scope() as s:  # another keeper (a runner that is still up) holds the lease
        assert take(s, KEEPER_LEASE, "other-runner:1", now(), LEASE_TTL)
    HOST_STOP.clear()
    thread = threading.Thread(target=host, kwargs={"check_seconds": 0.2}, daemon=True)
    thread.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=2)
        while datetime.now(UTC) < deadline:
            assert lease_holder(now()) == "other-runner:1"  # it never takes a held lease
        with session_scope() as s:  # that runner was killed: its lease ran out
            assert take(
                s, KEEPER_LEASE, "other-runner:1", now() - LEASE_TTL - timedelta(seconds=1), LEASE_TTL
            )
        deadline = datetime.now(UTC) + timedelta(seconds=60)
        while (holder := lease_holder(now())) in (None, "other-runner:1"):
            assert datetime.now(UTC) < deadline, "the hosted keeper did not take the free lease"
        with get_client(sync_client=True) as client:  # the holder is the keeper's flow run, Running
            run = client.read_flow_run(holder)  # type: ignore[arg-type]
            assert run.state is not None and run.state.is_running()
            assert run.flow_id == client.read_flow_by_name("clock-keeper").id
    finally:
        stop_hosting()  # the runner stops: the lease is released, the keeper's thread parked
    assert lease_holder(now()) is None  # the next runner's keeper starts at once
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(holder, Cancelled(), force=True)  # what `aftercare up` does when it stops
        time.sleep(6)  # past the keeper's next wake-up: parked, it renews nothing and reports nothing
        assert lease_holder(now()) is None
        state = client.read_flow_run(holder).state  # type: ignore[arg-type]
        assert state is not None and state.is_cancelled()
    assert thread.is_alive()  # parked until the process ends (a daemon thread)
    HOST_STOP.clear()  # for the tests after this one (the parked thread stays parked)
