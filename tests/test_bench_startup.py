"""The start-up benchmark runs at CI size: `aftercare up` becomes ready, its keeper runs, it stops."""

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


def test_startup_bench_quick_writes_its_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFTERCARE_", "PREFECT_"))}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "startup.py"),
            "--quick",
            "--out",
            str(tmp_path / "startup.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "startup.json").read_text())
    assert result["size"] == "quick" and result["rounds"] == 1
    [first] = result["first_start"]
    # `up` counts from its own start and prints one decimal; the bench counts from just before the launch
    assert 0 < first["ready_printed_s"] <= first["ready_s"] + 0.1
    assert first["keeper_running_s"] >= first["ready_s"]  # the keeper starts once the stack is ready
    assert 0 < first["stop_s"] <= 5
    assert "time to ready" in done.stdout
