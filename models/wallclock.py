"""The one place that reads the wall clock.

Everything else takes `now` as a parameter, so tests move time by passing a later value and
the clock keeper can be ticked by hand (DESIGN.md §3).
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)
