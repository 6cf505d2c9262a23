"""Faults on the real stack (DESIGN.md §7 rows 10, 21): a real Prefect server and runner, the
repair flow, the real web pages; the faults injected the way they happen.

- row 21: the forked child that runs a flow is killed with SIGKILL (as the OOM killer would)
  right after a decision; the run ends Crashed; the keeper's sweep schedules it again; the case
  continues with no step repeated and no message sent twice. A run that keeps crashing at one
  step is rescheduled 3 times, then an incident names its case.
- row 10: another process holds the database's write lock while a run resumes after a decision;
  the run waits for the lock and completes its step — not Failed.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from tests.fixtures.locks import sqlite_path, write_lock
from tests.repair_driver import RepairDriver

pytestmark = pytest.mark.timeout(300)

T = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def bj(moment: datetime) -> str:
    return pendulum.instance(moment).in_timezone("Asia/Shanghai").strftime("%Y-%m-%d %H:%M")


DIAGNOSIS = {
    "contacted_at": bj(T + timedelta(minutes=5)),
    "fault_confirmed": "是",
    "result": "缓存策略被改，已恢复",
    "command_log": "$ show controller cache",
    "solved_remotely": "是",
}


@pytest.fixture
def drive(harness: Any) -> RepairDriver:
    from web.app import create_app

    return RepairDriver(harness, TestClient(create_app()))


def start(drive: RepairDriver, title: str) -> tuple[Any, int]:
    request = {
        "customer": "BJYH",
        "site": "亦庄机房",
        "reported_by": "客户 王先生 13900000000",
        "channel": "热线",
        "description": title,
        "severity": 3,
        "reported_at": T.isoformat(),
    }
    run_id = drive.h.run("repair/repair", {"request": request})
    return run_id, drive.case_of_run(run_id)


def decide_without_waking(drive: RepairDriver, case_id: int, run_id: Any) -> Any:
    """The lead's diagnosis is recorded (as the link page records it) but the run is not woken yet:
    the test wakes it itself, under the fault it injects."""
    from tasks.approvals import Approver, decide
    from tasks.links import verify_token

    row = drive.pending(case_id, "diagnosis", run_id)
    token = drive.link_for(row).rsplit("/a/", 1)[1]
    who = Approver.parse(str(verify_token(token, "a", now=row.created_at)["p"]))
    result = decide(
        int(row.id),
        "submitted",
        by=who,
        payload=dict(DIAGNOSIS),
        channel="link",
        now=T + timedelta(minutes=8),
        wake=False,
    )
    assert result.recorded, result.message
    return result.approval


def wake(row: Any) -> None:
    from tasks.approvals import approval_key, run_input_for
    from tasks.timers import Wake, wake_run

    assert wake_run(row.flow_run_id, approval_key(row.step, row.version), run_input_for(row)) is Wake.RESUMED


def wait_running(drive: RepairDriver, run_id: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while drive.h.state_name(run_id) != "Running":
        assert time.monotonic() < deadline, f"run is {drive.h.state_name(run_id)}, not Running"
        time.sleep(0.05)


def record_of(drive: RepairDriver, case_id: int) -> tuple[Counter[str], Counter[tuple[str, str, str]]]:
    """Every event kind of the case, and every message queued for it (recipient, template, key)."""
    from models import Event
    from models.outbox import Notification

    with drive.session() as s:
        kinds = Counter(e.kind for e in s.exec(select(Event).where(Event.case_id == case_id)))
        sent = Counter(
            (n.recipient_name, n.template, n.key)
            for n in s.exec(select(Notification).where(Notification.case_id == case_id))
        )
    return kinds, sent


def test_a_run_whose_process_is_killed_after_a_decision_is_swept_and_continues_without_repeats(
    drive: RepairDriver, notifications
) -> None:
    from tasks.runs import CRASH_EVENT, sweep_crashed_runs

    run_id, case_id = start(drive, "存储阵列告警（进程被杀）")
    row = decide_without_waking(drive, case_id, run_id)
    db = sqlite_path(drive.h.db_url)
    # the run's first write after the decision waits on this lock: the process is surely mid-step
    with write_lock(db, 12):
        wake(row)
        wait_running(drive, run_id)
        time.sleep(3)
        children = drive.h.runner.children()
        assert children, "the run's process is not there"
        for pid in children:
            os.kill(pid, signal.SIGKILL)  # as the OOM killer would
        drive.h.wait(run_id, "Crashed", timeout=30)
    from models.approvals import Approval

    with drive.session() as s:
        assert s.get(Approval, row.id).resumed_at is not None  # woken before the crash: no reconcile will
    before_events, before_sent = record_of(drive, case_id)

    assert sweep_crashed_runs(T + timedelta(minutes=9)) >= 1
    # scheduled again, and perhaps already picked up by the runner ("Submitting") or further
    assert drive.h.state_name(run_id) in {"Scheduled", "Submitting", "Pending", "Running", "Suspended"}
    # the case continues: the run replays to the customer's signature of the service report
    drive.pending(case_id, "service-report-signature", run_id, timeout=120)
    drive.sign_on_report_page(
        case_id, "service-report-signature", T + timedelta(minutes=40), name="王先生", run_id=run_id
    )
    drive.pending(case_id, "fault-report", run_id, timeout=120)

    kinds, sent = record_of(drive, case_id)
    assert kinds[CRASH_EVENT] == 1  # the history says why the step ran in another process
    for kind in ("opened", "first_contact", "remote_diagnosis", "restored", "service_report_signed"):
        assert kinds[kind] == 1, (kind, kinds)
    assert all(kinds[k] >= n for k, n in before_events.items())  # nothing recorded before was lost
    with drive.session() as s:
        from models import Event

        started = Counter(
            e.data["clock"]
            for e in s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "clock.started"))
        )
        steps = Counter(
            (a.step, a.version) for a in s.exec(select(Approval).where(Approval.case_id == case_id))
        )
    assert started and all(n == 1 for n in started.values()), started  # no clock started twice
    assert all(n == 1 for n in steps.values()), steps  # no person asked twice
    assert all(n == 1 for n in sent.values()), sent
    assert set(before_sent) <= set(sent)
    # what the notifier sent: each message once
    drive.tick(T + timedelta(minutes=45))
    bodies = Counter(notifications)
    assert bodies and all(n == 1 for n in bodies.values())
    with drive.session() as s:
        from models import Case

        assert s.get(Case, case_id).status not in {"closed", "archived"}


def test_a_run_resumed_while_another_process_holds_the_write_lock_waits_and_completes_its_step(
    drive: RepairDriver,
) -> None:
    """Issue 15: a repair run resumed during a 20 s lock ended `Failed … database is locked [INSERT
    INTO event …]`. Each step is now a unit of work re-run until the lock goes (tasks.ledger)."""
    run_id, case_id = start(drive, "存储阵列告警（数据库忙）")
    row = decide_without_waking(drive, case_id, run_id)
    with write_lock(sqlite_path(drive.h.db_url), 15) as lock:
        wake(row)
        wait_running(drive, run_id)
        # the runner's SQLite waits 10 s per try, then the step runs again: the run stays Running
        while time.monotonic() < lock.held_at + 14:
            assert drive.h.state_name(run_id) == "Running", drive.h.state_name(run_id)
            time.sleep(0.5)
        released = lock.wait()
    drive.pending(case_id, "service-report-signature", run_id, timeout=120)
    assert time.monotonic() > released
    kinds, _ = record_of(drive, case_id)
    assert [kinds[k] for k in ("first_contact", "remote_diagnosis", "restored")] == [1, 1, 1]
    from models import Event

    with drive.session() as s:
        first = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "first_contact")).one()
        assert first.at == T + timedelta(minutes=5)  # the step's own values, not the moment of the retry


def test_a_run_that_keeps_crashing_at_one_step_is_rescheduled_three_times_then_an_incident_names_its_case(
    harness,
) -> None:
    """The sweep's count is per run and step: three reschedules, then an incident and no more; a
    run that moved on to a new step may crash again; a closed case's run is left alone; a run
    Failed only on a busy database is rescheduled like a crashed one."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Crashed, Failed

    from models import Case, Event, append_event
    from models.cases import Incident
    from models.db import session_scope
    from tasks.runs import CRASH_EVENT, GAVE_UP_EVENT, INCIDENT_KIND, sweep_crashed_runs
    from tests.fixtures.flows_for_tests import harness_probe

    now = T + timedelta(hours=3)
    with get_client(sync_client=True) as client:
        # runs of no deployment: no runner starts them when they are scheduled again
        runs = [
            client.create_flow_run(harness_probe, parameters={"tag": f"crash-{i}"}, state=Crashed())
            for i in range(3)
        ]
    ids = [str(r.id) for r in runs]
    with session_scope() as s:
        cases = []
        for i, run_id in enumerate(ids):
            case = Case(
                kind="repair",
                customer_id=1,
                title=f"反复中断 {i}",
                reported_at=T,
                created_at=T,
                updated_at=T,
                flow_run_id=run_id,
                status="closed" if i == 2 else "open",
                closed_at=T if i == 2 else None,
            )
            s.add(case)
            s.flush()
            append_event(s, case.id, "opened", at=T, key="opened")
            cases.append(case.id)

    def state(run_id: str) -> str:
        return harness.state_name(run_id)

    def crash(run_id: str, state=None) -> None:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(
                run_id, state or Crashed(message="Flow run process exited with signal 9"), force=True
            )

    def ours(now_: datetime) -> None:
        sweep_crashed_runs(now_)

    try:
        for attempt in range(3):
            ours(now)
            assert state(ids[0]) == "Scheduled", attempt
            assert state(ids[2]) == "Crashed"  # a closed case: nothing left to run
            crash(ids[0])
        ours(now)
        assert state(ids[0]) == "Crashed"  # the fourth crash at the same step: given up
        ours(now)
        with session_scope() as s:
            incidents = s.exec(
                select(Incident).where(Incident.case_id == cases[0], Incident.kind == INCIDENT_KIND)
            ).all()
            kinds = Counter(e.kind for e in s.exec(select(Event).where(Event.case_id == cases[0])))
            number = s.get(Case, cases[0]).number
        assert len(incidents) == 1 and number in incidents[0].message and "人工处理" in incidents[0].message
        assert kinds[CRASH_EVENT] == 3 and kinds[GAVE_UP_EVENT] == 1
        from tasks.notify import open_incidents

        with session_scope() as s:
            assert incidents[0].id in {i.id for i in open_incidents(s)}  # on the dispatcher's list

        # the run got further (a new event) and crashed there: counted afresh
        with session_scope() as s:
            append_event(s, cases[0], "remote_diagnosis", at=now, key="remote_diagnosis")
        ours(now)
        assert state(ids[0]) == "Scheduled"

        # Failed on a busy database (the step's bound ran out): rescheduled; Failed otherwise: not
        crash(
            ids[1],
            Failed(message="Flow run encountered an exception: DatabaseBusy: 数据库繁忙，900 秒内未能完成"),
        )
        ours(now)
        assert state(ids[1]) == "Scheduled"
        crash(ids[1], Failed(message="Flow run encountered an exception: IntakeError: 找不到客户"))
        ours(now)
        assert state(ids[1]) == "Failed"
    finally:
        with get_client(sync_client=True) as client:
            for run_id in ids:
                client.set_flow_run_state(run_id, Cancelled(), force=True)
        with session_scope() as s:
            for case_id in cases:
                s.get(Case, case_id).status = "closed"
                s.get(Case, case_id).closed_at = now
