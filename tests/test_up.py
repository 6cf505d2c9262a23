"""Faults injected into the real `aftercare up`, run as a subprocess the way a user runs it
(DESIGN.md §7 rows 22, 23, 27; issue 15):

- SIGTERM at several moments of start-up: `up` is gone within 5 s and no process is left;
- `up` restarted five times (SIGTERM each): one keeper run Running, the earlier ones Cancelled, one
  keeper process; the Prefect API refuses a request without the generated credential;
- the runner killed with SIGKILL under `up`: `up` restarts it and logs it, the web answers all the
  while, and a waiting approval is clicked through its link and continues.

Every start of `up` costs 10–30 s on two cores: the restarts share one home (module fixture) and the
runner test uses the `up` left running after them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.test_cli import AFTERCARE, ROOT, clean_env, free_port

pytestmark = pytest.mark.real  # `aftercare up` started as a subprocess: the real layer

STOP_WITHIN = 5.0  # seconds from SIGTERM to `up` gone, children included (issue 15)
READY_WITHIN = 240.0


class Up:
    """One `aftercare up` subprocess; its output is read on a thread so the test never blocks."""

    def __init__(self, home: Path, prefect_port: int, web_port: int, **extra: str) -> None:
        self.home = home
        self.prefect_port, self.web_port = prefect_port, web_port
        self.env = clean_env(home, PYTHONPATH=str(ROOT), **extra)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def start(self) -> None:
        self.lines = []
        self.proc = subprocess.Popen(
            AFTERCARE + ["up", "--prefect-port", str(self.prefect_port), "--web-port", str(self.web_port)],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: list[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = READY_WITHIN) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc is not None
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the reader's last lines
                if text in self.output:
                    return
                pytest.fail(f"`up` exited ({self.proc.returncode}) before {text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} after {timeout} s:\n{self.output}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> float:
        """Send `sig`; the seconds until `up` has exited."""
        assert self.proc is not None
        sent = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"`up` still running 30 s after {signal.Signals(sig).name}:\n{self.output}")
        return time.monotonic() - sent

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for proc in processes_of(self.home):
            proc.kill()

    def api(self) -> httpx.Client:
        user, _, password = (self.home / "prefect_auth").read_text().partition(":")
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.prefect_port}/api",
            auth=httpx.BasicAuth(user, password),
            timeout=10,
        )


def processes_of(home: Path) -> list[psutil.Process]:
    """Every process that runs with this AFTERCARE_HOME: `up`, its children, theirs, and any orphan
    they left behind, whatever its session or process group."""
    wanted = {str(home), str(home.resolve())}
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("AFTERCARE_HOME") in wanted:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def assert_nothing_left(home: Path) -> None:
    left = processes_of(home)
    _, alive = psutil.wait_procs(left, timeout=1)
    names = []
    for proc in alive:
        try:
            names.append(" ".join(proc.cmdline())[:120])
        except psutil.Error:
            continue
    assert not names, f"left behind: {names}"


def is_fork_server(proc: psutil.Process) -> bool:
    """A runner's warm-start fork server: multiprocessing's, or a fork of the runner itself
    (deployments.warm_start.fork_server_here: `deployments.serve`, a child of the runner)."""
    cmd = " ".join(proc.cmdline())
    if "multiprocessing.forkserver" in cmd:
        return True
    parent = proc.parent()
    return (
        "deployments.serve" in cmd
        and parent is not None
        and "deployments.serve" in " ".join(parent.cmdline())
    )


def flow_run_processes(home: Path) -> list[psutil.Process]:
    """Flow-run processes: the children of a runner's warm-start fork server (deployments.warm_start)."""
    found = []
    for proc in processes_of(home):
        try:
            parent = proc.parent()
            if parent is not None and is_fork_server(parent):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def pss_mb(pid: int) -> float:
    """Proportional set size of a process (/proc/<pid>/smaps_rollup), MB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no Pss in /proc/{pid}/smaps_rollup")


def keeper_runs(api: httpx.Client, *states: str) -> list[dict[str, Any]]:
    answer = api.post(
        "/flow_runs/filter",
        json={
            "flows": {"name": {"any_": ["clock-keeper"]}},
            "flow_runs": {"state": {"type": {"any_": list(states)}}},
        },
    )
    answer.raise_for_status()
    return list(answer.json())


def wait_until(condition, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.3)


# --- SIGTERM during start-up -----------------------------------------------------------------

MOMENTS = {
    # migrating and seeding while the Prefect server starts
    "server-starting": ("启动 Prefect 服务", 0.0),
    # web and runner starting, the runner importing the procedures
    "children-starting": ("启动审批网页与流程部署", 0.0),
    # the server answers, the runner registers the deployments
    "registering": ("启动审批网页与流程部署", 6.0),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigterm_at_any_moment_of_start_up_stops_within_5_s_and_leaves_no_process(
    tmp_path: Path, moment: str
) -> None:
    text, later = MOMENTS[moment]
    up = Up(tmp_path / "var", free_port(), free_port())
    up.start()
    try:
        up.wait_for(text, timeout=120)
        time.sleep(later)
        assert "就绪用时" not in up.output, "ready already: this moment is not start-up"
        started = processes_of(up.home)
        took = up.stop(signal.SIGTERM)
        assert took <= STOP_WITHIN, f"stopped after {took:.1f} s:\n{up.output}"
        assert "已停止 / stopped" in up.output and up.proc is not None and up.proc.returncode == 0
        assert "Traceback" not in up.output, up.output
        assert len(started) >= 2  # there was something to stop: up and at least the Prefect server
        assert_nothing_left(up.home)
    finally:
        up.kill()


# --- restarts, the keeper, the runner killed --------------------------------------------------


@pytest.fixture(scope="module")
def restarted_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`aftercare up` started, then stopped with SIGTERM and started again five times; each stop
    took at most 5 s and left no process. Yields the sixth `up`, running."""
    up = Up(
        tmp_path_factory.mktemp("up") / "var",
        free_port(),
        free_port(),
        AFTERCARE_EXTRA_FLOW_MODULES="tests.fixtures.flows_for_tests",
    )
    try:
        for _ in range(5):
            up.start()
            up.wait_for("clock keeper started")
            with up.api() as api:  # the keeper took its lease before `up` is stopped
                wait_until(lambda api=api: keeper_runs(api, "RUNNING"), 60, "keeper run Running")
            took = up.stop(signal.SIGTERM)
            assert took <= STOP_WITHIN, f"stopped after {took:.1f} s:\n{up.output}"
            assert_nothing_left(up.home)
        up.start()
        up.wait_for("clock keeper started")
        yield up
        took = up.stop(signal.SIGTERM)
        assert took <= STOP_WITHIN, f"stopped after {took:.1f} s:\n{up.output}"
        assert_nothing_left(up.home)
    finally:
        up.kill()


def test_up_restarted_five_times_runs_one_keeper_and_its_api_wants_the_credential(restarted_up: Up) -> None:
    up = restarted_up
    assert re.search(r"就绪用时 / ready in: +\d+\.\d s", up.output), up.output
    with up.api() as api:
        running = wait_until(lambda: keeper_runs(api, "RUNNING"), 60, "keeper run Running")
        time.sleep(3)  # a second keeper, if one were started, would show by now
        assert len(keeper_runs(api, "RUNNING", "PENDING", "SCHEDULED")) == 1
        assert len(keeper_runs(api, "CANCELLED")) == 5  # each stopped `up` marked its keeper run
        from models.db import session_scope
        from models.leases import current

        with session_scope(f"sqlite:///{up.home / 'aftercare.db'}") as session:
            lease = current(session, "clock-keeper", datetime.now(UTC))
            assert lease is not None and lease.holder == running[0]["id"]
    # the keeper runs on a thread of the runner (flows.clock_keeper.host): no process of its own
    assert flow_run_processes(up.home) == []

    # issue 26: `up` became the lean supervisor (deployments.supervise, same pid): no Prefect,
    # SQLAlchemy or pydantic loaded (their compiled parts would be mapped), at most 25 MB PSS
    assert up.proc is not None
    maps = Path(f"/proc/{up.proc.pid}/maps").read_text()
    assert "pydantic_core" not in maps and "sqlalchemy" not in maps, "the supervisor loaded heavy modules"
    assert "deployments.supervise" in " ".join(psutil.Process(up.proc.pid).cmdline())
    assert pss_mb(up.proc.pid) <= 25, f"the supervisor holds {pss_mb(up.proc.pid):.1f} MB PSS"

    # DESIGN.md §7 row 27: without the credential the API refuses (a resume above all)
    base = f"http://127.0.0.1:{up.prefect_port}/api"
    assert httpx.post(f"{base}/flow_runs/filter", json={}, timeout=10).status_code == 401
    resume = httpx.post(
        f"{base}/flow_runs/{running[0]['id']}/resume",
        timeout=10,
        json={"run_input": {"decision": "批准", "approver": "吴总监"}},
    )
    assert resume.status_code == 401
    wrong = httpx.BasicAuth("aftercare", "guessed")
    assert httpx.post(f"{base}/flow_runs/filter", json={}, auth=wrong, timeout=10).status_code == 401
    with up.api() as api:
        assert api.post("/flow_runs/filter", json={}).status_code == 200
    assert oct((up.home / "prefect_auth").stat().st_mode & 0o777) == "0o600"


def test_a_killed_runner_is_restarted_and_a_waiting_approval_is_clicked_through(restarted_up: Up) -> None:
    from sqlmodel import select

    from models import Case
    from models.db import session_scope
    from models.outbox import Notification

    up = restarted_up
    db = f"sqlite:///{up.home / 'aftercare.db'}"
    web = f"http://127.0.0.1:{up.web_port}"
    now = datetime.now(UTC)
    with session_scope(db) as session:
        case = Case(
            kind="repair",
            customer_id=1,
            title="runner 被杀后的审批",
            reported_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(case)
        session.flush()
        case_id = case.id
    with up.api() as api:
        deployment = api.get("/deployments/name/approval-probe/approval-probe").json()
        run_id = api.post(
            f"/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": {"case_id": case_id, "start": now.isoformat()}},
        ).json()["id"]

        def paused_on(key: str) -> bool:
            state = api.get(f"/flow_runs/{run_id}").json()["state"]
            assert state["type"] not in {"FAILED", "CRASHED", "CANCELLED", "COMPLETED"}, state
            return state["type"] == "PAUSED" and state["state_details"].get("pause_key") == key

        wait_until(lambda: paused_on("lead-approval-v1"), 90, "run waiting for the lead's approval")

        [runner] = [
            p
            for p in psutil.Process(up.proc.pid).children()  # type: ignore[union-attr]
            if "deployments.serve" in " ".join(p.cmdline())
        ]
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        assert httpx.get(f"{web}/health", timeout=5).json() == {"status": "ok"}  # the web did not stop

        # the lead clicks the link while the runner is down or starting again
        with session_scope(db) as session:
            body = session.exec(
                select(Notification.body).where(
                    Notification.case_id == case_id, Notification.key.like("approval:%")
                )
            ).first()
        assert body is not None
        token = re.search(r"/a/([A-Za-z0-9_.\-]+)", body).group(1)  # type: ignore[union-attr]
        page = httpx.get(f"{web}/a/{token}", timeout=10)
        assert page.status_code == 200, page.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
        done = httpx.post(
            f"{web}/a/{token}", data={"csrf": csrf, "decision": "approved", "comment": "同意"}, timeout=10
        )
        assert done.status_code == 200, done.text

        up.wait_for("restarting runner: exited by SIGKILL", timeout=10)
        # the restarted runner continues the run to its next wait
        wait_until(lambda: paused_on("director-approval-v1"), 120, "run continued to the director's approval")
    assert "restarting runner" in (up.home / "logs" / "supervisor.log").read_text()
    assert up.proc is not None and up.proc.poll() is None  # `up` itself never stopped
