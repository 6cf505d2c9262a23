"""`aftercare up`: the one command that runs the main job.

It migrates the database, seeds demo data when empty, starts a local Prefect server on SQLite
(unless PREFECT_API_URL points at one), serves every deployment with its schedules, starts the
approval web and the clock keeper, prints the URLs, and on Ctrl-C / SIGTERM stops every child
process group it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deployments import prefect_server
from deployments.prefect_env import prefect_env
from models.db import migrate, session_scope
from models.settings import Settings, open_private, private_dir


class StartupError(RuntimeError):
    """aftercare cannot start; the message says why and what to do."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Supervisor:
    echo: Callable[[str], None]
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def start(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> Child:
        log = private_dir(logs) / f"{name}.log"
        handle = open_private(log, "ab")
        proc = subprocess.Popen(
            argv, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopping it stops its children too
        )
        handle.close()
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def stop_all(self, grace: float = 15.0) -> None:
        self.stopping = True
        for child in reversed(self.children):
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait(timeout=5)
        # a process group may outlive its leader (a flow run started by the runner): end it too
        for child in self.children:
            _signal_group(child.proc, signal.SIGKILL)

    def first_exited(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def wait_http(url: str, *, timeout: float, child: Child | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.proc.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
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
    migrate(settings.db_url)
    if seed:
        with session_scope(settings.db_url) as session:
            if is_empty(session):
                moment = now()
                counts = seed_demo(session, today=moment.date(), now=moment)
                echo("• 演示数据已写入 / demo data loaded: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def run_up(settings: Settings, *, seed: bool = True, echo: Callable[[str], None] = print) -> int:
    try:
        # what this process and the servers it starts create is their owner's only (the Prefect
        # server's database, its storage of task results): the umask its children inherit
        os.umask(0o077)
        private_dir(settings.home)
        probe = settings.home / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"工作目录不可写 / cannot write to AFTERCARE_HOME {settings.home}: {exc.strerror or exc}") from None
    try:
        prepare_database(settings, seed=seed, echo=echo)
    except KeyboardInterrupt:  # Ctrl-C while migrating or seeding: each runs in its own transaction
        echo("已中断，数据库未改动或已完整迁移 / interrupted; the database is as before or fully migrated")
        return 130

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
    sup = Supervisor(echo)
    stop_requested = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    old_int = signal.signal(signal.SIGINT, _on_signal)
    old_term = signal.signal(signal.SIGTERM, _on_signal)
    try:
        if external:
            echo(f"• Prefect: 使用已有服务 / using {api_url}")
            if not wait_http(f"{api_url}/health", timeout=10):
                raise StartupError(f"Prefect 无法连接 / Prefect API not reachable at {api_url}")
        else:
            echo("• 启动 Prefect 服务 / starting the Prefect server (SQLite) …")
            server = sup.start(
                "prefect-server",
                prefect_server.command(settings.prefect_host, settings.prefect_port),
                env, logs,
            )
            if not wait_http(f"{api_url}/health", timeout=120, child=server):
                raise StartupError(f"Prefect 服务未能启动 / Prefect server did not start:\n{_tail(server.log)}")

        echo("• 启动审批网页 / starting the approval web …")
        web = sup.start(
            "web",
            [sys.executable, "-m", "uvicorn", "web.app:app", "--host", settings.web_host,
             "--port", str(settings.web_port), "--no-access-log"],
            env, logs,
        )
        if not wait_http(f"http://{settings.web_host}:{settings.web_port}/health", timeout=60, child=web):
            raise StartupError(f"网页未能启动 / web did not start:\n{_tail(web.log)}")

        echo("• 注册并运行流程部署 / serving the deployments …")
        sup.start("runner", [sys.executable, "-m", "deployments.serve"], env, logs)
        sup.start("keeper-starter", [sys.executable, "-m", "deployments.start_keeper"], env, logs)

        ui = api_url.removesuffix("/api")
        echo("")
        echo(f"  Prefect 界面 / UI:   {ui}")
        echo(f"  审批网页 / web:      http://{settings.web_host}:{settings.web_port}  (links: {settings.web_base_url})")
        echo(f"  日志 / logs:         {logs.resolve()}")
        echo("  按 Ctrl-C 停止 / press Ctrl-C to stop")
        while not stop_requested:
            gone = sup.first_exited()
            if gone is not None and not (gone.name == "keeper-starter" and gone.proc.returncode == 0):
                echo(f"进程退出 / {gone.name} exited ({gone.proc.returncode}):\n{_tail(gone.log)}")
                return 1
            if gone is not None:
                sup.children.remove(gone)
            time.sleep(0.5)
        echo("正在停止 / stopping …")
        return 0
    finally:
        sup.stop_all()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        echo("已停止 / stopped")
