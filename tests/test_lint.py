"""The code stays lint- and type-clean and formatted: `ruff check .`, `ruff format --check .` and mypy,
run the way a developer runs them.

Both run through this interpreter (`python -m ...`), so they are the venv's versions with the
settings in pyproject.toml. mypy keeps its cache in `.mypy_cache/`: a warm run takes about a second.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MYPY_TARGETS = ["flows", "tasks", "models", "rules", "web", "deployments"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_reports_nothing() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, f"ruff check . failed:\n{result.stdout}{result.stderr}"


def test_ruff_format_changes_nothing() -> None:
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, (
        f"ruff format --check . failed (run `uv run ruff format .`):\n{result.stdout}{result.stderr}"
    )


def test_mypy_reports_nothing() -> None:
    result = _run("mypy", *MYPY_TARGETS)
    assert result.returncode == 0, f"mypy {' '.join(MYPY_TARGETS)} failed:\n{result.stdout}{result.stderr}"
