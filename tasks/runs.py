"""Stuck and crashed flow runs (DESIGN.md §2): a runner that dies leaves its runs *Running* for
ever; a flow-run process killed by a signal (kill -9, the OOM killer) leaves its run *Crashed*.

Every flow-run process sends Prefect a heartbeat event (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, set by
deployments.prefect_env). The keeper step `sweep_stuck_runs(now)` finds Running runs whose last
sign of life — the later of their Running state and their last heartbeat — is older than
`AFTERCARE_STUCK_RUN_SECONDS`, and schedules them again: a runner starts the run from the top and
the replay repeats nothing (persisted results, idempotent steps). The case the run works for gets
an event, so the history says why a step ran in another process.

`sweep_crashed_runs(now)` does the same for a *Crashed* run whose case is still live (not closed,
archived, handed over or cancelled) — and for a run that ended *Failed* only because the database
stayed busy past `AFTERCARE_BUSY_RETRY_STEP_SECONDS` (`models.db.DatabaseBusy`): a transient error
must not end a case's procedure. At most `CRASH_RESCHEDULES` times per run and step — the step
being the case's last event before the crash; a run that moved on to a new step starts counting
again — each reschedule an event on the case. Then it opens an incident naming the case (the
dispatcher's list, web/incidents.py) and leaves the run alone: a step that crashes every time
(a step that needs more memory than the machine has) needs a person.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlmodel import select

from models import wallclock
from models.approvals import Approval, Timer
from models.cases import ENDED_STATUSES, Case, Event, Incident, append_event
from models.db import session_scope, transaction
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
    """(flow run, last sign of life) of every Running run silent for longer than `limit` — and of
    every run Pending that long: a worker that died between taking a run (Pending, "Submitting")
    and its flow process starting leaves it Pending for ever (deployments.cluster)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    running = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))
        ),
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


CRASH_RESCHEDULES = 3  # per run and step; then an incident
CRASH_EVENT = "run.crash_rescheduled"
GAVE_UP_EVENT = "run.crash_gave_up"
INCIDENT_KIND = "run_crashed"
# a case whose procedure has ended: a crashed run of it has nothing left to do
# how a flow run that failed on a busy database says so (its state message names the exception)
BUSY_FAILURE = "DatabaseBusy"


def crashed_runs(client: Any, batch: int = 200) -> list[Any]:
    """The newest Crashed runs, and Failed runs that failed only on a busy database."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    def newest(kind: StateType) -> list[Any]:
        # one query per state: failed runs of other causes (a refused intake) never crowd crashed ones out
        return list(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[kind]))
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=batch,
            )
        )

    failed = [
        r for r in newest(StateType.FAILED) if r.state is not None and BUSY_FAILURE in (r.state.message or "")
    ]
    return newest(StateType.CRASHED) + failed


def case_of_run(session: Any, run_id: str) -> Any:
    """The case a flow run works for: the case it opened, else the case of its approvals or timers."""
    case = session.exec(select(Case).where(Case.flow_run_id == run_id)).first()
    if case is not None:
        return case
    for table in (Approval, Timer):
        case_id = session.exec(select(table.case_id).where(table.flow_run_id == run_id)).first()
        if case_id is not None:
            return session.get(Case, case_id)
    return None


def is_live(case: Any) -> bool:
    return case.closed_at is None and case.status not in ENDED_STATUSES


def _step_at(session: Any, case_id: int) -> tuple[str, str]:
    """(digest, label) of the step the case's procedure was at: its last event that is not ours."""
    import hashlib

    from sqlmodel import col

    last = session.exec(
        select(Event)
        .where(Event.case_id == case_id, ~col(Event.kind).startswith("run."))
        .order_by(col(Event.id).desc())
        .limit(1)
    ).first()
    label = (last.key or last.kind) if last is not None else "start"
    ident = f"{last.id}:{label}" if last is not None else "start"
    return hashlib.sha1(ident.encode()).hexdigest()[:12], label


def _judge_crash(run: Any, now: datetime) -> tuple[str, Any] | None:
    """One transaction: decide whether a crashed run is rescheduled (recording that on its case) or
    given up (opening the incident). ("reschedule" | "gave_up", case) or None: not ours to touch."""
    from sqlmodel import col

    state_message = (run.state.message or "")[:300]
    why = "数据库繁忙" if run.state.type.value == "FAILED" else "流程进程被终止"

    def judge(session: Any) -> tuple[str, Any] | None:
        case = case_of_run(session, str(run.id))
        if case is None or case.id is None or not is_live(case):
            return None
        digest, label = _step_at(session, case.id)
        prefix = f"run-crashed:{run.id}:{digest}:"
        done = len(
            session.exec(
                select(Event.id).where(Event.case_id == case.id, col(Event.key).startswith(prefix))
            ).all()
        )
        if done >= CRASH_RESCHEDULES:
            opened = [
                i
                for i in session.exec(
                    select(Incident).where(Incident.case_id == case.id, Incident.kind == INCIDENT_KIND)
                ).all()
                if i.data.get("flow_run_id") == str(run.id) and i.data.get("step") == digest
            ]
            if opened:
                return None  # given up before: the incident waits for a person
            session.add(
                Incident(
                    case_id=case.id,
                    kind=INCIDENT_KIND,
                    opened_at=now,
                    message=(
                        f"工单 {case.number}「{case.title}」的流程在步骤「{label}」处{why}，"
                        f"已自动重新调度 {done} 次仍未完成，已停止自动重试，请人工处理"
                        f"（流程运行 {run.name} / {run.id}）。"
                    ),
                    data={
                        "flow_run_id": str(run.id),
                        "flow_run_name": run.name,
                        "step": digest,
                        "step_label": label,
                        "reschedules": done,
                        "state": run.state.name,
                        "state_message": state_message,
                    },
                )
            )
            append_event(
                session,
                case.id,
                GAVE_UP_EVENT,
                at=now,
                key=f"{prefix}gave-up",
                data={
                    "flow_run_id": str(run.id),
                    "step": label,
                    "reschedules": done,
                    "note": f"流程在同一步骤{why} {done + 1} 次，已转人工处理",
                },
            )
            return "gave_up", case
        append_event(
            session,
            case.id,
            CRASH_EVENT,
            at=now,
            key=f"{prefix}{done + 1}",
            data={
                "flow_run_id": str(run.id),
                "step": label,
                "attempt": done + 1,
                "state": run.state.name,
                "state_message": state_message,
                "note": f"流程{why}，已重新调度（第 {done + 1} 次），已完成的步骤不会重复执行",
            },
        )
        return "reschedule", case

    return transaction(judge)


def sweep_crashed_runs(now: datetime) -> int:
    """Keeper step: schedule again every Crashed run of a live case (and every run Failed only on
    a busy database), at most CRASH_RESCHEDULES times per step, then open an incident; returns how
    many were rescheduled."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    rescheduled = 0
    with get_client(sync_client=True) as client:
        for run in crashed_runs(client):
            verdict = _judge_crash(run, now)
            if verdict is None:
                continue
            outcome, case = verdict
            if outcome == "gave_up":
                log.error(
                    "flow run %s (%s) of case %s crashed %d times at one step: incident opened",
                    run.name,
                    run.id,
                    case.number,
                    CRASH_RESCHEDULES + 1,
                )
                continue
            message = f"aftercare: {run.state.name} ({(run.state.message or '')[:120]}); scheduled again"
            client.set_flow_run_state(run.id, Scheduled(message=message), force=True)
            rescheduled += 1
            log.warning("flow run %s (%s) of case %s: %s", run.name, run.id, case.number, message)
    return rescheduled


def sweep_stuck_runs(now: datetime, *, limit: timedelta | None = None, trust_now: bool = False) -> int:
    """Keeper step: schedule again every Running run without a heartbeat for too long; returns how many.

    Silence is measured up to `silence_reference(now, trust_now=trust_now)`: the wall clock at the
    latest, unless the caller vouches for its `now`.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

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
                    append_event(
                        session,
                        case.id,
                        "run.rescheduled",
                        at=now,
                        key=f"run-rescheduled:{run.id}:{last.isoformat()}",
                        data={
                            "flow_run_id": str(run.id),
                            "last_heartbeat": last.isoformat(),
                            "note": "流程进程中断，已重新调度，已完成的步骤不会重复执行",
                        },
                    )
    return rescheduled


_last_sweep = [float("-inf")]


def sweep_step(now: datetime) -> int:
    """The keeper's step: `sweep_stuck_runs` and `sweep_crashed_runs` at most once per heartbeat interval (the keeper ticks
    every few seconds); an unreachable Prefect server is logged and tried again later.

    No `trust_now`: the keeper's loop ticks at the wall clock, where the default changes nothing,
    and tests tick the keeper at `now`s moved ahead for timers, which must not sweep live runs."""
    import httpx

    if time.monotonic() - _last_sweep[0] < HEARTBEAT_SECONDS:
        return 0
    _last_sweep[0] = time.monotonic()
    try:
        return sweep_stuck_runs(now) + sweep_crashed_runs(now)
    except (httpx.HTTPError, OSError) as exc:
        log.warning("stuck-run sweep skipped: Prefect unreachable (%s)", exc)
        return 0
