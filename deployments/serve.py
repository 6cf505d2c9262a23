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
from models.settings import Settings, get_settings

MIN_POLL_SECONDS = 0.1  # below this the runner's polls load the Prefect server for no gain


def extra_modules() -> list[str]:
    return [n.strip() for n in os.environ.get("AFTERCARE_EXTRA_FLOW_MODULES", "").split(",") if n.strip()]


def extra_deployments() -> list[object]:
    found: list[object] = []
    for name in extra_modules():
        found.extend(importlib.import_module(name).deployments())
    return found


def poll_seconds(settings: Settings | None = None) -> float:
    """How often the runner asks for runs to start — the floor of approval-click latency.
    `AFTERCARE_RUNNER_POLL_SECONDS` (default 0.25, at least 0.1; Prefect's own setting takes whole
    seconds only)."""
    return max(MIN_POLL_SECONDS, (settings or get_settings()).runner_poll_seconds)


def main() -> None:
    """`prefect.serve` with warm starts (deployments.warm_start): the same deployments and limit."""
    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    settings = get_settings()  # `aftercare up` validated the same environment before starting us
    limit = int(os.environ.get("PREFECT_RUNNER_PROCESS_LIMIT", "20"))
    deployments = [*all_deployments(), *extra_deployments()]
    runner = Runner(limit=limit, query_seconds=poll_seconds(settings))
    ids = [runner.add_deployment(d) for d in deployments]
    if warm_start.enabled(settings):
        warm_start.use_forkserver([*PROCEDURE_MODULES, *extra_modules()])
        warm = warm_start.register_flows(runner, zip(ids, deployments, strict=True))
        print(f"aftercare runner: {len(deployments)} deployments, warm starts for {len(warm)}", flush=True)
    with contextlib.suppress(KeyboardInterrupt, TerminationSignal):
        asyncio.run(runner.start())


if __name__ == "__main__":
    main()
