"""bench/waiting.py --quick runs end to end (its own Prefect server, runner and web) and writes its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# a benchmark: deselected by the default run, `uv run pytest -m bench` runs it (.ci/run does)
pytestmark = pytest.mark.bench


def test_waiting_bench_quick_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "waiting.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "waiting.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        # the bench starts its own server: none of this test session's Prefect settings leak into it
        env={k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AFTERCARE_"))},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["size"] == "quick"
    assert figures["suspended_runs_in_prefect"] == figures["runs_waiting"] == 30
    assert figures["flow_run_processes_while_waiting"] == 0  # waiting holds no process
    assert figures["runner_threads_while_waiting"] < 12  # and no thread per waiting run
    assert figures["click_to_completed_p95_s"] > 0
    # every process of the stack, PSS beside RSS (issue 26): `up` itself and the keeper included
    for state in ("idle", "waiting"):
        roles = {p["role"] for p in figures[state]["processes"]}
        assert {"Prefect server", "supervisor (aftercare up)", "approval web", "runner"} <= roles, roles
        assert all(0 < p["pss_mb"] <= p["rss_mb"] for p in figures[state]["processes"])
        assert figures[state]["ours_pss_mb"] + figures[state]["prefect_pss_mb"] == pytest.approx(
            figures[state]["total_pss_mb"], abs=0.2
        )
    assert "fork server" in {p["role"] for p in figures["idle_fork_server_running"]["processes"]}
    assert "added_pss_kb_per_waiting_case" in figures
