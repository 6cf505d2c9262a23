"""Warm starts for flow runs: the runner forks each run from a process that has already imported
Prefect and every procedure, instead of starting a new interpreter per run.

Why: a flow that waits for a person exits (DESIGN.md §2), so every approval click starts the run
again. Prefect's runner starts a served run either with `python -m prefect.engine` (a cold
interpreter: importing Prefect, SQLAlchemy, Apprise and the procedures costs 5–7 s here) or, when
it holds the flow object for the deployment, with `multiprocessing`'s *spawn* context — cold too.
Two small changes make the second path warm:

1. `register_flows(runner, deployments)` gives the runner the flow object of every deployment it
   serves (Prefect's `serve()` only does that for `Runner.add_flow`, not for `add_deployment`).
2. `use_forkserver(preload)` makes Prefect's `run_flow_in_subprocess` use the standard library's
   *forkserver* context with the procedures preloaded: each run is a fork of a clean, single-
   threaded server process that has imported everything once (not a fork of the runner, whose
   event loop and threads must not be copied).

The flow object travels to the child by cloudpickle. A flow function is pickled by value (the
module attribute is the `Flow`, not the function), and only the globals its code names go with
it — string annotations (`from __future__ import annotations`) would then name classes the child
cannot see. `resolved(flow)` evaluates them first, so parameter models and forms stay whole.

`AFTERCARE_COLD_START=1` (or true/yes/on) turns all of this off (every run then starts `python -m prefect.engine`).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from models.settings import Settings, get_settings

log = logging.getLogger("aftercare.serve")


def enabled(settings: Settings | None = None) -> bool:
    """Warm starts, unless `AFTERCARE_COLD_START` is on."""
    return not (settings or get_settings()).cold_start


def module_of(entrypoint: str) -> tuple[str, str] | None:
    """'flows/repair.py:repair' → ('flows.repair', 'repair'); 'flows.repair.repair' likewise."""
    if ":" in entrypoint:
        path, attr = entrypoint.rsplit(":", 1)
        p = Path(path)
        if p.suffix != ".py" or p.is_absolute() or ".." in p.parts:
            return None
        return ".".join(p.with_suffix("").parts), attr
    if "." in entrypoint:
        module, attr = entrypoint.rsplit(".", 1)
        return module, attr
    return None


def resolved(flow: Any) -> Any:
    """The flow with its function's annotations evaluated (see the module docstring)."""
    fn = flow.fn
    try:
        fn.__annotations__ = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # an annotation that cannot be resolved stays a string; say so
        log.warning("flow %s: annotations left unresolved (%s)", getattr(flow, "name", fn), exc)
    return flow


def flow_for(deployment: Any) -> Any | None:
    """The flow object a deployment runs, imported by module name; None when it cannot be found."""
    found = module_of(deployment.entrypoint or "")
    if found is None:
        return None
    module_name, attr = found
    try:
        flow = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        log.warning("deployment %s: cold starts (%s)", deployment.name, exc)
        return None
    return resolved(flow) if hasattr(flow, "fn") else None


def register_flows(runner: Any, pairs: Iterable[tuple[Any, Any]]) -> list[str]:
    """Give the runner the flow object of each (deployment_id, deployment); the names registered."""
    names = []
    for deployment_id, deployment in pairs:
        flow = flow_for(deployment)
        if flow is not None:
            runner._deployment_registry.register_flow(deployment_id, flow)
            names.append(deployment.name)
    return names


class _ForkserverMultiprocessing:
    """Stands in for the `multiprocessing` module inside `prefect.flow_engine`: every context is
    the forkserver one."""

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)

    @staticmethod
    def get_context(method: str | None = None) -> Any:
        return multiprocessing.get_context("forkserver")


# The procedures import their step modules at module top (no import cycle: tests/test_architecture.py),
# so preloading the procedures brings the steps in. `tasks.channels` (Apprise, for the address check
# on every write of a person) is named here as well, so a run is forked with it even if a procedure
# stops importing it.
LATE_IMPORTS = ("tasks.channels",)


def use_forkserver(preload: Iterable[str]) -> None:
    """Run flow subprocesses as forks of a server that has imported `preload`, Prefect's engine and
    the steps' late imports; the server starts now, so the first run after start-up is warm too."""
    import multiprocessing.forkserver

    import prefect.flow_engine

    modules = ["prefect.flow_engine", "prefect.task_engine", *preload, *LATE_IMPORTS]
    multiprocessing.set_forkserver_preload(list(dict.fromkeys(modules)))
    prefect.flow_engine.multiprocessing = _ForkserverMultiprocessing()  # type: ignore[assignment]
    multiprocessing.forkserver.ensure_running()
