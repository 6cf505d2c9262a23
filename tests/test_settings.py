"""Settings (models/settings.py): one object, validated; the SQLite file it points at runs in WAL
mode with a busy timeout; the secret key is generated once, private, and reused."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from models.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _cli(args: list[str], home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFTERCARE_", "PREFECT_"))}
    env.update({"AFTERCARE_HOME": str(home), **extra})
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- the runner's and the sweep's settings live in the one object ----------------------------------


def test_the_runner_settings_default_as_documented(monkeypatch) -> None:
    for name in ("AFTERCARE_STUCK_RUN_SECONDS", "AFTERCARE_RUNNER_POLL_SECONDS", "AFTERCARE_COLD_START"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.stuck_run_seconds, settings.runner_poll_seconds, settings.cold_start) == (
        300,
        0.25,
        False,
    )


def test_the_runner_polls_as_often_as_set_but_not_more_than_ten_times_a_second(monkeypatch) -> None:
    from deployments.serve import poll_seconds

    monkeypatch.setenv("AFTERCARE_RUNNER_POLL_SECONDS", "0.4")
    assert poll_seconds(Settings()) == 0.4
    monkeypatch.setenv("AFTERCARE_RUNNER_POLL_SECONDS", "0.01")
    assert poll_seconds(Settings()) == 0.1
    monkeypatch.setenv("AFTERCARE_RUNNER_POLL_SECONDS", "")  # set but empty: the default
    assert poll_seconds(Settings()) == 0.25


@pytest.mark.parametrize("raw", ["fast", "0", "-1"])
def test_a_poll_interval_that_is_not_a_positive_number_is_a_bad_setting(monkeypatch, raw: str) -> None:
    monkeypatch.setenv("AFTERCARE_RUNNER_POLL_SECONDS", raw)
    with pytest.raises(ValidationError, match="runner_poll_seconds"):
        Settings()


@pytest.mark.parametrize(
    ("name", "raw", "field"),
    [
        ("AFTERCARE_RUNNER_POLL_SECONDS", "0", "runner_poll_seconds"),
        ("AFTERCARE_STUCK_RUN_SECONDS", "five minutes", "stuck_run_seconds"),
        ("AFTERCARE_COLD_START", "maybe", "cold_start"),
    ],
)
def test_a_bad_runner_setting_is_named_not_traced(tmp_path: Path, name: str, raw: str, field: str) -> None:
    """Like any other bad setting (tests/test_cli.py): `check` and `up` refuse it before starting anything."""
    result = _cli(["check"], tmp_path, **{name: raw})
    assert result.returncode == 2
    assert "bad setting" in result.stderr and field in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_the_processes_up_starts_get_the_checked_runner_settings(tmp_path: Path) -> None:
    from deployments.prefect_env import prefect_env

    settings = Settings(
        home=tmp_path, secret_key="k", stuck_run_seconds=900, runner_poll_seconds=0.2, cold_start=True
    )
    env = prefect_env(settings)
    child = Settings(
        **{
            k.removeprefix("AFTERCARE_").lower(): v
            for k, v in env.items()
            if k in {"AFTERCARE_STUCK_RUN_SECONDS", "AFTERCARE_RUNNER_POLL_SECONDS", "AFTERCARE_COLD_START"}
        }
    )
    assert (child.stuck_run_seconds, child.runner_poll_seconds, child.cold_start) == (900, 0.2, True)


# --- SQLite: WAL and the busy timeout ----------------------------------------------------------------


def test_a_fresh_sqlite_file_runs_in_wal_mode_with_the_busy_timeout(
    aftercare_home, monkeypatch, tmp_path
) -> None:
    import sqlalchemy as sa

    from models.db import get_engine
    from models.settings import get_settings

    monkeypatch.setenv("AFTERCARE_SQLITE_BUSY_TIMEOUT_MS", "4321")
    get_settings.cache_clear()
    path = tmp_path / "fresh" / "aftercare.db"
    engine = get_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(sa.text("PRAGMA busy_timeout")).scalar() == 4321
    finally:
        engine.dispose()
    # WAL is a property of the file: another program opening it finds it too
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


# --- the secret key ------------------------------------------------------------------------------------


def test_a_generated_secret_key_is_private_and_reused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AFTERCARE_SECRET_KEY", raising=False)
    home = tmp_path / "var"
    key = Settings(home=home).signing_key()
    path = home / "secret_key"
    assert path.exists() and len(key) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(home=home).signing_key() == key  # the next start signs with the same key
    assert [p.name for p in home.iterdir()] == ["secret_key"]  # no draft left behind


def test_a_set_secret_key_wins_over_the_generated_one(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "var"
    monkeypatch.delenv("AFTERCARE_SECRET_KEY", raising=False)
    generated = Settings(home=home).signing_key()
    monkeypatch.setenv("AFTERCARE_SECRET_KEY", "set-by-the-operator")
    assert Settings(home=home).signing_key() == "set-by-the-operator"
    assert (home / "secret_key").read_text() == generated  # left as it was


def test_a_key_set_from_the_start_writes_no_key_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AFTERCARE_SECRET_KEY", "set-by-the-operator")
    Settings(home=tmp_path / "var").signing_key()
    assert not (tmp_path / "var" / "secret_key").exists()


def test_the_generated_key_is_never_committed(tmp_path: Path) -> None:
    """The default home (./var, where the key is generated) is ignored by git — asked of the
    checkout, or (in a copy without .git) of a new repository holding the project's .gitignore."""
    repo = ROOT
    if not (ROOT / ".git").exists():
        repo = tmp_path
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        (repo / ".gitignore").write_bytes((ROOT / ".gitignore").read_bytes())
    result = subprocess.run(["git", "check-ignore", "-q", "var/secret_key"], cwd=repo)
    assert result.returncode == 0


def test_business_time_is_shown_and_counted_in_the_configured_time_zone(aftercare_home, monkeypatch) -> None:
    """The business time zone is read from settings (AFTERCARE_TIMEZONE), not written beside them."""
    from datetime import UTC, datetime

    from models.contracts import Contract
    from models.settings import get_settings
    from tasks.inspection import local_day
    from tasks.render import _local_time
    from tasks.summary import local_bounds

    moment = datetime(2026, 11, 23, 20, 30, tzinfo=UTC)  # Tuesday 04:30 in Shanghai, Monday 21:30 in Berlin
    assert local_day(moment).isoformat() == "2026-11-24" and _local_time(moment) == "2026-11-24 04:30"
    monkeypatch.setenv("AFTERCARE_TIMEZONE", "Europe/Berlin")
    get_settings.cache_clear()
    assert local_day(moment).isoformat() == "2026-11-23" and _local_time(moment) == "2026-11-23 21:30"
    assert local_bounds(moment.date(), moment.date())[0] == datetime(2026, 11, 22, 23, 0, tzinfo=UTC)
    assert (
        Contract(customer_id=1, start_date=moment.date(), end_date=moment.date()).timezone == "Europe/Berlin"
    )
    assert local_day(moment, "Asia/Shanghai").isoformat() == "2026-11-24"  # a contract's own zone is data
