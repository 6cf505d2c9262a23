"""The stuck-run limit (tasks.runs): never shorter than two heartbeats, so a live run is never swept."""

from __future__ import annotations

from datetime import timedelta

from tasks.runs import DEFAULT_STUCK_SECONDS, HEARTBEAT_SECONDS, stuck_after


def test_the_limit_defaults_and_never_undercuts_two_heartbeats(monkeypatch) -> None:
    monkeypatch.delenv("AFTERCARE_STUCK_RUN_SECONDS", raising=False)
    assert stuck_after() == timedelta(seconds=DEFAULT_STUCK_SECONDS)
    monkeypatch.setenv("AFTERCARE_STUCK_RUN_SECONDS", "10")
    assert stuck_after() == timedelta(seconds=2 * HEARTBEAT_SECONDS)
    monkeypatch.setenv("AFTERCARE_STUCK_RUN_SECONDS", "900")
    assert stuck_after() == timedelta(seconds=900)
    monkeypatch.setenv("AFTERCARE_STUCK_RUN_SECONDS", "ten minutes")
    assert stuck_after() == timedelta(seconds=DEFAULT_STUCK_SECONDS)
