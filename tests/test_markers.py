"""The default run leaves out the benchmarks and the browser test; each of them carries its marker."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_bench_file_is_marked_bench_and_the_default_run_deselects_it() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    args = shlex.split(options["addopts"])
    assert args[args.index("-m") + 1] == "not bench and not browser"
    registered = {line.split(":")[0] for line in options["markers"]}
    assert {"bench", "browser"} <= registered
    bench_files = sorted((ROOT / "tests").glob("test_bench_*.py"))
    assert bench_files
    unmarked = [p.name for p in bench_files if "pytestmark = pytest.mark.bench" not in p.read_text()]
    assert unmarked == []
    # a test that runs a benchmark script (they all take --quick) lives in a test_bench_*.py file
    elsewhere = [p.name for p in (ROOT / "tests").glob("test_*.py")
                 if not p.name.startswith("test_bench_") and p.name != "test_markers.py" and '"--quick"' in p.read_text()]
    assert elsewhere == []


def test_ci_runs_the_default_run_then_the_benchmarks_then_the_browser() -> None:
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip().startswith("uv run pytest")]
    assert steps[0] == "uv run pytest"  # the README's command comes first; other steps may go between
    assert steps.index("uv run pytest -m bench") < steps.index("uv run pytest -m browser")
    # the browser test needs Chromium: .ci/run installs Debian's package when it is missing
    assert "need+=(chromium)" in (ROOT / ".ci" / "run").read_text()
