"""Every deployment aftercare serves, with its schedule.

Each procedure module exposes `deployments() -> list[RunnerDeployment]`; this is the one list
`aftercare up` serves and the tests register.
"""

from __future__ import annotations

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
