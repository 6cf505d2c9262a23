"""Who answers a wait when the run does not suspend: the seam of the fast test layer.

In production nobody is registered here: a flow body that waits (`tasks.approvals.await_approval`,
`tasks.timers.wait_until`) suspends its Prefect run and a person's click (or the clock keeper)
wakes it. The fast test layer (tests/fixtures/fastflow.py) calls a flow body in-process as a plain
function, inside `tasks.ledger.replaying` (the same step layer, recorded in the same ledger), and
registers a `Responder` for the block: each wait asks it instead of suspending — it answers an
approval through the real `decide()` (validation, records, notifications as on the link page) and
fires a timer through the real `fire_due_timers` at the timer's moment of its scripted clock — and
the wait then reads the answer exactly as after a wake-up. Starting another Prefect run (hand-over,
a 5-minute talk's new repair) is asked of it too: the test runs that flow body next, itself.

A ContextVar, not a global patch: only calls made in the responder's own context see it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol


class Responder(Protocol):
    def approval(self, approval_id: int) -> None:
        """Answer the approval the run waits for (through `decide`), or raise: nothing will."""

    def timer(self, timer_id: int) -> None:
        """Let time pass until the timer fires (through `fire_due_timers`), or raise."""

    def either(self, approval_id: int, timer_id: int) -> None:
        """Answer the approval if an answer will come, else let time pass until the timer fires."""

    def first_of(self, approval_ids: list[int]) -> None:
        """Answer whichever of the approvals an answer will come for first, or raise: nothing will."""

    def start_run(self, deployment: str, parameters: dict[str, Any], idempotency_key: str | None) -> str:
        """Note a Prefect run the flow body starts; returns its id."""


_RESPONDER: ContextVar[Responder | None] = ContextVar("aftercare_responder", default=None)


def responder() -> Responder | None:
    """The responder of this context (the fast test layer), or None: waits suspend the run."""
    return _RESPONDER.get()


@contextmanager
def responding(who: Responder) -> Iterator[Responder]:
    token = _RESPONDER.set(who)
    try:
        yield who
    finally:
        _RESPONDER.reset(token)
