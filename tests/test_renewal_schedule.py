"""The daily renewal planner fired by Prefect's own scheduler (issue 20): a Prefect server with all its
services and a runner serving every deployment (the `scheduling_stack` of tests/test_schedules.py);
the `plan-renewals` run the scheduler created for its next 01:40 is brought forward to now (its
scheduled time only: the run, its deployment and its parameters are the scheduler's), the runner
runs it, and it opens the renewal of the contract ending 60 days from today and starts its run."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pendulum
from sqlmodel import select

from deployments.checks import scheduled_deployments
from tests.fixtures.prefect import _tail
from tests.test_schedules import _basic_auth, _deployment, _scheduler_runs, scheduling_stack  # noqa: F401


def test_the_scheduler_s_plan_renewals_run_opens_the_renewal_due_today(
    scheduling_stack: dict[str, Any],  # noqa: F811
) -> None:
    from deployments.seed import seed_demo
    from models import Case, Contract
    from models.db import migrate, session_scope

    api = scheduling_stack["api"]
    home = scheduling_stack["runner_log"].parent.parent
    url = f"sqlite:///{home / 'aftercare.db'}"
    migrate(url)
    today = pendulum.now("Asia/Shanghai").date()
    end = today.add(days=60)
    with session_scope(url) as s:
        seed_demo(s, today=today, now=datetime.now(UTC))
        s.flush()
        contract = s.exec(select(Contract).where(Contract.code == f"HT-{today.year}-BJYH")).one()
        contract.end_date = end
        s.add(contract)

    (planner,) = [d for d in scheduled_deployments() if d.name == "plan-renewals"]
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 90
    while not runs and time.monotonic() < deadline:
        deployment = _deployment(api, planner)
        runs = _scheduler_runs(api, deployment["id"]) if deployment else []
        time.sleep(1)
    assert runs, f"Prefect's scheduler created no plan-renewals run\n{_tail(scheduling_stack['server_log'])}"
    run = runs[0]
    assert run["auto_scheduled"] and run["parameters"] == {}
    # bring the scheduler's run forward to now: only its scheduled time changes
    moved = httpx.post(
        f"{api}/flow_runs/{run['id']}/set_state",
        auth=_basic_auth(),
        timeout=10,
        json={
            "state": {
                "type": "SCHEDULED",
                "name": "Scheduled",
                "state_details": {"scheduled_time": datetime.now(UTC).isoformat()},
            },
            "force": True,
        },
    )
    assert moved.status_code in (200, 201), moved.text
    deadline = time.monotonic() + 180  # a cold-started flow run: a new interpreter
    state = ""
    while time.monotonic() < deadline:
        state = httpx.get(f"{api}/flow_runs/{run['id']}", auth=_basic_auth(), timeout=10).json()["state"][
            "type"
        ]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(1)
    assert state == "COMPLETED", f"{state}\n--- runner log ---\n{_tail(scheduling_stack['runner_log'])}"

    with session_scope(url) as s:
        contract = s.exec(select(Contract).where(Contract.code == f"HT-{today.year}-BJYH")).one()
        (case,) = s.exec(select(Case).where(Case.kind == "renewal", Case.contract_id == contract.id)).all()
        assert case.period == f"renewal:{end.isoformat()}" and case.flow_run_id
        assert case.data["team"]["account_manager"]  # the contract's account manager
    renewal_run = httpx.get(f"{api}/flow_runs/{case.flow_run_id}", auth=_basic_auth(), timeout=10)
    assert renewal_run.status_code == 200 and renewal_run.json()["parameters"] == {"case_id": case.id}
    assert timedelta(0) <= datetime.now(UTC) - datetime.fromisoformat(run["created"]) < timedelta(minutes=10)
