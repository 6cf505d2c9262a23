"""`aftercare up`: the one command that runs the main job.

This process checks what can be checked before anything starts — the settings, AFTERCARE_HOME, the
ports —, migrates the database and seeds demo data when it is empty, generates the Prefect
credential, and then replaces itself (`exec`: the same process, the same id) with
`python -m deployments.supervise`, which starts the Prefect server (unless PREFECT_API_URL points
at one), the approval web and the runner, prints the URLs and the time to ready once every
deployment is served, and from then on supervises: a child that dies is restarted with back-off.

Why the exec: what checking needs (pydantic settings, SQLModel, Alembic) held ~86 MB in a process
that afterwards only supervises; the process that supervises imports the standard library only
(issue 26). The clock keeper runs inside the runner process (flows.clock_keeper.host): one
interpreter less than a keeper run of its own; exactly one keeper by its lease.

It stops only on Ctrl-C / SIGTERM, at any moment of start-up too, within a few seconds, and leaves
no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployments import prefect_server
from deployments.prefect_env import auth_file, auth_string, prefect_env
from deployments.supervise import PLAN_VARIABLE, StartupError
from deployments.supervisor import STOP_SIGNALS, Stop, held_signals
from models.db import migrate, session_scope
from models.settings import Settings, private_dir

__all__ = ["StartupError", "run_up"]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


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
                echo(
                    "• 演示数据已写入 / demo data loaded: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                )


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


def plan(settings: Settings, *, began: float) -> dict[str, Any]:
    """What deployments.supervise starts and prints: the children's command lines and environment."""
    external = bool(settings.prefect_api_url)
    api_url = settings.prefect_url
    env = {**os.environ, **prefect_env(settings, api_url=api_url)}
    web_url = f"http://{settings.web_host}:{settings.web_port}"
    logs = settings.home / "logs"
    banner = [f"  Prefect 界面 / UI:   {api_url.removesuffix('/api')}"]
    if not external:
        banner.append(
            "  Prefect 登录 / login: 密码框填入 / enter in the password box: the contents of "
            f"{Path(auth_file(settings)).resolve()}"
        )
    banner += [
        f"  审批网页 / web:      {web_url}  (links: {settings.web_base_url})",
        f"  日志 / logs:         {logs.resolve()}",
    ]
    return {
        "began": began,
        "external": external,
        "api_url": api_url,
        "credential": auth_string(settings),
        "env": env,
        "logs": str(logs),
        "served_file": str(Path(env["PREFECT_HOME"]) / "served.json"),
        "web_url": web_url,
        "server_argv": prefect_server.command(settings.prefect_host, settings.prefect_port),
        "web_argv": [
            sys.executable,
            "-m",
            "uvicorn",
            "web.app:app",
            "--host",
            settings.web_host,
            "--port",
            str(settings.web_port),
            "--no-access-log",
        ],
        "runner_argv": [sys.executable, "-m", "deployments.serve"],
        "banner": banner,
    }


def run_up(settings: Settings, *, seed: bool = True, echo: Callable[[str], None] = print) -> int:
    """Check, migrate, seed; then become the supervisor (never returns, but on a Ctrl-C meanwhile)."""
    began = time.monotonic() - process_age()
    _check_home(settings)
    if not settings.prefect_api_url and port_in_use(settings.prefect_host, settings.prefect_port):
        raise StartupError(
            f"端口 {settings.prefect_port} 已被占用 / port {settings.prefect_port} is in use: "
            "another Prefect server? Stop it, point PREFECT_API_URL at it, or choose --prefect-port."
        )
    if port_in_use(settings.web_host, settings.web_port):
        raise StartupError(
            f"端口 {settings.web_port} 已被占用 / port {settings.web_port} is in use: choose --web-port."
        )

    def stop(signum: int, _frame: object) -> None:
        raise Stop(signum)

    old = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        prepare_database(settings, seed=seed, echo=echo)
        env = prefect_env(settings, api_url=settings.prefect_url)  # the credential, generated once
        Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
        found = plan(settings, began=began)
    except Stop:
        echo("正在停止 / stopping …")
        echo("已停止 / stopped")
        return 0
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    sys.stdout.flush()
    sys.stderr.flush()
    from models.db import get_engine

    get_engine(settings.db_url).dispose()  # closes SQLite cleanly (its WAL checkpointed) before the exec
    # SIGINT/SIGTERM held back across the exec: the supervisor handles one that comes meanwhile
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    os.execve(
        sys.executable,
        [sys.executable, "-m", "deployments.supervise"],
        {**found["env"], PLAN_VARIABLE: json.dumps(found)},
    )
