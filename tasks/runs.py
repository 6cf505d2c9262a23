"""Stuck flow runs: a runner that dies leaves its runs *Running* for ever (DESIGN.md §2).

Every flow-run process sends Prefect a heartbeat event (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, set by
deployments.prefect_env). The keeper step `sweep_stuck_runs(now)` finds Running runs whose last
sign of life — the later of their Running state and their last heartbeat — is older than
`AFTERCARE_STUCK_RUN_SECONDS`, and schedules them again: a runner starts the run from the top and
the replay repeats nothing (persisted results, idempotent steps). The case the run works for gets
an event, so the history says why a step ran in another process.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlmodel import select

from models.settings import Settings, get_settings

log = logging.getLogger("aftercare.runs")

HEARTBEAT_SECONDS = 30  # Prefect's minimum heartbeat interval
DEFAULT_STUCK_SECONDS = Settings.model_fields["stuck_run_seconds"].default  # ten missed heartbeats


def stuck_after(settings: Settings | None = None) -> timedelta:
    """How long a Running run may go without a heartbeat (AFTERCARE_STUCK_RUN_SECONDS, ≥ 2 heartbeats)."""
    seconds = (settings or get_settings()).stuck_run_seconds
    return timedelta(seconds=max(seconds, 2 * HEARTBEAT_SECONDS))


def silence_reference(now: datetime, *, trust_now: bool = False) -> datetime:
    """The moment silence is measured up to.

    Heartbeats and state times are stamped by the real clock, so by default the reference is no
    later than the wall clock: a keeper tick at a `now` that a test moved days ahead (to fire
    timers) must not make every live run look silent. A caller whose `now` is the time to judge by
    says so with `trust_now` — a test that lets a dead runner's silence pass by handing in a later
    `now` instead of sleeping through it.
    """
    from models import wallclock

    return now if trust_now else min(now, wallclock.now())


def last_heartbeats(client: Any, run_ids: list[UUID], since: datetime) -> dict[UUID, datetime]:
    """The latest heartbeat event of each run, from Prefect's event store."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    if not run_ids:
        return {}
    found: dict[UUID, datetime] = {}
    page = client.read_events(
        EventFilter(
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{r}" for r in run_ids]),
            occurred=EventOccurredFilter(since=since),
        ),
        limit=50,  # the server's maximum page
    )
    while True:
        for event in page.events:
            run_id = UUID(event.resource.id.removeprefix("prefect.flow-run."))
            if run_id not in found or event.occurred > found[run_id]:
                found[run_id] = event.occurred
        if not page.next_page:
            return found
        page = client.read_events_page(page.next_page)


def stuck_runs(client: Any, now: datetime, limit: timedelta, batch: int = 200) -> list[tuple[Any, datetime]]:
    """(flow run, last sign of life) of every Running run silent for longer than `limit`."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    running = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))),
        sort=FlowRunSort.START_TIME_ASC,  # the server refuses no sort
        limit=batch,
    )
    silent = [r for r in running if r.state is not None and r.state.timestamp <= now - limit]
    beats = last_heartbeats(client, [r.id for r in silent], since=now - limit)
    out = []
    for run in silent:
        last = max(run.state.timestamp, beats.get(run.id, run.state.timestamp))
        if last <= now - limit:
            out.append((run, last))
    return out


def sweep_stuck_runs(now: datetime, *, limit: timedelta | None = None, trust_now: bool = False) -> int:
    """Keeper step: schedule again every Running run without a heartbeat for too long; returns how many.

    Silence is measured up to `silence_reference(now, trust_now=trust_now)`: the wall clock at the
    latest, unless the caller vouches for its `now`.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from models.cases import Case, append_event
    from models.db import session_scope

    limit = limit or stuck_after()
    reference = silence_reference(now, trust_now=trust_now)
    rescheduled = 0
    with get_client(sync_client=True) as client:
        for run, last in stuck_runs(client, reference, limit):
            message = f"aftercare: no heartbeat since {last.isoformat()}; scheduled again"
            client.set_flow_run_state(run.id, Scheduled(message=message), force=True)
            rescheduled += 1
            log.warning("flow run %s (%s) %s", run.name, run.id, message)
            with session_scope() as session:
                case = session.exec(select(Case).where(Case.flow_run_id == str(run.id))).first()
                if case is not None and case.id is not None:
                    append_event(session, case.id, "run.rescheduled", at=now,
                                 key=f"run-rescheduled:{run.id}:{last.isoformat()}",
                                 data={"flow_run_id": str(run.id), "last_heartbeat": last.isoformat(),
                                       "note": "流程进程中断，已重新调度，已完成的步骤不会重复执行"})
    return rescheduled


_last_sweep = [float("-inf")]


def sweep_step(now: datetime) -> int:
    """The keeper's step: `sweep_stuck_runs` at most once per heartbeat interval (the keeper ticks
    every few seconds); an unreachable Prefect server is logged and tried again later.

    No `trust_now`: the keeper's loop ticks at the wall clock, where the default changes nothing,
    and tests tick the keeper at `now`s moved ahead for timers, which must not sweep live runs."""
    import httpx

    if time.monotonic() - _last_sweep[0] < HEARTBEAT_SECONDS:
        return 0
    _last_sweep[0] = time.monotonic()
    try:
        return sweep_stuck_runs(now)
    except (httpx.HTTPError, OSError) as exc:
        log.warning("stuck-run sweep skipped: Prefect unreachable (%s)", exc)
        return 0
