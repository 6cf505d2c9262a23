"""The runner process: serves every deployment with its schedule (started by `aftercare up`).

`AFTERCARE_EXTRA_FLOW_MODULES` (comma-separated module names, each with a `deployments()` function
like the procedure modules) adds deployments that are not part of the product — the tests' own
flows and the benchmarks' waiting flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os

from deployments import warm_start
from deployments.registry import PROCEDURE_MODULES, all_deployments


def extra_modules() -> list[str]:
    return [n.strip() for n in os.environ.get("AFTERCARE_EXTRA_FLOW_MODULES", "").split(",") if n.strip()]


def extra_deployments() -> list[object]:
    found: list[object] = []
    for name in extra_modules():
        found.extend(importlib.import_module(name).deployments())
    return found


def poll_seconds() -> float:
    """How often the runner asks for runs to start — the floor of approval-click latency.
    `AFTERCARE_RUNNER_POLL_SECONDS` (default 0.5; Prefect's own setting takes whole seconds only)."""
    raw = os.environ.get("AFTERCARE_RUNNER_POLL_SECONDS", "0.5")
    try:
        return max(0.1, float(raw))
    except ValueError:
        print(f"AFTERCARE_RUNNER_POLL_SECONDS={raw!r} is not a number; using 0.5", flush=True)
        return 0.5


def main() -> None:
    """`prefect.serve` with warm starts (deployments.warm_start): the same deployments and limit."""
    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    limit = int(os.environ.get("PREFECT_RUNNER_PROCESS_LIMIT", "20"))
    deployments = [*all_deployments(), *extra_deployments()]
    runner = Runner(limit=limit, query_seconds=poll_seconds())
    ids = [runner.add_deployment(d) for d in deployments]
    if warm_start.enabled():
        warm_start.use_forkserver([*PROCEDURE_MODULES, *extra_modules()])
        warm = warm_start.register_flows(runner, zip(ids, deployments, strict=True))
        print(f"aftercare runner: {len(deployments)} deployments, warm starts for {len(warm)}", flush=True)
    with contextlib.suppress(KeyboardInterrupt, TerminationSignal):
        asyncio.run(runner.start())


if __name__ == "__main__":
    main()
