"""The process that supervises `aftercare up`'s children, and nothing else.

`aftercare up` (deployments.up) checks the settings, the ports and the database, then replaces
itself (`exec`, the same process id) with `python -m deployments.supervise`: this module, which
imports the standard library only — no Prefect, SQLModel, pydantic or httpx (issue 26: the process
that only supervises held ~86 MB PSS with them, ~12 MB without). What it was told travels in the
environment variable `AFTERCARE_UP_PLAN` (JSON, see `deployments.up.plan`); the children get the
plan's environment without it.

It starts the Prefect server (unless PREFECT_API_URL points at one), the approval web and the
runner, prints the addresses once every deployment is served — registered and polled by the
runner — and from then on restarts a child that died (deployments.supervisor). The clock keeper
runs inside the runner process (deployments.serve, flows.clock_keeper.host): this process tells a
runner that serves every deployment to start it (SIGUSR1, so the keeper's work never slows
start-up), says when a keeper run is Running and, when it stops, marks the keeper runs Cancelled.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from deployments.supervisor import STOP_SIGNALS, Child, Stop, Supervisor

PLAN_VARIABLE = "AFTERCARE_UP_PLAN"
KEEPER_FLOW = "clock-keeper"
KEEPER_CHECK_SECONDS = 10.0  # how often `up` looks which keeper run is Running (1 s until the first)
STARTUP_TIMEOUT = 300.0
STARTUP_FAILURES = 3  # a child that dies this often before the stack is ready: start-up fails
LIVE_STATES = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"]
STOPPED = "aftercare up 已停止 / stopped"
# what a request to a server that is not (yet) there raises: refused, reset, timed out, a bad answer
NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)


class StartupError(RuntimeError):
    """aftercare cannot start; the message says why and what to do."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def get_ok(url: str, timeout: float = 1.0) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return bool(answer.status == 200)
    except NETWORK_ERRORS:
        return False


class PrefectAPI:
    """The few calls `up` makes to the Prefect REST API, with the standard library's urllib (httpx
    would add ~9 MB to a process that makes a request every few seconds)."""

    def __init__(self, url: str, credential: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if credential:
            self.headers["Authorization"] = "Basic " + base64.b64encode(credential.encode()).decode()

    def call(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
        return json.loads(raw) if raw else None

    def healthy(self) -> bool:
        try:
            self.call("GET", "/health", timeout=1)
        except NETWORK_ERRORS:
            return False
        return True

    def deployments(self) -> list[dict[str, Any]]:
        return list(self.call("POST", "/deployments/filter", {"limit": 200}))

    def keeper_runs(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        return list(
            self.call(
                "POST",
                "/flow_runs/filter",
                {
                    "flows": {"name": {"any_": [KEEPER_FLOW]}},
                    "flow_runs": {"state": {"type": {"any_": LIVE_STATES}}},
                    "limit": 200,
                },
                timeout=timeout,
            )
        )

    def cancel(self, run_id: str, message: str, timeout: float = 2.0) -> None:
        self.call(
            "POST",
            f"/flow_runs/{run_id}/set_state",
            {
                "state": {"type": "CANCELLED", "name": "Cancelled", "message": message},
                "force": True,
            },
            timeout=timeout,
        )


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
        d["name"]
        for d in api.deployments()
        if d.get("last_polled") and datetime.fromisoformat(d["last_polled"]).timestamp() >= since
    }
    return set(info["deployments"]) <= polled


def _state_type(run: dict[str, Any]) -> str:
    return str(run.get("state_type") or (run.get("state") or {}).get("type") or "")


@dataclass
class KeeperWatch:
    """Say which keeper run is Running (the runner hosts the keeper and it takes the lease itself,
    flows.clock_keeper.host); on stop, mark every live keeper run Cancelled."""

    api: PrefectAPI
    note: Callable[[str], None]
    runner: Child | None = None
    served_file: Path | None = None
    run_id: str | None = None
    next_check: float = 0.0
    told: int | None = None  # the runner process told to host the keeper

    def tell_runner(self) -> None:
        """SIGUSR1 to a runner that serves every deployment and was not told yet: it starts the
        keeper on a thread (deployments.serve.host_keeper) — after start-up, as before."""
        runner = self.runner
        if runner is None or not runner.alive or runner.pid == self.told or self.served_file is None:
            return
        try:
            if not served(self.api, runner, self.served_file):
                return
        except NETWORK_ERRORS:
            return
        assert runner.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(runner.pid, signal.SIGUSR1)
        self.told = runner.pid

    def check(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.tell_runner()
        if now < self.next_check:
            return
        self.next_check = now + (KEEPER_CHECK_SECONDS if self.run_id else 1.0)
        try:
            running = [r for r in self.api.keeper_runs() if _state_type(r) == "RUNNING"]
        except NETWORK_ERRORS:
            return
        if not running:
            return
        newest = max(running, key=lambda r: str(r.get("start_time") or r.get("created") or ""))
        if newest["id"] == self.run_id:
            return
        first = self.run_id is None
        self.run_id = str(newest["id"])
        self.note(
            f"• {'启动' if first else '重新启动'}时钟守护 / clock keeper {'started' if first else 'restarted'}"
            f" (flow run {self.run_id})"
        )

    def stop(self, deadline: float) -> None:
        """Mark the keeper runs Cancelled (best effort, by `deadline`): first the one seen Running
        (one request, when the server is busy), then any other live one. The runner releases the
        lease when it stops; a keeper killed outright leaves it to run out (60 s)."""
        done: set[str] = set()
        with contextlib.suppress(*NETWORK_ERRORS):
            if self.run_id is not None:
                self.api.cancel(self.run_id, STOPPED, timeout=max(0.1, deadline - time.monotonic()))
                done.add(self.run_id)
            for run in self.api.keeper_runs(timeout=max(0.1, deadline - time.monotonic())):
                if run["id"] not in done:
                    self.api.cancel(run["id"], STOPPED, timeout=max(0.1, deadline - time.monotonic()))


def wait_ready(
    sup: Supervisor, api: PrefectAPI, runner: Child, served_file: Path, web_url: str, *, external: bool
) -> None:
    """Supervise until the server and the web answer and every deployment is served."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    external_deadline = time.monotonic() + 10
    web_ok = server_ok = False
    while True:
        for child in sup.poll():
            if child.failures >= STARTUP_FAILURES:
                raise StartupError(
                    f"{child.name} 未能启动 / {child.name} did not start "
                    f"({child.failures} tries):\n{_tail(child.log)}"
                )
        if not server_ok:
            server_ok = api.healthy()
            if external and not server_ok and time.monotonic() > external_deadline:
                raise StartupError(f"Prefect 无法连接 / Prefect API not reachable at {api.url}")
        if not web_ok:
            web_ok = get_ok(f"{web_url}/health")
        if server_ok and web_ok:
            try:
                if served(api, runner, served_file):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    raise StartupError(
                        "Prefect 拒绝了凭据 / the Prefect API refused the credential "
                        "(PREFECT_API_AUTH_STRING)"
                    ) from None
            except NETWORK_ERRORS:
                server_ok = False
        if time.monotonic() > deadline:
            waiting = [name for name, ok in (("Prefect", server_ok), ("web", web_ok)) if not ok] or ["runner"]
            logs = "\n".join(f"--- {c.name} ---\n{_tail(c.log)}" for c in sup.children.values())
            raise StartupError(
                f"未能在 {STARTUP_TIMEOUT:.0f} s 内就绪 / not ready in {STARTUP_TIMEOUT:.0f} s "
                f"(waiting for {', '.join(waiting)}):\n{logs}"
            )
        time.sleep(0.2)


def echo(line: str) -> None:
    print(line, flush=True)


def run(plan: dict[str, Any]) -> int:
    """Start and supervise the stack `plan` describes until Ctrl-C / SIGTERM; the exit code."""
    began = float(plan["began"])
    env: dict[str, str] = plan["env"]
    logs = Path(plan["logs"])
    sup = Supervisor(echo, logs)
    api = PrefectAPI(plan["api_url"], plan.get("credential"))
    served_file = Path(plan["served_file"])
    keeper = KeeperWatch(api, sup.note, served_file=served_file)
    web_url = plan["web_url"]
    sup.install_signals()
    # `up` held SIGINT/SIGTERM back across the exec; one that came meanwhile raises Stop from here on
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        if plan["external"]:
            echo(f"• Prefect: 使用已有服务 / using {plan['api_url']}")
        else:
            Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
            # a restarted server: the runner starts afresh too (deployments.supervisor.recycle)
            sup.add("prefect-server", plan["server_argv"], env, dependents=["runner"])
            echo("• 启动 Prefect 服务 / starting the Prefect server (SQLite) …")  # said once it is started
        echo("• 启动审批网页与流程部署 / starting the approval web and serving the deployments …")
        with contextlib.suppress(FileNotFoundError):
            served_file.unlink()
        sup.add("web", plan["web_argv"], env)
        # the runner hosts the clock keeper (flows.clock_keeper.host); its flow-run processes finish
        # on their own if it dies
        runner = sup.add(
            "runner",
            plan["runner_argv"],
            {**env, "AFTERCARE_RUNNER_HOSTS_KEEPER": "true"},
            kill_group_on_exit=False,
        )
        wait_ready(sup, api, runner, served_file, web_url, external=plan["external"])
        keeper.runner = runner
        ready = time.monotonic() - began

        echo("")
        for line in plan["banner"]:
            echo(line)
        echo(f"  就绪用时 / ready in: {ready:.1f} s")
        echo("  按 Ctrl-C 停止 / press Ctrl-C to stop")
        while True:
            sup.poll()
            keeper.check()
            time.sleep(0.5)
    except Stop:
        echo("正在停止 / stopping …")
        return 0
    except StartupError as exc:
        print(
            f"\033[31m错误 / error: {exc}\033[0m" if sys.stderr.isatty() else f"错误 / error: {exc}",
            file=sys.stderr,
            flush=True,
        )
        return 2
    finally:
        sup.stopping = True  # a second Ctrl-C from here on kills at once
        # the keeper runs are marked Cancelled while the server still answers (a keeper killed
        # first would be reported Crashed); then every process group ends: at most ~4.5 s in all
        keeper.stop(deadline=time.monotonic() + 2.5)
        sup.stop_all(grace=2.0)
        sup.restore_signals()
        echo("已停止 / stopped")


def main() -> None:
    plan = json.loads(os.environ.pop(PLAN_VARIABLE))
    code = run(plan)
    # everything is stopped: leave without tearing the interpreter down (a Ctrl-C should not wait)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
