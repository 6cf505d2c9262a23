"""The outbox benchmark runs at CI size and reports every row sent exactly once."""

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


def test_outbox_bench_quick_writes_its_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFTERCARE_")}
    env["AFTERCARE_HOME"] = str(tmp_path / "var")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "outbox.py"),
            "--quick",
            "--out",
            str(tmp_path / "outbox.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "outbox.json").read_text())  # the full-size figures stay as they are
    assert result["size"] == "quick" and result["database"] == "sqlite"
    assert result["messages_sent"] == result["expected_messages"] == result["rows_sent_exactly_once"] == 800
    assert result["send_rows_per_s_one_notifier"] > 0 and result["send_rows_per_s_two_notifiers"] > 0
