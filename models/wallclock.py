"""The one place that reads the wall clock.

Everything else takes `now` as a parameter, so tests move time by passing a later value and
the clock keeper can be ticked by hand (DESIGN.md §3). The fast test layer (tests/fixtures/
fastflow.py) runs a flow body in-process on a scripted clock: `scripted(clock)` makes `now()`
read it for the calls made in that context (a ContextVar: other threads and processes keep the
wall clock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_SCRIPTED: ContextVar[Callable[[], datetime] | None] = ContextVar("aftercare_scripted_clock", default=None)


def now() -> datetime:
    """The current time, aware, in UTC."""
    clock = _SCRIPTED.get()
    return clock() if clock is not None else datetime.now(UTC)


@contextmanager
def scripted(clock: Callable[[], datetime]) -> Iterator[None]:
    """`now()` reads `clock` inside the block (the fast test layer's scripted time)."""
    token = _SCRIPTED.set(clock)
    try:
        yield
    finally:
        _SCRIPTED.reset(token)
