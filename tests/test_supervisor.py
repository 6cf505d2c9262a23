"""The pieces of `aftercare up` that need no Prefect, in-process and fast: the supervisor restarts a
child that died with back-off and logs it, stops whole process groups, and turns Ctrl-C/SIGTERM into
`Stop` wherever it waits; the keeper's lease lets exactly one clock keeper run; the Prefect
credential is generated once, private, and given to every client. (`tests/test_up.py` drives the
real `aftercare up`.)"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from deployments.supervisor import Stop, Supervisor
from tests.conftest import T0

TTL = timedelta(seconds=60)


# --- the supervisor --------------------------------------------------------------------------


def _run_until(sup: Supervisor, done, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not reached"
        sup.poll()
        time.sleep(0.02)


def test_a_child_that_dies_is_restarted_with_doubling_back_off_and_each_restart_is_logged(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    sup = Supervisor(lines.append, tmp_path / "logs", base_delay=0.1, cap=0.4, stable_after=60)
    child = sup.add("flaky", [sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ))
    try:
        _run_until(sup, lambda: child.starts >= 5)
    finally:
        sup.stop_all(grace=1)
    delays = [float(line.split(" in ")[1].split(" s")[0]) for line in lines]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.4]  # doubled, then capped
    assert all("restarting flaky: exited with code 3" in line for line in lines)
    logged = (tmp_path / "logs" / "supervisor.log").read_text().splitlines()
    assert len(logged) == len(lines) and "restarting flaky" in logged[0]


def test_a_child_that_stayed_up_a_while_restarts_after_the_shortest_delay(tmp_path: Path) -> None:
    lines: list[str] = []
    sup = Supervisor(lines.append, tmp_path / "logs", base_delay=0.1, cap=5, stable_after=0.2)
    child = sup.add("steady", [sys.executable, "-c", "import time; time.sleep(0.4)"], dict(os.environ))
    try:
        _run_until(sup, lambda: child.starts >= 3)
    finally:
        sup.stop_all(grace=1)
    assert [float(line.split(" in ")[1].split(" s")[0]) for line in lines[:2]] == [0.1, 0.1]


def test_when_the_server_dies_its_dependent_runner_starts_afresh_and_its_group_lives_on(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    sup = Supervisor(lines.append, tmp_path / "logs", base_delay=0.1)
    # the "runner" leaves a "flow run" in its group: it must survive the runner's recycling
    runner_script = "import subprocess, time; subprocess.Popen(['sleep', '120']); time.sleep(120)"
    runner = sup.add(
        "runner", [sys.executable, "-c", runner_script], dict(os.environ), kill_group_on_exit=False
    )
    server = sup.add(
        "server",
        [sys.executable, "-c", "import time; time.sleep(0.5)"],
        dict(os.environ),
        dependents=["runner"],
    )
    try:
        _run_until(sup, lambda: server.starts >= 2 and runner.starts >= 2)
        assert any("restarting runner: server exited" in line for line in lines), lines
        assert runner.failures == 0  # asked to restart: not counted as a failure
        flow_runs = [p for p in psutil.process_iter() if _in_group(p, runner.groups[0])]
        assert flow_runs and all(p.is_running() for p in flow_runs)
    finally:
        sup.stop_all(grace=1)


def test_a_one_shot_child_that_succeeded_is_not_started_again(tmp_path: Path) -> None:
    sup = Supervisor(lambda _line: None, tmp_path / "logs", base_delay=0.05)
    child = sup.add("once", [sys.executable, "-c", "pass"], dict(os.environ), restart=False)
    _run_until(sup, lambda: child.done)
    time.sleep(0.2)
    sup.poll()
    assert child.starts == 1


def test_stopping_ends_each_childs_whole_process_group_also_one_whose_leader_died(tmp_path: Path) -> None:
    sup = Supervisor(lambda _line: None, tmp_path / "logs", base_delay=60)
    # a child that leaves a grandchild behind in its group, then exits (as a runner leaves a flow run)
    script = "import subprocess, sys, time; subprocess.Popen(['sleep', '120']); time.sleep(0.3)"
    child = sup.add("leaver", [sys.executable, "-c", script], dict(os.environ), kill_group_on_exit=False)
    stays = sup.add("stays", ["sleep", "120"], dict(os.environ))
    _run_until(sup, lambda: child.restart_due is not None)
    orphans = [p for p in psutil.process_iter(["cmdline"]) if _in_group(p, child.groups[0])]
    assert orphans, "the grandchild lives on after its parent died"
    started = time.monotonic()
    sup.stop_all(grace=2)
    assert time.monotonic() - started < 3
    gone, alive = psutil.wait_procs(orphans, timeout=2)
    assert not alive and stays.proc is not None and stays.proc.poll() is not None


def _in_group(proc: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(proc.pid) == pgid
    except (ProcessLookupError, psutil.Error):
        return False


def test_sigterm_raises_stop_wherever_the_supervisor_waits_and_is_held_only_while_a_child_starts(
    tmp_path: Path,
) -> None:
    sup = Supervisor(lambda _line: None, tmp_path / "logs")
    sup.install_signals()
    try:
        with pytest.raises(Stop):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # a wait the signal must cut short
    finally:
        sup.restore_signals()
    # Held while a child starts: checked in a process of its own, single-threaded like the supervisor
    # (`deployments.supervise`). In this test process other tests' threads leave SIGINT unblocked, so
    # the kernel may hand a process-directed signal to one of them and the handler runs at once.
    script = """
import os, signal, sys
from pathlib import Path
from deployments.supervisor import Stop, Supervisor, held_signals
sup = Supervisor(lambda _line: None, Path(sys.argv[1]))
sup.install_signals()
arrived = []
try:
    with held_signals():
        os.kill(os.getpid(), signal.SIGINT)
        arrived.append("still inside")  # held: the block finishes first
except Stop:
    print("stopped after", arrived)
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "logs")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.stdout.strip() == "stopped after ['still inside']", done.stderr


def test_a_child_starts_with_stop_signals_unblocked(tmp_path: Path) -> None:
    sup = Supervisor(lambda _line: None, tmp_path / "logs")
    out = tmp_path / "mask"
    # the child writes the signals it blocks (Linux: SigBlk in /proc/self/status, a hex bit mask)
    script = (
        "import re; status = open('/proc/self/status').read(); "
        f"open({str(out)!r}, 'w').write(re.search(r'SigBlk:\\s*([0-9a-f]+)', status).group(1))"
    )
    child = sup.add("mask", [sys.executable, "-c", script], dict(os.environ), restart=False)
    _run_until(sup, lambda: child.done)
    blocked = int(out.read_text(), 16)
    assert not blocked & (1 << (signal.SIGINT - 1)) and not blocked & (1 << (signal.SIGTERM - 1))


# --- the keeper's lease ----------------------------------------------------------------------


def test_one_holder_at_a_time_until_its_lease_runs_out(db_url: str) -> None:
    from models.db import session_scope
    from models.leases import current, release, renew, take

    with session_scope(db_url) as s:
        assert take(s, "clock-keeper", "A", T0, TTL)
        assert not take(s, "clock-keeper", "B", T0 + timedelta(seconds=30), TTL)
        assert renew(s, "clock-keeper", "A", T0 + timedelta(seconds=30), TTL)  # now until T0 + 90 s
        assert not take(s, "clock-keeper", "B", T0 + timedelta(seconds=89), TTL)
        assert take(s, "clock-keeper", "B", T0 + timedelta(seconds=91), TTL)  # A stopped renewing
        assert not renew(s, "clock-keeper", "A", T0 + timedelta(seconds=92), TTL)  # A learns it lost it
        assert current(s, "clock-keeper", T0 + timedelta(seconds=92)).holder == "B"
        assert release(s, "clock-keeper", "B")
        assert current(s, "clock-keeper", T0 + timedelta(seconds=93)) is None
        assert take(s, "clock-keeper", "A", T0 + timedelta(seconds=93), TTL)  # at once after a release


def test_a_second_keeper_exits_at_once_and_a_keeper_releases_its_lease_when_it_ends(db_url: str) -> None:
    from flows.clock_keeper import KEEPER_LEASE, clock_keeper, lease_holder
    from models.db import session_scope
    from models.leases import take
    from models.wallclock import now

    with session_scope(db_url) as s:
        assert take(s, KEEPER_LEASE, "the-running-keeper", now(), TTL)
    started = time.monotonic()
    assert clock_keeper.fn(max_ticks=3, interval_seconds=1) == 0  # no tick: it exits
    assert time.monotonic() - started < 2
    assert lease_holder(now()) == "the-running-keeper"

    with session_scope(db_url) as s:  # the other keeper's lease ran out (its process was killed)
        assert take(s, KEEPER_LEASE, "the-running-keeper", now() - TTL - timedelta(seconds=1), TTL)
    assert clock_keeper.fn(max_ticks=1) == 1
    assert lease_holder(now()) is None  # released on the way out: the next keeper starts at once


# --- the Prefect credential ------------------------------------------------------------------


def test_the_prefect_credential_is_generated_once_private_and_given_to_server_and_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployments.prefect_env import auth_string, prefect_env
    from models.settings import Settings

    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    settings = Settings(home=tmp_path / "var", secret_key="k")
    env = prefect_env(settings)
    path = tmp_path / "var" / "prefect_auth"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    user, _, password = path.read_text().partition(":")
    assert user == "aftercare" and len(password) >= 24
    assert env["PREFECT_API_AUTH_STRING"] == env["PREFECT_SERVER_API_AUTH_STRING"] == path.read_text()
    assert auth_string(Settings(home=tmp_path / "var", secret_key="k")) == path.read_text()  # reused

    # a Prefect server of the operator's: its credential is the operator's, none is invented
    theirs = Settings(home=tmp_path / "other", secret_key="k", prefect_api_url="http://prefect.example/api")
    assert "PREFECT_API_AUTH_STRING" not in prefect_env(theirs)
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "ops:s3cret")
    env = prefect_env(theirs)
    assert env["PREFECT_API_AUTH_STRING"] == "ops:s3cret" and "PREFECT_SERVER_API_AUTH_STRING" not in env


def test_the_time_to_ready_counts_from_the_start_of_the_process() -> None:
    script = "import time; time.sleep(0.5); from deployments.up import process_age; print(process_age())"
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert 0.5 <= float(done.stdout) < 30


def test_the_process_that_supervises_imports_the_standard_library_only() -> None:
    """issue 26: `aftercare up` execs deployments.supervise once it has checked and migrated; that
    process loads no Prefect, SQLModel/SQLAlchemy, pydantic, httpx or aftercare model (~12 MB PSS
    instead of ~86)."""
    import subprocess
    import sys

    code = (
        "import sys, deployments.supervise; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "deployments" in loaded
    heavy = {
        "prefect",
        "sqlmodel",
        "sqlalchemy",
        "pydantic",
        "pydantic_settings",
        "httpx",
        "typer",
        "models",
        "flows",
        "tasks",
        "web",
    }
    assert not heavy & loaded, sorted(heavy & loaded)
