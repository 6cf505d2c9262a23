"""The repair benchmark runs at CI size and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# a benchmark: deselected by the default run, `uv run pytest -m bench` runs it (.ci/run does)
pytestmark = pytest.mark.bench


@pytest.mark.timeout(400)
def test_repair_bench_quick_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "repair.json"
    done = subprocess.run(
        [sys.executable, "bench/repair.py", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["bench"] == "repair" and result["quick"] is True and result["path"].startswith("on site")
    assert result["direct_seconds"] > 0 and result["orchestrated_seconds"] > result["direct_seconds"]
    assert (
        abs(result["ratio"] - result["orchestrated_seconds"] / result["direct_seconds"])
        <= 0.02 * result["ratio"]
    )
    assert "ratio:" in done.stdout
    # no resume waited for a retry: the server begins its SQLite write transactions IMMEDIATE
    assert result["prefect_database_locked_errors"] == 0
    # per wait: the click → next-wait cycle and its legs; Running → Suspended for every start of the run
    waits = result["suspensions_per_repair"]
    assert len(result["cycle_seconds_by_wait"]) == waits and all(
        c > 0 for c in result["cycle_seconds_by_wait"]
    )
    assert set(result["cycle_legs_median"]) == {"resume", "poll", "start", "replay_to_wait"}
    assert len(result["running_to_suspended_by_run"]) == waits + 1
    # the step ledger: one Prefect task run per new step, none for a replayed one
    assert 0 < result["task_runs_per_repair"] <= result["distinct_steps_per_repair"]
    assert "cycle click → next wait" in done.stdout
