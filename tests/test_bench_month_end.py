"""The month-end benchmark runs at CI size and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# a benchmark: deselected by the default run, `uv run pytest -m bench` runs it (.ci/run does)
pytestmark = pytest.mark.bench


def test_month_end_bench_quick_writes_its_figures(tmp_path: Path):
    out = tmp_path / "month_end.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "month_end.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["contracts"] == 300
    # every bench contract (plus the demo's) got its March inspection and two notices
    assert result["inspections_created"] >= 300
    assert result["notices_queued"] == 2 * result["inspections_created"]
    assert result["summaries"] == 100 and result["summary_avg_kb"] > 1
    assert result["plan_within_target"] and result["summary_within_target"]
