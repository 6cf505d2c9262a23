"""A process worker of aftercare's work pool whose flow runs start warm:

    python -m deployments.worker --pool aftercare --name worker-1

On Prefect's production architecture (`aftercare cluster up`, README "production") flow runs are
executed by the workers of a *process* work pool. Prefect's own process worker starts every run as a
new interpreter — in 3.8.8 even two: `python -m prefect.runner._workspace_supervisor`, which starts
`python -m prefect.engine` — and each one imports Prefect, SQLAlchemy, Apprise and the procedures
again: about 5 s of CPU for every cycle of a procedure (its start and every wake-up after an approval
click or a timer). With dozens of procedures waking on two cores, the workers did nothing else.

This worker is Prefect's `ProcessWorker` with one change, the one `aftercare up`'s runner has
(deployments.warm_start): a run whose deployment's flow this worker can import is forked from a fork
server that has imported Prefect and every procedure once (`DirectSubprocessStarter`, the starter
Prefect's own runner uses for the flows it holds). Polling, submission, the "submitting flow run"
log line, cancellation and crash reporting stay Prefect's. A deployment whose flow cannot be found
here starts cold, as Prefect's worker would start it. `AFTERCARE_COLD_START=1` turns the warm start
off (every run then starts as in `prefect worker start`).

A worker killed with SIGKILL leaves its running flow runs to finish on their own, as a runner's do:
they are forks of the fork server, which ends when the worker's end closes its "alive" pipe; the
runs keep going and report to Prefect themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import warnings
from typing import Any
from uuid import UUID

from deployments import warm_start
from deployments.pool import PoolError, check_pool_name
from deployments.registry import PROCEDURE_MODULES, extra_modules

log = logging.getLogger("aftercare.worker")


def worker_class() -> type[Any]:
    """`WarmProcessWorker`, defined on first use (importing Prefect's worker registers it)."""
    import anyio
    import anyio.abc
    from prefect.runner._flow_run_executor import FlowRunExecutorContext
    from prefect.runner._starter_direct import DirectSubprocessStarter
    from prefect.workers.process import ProcessWorker, ProcessWorkerResult

    class WarmProcessWorker(ProcessWorker):
        """Prefect's process worker; runs of a flow it can import are forked warm."""

        _flows: dict[UUID, Any]

        async def _flow_of(self, flow_run: Any) -> Any | None:
            """The flow object of the run's deployment (imported once per deployment), or None."""
            if flow_run.deployment_id is None or not warm_start.enabled():
                return None
            cache = self.__dict__.setdefault("_flows", {})
            if flow_run.deployment_id not in cache:
                deployment = await self.client.read_deployment(flow_run.deployment_id)
                cache[flow_run.deployment_id] = (warm_start.flow_for(deployment), deployment.name)
            return cache[flow_run.deployment_id]

        async def run(
            self,
            flow_run: Any,
            configuration: Any,
            task_status: anyio.abc.TaskStatus[int] | None = None,
        ) -> Any:
            status = task_status if task_status is not None else anyio.TASK_STATUS_IGNORED
            found = await self._flow_of(flow_run)
            if found is None or found[0] is None:
                return await super().run(flow_run, configuration, status)
            flow, deployment_name = found
            execution: Any = None
            async with FlowRunExecutorContext() as ctx:
                starter = DirectSubprocessStarter(
                    flow=flow, deployment_name=deployment_name, control_channel=ctx.control_channel
                )

                async def resolve(_run: Any) -> Any:
                    return flow

                executor = ctx.create_executor(
                    flow_run, starter, resolve_flow=resolve, propose_submitting=False
                )

                async def execute(
                    *, task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED
                ) -> None:
                    nonlocal execution
                    execution = await executor.submit(task_status=task_status)

                async with anyio.create_task_group() as group:
                    handle = await group.start(execute)
                    if handle.pid is None:
                        raise RuntimeError("Flow run process has no PID")
                    status.started(handle.pid)
            if execution is None or execution.status_code is None:
                raise RuntimeError("Failed to start flow run process.")
            return ProcessWorkerResult(
                status_code=execution.status_code, identifier=str(execution.handle.pid)
            )

    return WarmProcessWorker


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.worker", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--pool", required=True, help="the process work pool (aftercare deploy --pool)")
    parser.add_argument("--name", required=True, help="this worker's name, shown in Prefect and its logs")
    parser.add_argument("--limit", type=int, default=None, help="flow runs at once (default: no limit)")
    args = parser.parse_args(argv)
    try:
        args.pool = check_pool_name(args.pool)
    except PoolError as exc:
        parser.exit(2, f"{exc}\n")
    if args.limit is not None and args.limit < 1:
        parser.exit(2, f"并发上限应为正整数 / --limit must be a positive whole number: {args.limit}\n")
    return args


async def serve(pool: str, name: str, limit: int | None) -> None:
    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the subclass shares the "process" type key with Prefect's worker
        cls = worker_class()
    worker = cls(
        name=name,
        work_pool_name=pool,
        limit=limit,
        heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value()),
    )
    await worker.start(printer=print)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if warm_start.enabled():
        # before any thread starts: the fork server is a fork of this process and shares its imports
        # (and the extra flows' modules, as the runner preloads them: deployments.serve)
        warm_start.use_forkserver([*PROCEDURE_MODULES, *extra_modules()], fork_here=True)
    print(f"aftercare worker {args.name}: pool {args.pool}, warm starts {warm_start.enabled()}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.pool, args.name, args.limit))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("AFTERCARE_LOG_LEVEL", "INFO"))
    raise SystemExit(main())
