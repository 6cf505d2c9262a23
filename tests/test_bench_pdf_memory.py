"""The PDF memory benchmark runs at CI size: printing reports leaves the printing process no larger."""

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


def test_pdf_memory_bench_quick_writes_its_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFTERCARE_")}
    env["AFTERCARE_HOME"] = str(tmp_path / "var")
    out = tmp_path / "pdf_memory.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pdf_memory.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())  # the full-size figures in bench/results stay as they are
    assert result["size"] == "quick" and result["pdfs"] == [5, 20]
    web = result["web_process"]
    assert web["rss_after_20_mb"] - web["rss_after_5_mb"] <= 50 and result["met"] is True
    assert web["worker_rss_peak_mb"] > 0  # the PDFs were printed in the worker, not here
    assert result["font"].endswith("NotoSansCJKtc-Regular.otf")
