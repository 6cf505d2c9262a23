"""The Prefect harness itself: a served flow suspends for input, holds no process, and resumes."""

from __future__ import annotations

import json

import pytest


def test_served_flow_suspends_for_input_and_resumes_with_each_task_once(harness) -> None:
    run_id = harness.run("harness-probe/harness-probe", {"tag": "h1"})
    harness.wait(run_id, "Suspended", timeout=60)
    assert harness.runner.wait_idle()  # waiting holds no process: the run's process exits

    with pytest.raises(RuntimeError):  # a wrong-shaped input is refused; the run stays suspended
        harness.resume(run_id, {"reply": 42})
    assert harness.state_name(run_id) == "Suspended"

    harness.resume(run_id, {"answer": "好"})
    run = harness.wait(run_id, "Completed", timeout=60)
    assert run.state.result() == "h1:after:好"

    lines = [json.loads(x) for x in (harness.home / "probe-executions.log").read_text().splitlines()]
    steps = [x["step"] for x in lines if x["tag"] == "h1"]
    assert steps == ["before", "after"]  # the replay served `before` from its persisted result


def test_a_run_left_running_by_a_dead_runner_is_swept_and_replays_nothing(harness) -> None:
    """DESIGN.md §2 stuck runs: the runner dies mid-step, the run stays Running with no heartbeat;
    the sweep schedules it again and the replay repeats only the step that never finished."""
    import time
    from datetime import timedelta

    from models import wallclock
    from tasks.runs import stuck_after, sweep_stuck_runs

    def steps(tag: str) -> list[str]:
        log = harness.home / "probe-executions.log"
        lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        return [x["step"] for x in lines if x["tag"] == tag]

    run_id = harness.run("harness-probe/harness-probe", {"tag": "stuck", "busy_seconds": 8})
    deadline = time.monotonic() + 60
    while steps("stuck") != ["before", "busy"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert steps("stuck") == ["before", "busy"]
    harness.kill_runner()  # kill -9 of the runner and the run it was executing
    assert harness.state_name(run_id) == "Running"
    # the configured silence passes by a later `now`, not by sleeping: the server stamped the
    # Running state and the heartbeats with the real clock, and nothing beats after the kill
    later = wallclock.now() + stuck_after() + timedelta(seconds=1)
    assert sweep_stuck_runs(later, trust_now=True) == 1
    assert sweep_stuck_runs(later, trust_now=True) == 0  # once

    harness.start_runner()  # the runner comes back and picks the swept run up
    harness.wait(run_id, "Suspended", timeout=90)
    harness.resume(run_id, {"answer": "好"})
    assert harness.wait(run_id, "Completed", timeout=60).state.result() == "stuck:after:好"
    # `before` came from its persisted result; `busy` never finished, so it ran again
    assert steps("stuck") == ["before", "busy", "busy", "after"]
