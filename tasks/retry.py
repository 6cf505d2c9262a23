"""Prefect's `task`, with each step re-run whole while the database is busy.

Every step module imports `task` from here instead of from prefect: the step's function becomes one
unit of work of `models.db.retrying(kind="step")` — on SQLite `database is locked` or a PostgreSQL
serialization / connection error the whole function runs again (a new transaction, after a
jittered back-off) for up to `AFTERCARE_BUSY_RETRY_STEP_SECONDS`, so a flow waits for the database
instead of ending Failed (DESIGN.md §7 rows 10, 11). Not Prefect's own `retries=`: those re-run on
any error, and the web needs the same policy without Prefect; the one mechanism lives in models.db.

A re-run is safe for the same reason a replay is: steps are idempotent (unique keys), and the
transaction that met the busy database was rolled back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task
from prefect import task as prefect_task

from models.db import retrying

P = ParamSpec("P")
R = TypeVar("R")


def task(*, name: str, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """`prefect.task(name=..., **options)` over `models.db.retrying(fn, kind="step")`."""

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        return prefect_task(name=name, **options)(retrying(fn, kind="step"))

    return decorate
