"""`aftercare up`: the one command that runs the main job.

It starts a local Prefect server on SQLite (unless PREFECT_API_URL points at one) and, while that
server starts, migrates the database, seeds demo data when empty, and starts the approval web and
the runner (which imports the procedures meanwhile and registers the deployments as soon as the
server answers). It prints the URLs and the time to ready once every deployment is served —
registered and polled by the runner — and then starts the clock keeper.

From then on it supervises (deployments.supervisor): a child that dies is restarted with back-off
and the restart is logged; exactly one clock keeper runs (flows.clock_keeper holds a lease; `up`
starts a keeper run when no keeper holds it, and marks keeper runs Cancelled when it stops). It
stops only on Ctrl-C / SIGTERM, at any moment of start-up too, within a few seconds, and leaves no
process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from deployments import prefect_server
from deployments.prefect_env import api_auth, auth_file, prefect_env
from deployments.supervisor import Child, Stop, Supervisor, held_signals
from models.db import migrate, session_scope
from models.settings import Settings, private_dir

KEEPER_FLOW = "clock-keeper"
KEEPER_LEASE = "clock-keeper"  # flows.clock_keeper.KEEPER_LEASE (not imported: that imports Prefect)
KEEPER_CHECK_SECONDS = 10.0  # how often `up` looks whether a keeper holds its lease
KEEPER_START_GRACE = 90.0  # a keeper run `up` started gets this long to start and take the lease
STARTUP_TIMEOUT = 300.0
STARTUP_FAILURES = 3  # a child that dies this often before the stack is ready: start-up fails
LIVE_STATES = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"]
STOPPED = "aftercare up 已停止 / stopped"


class StartupError(RuntimeError):
    """aftercare cannot start; the message says why and what to do."""


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def prepare_database(settings: Settings, *, seed: bool, echo: Callable[[str], None]) -> None:
    from deployments.seed import is_empty, seed_demo
    from models.wallclock import now

    echo(f"• 数据库 / database: {settings.db_url}")
    # Ctrl-C waits for the migration (a few hundred ms): on SQLite its DDL is not one transaction
    with held_signals():
        migrate(settings.db_url)
    if seed:
        with session_scope(settings.db_url) as session:  # one transaction: interrupted, nothing is written
            if is_empty(session):
                moment = now()
                counts = seed_demo(session, today=moment.date(), now=moment)
                echo("• 演示数据已写入 / demo data loaded: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


class PrefectAPI:
    """The few calls `up` makes to the Prefect REST API (plain httpx: `up` does not import Prefect,
    which would cost seconds of start-up)."""

    def __init__(self, url: str, auth: httpx.Auth | None) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, auth=auth, timeout=5)

    def healthy(self) -> bool:
        try:
            return self.client.get("/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def deployments(self) -> list[dict[str, Any]]:
        answer = self.client.post("/deployments/filter", json={"limit": 200})
        answer.raise_for_status()
        return list(answer.json())

    def keeper_runs(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        answer = self.client.post("/flow_runs/filter", timeout=timeout, json={
            "flows": {"name": {"any_": [KEEPER_FLOW]}},
            "flow_runs": {"state": {"type": {"any_": LIVE_STATES}}},
            "limit": 200,
        })
        answer.raise_for_status()
        return list(answer.json())

    def start_keeper(self) -> str:
        found = self.client.get(f"/deployments/name/{KEEPER_FLOW}/{KEEPER_FLOW}")
        found.raise_for_status()
        created = self.client.post(f"/deployments/{found.json()['id']}/create_flow_run", json={})
        created.raise_for_status()
        return str(created.json()["id"])

    def cancel(self, run_id: str, message: str, timeout: float = 2.0) -> None:
        self.client.post(f"/flow_runs/{run_id}/set_state", timeout=timeout, json={
            "state": {"type": "CANCELLED", "name": "Cancelled", "message": message}, "force": True,
        }).raise_for_status()


def served(api: PrefectAPI, runner: Child, served_file: Path) -> bool:
    """True once the runner running now registered its deployments and has polled for each."""
    try:
        info = json.loads(served_file.read_text())
    except (OSError, ValueError):
        return False
    if info.get("pid") != runner.pid or not runner.alive:
        return False
    since = float(info["since"]) - 1
    polled = {
        d["name"] for d in api.deployments()
        if d.get("last_polled") and datetime.fromisoformat(d["last_polled"]).timestamp() >= since
    }
    return set(info["deployments"]) <= polled


@dataclass
class KeeperWatch:
    """Exactly one clock keeper: start a keeper run when no keeper holds the lease; cancel the
    keeper runs that hold none; on stop, cancel every keeper run and release the lease."""

    api: PrefectAPI
    db_url: str
    note: Callable[[str], None]
    started_at: float | None = None
    run_id: str | None = None
    next_check: float = 0.0

    def lease_held(self) -> bool:
        from models.leases import current
        from models.wallclock import now

        with session_scope(self.db_url) as session:
            return current(session, KEEPER_LEASE, now()) is not None

    def check(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now < self.next_check:
            return
        self.next_check = now + KEEPER_CHECK_SECONDS
        if self.started_at is not None and now - self.started_at < KEEPER_START_GRACE:
            return
        try:
            if self.lease_held():
                return
            # no keeper holds the lease: keeper runs still marked live are dead (their runner was
            # killed) or would find the lease taken — mark them Cancelled, start one afresh
            for run in self.api.keeper_runs():
                self.api.cancel(run["id"], "aftercare up: 无租约的时钟守护 / a keeper run without the lease")
            run_id = self.api.start_keeper()
        except (httpx.HTTPError, OSError) as exc:
            self.note(f"  时钟守护暂未启动 / clock keeper not started yet ({type(exc).__name__}); retrying")
            return
        except Exception as exc:  # the database busy or unreachable: try again at the next check
            self.note(f"  时钟守护暂未启动 / clock keeper not started yet ({type(exc).__name__}: {exc}); retrying")
            return
        first = self.started_at is None
        self.started_at, self.run_id = now, run_id
        self.note(f"• {'启动' if first else '重新启动'}时钟守护 / clock keeper {'started' if first else 'restarted'}"
                  f" (flow run {run_id})")

    def stop(self, deadline: float) -> None:
        """Mark the keeper runs Cancelled and release the lease (best effort, by `deadline`): first
        the run `up` started (one request, when the server is busy), then any other live one."""
        if self.started_at is None:
            return
        done: set[str] = set()
        with contextlib.suppress(Exception):
            if self.run_id is not None:
                self.api.cancel(self.run_id, STOPPED, timeout=max(0.1, deadline - time.monotonic()))
                done.add(self.run_id)
            for run in self.api.keeper_runs(timeout=max(0.1, deadline - time.monotonic())):
                if run["id"] not in done:
                    self.api.cancel(run["id"], STOPPED, timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(Exception):
            from models.leases import release

            with session_scope(self.db_url) as session:
                release(session, KEEPER_LEASE)


def _check_home(settings: Settings) -> None:
    try:
        # what this process and the servers it starts create is their owner's only (the Prefect
        # server's database, its storage of task results): the umask its children inherit
        os.umask(0o077)
        private_dir(settings.home)
        probe = settings.home / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"工作目录不可写 / cannot write to AFTERCARE_HOME {settings.home}: {exc.strerror or exc}"
        ) from None


def process_age() -> float:
    """Seconds since this process started (Linux: /proc), so that the time to ready counts the
    interpreter's start and the imports too; 0 where /proc is not there."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, ticks after boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def run_up(settings: Settings, *, seed: bool = True, echo: Callable[[str], None] = print) -> int:
    began = time.monotonic() - process_age()
    _check_home(settings)
    external = bool(settings.prefect_api_url)
    api_url = settings.prefect_url
    if not external and port_in_use(settings.prefect_host, settings.prefect_port):
        raise StartupError(
            f"端口 {settings.prefect_port} 已被占用 / port {settings.prefect_port} is in use: "
            "another Prefect server? Stop it, point PREFECT_API_URL at it, or choose --prefect-port."
        )
    if port_in_use(settings.web_host, settings.web_port):
        raise StartupError(
            f"端口 {settings.web_port} 已被占用 / port {settings.web_port} is in use: choose --web-port."
        )

    env = {**os.environ, **prefect_env(settings, api_url=api_url)}
    logs = settings.home / "logs"
    sup = Supervisor(echo, logs)
    api = PrefectAPI(api_url, api_auth(settings))
    keeper = KeeperWatch(api, settings.db_url, sup.note)
    served_file = Path(env["PREFECT_HOME"]) / "served.json"
    web_url = f"http://{settings.web_host}:{settings.web_port}"
    sup.install_signals()
    try:
        if external:
            echo(f"• Prefect: 使用已有服务 / using {api_url}")
        else:
            echo("• 启动 Prefect 服务 / starting the Prefect server (SQLite) …")
            Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
            sup.add("prefect-server", prefect_server.command(settings.prefect_host, settings.prefect_port), env,
                    dependents=["runner"])
        prepare_database(settings, seed=seed, echo=echo)

        echo("• 启动审批网页与流程部署 / starting the approval web and serving the deployments …")
        with contextlib.suppress(FileNotFoundError):
            served_file.unlink()
        sup.add("web", [sys.executable, "-m", "uvicorn", "web.app:app", "--host", settings.web_host,
                        "--port", str(settings.web_port), "--no-access-log"], env)
        # the runner's flow-run processes (the keeper among them) finish on their own if it dies
        runner = sup.add("runner", [sys.executable, "-m", "deployments.serve"], env, kill_group_on_exit=False)
        _wait_ready(sup, api, runner, served_file, web_url, external=external)
        ready = time.monotonic() - began

        ui = api_url.removesuffix("/api")
        echo("")
        echo(f"  Prefect 界面 / UI:   {ui}")
        if not external:
            echo(f"  Prefect 登录 / login: 密码框填入 / enter in the password box: the contents of {Path(auth_file(settings)).resolve()}")
        echo(f"  审批网页 / web:      {web_url}  (links: {settings.web_base_url})")
        echo(f"  日志 / logs:         {logs.resolve()}")
        echo(f"  就绪用时 / ready in: {ready:.1f} s")
        echo("  按 Ctrl-C 停止 / press Ctrl-C to stop")
        while True:
            sup.poll()
            keeper.check()
            time.sleep(0.5)
    except Stop:
        echo("正在停止 / stopping …")
        return 0
    finally:
        sup.stopping = True  # a second Ctrl-C from here on kills at once
        # the keeper runs are marked Cancelled while the server still answers (a keeper killed
        # first would be reported Crashed); then every process group ends: at most ~4.5 s in all
        keeper.stop(deadline=time.monotonic() + 2.5)
        sup.stop_all(grace=2.0)
        sup.restore_signals()
        api.client.close()
        with contextlib.suppress(Exception):
            from models.db import get_engine

            get_engine(settings.db_url).dispose()  # closes SQLite cleanly (its WAL checkpointed) now
        echo("已停止 / stopped")


def _wait_ready(sup: Supervisor, api: PrefectAPI, runner: Child, served_file: Path, web_url: str, *,
                external: bool) -> None:
    """Supervise until the server and the web answer and every deployment is served."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    external_deadline = time.monotonic() + 10
    web_ok = server_ok = False
    while True:
        for child in sup.poll():
            if child.failures >= STARTUP_FAILURES:
                raise StartupError(f"{child.name} 未能启动 / {child.name} did not start "
                                   f"({child.failures} tries):\n{_tail(child.log)}")
        if not server_ok:
            server_ok = api.healthy()
            if external and not server_ok and time.monotonic() > external_deadline:
                raise StartupError(f"Prefect 无法连接 / Prefect API not reachable at {api.url}")
        if not web_ok:
            with contextlib.suppress(httpx.HTTPError):
                web_ok = httpx.get(f"{web_url}/health", timeout=1).status_code == 200
        if server_ok and web_ok:
            try:
                if served(api, runner, served_file):
                    return
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 401:
                    raise StartupError("Prefect 拒绝了凭据 / the Prefect API refused the credential "
                                       "(PREFECT_API_AUTH_STRING)") from None
            except httpx.HTTPError:
                server_ok = False
        if time.monotonic() > deadline:
            waiting = [name for name, ok in (("Prefect", server_ok), ("web", web_ok)) if not ok] or ["runner"]
            logs = "\n".join(f"--- {c.name} ---\n{_tail(c.log)}" for c in sup.children.values())
            raise StartupError(f"未能在 {STARTUP_TIMEOUT:.0f} s 内就绪 / not ready in {STARTUP_TIMEOUT:.0f} s "
                               f"(waiting for {', '.join(waiting)}):\n{logs}")
        time.sleep(0.2)
