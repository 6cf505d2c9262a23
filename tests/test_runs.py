"""The stuck-run sweep (tasks.runs): its limit, read from the settings and never shorter than two
heartbeats, and the moment silence is measured up to."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from models import wallclock
from models.settings import Settings
from tasks.runs import DEFAULT_STUCK_SECONDS, HEARTBEAT_SECONDS, silence_reference, stuck_after


def test_the_limit_defaults_and_never_undercuts_two_heartbeats(monkeypatch) -> None:
    monkeypatch.delenv("AFTERCARE_STUCK_RUN_SECONDS", raising=False)
    assert stuck_after(Settings()) == timedelta(seconds=DEFAULT_STUCK_SECONDS) == timedelta(seconds=300)
    monkeypatch.setenv("AFTERCARE_STUCK_RUN_SECONDS", "10")
    assert stuck_after(Settings()) == timedelta(seconds=2 * HEARTBEAT_SECONDS)
    monkeypatch.setenv("AFTERCARE_STUCK_RUN_SECONDS", "900")
    assert stuck_after(Settings()) == timedelta(seconds=900)


@pytest.mark.parametrize("raw", ["ten minutes", "0", "-5"])
def test_a_limit_that_is_not_a_positive_number_is_a_bad_setting(monkeypatch, raw: str) -> None:
    monkeypatch.setenv("AFTERCARE_STUCK_RUN_SECONDS", raw)
    with pytest.raises(ValidationError, match="stuck_run_seconds"):
        Settings()


def test_the_sweep_reads_the_limit_from_the_settings_object(aftercare_home, monkeypatch) -> None:
    from models.settings import get_settings

    monkeypatch.setenv("AFTERCARE_STUCK_RUN_SECONDS", "600")
    get_settings.cache_clear()
    assert stuck_after() == timedelta(seconds=600)


def test_silence_is_measured_to_the_wall_clock_unless_now_is_vouched_for() -> None:
    """A keeper tick at a `now` moved days ahead must not make live runs look silent; a test that
    lets a dead runner's silence pass hands in a later `now` and says it is the time to judge by."""
    later = wallclock.now() + timedelta(days=3)
    assert silence_reference(later) <= wallclock.now()
    assert silence_reference(later, trust_now=True) == later
    earlier = wallclock.now() - timedelta(hours=1)
    assert silence_reference(earlier) == earlier == silence_reference(earlier, trust_now=True)
