"""Deployments on a Prefect work pool: `aftercare deploy --pool NAME`.

`aftercare up` serves every deployment from one runner process (deployments.serve). On Prefect's
production architecture (README "production", `aftercare cluster up`) the flow runs are executed by
**workers** of a *process* work pool instead (`prefect worker start --pool NAME`), on as many
machines as needed. This module registers the very same deployments — `deployments.registry`'s
list, with their schedules, run forms and parameter schemas (and those of
`AFTERCARE_EXTRA_FLOW_MODULES`, as the runner serves them: the benchmarks' waiting flow) — to such a
pool: only where the runs execute changes.

A deployment's name stays what the code starts runs by (`repair/repair`, …): registered to a pool,
it is run by the pool's workers; served again by `aftercare up`, by its runner. A worker starts each
flow run as `python -m prefect.engine` in `working_dir`, the directory where aftercare's code is
installed on the worker's machine (the same path on every worker), with the worker's environment
(`deployments.cluster` gives each worker the settings `aftercare up` gives its runner).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # where the flows' entrypoints (flows/*.py) are
POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
POOL_TYPE = "process"


class PoolError(ValueError):
    """A pool name or pool that cannot be used; the message says why (Chinese / English)."""


def check_pool_name(name: str) -> str:
    name = name.strip()
    if not POOL_NAME.match(name):
        raise PoolError(
            f"工作池名称应为小写字母、数字、- 或 _，最长 63 个字符 / a pool name is lowercase letters, "
            f"digits, - or _ (at most 63): {name[:80]!r}"
        )
    return name


def ensure_pool(client: Any, name: str) -> bool:
    """Create the process work pool `name` unless it exists; True when it was created. A pool of
    another type is refused: its workers could not run these flows as processes."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=POOL_TYPE,
                    description="aftercare 流程运行工作池 / aftercare's flow runs (process workers)",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        except ObjectAlreadyExists:  # another `deploy` created it meanwhile
            return False
        return True
    if pool.type != POOL_TYPE:
        raise PoolError(
            f"工作池 {name} 的类型是 {pool.type}，应为 process / pool {name} is of type {pool.type}, not process"
        )
    return False


def deploy_to_pool(
    pool: str, deployments: Sequence[Any] | None = None, *, working_dir: Path = ROOT
) -> list[str]:
    """Register `deployments` (default: every deployment of the registry, and the extra ones of
    `AFTERCARE_EXTRA_FLOW_MODULES`) to the process work pool `pool`, created if missing; the full
    names registered (`flow/deployment`)."""
    from prefect.client.orchestration import get_client

    from deployments.registry import all_deployments, extra_deployments

    pool = check_pool_name(pool)
    found = list(deployments) if deployments is not None else [*all_deployments(), *extra_deployments()]
    with get_client(sync_client=True) as client:
        ensure_pool(client, pool)
    names = []
    for deployment in found:
        # the worker runs `python -m prefect.engine` there; the entrypoint (flows/x.py:f) is relative to it
        # stream_output off: the flow process writes nothing through its worker, so a worker that
        # dies leaves its flow runs to finish on their own (as a runner's do); their logs go to Prefect
        deployment.job_variables = {
            **deployment.job_variables,
            "working_dir": str(working_dir),
            "stream_output": False,
        }
        deployment._path = str(working_dir)
        deployment.apply(work_pool_name=pool)
        names.append(f"{deployment.flow_name}/{deployment.name}")
    return names
