"""DESIGN.md §7 row 2: the Prefect server restarted while runs wait → every waiting run is resumable.

A handful of suspended runs (5, not the design's 100: each start, suspend and resume costs the
2-core test machine about a second, and five already prove that the waits live in the server's
database, not in its memory). The runner is the same process before and after the restart.
"""

from __future__ import annotations

import json

RUNS = 5


def test_suspended_runs_survive_a_prefect_server_restart_and_each_resumes_once(harness) -> None:
    tags = [f"restart-{i}" for i in range(RUNS)]
    runs = {tag: harness.run("harness-probe/harness-probe", {"tag": tag}) for tag in tags}
    for run_id in runs.values():
        harness.wait(run_id, "Suspended", timeout=90)
    assert harness.runner.wait_idle(), "a waiting run must hold no process"

    harness.restart_server()

    for run_id in runs.values():
        assert harness.state_name(run_id) == "Suspended"
    for tag, run_id in runs.items():
        harness.resume(run_id, {"answer": f"好-{tag}"})
    for tag, run_id in runs.items():
        run = harness.wait(run_id, "Completed", timeout=90)
        assert run.state.result() == f"{tag}:after:好-{tag}"
    assert harness.runner.alive(), "the runner outlived the server's restart"

    # each step ran once: `before` before the restart, `after` once after its resume
    lines = [json.loads(x) for x in (harness.home / "probe-executions.log").read_text().splitlines()]
    for tag in tags:
        assert [x["step"] for x in lines if x["tag"] == tag] == ["before", "after"], tag
