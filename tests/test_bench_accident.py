"""CI runs the accident keeper benchmark at its quick size and checks the figures it wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# a benchmark: deselected by the default run, `uv run pytest -m bench` runs it (.ci/run does)
pytestmark = pytest.mark.bench


def test_accident_bench_quick_writes_exact_figures(tmp_path):
    out = tmp_path / "accident.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "accident.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["accidents"] == 40 and figures["hours"] == 26
    assert figures["progress_updates"] == figures["progress_updates_expected"] == 40 * 26
    assert figures["vendor_daily_reports"] == figures["vendor_daily_reports_expected"] == 20
    assert figures["standby_machines"] == 40 and figures["exact"] is True
    assert figures["outbox_rows_per_tick_p50"] == 80  # coordinator + customer, per accident
