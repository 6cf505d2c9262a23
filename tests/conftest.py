"""Shared fixtures: a real database per test (SQLite file, or PostgreSQL when
AFTERCARE_TEST_PG_URL names a server), settings pointing at it, demo reference data.

Fixture families live in tests/fixtures/ and are loaded here. The layers (README, "Tests"): the
default run (units, pages, the fast flow layer of tests/fixtures/fastflow.py), `-m real` (a real
Prefect server and runner, `aftercare up`: every test that uses one of REAL_FIXTURES is marked
`real` here, so a new one cannot slip into the default run), `-m bench`, `-m browser`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

pytest_plugins: list[str] = ["tests.fixtures.prefect", "tests.fixtures.notify", "tests.fixtures.fastflow"]

# The fixtures of the real layer: a test that uses one is marked `real` (run by `pytest -m real`).
REAL_FIXTURES = frozenset({"prefect_server", "prefect_runner", "harness", "scheduling_stack", "restarted_up"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects (pytest's own hook of the same name)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)


# A fixed moment that tests start from; they move time by passing later values.
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 Asia/Shanghai


def _fresh_pg_database(base_url: str) -> tuple[str, str]:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"aftercare_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False), name


def _drop_pg_database(base_url: str, name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def aftercare_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "var"
    monkeypatch.setenv("AFTERCARE_HOME", str(home))
    monkeypatch.setenv("AFTERCARE_SECRET_KEY", "test-secret-key-not-for-production")
    from models.settings import get_settings

    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(params=["sqlite"] + (["postgresql"] if os.environ.get("AFTERCARE_TEST_PG_URL") else []))
def db_url(
    request: pytest.FixtureRequest, aftercare_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A migrated, empty database of its own for this test."""
    from models.db import migrate
    from models.settings import get_settings

    pg_name = None
    if request.param == "postgresql":
        base = os.environ["AFTERCARE_TEST_PG_URL"]
        url, pg_name = _fresh_pg_database(base)
    else:
        url = f"sqlite:///{aftercare_home / 'aftercare.db'}"
    monkeypatch.setenv("AFTERCARE_DATABASE_URL", url)
    get_settings.cache_clear()
    migrate(url)
    yield url
    from models.db import get_engine

    get_engine(url).dispose()
    if pg_name:
        _drop_pg_database(os.environ["AFTERCARE_TEST_PG_URL"], pg_name)


@pytest.fixture
def session(db_url: str) -> Iterator[object]:
    from sqlmodel import Session

    from models.db import get_engine

    with Session(get_engine(db_url), expire_on_commit=False) as s:
        yield s


@pytest.fixture
def demo(db_url: str) -> str:
    """The demo reference data of `aftercare seed`, loaded into this test's database."""
    from deployments.seed import seed_demo
    from models.db import session_scope

    with session_scope(db_url) as s:
        seed_demo(s, today=date(2026, 11, 23), now=T0)
    return db_url
