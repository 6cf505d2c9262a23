"""The default run leaves out the real layer, the benchmarks and the browser test; each carries its
marker, and .ci/run runs every layer."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_bench_file_is_marked_bench_and_the_default_run_deselects_it() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    args = shlex.split(options["addopts"])
    assert args[args.index("-m") + 1] == "not real and not bench and not browser"
    registered = {line.split(":")[0] for line in options["markers"]}
    assert {"real", "bench", "browser"} <= registered
    bench_files = sorted((ROOT / "tests").glob("test_bench_*.py"))
    assert bench_files
    unmarked = [p.name for p in bench_files if "pytestmark = pytest.mark.bench" not in p.read_text()]
    assert unmarked == []
    # a test that runs a benchmark script (they all take --quick) lives in a test_bench_*.py file
    elsewhere = [
        p.name
        for p in (ROOT / "tests").glob("test_*.py")
        if not p.name.startswith("test_bench_")
        and p.name != "test_markers.py"
        and '"--quick"' in p.read_text()
    ]
    assert elsewhere == []


def test_ci_runs_the_default_run_then_the_real_layer_the_benchmarks_and_the_browser() -> None:
    steps = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith("uv run pytest")
    ]
    assert steps[0] == "uv run pytest"  # the README's command comes first; other steps may go between
    assert (
        steps.index("uv run pytest -m real")
        < steps.index("uv run pytest -m bench")
        < steps.index("uv run pytest -m browser")
    )
    # the browser test needs Chromium: .ci/run installs Debian's package when it is missing
    assert "need+=(chromium)" in (ROOT / ".ci" / "run").read_text()


def test_the_real_layer_is_marked_by_its_fixtures_and_left_out_of_the_default_run(
    pytestconfig: pytest.Config,
) -> None:
    """Every test on a real Prefect server and runner carries `real` (tests/conftest.py REAL_FIXTURES),
    so the default run never starts one; `aftercare up` in a subprocess is marked in its files."""
    import subprocess
    import sys

    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-m",
            "real",
            "-p",
            "no:randomly",
            "tests/test_repair_flow.py",
            "tests/test_repair_branches.py",
            "tests/test_up.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    real = {line.split("::")[0] for line in listed.stdout.splitlines() if "::" in line}
    assert real == {"tests/test_repair_flow.py", "tests/test_up.py"}, listed.stdout + listed.stderr
