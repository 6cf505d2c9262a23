"""Schedules that fire: Prefect's own scheduler creates the runs of every cron deployment.

The session's Prefect server (tests/fixtures/prefect.py) runs with its scheduler off, so that no
test meets runs it did not start. This test starts a second server as `aftercare up` does — every
service on, the scheduler included — serves the deployments with `python -m deployments.serve`,
and waits for Scheduled runs that Prefect's scheduler created (`auto_scheduled`, with the
scheduler's idempotency key), for every deployment of deployments.registry that has a schedule.
Nothing in the test asks the server to schedule. Prefect 3.8.8 with SQLAlchemy 2.1.x fails here:
its scheduler raises every loop and no run is ever created (pyproject.toml pins 2.0.x).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.checks import prefect_service_errors, scheduled_deployments
from deployments.prefect_env import prefect_env
from deployments.prefect_server import command as prefect_server_command
from models.settings import Settings
from tests.fixtures.prefect import _free_port, _kill_group, _tail

ROOT = Path(__file__).resolve().parent.parent
SCHEDULER_LOOP_SECONDS = 5  # Prefect's default is 60 s; the recently-changed-deployments loop is 5 s


def _clean_env() -> dict[str, str]:
    # the session's harness put its own PREFECT_* settings in this process's environment
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AFTERCARE_"))}


@pytest.fixture(scope="module")
def scheduling_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A Prefect server with all its services (as `aftercare up` starts it) and a runner serving
    every deployment; yields its API URL, the server log and the time the server started."""
    home = tmp_path_factory.mktemp("schedules") / "var"
    logs = home / "logs"
    logs.mkdir(parents=True)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'aftercare.db'}",
        secret_key="schedules-test-key",
        prefect_port=port,
        cold_start=True,  # no warm-start fork server: this runner never runs a flow
    )
    env = {**_clean_env(), **prefect_env(settings, api_url=api)}
    env.update(
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect' / 'prefect.db'}",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="true",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS=str(SCHEDULER_LOOP_SECONDS),
        PREFECT_UI_ENABLED="false",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    )
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    server_log, runner_log = logs / "prefect-server.log", logs / "runner.log"
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as handle:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        procs.append(proc)
        return proc

    started = datetime.now(UTC)
    try:
        server = start(prefect_server_command("127.0.0.1", port), server_log)
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Prefect server did not start:\n{_tail(server_log)}")
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        runner = start([sys.executable, "-m", "deployments.serve"], runner_log)
        yield {
            "api": api,
            "server_log": server_log,
            "runner_log": runner_log,
            "runner": runner,
            "started": started,
        }
    finally:
        for proc in reversed(procs):
            _kill_group(proc, signal.SIGTERM)


def _basic_auth() -> httpx.BasicAuth | None:
    """The Prefect API's credential: the session harness put it in this process's environment, and
    `prefect_env` gives the same one to the stack above (deployments.prefect_env.auth_string)."""
    found = os.environ.get("PREFECT_API_AUTH_STRING", "")
    user, _, password = found.partition(":")
    return httpx.BasicAuth(user, password) if found else None


def _deployment(api: str, d: Any) -> dict[str, Any] | None:
    answer = httpx.get(f"{api}/deployments/name/{d.flow_name}/{d.name}", timeout=10, auth=_basic_auth())
    return answer.json() if answer.status_code == 200 else None


def _scheduler_runs(api: str, deployment_id: str) -> list[dict[str, Any]]:
    """The deployment's Scheduled runs that Prefect's scheduler created."""
    answer = httpx.post(
        f"{api}/flow_runs/filter",
        timeout=10,
        auth=_basic_auth(),
        json={
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 50,
        },
    )
    answer.raise_for_status()
    return [
        r
        for r in answer.json()
        if r["auto_scheduled"] and (r["idempotency_key"] or "").startswith(f"scheduled {deployment_id} ")
    ]


def test_prefects_scheduler_creates_the_runs_of_every_cron_deployment(
    scheduling_stack: dict[str, Any],
) -> None:
    from prefect.server.schemas.schedules import CronSchedule as ServerCron

    api = scheduling_stack["api"]
    expected = scheduled_deployments()  # every deployment of the registry with a schedule
    names = {d.name for d in expected}
    assert {"plan-inspections", "month-end", "plan-drills"} <= names, names  # inspections, summaries, drills

    waiting = {d.name: d for d in expected}
    found: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 90  # serve (~10 s) + the scheduler's next loop (5 s)
    while waiting and time.monotonic() < deadline:
        if scheduling_stack["runner"].poll() is not None:
            pytest.fail(f"the runner exited:\n{_tail(scheduling_stack['runner_log'])}")
        errors = prefect_service_errors(scheduling_stack["server_log"])
        assert not errors, "Prefect's services fail:\n" + "\n".join(errors)
        for name, d in list(waiting.items()):
            deployment = _deployment(api, d)
            runs = _scheduler_runs(api, deployment["id"]) if deployment else []
            if runs:
                found[name] = runs
                del waiting[name]
        time.sleep(1)
    assert not waiting, (
        f"no Scheduled run created by Prefect's scheduler for {sorted(waiting)} within 90 s\n"
        f"--- server log ---\n{_tail(scheduling_stack['server_log'])}"
    )

    for d in expected:
        runs = found[d.name]
        starts = [datetime.fromisoformat(r["expected_start_time"]) for r in runs]
        for schedule in d.schedules:
            cron = schedule.schedule
            # the next time the cron fires after the server started is among the runs created
            first = next(
                ServerCron(cron=cron.cron, timezone=cron.timezone)._get_dates_generator(
                    n=1, start=scheduling_stack["started"]
                )
            )
            assert any(abs((s - first).total_seconds()) < 1 for s in starts), (d.name, first, starts)
        assert all(s > scheduling_stack["started"] for s in starts)

    assert prefect_service_errors(scheduling_stack["server_log"]) == []


# ---- `aftercare check`: next run times, and loud failures -------------------------------------

AFTERCARE = [sys.executable, "-m", "deployments.cli"]

BANNER = """
 ___ ___ ___ ___ ___ ___ _____
| _ \\ _ \\ __| __| __/ __|_   _|
|  _/   / _|| _|| _| (__  | |
|_| |_|_\\___|_| |___\\___| |_|

Configure Prefect to communicate with the server with:

    prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api

"""
# What the Prefect server wrote every minute with SQLAlchemy 2.1.9 (shortened).
SCHEDULER_DEAD = """03:01:49.615 | ERROR   | docket.dependencies - ↩ [    50ms] schedule_deployments(){schedule_deployments}
Traceback (most recent call last):
  File "/app/.venv/lib/python3.11/site-packages/docket/worker.py", line 1134, in _execute
    result = await execution.function(
             ^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/app/.venv/lib/python3.11/site-packages/prefect/server/services/scheduler.py", line 273, in schedule_deployments
    inserted_runs = await models.deployments._insert_scheduled_flow_runs(
  File "/app/.venv/lib/python3.11/site-packages/sqlalchemy/ext/hybrid.py", line 1851, in prop
    raise exc.InvalidRequestError(
sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML statement; please supply a bulk_dml decorated function
"""


def test_service_errors_are_found_in_the_server_log_since_its_last_start() -> None:
    from deployments.checks import service_errors_in

    errors = service_errors_in(BANNER + SCHEDULER_DEAD)
    assert len(errors) == 1
    assert "schedule_deployments" in errors[0] and "Can't evaluate bulk DML statement" in errors[0]
    # a bare traceback through Prefect's services (printed without a log record) counts too
    bare = SCHEDULER_DEAD.split("\n", 1)[1]
    assert len(service_errors_in(BANNER + bare)) == 1
    # an error before the server's last start is history, not a present fault
    assert service_errors_in(BANNER + SCHEDULER_DEAD + BANNER) == []
    # warnings, and errors of other parts of the server, are not service errors
    other = (
        "03:02:00.100 | WARNING | docket.worker - slow task\n"
        "03:02:00.200 | ERROR   | prefect.server.api.server - Encountered exception in request:\n"
        'Traceback (most recent call last):\n  File "/x/prefect/server/api/flow_runs.py", line 1\n'
        "ValueError: bad\n"
    )
    assert service_errors_in(BANNER + other) == []
    assert service_errors_in("") == []


def _check_env(home: Path, api: str) -> dict[str, str]:
    env = _clean_env()
    env.update(
        AFTERCARE_HOME=str(home),
        AFTERCARE_SECRET_KEY="schedules-check-key",
        PREFECT_API_URL=api,
        PREFECT_API_AUTH_STRING=os.environ.get("PREFECT_API_AUTH_STRING", ""),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    )
    return env


def _aftercare(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(AFTERCARE + args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_check_shows_each_scheduled_deployments_next_run_and_fails_on_a_service_error(
    scheduling_stack: dict[str, Any], tmp_path: Path
) -> None:
    from zoneinfo import ZoneInfo

    from deployments.checks import schedule_states

    api = scheduling_stack["api"]
    home = tmp_path / "var"
    env = _check_env(home, api)
    assert _aftercare(["migrate"], env).returncode == 0
    # the scheduler has had its turn (the test above waited for it; alone, wait here)
    deadline = time.monotonic() + 90
    while any(s.next_run is None for s in schedule_states(api)) and time.monotonic() < deadline:
        time.sleep(1)

    result = _aftercare(["check"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    zone = ZoneInfo("Asia/Shanghai")
    for state in schedule_states(api):
        assert state.next_run is not None
        at = state.next_run.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        assert (
            f"✔ 定时流程 / schedule {state.name}: 下次运行 / next run {at} (Asia/Shanghai)" in result.stdout
        )
    assert "plan-inspections/plan-inspections" in result.stdout and " 01:15 (Asia/Shanghai)" in result.stdout
    assert "month-end/month-end" in result.stdout and " 02:30 (Asia/Shanghai)" in result.stdout

    # the same, with a server log that shows the scheduler failing: non-zero, and a line that says so
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "prefect-server.log").write_text(BANNER + SCHEDULER_DEAD)
    result = _aftercare(["check"], env)
    assert result.returncode == 1
    assert "✘ Prefect 服务日志 / server log: Prefect 后台服务出错 / 1 service error(s)" in result.stdout
    assert "Can't evaluate bulk DML statement" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_check_fails_when_a_scheduled_deployment_has_no_upcoming_run(prefect_runner: Any) -> None:
    """The session's server runs without its scheduler — as a server whose scheduler died: every
    scheduled deployment is served, none has a run ahead, and the check says so for each."""
    from deployments.checks import schedule_checks

    checks = schedule_checks(os.environ["PREFECT_API_URL"])
    assert {label for _, label, _ in checks} == {
        f"定时流程 / schedule {d.flow_name}/{d.name}" for d in scheduled_deployments()
    }
    for good, label, detail in checks:
        assert not good, (label, detail)
        assert "没有待运行的计划 / no upcoming run" in detail
