"""The database engine, sessions and migrations.

One engine per URL. SQLite runs in WAL mode with a busy timeout so that the web, the runners and
the clock keeper can write the same file; PostgreSQL is one setting away (`AFTERCARE_DATABASE_URL`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import Session

from models.settings import PRIVATE_DIR, get_settings, private_dir, private_file

MIGRATIONS = Path(__file__).parent / "migrations"


class DatabaseError(RuntimeError):
    """The database cannot be reached or used; the message says why, for a person."""


@cache
def _engine(url: str, busy_timeout_ms: int) -> sa.Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            _private_sqlite_file(Path(parsed.database))
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000}
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _private_sqlite_file(path: Path) -> None:
    """The database file is created 0600 before SQLite opens it: SQLite gives its -wal and -shm files
    the database file's mode, so they are 0600 too (an older install's files are narrowed)."""
    home = get_settings().home
    if path.parent.resolve() == home.resolve():
        private_dir(home)
    elif not path.parent.exists():
        path.parent.mkdir(parents=True, mode=PRIVATE_DIR)
    private_file(path)
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if extra.exists():
            private_file(extra)


def get_engine(url: str | None = None) -> sa.Engine:
    settings = get_settings()
    return _engine(url or settings.db_url, settings.sqlite_busy_timeout_ms)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back on error."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def insert_ignore(session: Session, table: Any, values: dict[str, Any], *, returning: Any = None) -> Any:
    """INSERT … ON CONFLICT DO NOTHING for the database in use; the new row's `returning` column
    (its primary key by default), or None when a unique constraint already held the row.

    RETURNING, not `rowcount`: PostgreSQL drivers report -1 for an INSERT with implicit RETURNING.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    table = getattr(table, "__table__", table)
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    column = returning if returning is not None else list(table.primary_key.columns)[0]
    stmt = dialect.insert(table).values(**values).on_conflict_do_nothing().returning(column)
    return session.execute(stmt).scalar_one_or_none()


def alembic_config(url: str | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().db_url).replace("%", "%%"))
    return cfg


def ping(url: str | None = None) -> None:
    """Connect once; raise DatabaseError with a readable reason when that fails."""
    target = url or get_settings().db_url
    try:
        with get_engine(target).connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # the driver's own errors differ per backend
        raise DatabaseError(f"数据库无法连接 / database unreachable: {_safe(target)}: {_reason(exc)}") from exc


def migrate(url: str | None = None) -> None:
    """Bring the database to the newest schema (creates it when empty)."""
    from alembic import command

    ping(url)
    command.upgrade(alembic_config(url), "head")


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _reason(exc: Exception) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
