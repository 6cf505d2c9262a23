"""Every deployment aftercare serves, with its schedule.

Each procedure module exposes `deployments() -> list[RunnerDeployment]`; this is the one list
`aftercare up` serves and the tests register.
"""

from __future__ import annotations

import importlib
from typing import Any

# Procedure modules that contribute deployments; a module that is missing its function is a bug.
PROCEDURE_MODULES = [
    "flows.clock_keeper",
    "flows.accident",
    "flows.repair",
    "flows.inspection",
]


def all_deployments() -> list[Any]:
    found: list[Any] = []
    for name in PROCEDURE_MODULES:
        module = importlib.import_module(name)
        found.extend(module.deployments())
    return found
