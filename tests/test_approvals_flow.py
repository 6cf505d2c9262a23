"""Durable approvals and timers end to end: a real Prefect server and runner, the real web app.

One run of the `approval-probe` flow (tests/fixtures/flows_for_tests.py): the lead approves by
link (after the runner was killed and restarted while the run waited), a wrong-shaped and then a
not-entitled Prefect-UI input are refused, the director rejects through the Prefect-UI form, and
the 2-day timer fires when the clock keeper is ticked with a later `now`.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from tests.conftest import T0


def new_case(title: str) -> int:
    from models import Case
    from models.db import session_scope

    with session_scope() as s:
        case = Case(kind="repair", customer_id=1, title=title, reported_at=T0, created_at=T0, updated_at=T0)
        s.add(case)
        s.flush()
        return case.id


def approval(case_id: int, step: str):
    from models.approvals import Approval
    from models.db import session_scope

    with session_scope() as s:
        return s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == step)).first()


def timer_id(run_id) -> int:
    from models.approvals import Timer
    from models.db import session_scope

    with session_scope() as s:
        return s.exec(select(Timer.id).where(Timer.flow_run_id == str(run_id))).one()


def wait_paused_on(harness, run_id, key: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = harness.read(run_id).state
        if state is not None and state.is_paused() and state.state_details.pause_key == key:
            return
        if state is not None and state.is_final():
            raise AssertionError(f"run ended {state.name}: {state.message}")
        time.sleep(0.2)
    state = harness.read(run_id).state
    raise AssertionError(
        f"run not suspended on {key!r} after {timeout} s (is {state.name}"
        f" on {state.state_details.pause_key!r}); ledger {harness.ledger_keys(run_id)}"
    )


def test_two_approvals_and_a_two_day_timer_survive_a_runner_restart(harness) -> None:
    from flows.clock_keeper import tick
    from models import Event
    from models.db import session_scope
    from models.outbox import Notification
    from web.app import create_app
    from web.approvals import clock

    case_id = new_case("审批与定时器探针")
    run_id = harness.run("approval-probe/approval-probe", {"case_id": case_id, "start": T0.isoformat()})
    wait_paused_on(harness, run_id, "lead-approval-v1")
    assert harness.runner.wait_idle(), "a waiting run must hold no process"

    # the runner dies while the run waits, and comes back: nothing was lost
    harness.kill_runner()
    harness.start_runner()

    lead = approval(case_id, "lead-approval")
    with session_scope() as s:
        [body] = [
            n.body for n in s.exec(select(Notification).where(Notification.key.like(f"approval:{lead.id}:%")))
        ]
    token = re.search(r"/a/([A-Za-z0-9_.\-]+)", body).group(1)

    app = create_app()
    app.dependency_overrides[clock] = lambda: T0 + timedelta(hours=1)
    web = TestClient(app)
    page = web.get(f"/a/{token}")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    done = web.post(f"/a/{token}", data={"csrf": csrf, "decision": "approved", "comment": "同意"})
    assert done.status_code == 200, done.text
    assert approval(case_id, "lead-approval").resumed_at is not None  # decide() woke the run

    wait_paused_on(harness, run_id, "director-approval-v1")
    # a wrong-shaped input is refused by the server; the run stays suspended
    with pytest.raises(RuntimeError):
        harness.resume(run_id, {"decision": "也许", "approver": "吴总监"})
    assert harness.read(run_id).state.is_paused()
    # a well-formed input from someone who is not the approver: recorded nowhere, asked again
    harness.resume(run_id, {"decision": "批准", "comment": "", "approver": "张技术"})
    wait_paused_on(harness, run_id, "director-approval-v1-a2")
    assert approval(case_id, "director-approval").decision is None
    # the director rejects through the Prefect-UI form (the same API call the UI makes)
    harness.resume(run_id, {"decision": "驳回", "comment": "请先做回退演练", "approver": "吴总监"})

    wait_paused_on(harness, run_id, "timer-callback-2d")
    early = tick(T0 + timedelta(days=1))
    assert early["steps"]["tasks.timers.fire_due_timers"] == 0
    assert harness.read(run_id).state.is_paused()
    due = tick(T0 + timedelta(days=2, minutes=1))
    assert due["steps"]["tasks.timers.fire_due_timers"] == 1
    run = harness.wait(run_id, "Completed", timeout=60)
    assert run.state.result() == {"lead": "approved", "director": "rejected"}

    # the database holds the decisions, each made once, through its route
    first, second = approval(case_id, "lead-approval"), approval(case_id, "director-approval")
    assert (first.decision, first.decided_by, first.channel) == ("approved", "张技术", "link")
    assert (second.decision, second.decided_by, second.channel, second.comment) == (
        "rejected",
        "吴总监",
        "prefect_ui",
        "请先做回退演练",
    )
    with session_scope() as s:
        events = Counter(e.kind for e in s.exec(select(Event).where(Event.case_id == case_id)))
    mine = {"approval_requested", "approval_decided", "probe_outcome"}
    assert {k: n for k, n in events.items() if k in mine} == {
        "approval_requested": 2,
        "approval_decided": 2,
        "probe_outcome": 1,
    }

    # every step ran once across four processes, as one task run named by its ledger key; a replay
    # made no task run for a finished step, and the fresh reads (decided yet? fired yet?) make none
    lead_id, director_id = first.id, second.id
    expected = Counter(
        {
            "current-time#1": 1,
            "request-approval:lead-approval-v1#1": 1,
            "request-approval:director-approval-v1#1": 1,
            f"settle-approval:{director_id}#1": 1,  # the refused input: recorded as "nothing decided"
            f"settle-approval:{director_id}#2": 1,  # the director's rejection from the UI form
            "set-timer:callback-2d#1": 1,
            "note-outcome#1": 1,
        }
    )
    # Prefect records task runs from their events, a moment after the flow run's own state
    deadline = time.monotonic() + 20
    while True:
        executed = Counter(t.name for t in harness.task_runs(run_id))
        if executed == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert executed == expected
    ledger = set(harness.ledger_keys(run_id))
    assert set(expected) <= ledger
    assert ledger - set(expected) == {
        f"approval-status:{lead_id}#1",
        f"approval-status:{director_id}#1",
        f"approval-status:{director_id}#2",
        f"timer-fired:{timer_id(run_id)}#1",
    }
    assert tick(T0 + timedelta(days=3))["steps"]["tasks.timers.fire_due_timers"] == 0  # fires once
