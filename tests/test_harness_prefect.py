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
