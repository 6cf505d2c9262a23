"""Every deployment aftercare serves, with its schedule.

Each procedure module exposes `deployments() -> list[RunnerDeployment]`; this is the one list
`aftercare up` serves and the tests register.

`AFTERCARE_EXTRA_FLOW_MODULES` (comma-separated module names, each with a `deployments()` function
like the procedure modules) adds deployments that are not part of the product — the tests' own
flows and the benchmarks' waiting flow — to what the runner serves (deployments.serve) and to what
`aftercare deploy --pool` registers (deployments.pool).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from flows import accident, assurance, clock_keeper, complaint, drill, inspection, renewal, repair, survey

# The procedure modules that contribute deployments, each with its `deployments()`.
PROCEDURES: list[ModuleType] = [
    clock_keeper,
    accident,
    repair,
    inspection,
    drill,
    assurance,
    complaint,
    renewal,
    survey,
]
PROCEDURE_MODULES = [module.__name__ for module in PROCEDURES]  # what a flow-run fork preloads


def all_deployments() -> list[Any]:
    found: list[Any] = []
    for module in PROCEDURES:
        found.extend(module.deployments())
    return found


def extra_modules() -> list[str]:
    """The modules named by `AFTERCARE_EXTRA_FLOW_MODULES`."""
    return [n.strip() for n in os.environ.get("AFTERCARE_EXTRA_FLOW_MODULES", "").split(",") if n.strip()]


def extra_deployments() -> list[Any]:
    found: list[Any] = []
    for name in extra_modules():
        found.extend(importlib.import_module(name).deployments())
    return found
