"""The KPI benchmark (bench/kpi.py) runs at CI size and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# a benchmark: deselected by the default run, `uv run pytest -m bench` runs it (.ci/run does)
pytestmark = pytest.mark.bench


def test_kpi_bench_quick_writes_its_figures(tmp_path: Path):
    out = tmp_path / "kpi.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "kpi.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    # the bench itself checks the figures against what it generated (faults, inspections, complaints)
    assert result["quick"] is True and result["contracts"] == result["rows"] == 500
    assert result["events"] > 10_000
    assert result["within_target"], result
