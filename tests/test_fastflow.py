"""The fast test layer itself: what its keeper tick runs."""

from __future__ import annotations

from flows.clock_keeper import KEEPER_STEPS, step_name
from tasks.runs import sweep_step
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow


def test_the_fast_keeper_tick_runs_every_step_but_the_sweep_of_prefect_runs(fast: FastFlow) -> None:
    result = fast.tick(T0)

    assert step_name(sweep_step) not in result["steps"]  # no Prefect here: nothing to sweep
    assert set(result["steps"]) == {step_name(step) for step in KEEPER_STEPS if step is not sweep_step}
    assert result["errors"] == []
