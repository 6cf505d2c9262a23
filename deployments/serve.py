"""The runner process: serves every deployment with its schedule (started by `aftercare up`).

`AFTERCARE_EXTRA_FLOW_MODULES` (comma-separated module names, each with a `deployments()` function
like the procedure modules) adds deployments that are not part of the product — the tests' own
flows and the benchmarks' waiting flow.
"""

from __future__ import annotations

import importlib
import os

from prefect import serve

from deployments.registry import all_deployments


def extra_deployments() -> list[object]:
    found: list[object] = []
    for name in filter(
        None, (n.strip() for n in os.environ.get("AFTERCARE_EXTRA_FLOW_MODULES", "").split(","))
    ):
        found.extend(importlib.import_module(name).deployments())
    return found


def main() -> None:
    limit = int(os.environ.get("PREFECT_RUNNER_PROCESS_LIMIT", "20"))
    serve(*all_deployments(), *extra_deployments(), limit=limit, print_starting_message=False)


if __name__ == "__main__":
    main()
