"""The Prefect server aftercare starts (deployments.prefect_server): SQLite write transactions take
the write lock when they begin, so a resume never loses the read-then-write race and waits ~2 s for
the client's retry."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import sqlalchemy as sa

from deployments import prefect_server


def _write_lock_held_inside_a_transaction(path: Path) -> bool:
    """Open a Prefect write transaction, read once, and ask whether another connection could
    start writing right now (with no waiting)."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    async def probe() -> bool:
        config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{path}")
        engine = await config.engine()
        try:
            session = await config.session(engine)
            async with session, config.begin_transaction(session):
                await session.execute(sa.text("SELECT 1"))
                other = sqlite3.connect(path, timeout=0, isolation_level=None)
                try:
                    other.execute("BEGIN IMMEDIATE")
                    other.execute("ROLLBACK")
                    return False
                except sqlite3.OperationalError as exc:
                    assert "locked" in str(exc)
                    return True
                finally:
                    other.close()
        finally:
            await engine.dispose()

    return asyncio.run(probe())


def test_prefect_alone_leaves_the_write_lock_to_the_first_write(tmp_path, monkeypatch) -> None:
    """The race exists without the fix: a DEFERRED transaction that has only read holds no lock."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    current = AioSqliteConfiguration.begin_transaction
    monkeypatch.setattr(
        AioSqliteConfiguration, "begin_transaction", getattr(current, "prefect_begin_transaction", current)
    )
    assert _write_lock_held_inside_a_transaction(tmp_path / "prefect.db") is False


def test_with_the_fix_a_write_transaction_holds_the_lock_from_its_start(tmp_path, monkeypatch) -> None:
    from prefect.server.database.configurations import AioSqliteConfiguration

    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", AioSqliteConfiguration.begin_transaction)
    prefect_server.immediate_sqlite_writes()
    prefect_server.immediate_sqlite_writes()  # twice is once
    assert _write_lock_held_inside_a_transaction(tmp_path / "prefect.db") is True
