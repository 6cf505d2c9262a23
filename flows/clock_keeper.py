"""The clock keeper (时钟守护): a long-running flow that fires due timers, SLA breaches and escalations.

Each wake-up is one `tick(now)`: it runs every step of `KEEPER_STEPS` — functions `f(now) -> int`
(how many things the step did), imported here, so a missing one fails at import, not at a tick.
Steps are independent: a step that raises is logged with its traceback and counted in the result
(under its dotted name), and the other steps still run.

The loop is not a replayed procedure: it reads the wall clock (models.wallclock.now) inside the
loop and sleeps until the next due clock, at most a few seconds. Tests call `tick(later_now)`
directly to let time pass.

Exactly one keeper runs: the keeper holds the lease `clock-keeper` (models.leases) and renews it on
every wake-up; a keeper that finds it held by another exits at once.

Where it runs: under `aftercare up`, inside the runner process (`host`, a thread started by
deployments.serve). The runner has imported Prefect and every procedure already, so the keeper
costs the step modules' imports there (~25 MB) instead of an interpreter of its own forked from the
warm-start server (~106 MB PSS, issue 26). The runner, not the approval web: the keeper is a flow
run (Running in the Prefect UI, its id the lease's holder) and the runner is the process that has
Prefect's engine loaded and is restarted by `up` like the keeper must be. Whenever no keeper holds
the lease, `host` calls the keeper flow in its thread; the call lasts as long as that keeper holds
the lease. A runner that is killed leaves its lease to run out (60 s), then the next runner's keeper
takes it over and marks the dead keeper's runs Cancelled. `aftercare up` marks the keeper runs
Cancelled when it stops (deployments.supervise.KeeperWatch); the runner releases the lease.
The `clock-keeper` deployment stays: a run of it started by hand finds the lease held and exits.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from prefect import flow

from models.db import is_transient, session_scope
from models.leases import current, release, renew, take
from models.wallclock import now as wall_now
from tasks import accident, approvals, clocks, complaints, drill, escalation, notify, renewal, runs, timers
from tasks.clocks import next_due
from tasks.ledger import unrecorded

# Each area appends its own step (a function `f(now) -> int`); the order is the order they run in:
# timers and approvals first (they wake flows), then clocks, then the notifier sends what they queued.
KeeperStep = Callable[[datetime], int]
KEEPER_STEPS: list[KeeperStep] = [
    timers.fire_due_timers,
    approvals.reconcile,
    runs.sweep_step,
    clocks.fire_due_clocks,
    clocks.escalate_stale_records,
    accident.send_due_standby,
    accident.send_due_vendor_support,
    accident.send_progress_updates,
    accident.send_vendor_daily_reports,
    # levels 3–4 act on any case (the team, the vendor, the standby); after the accident's own steps,
    # which date an accident's vendor call and standby by its window and half its restore time
    escalation.act_on_escalations,
    renewal.outreach_step,  # a renewal's follow-ups, escalations, reminder and lapse
    complaints.start_unstarted,  # a complaint taken while Prefect was down gets its flow
    drill.remind_due_training,  # a drill's training task that came due, told once
    notify.send_due_step,
]

MAX_SLEEP_SECONDS = 5.0
KEEPER_LEASE = "clock-keeper"
HOST_CHECK_SECONDS = 5.0  # how often a hosting process looks whether the lease is free
# set when the process that hosts the keeper stops: the keeper's loop wakes and ends at once
HOST_STOP = threading.Event()
# renewed every wake-up (at most MAX_SLEEP_SECONDS apart, plus a tick); a keeper killed without
# releasing it is replaced once it runs out
LEASE_TTL = timedelta(seconds=60)

log = logging.getLogger("aftercare.keeper")


def step_name(step: KeeperStep) -> str:
    """The dotted name a step is reported under ("tasks.clocks.fire_due_clocks")."""
    return f"{step.__module__}.{step.__name__}"


def tick(now: datetime, steps: Sequence[KeeperStep] | None = None) -> dict[str, Any]:
    """Run every keeper step once for `now`.

    Returns {"now", "steps": {name: count | "error"}, "done": total count, "errors": [{"step", "error"}]}.
    """
    result: dict[str, Any] = {"now": now, "steps": {}, "done": 0, "errors": []}
    for func in KEEPER_STEPS if steps is None else steps:
        name = step_name(func)
        try:
            count = int(func(now) or 0)
        except Exception as exc:
            if is_transient(exc):  # a busy database: the next tick does the step again, no traceback
                log.warning(
                    "keeper step %s waits for a busy database (%s)", name, str(getattr(exc, "orig", exc))
                )
            else:
                log.exception("keeper step %s failed at %s", name, now.isoformat())
            result["steps"][name] = "error"
            result["errors"].append({"step": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        result["steps"][name] = count
        result["done"] += count
    return result


def sleep_seconds(now: datetime, next_due: datetime | None, cap: float = MAX_SLEEP_SECONDS) -> float:
    """How long the loop may sleep: until the next due clock, at most `cap` seconds (timers, approvals
    and the outbox have their own due times, so the keeper never sleeps longer than the cap)."""
    if next_due is None:
        return cap
    return max(0.0, min(cap, (next_due - now) / timedelta(seconds=1)))


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log


def run_loop(
    *,
    max_ticks: int | None = None,
    cap: float = MAX_SLEEP_SECONDS,
    steps: Sequence[KeeperStep] | None = None,
    on_tick: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    sleep: Callable[[float], object] = time.sleep,
) -> int:
    """The keeper's loop: tick at the wall clock's `now`, sleep until the next due clock (capped)."""
    ticks = 0
    while max_ticks is None or ticks < max_ticks:
        ticks += 1
        result = tick(wall_now(), steps)
        if on_tick is not None:
            on_tick(result)
        if result["done"] or result["errors"]:
            logger.info("tick: %s", {k: v for k, v in result["steps"].items() if v})
        for err in result["errors"]:
            logger.error("keeper step %s failed: %s", err["step"], err["error"])
        if (max_ticks is not None and ticks >= max_ticks) or (should_stop is not None and should_stop()):
            break
        try:
            upcoming = next_due(wall_now())
        except Exception:
            logger.exception("keeper could not read the next due time")
            upcoming = None
        # a floor, so that a clock a failing step left overdue does not turn the loop into a spin
        sleep(max(0.05, sleep_seconds(wall_now(), upcoming, cap)))
    return ticks


def keeper_holder() -> str:
    """Who holds the lease: the keeper's flow run id (what `aftercare up` cancels), else host:pid."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return str(run_id) if run_id else f"{socket.gethostname()}:{os.getpid()}"


def take_lease(holder: str, now: datetime, ttl: timedelta = LEASE_TTL) -> bool:
    with session_scope() as session:
        return take(session, KEEPER_LEASE, holder, now, ttl)


def lease_holder(now: datetime) -> str | None:
    with session_scope() as session:
        lease = current(session, KEEPER_LEASE, now)
        return lease.holder if lease is not None else None


def keep_lease(
    holder: str,
    now: datetime,
    ttl: timedelta = LEASE_TTL,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
) -> bool:
    """Renew the lease; False only when another keeper holds it now. A database error is logged and
    counts as kept: the lease then runs out by itself if the error lasts."""
    try:
        with session_scope() as session:
            return renew(session, KEEPER_LEASE, holder, now, ttl)
    except Exception:
        logger.exception("keeper could not renew its lease")
        return True


def release_lease(holder: str) -> None:
    try:
        with session_scope() as session:
            release(session, KEEPER_LEASE, holder)
    except Exception:
        log.exception("keeper could not release its lease (it runs out by itself)")


# Functions, not HOST_STOP itself, in the flow's body: a warm start sends the body by value
# (cloudpickle), and an Event (a lock) cannot travel; module functions go by name.
HOSTED_HOLDER: list[str] = []  # the lease holder of the keeper this process runs, once it took the lease


def park_if_stopping() -> None:
    """When the hosting process stops, the keeper's thread waits here until the process ends: its
    flow run then reports nothing — `aftercare up` marked it Cancelled, and a keeper that returned
    would report Completed over that — and it renews nothing after `stop_hosting` released the lease."""
    if HOST_STOP.is_set():
        threading.Event().wait()


def hosted_sleep(seconds: float) -> None:
    """Sleep until the next wake-up; parked at once when the hosting process stops."""
    HOST_STOP.wait(seconds)
    park_if_stopping()


@flow(name="clock-keeper", retries=0)
def clock_keeper(max_ticks: int | None = None, interval_seconds: float = MAX_SLEEP_SECONDS) -> int:
    """时钟守护: wakes at the next due time, fires timers, breaches and escalations."""
    logger = _logger()
    holder = keeper_holder()
    if not take_lease(holder, wall_now()):
        logger.info(
            "另一个时钟守护正在运行，本次退出 / another clock keeper (%s) holds the lease; this one exits",
            lease_holder(wall_now()),
        )
        return 0
    HOSTED_HOLDER[:] = [holder]
    cancel_other_keeper_runs(holder, logger)
    lost = False

    def lease_lost() -> bool:
        nonlocal lost
        park_if_stopping()
        lost = not keep_lease(holder, wall_now(), logger=logger)
        if lost:
            logger.warning(
                "时钟守护租约已被接管，本次退出 / the lease was taken over by another keeper; exiting"
            )
        return lost

    previous = _exit_on_sigterm()
    try:
        with unrecorded():  # a loop, never replayed: a step its code calls just runs (tasks.ledger)
            return run_loop(
                max_ticks=max_ticks,
                cap=min(interval_seconds, MAX_SLEEP_SECONDS),
                logger=logger,
                should_stop=lease_lost,
                sleep=hosted_sleep,
            )
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if not lost:
            release_lease(holder)


def _exit_on_sigterm() -> Any:
    """SIGTERM ends the keeper at once, quietly. `aftercare up` marks the keeper run Cancelled and
    releases the lease before it stops the runner; Prefect's own handler would then report the run
    Crashed over that (seen when the two came 50 ms apart). Returns the handler it replaced (None
    when not on the main thread, where no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def leave(_signum: int, _frame: object) -> None:
        os._exit(0)

    return signal.signal(signal.SIGTERM, leave)


def cancel_other_keeper_runs(
    holder: str, logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log
) -> int:
    """This keeper holds the lease: any other keeper run still marked live is dead (its process was
    killed without stopping it) — mark it Cancelled. Outside a flow run (a test calling the
    function) there is nothing to do. Returns how many were marked."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.runtime import flow_run
    from prefect.states import Cancelled

    if not flow_run.get_id():
        return 0
    marked = 0
    try:
        with get_client(sync_client=True) as client:
            live = client.read_flow_runs(
                limit=200,
                sort=FlowRunSort.START_TIME_DESC,
                flow_filter=FlowFilter(name=FlowFilterName(any_=[clock_keeper.name])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(
                            any_=[
                                StateType.RUNNING,
                                StateType.PENDING,
                                StateType.SCHEDULED,
                                StateType.CANCELLING,
                            ]
                        )
                    )
                ),
            )
            for run in live:
                if str(run.id) != holder:
                    client.set_flow_run_state(
                        run.id,
                        Cancelled(message="时钟守护已由另一进程接管 / the keeper's lease was taken over"),
                        force=True,
                    )
                    marked += 1
    except Exception:  # the keeper keeps running; the stale runs only look alive in the UI
        logger.exception("keeper could not mark the earlier keeper runs Cancelled")
    return marked


def host(stop: threading.Event = HOST_STOP, check_seconds: float = HOST_CHECK_SECONDS) -> None:
    """Run the keeper in this process until `stop` is set: whenever no keeper holds the lease, call
    the keeper flow (a flow run of its own in Prefect), which returns when its lease is lost or
    `stop` is set. For a thread of a process that stays up (deployments.serve)."""
    while not stop.is_set():
        try:
            if lease_holder(wall_now()) is None:
                clock_keeper()
        except Exception:
            log.exception("clock keeper ended with an error; it starts again when the lease is free")
        stop.wait(check_seconds)


def host_in_thread() -> threading.Thread:
    thread = threading.Thread(target=host, name="clock-keeper", daemon=True)
    thread.start()
    return thread


def stop_hosting() -> None:
    """The hosting process stops: park the keeper's thread (`park_if_stopping`) and release the
    lease it holds, so that the next keeper starts at once. The caller then ends the process."""
    HOST_STOP.set()
    for holder in HOSTED_HOLDER:
        release_lease(holder)


def deployments() -> list[Any]:
    # No deployment concurrency limit: a keeper run left "Running" by a killed runner would hold
    # the slot for ever. The lease above keeps it to one keeper instead, and it runs out on its own.
    return [clock_keeper.to_deployment(name="clock-keeper", description="时钟守护：定时器、SLA 超时与升级")]
