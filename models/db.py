"""The database engine, sessions, migrations, and the retry of work that meets a busy database.

One engine per URL. SQLite runs in WAL mode with a busy timeout so that the web, the runners and
the clock keeper can write the same file; PostgreSQL is one setting away (`AFTERCARE_DATABASE_URL`).

A busy database — SQLite `database is locked` (another process holds the write lock longer than
the busy timeout), PostgreSQL serialization failures, deadlocks and lost connections — is not an
error of the work but of the moment: `retrying` re-runs the **whole unit of work** (a flow step, a
web request, a `transaction(...)`) with jittered back-off until a deadline
(`AFTERCARE_BUSY_RETRY_SECONDS` for pages and commands, `AFTERCARE_BUSY_RETRY_STEP_SECONDS` for
flow steps), then raises `DatabaseBusy`. Re-running is safe because every unit is idempotent
(unique keys; DESIGN.md §2) and a failed transaction left nothing behind (session_scope rolls back).
Units nest: an inner unit retries until the outer one's deadline, never past it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import Session

from models.settings import PRIVATE_DIR, get_settings, private_dir, private_file

MIGRATIONS = Path(__file__).parent / "migrations"

log = logging.getLogger("aftercare.db")
P = ParamSpec("P")
T = TypeVar("T")


class DatabaseError(RuntimeError):
    """The database cannot be reached or used; the message says why, for a person."""


class DatabaseBusy(DatabaseError):
    """The database stayed busy (locked, conflicting or unreachable) for the whole retry bound;
    the unit of work was rolled back and nothing of it is recorded."""


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


# The transaction a running step shares with everything it calls (tasks.ledger): while it is set,
# `session_scope()` joins it instead of opening its own, so the step's effect and its ledger row
# commit together or not at all.
_AMBIENT: ContextVar[Session | None] = ContextVar("aftercare_ambient_session", default=None)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back on error.

    Inside `ambient_transaction()` (a step of a flow run) the block joins the step's transaction
    as a SAVEPOINT: an error inside it undoes only the block (a caller that catches it goes on),
    and nothing is committed before the step's own commit.
    """
    ambient = _AMBIENT.get()
    if ambient is not None and url is None:
        with ambient.begin_nested():
            yield ambient
        return
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def ambient_transaction() -> Iterator[Session]:
    """One transaction that every `session_scope()` inside the block joins; committed at its end.

    The caller must write first (the step ledger claims its row): SQLite's Python driver begins a
    transaction only at the first write, and a SAVEPOINT taken before it would commit on release.
    """
    with session_scope() as session:
        token = _AMBIENT.set(session)
        try:
            yield session
        finally:
            _AMBIENT.reset(token)


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
        raise DatabaseError(
            f"数据库无法连接 / database unreachable: {_safe(target)}: {_reason(exc)}"
        ) from exc


def migrate(url: str | None = None) -> None:
    """Bring the database to the newest schema (creates it when empty)."""
    from alembic import command

    ping(url)
    command.upgrade(alembic_config(url), "head")


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


# --- a busy database: re-run the whole unit of work ---------------------------------------------

# SQLite's primary result codes SQLITE_BUSY and SQLITE_LOCKED (extended codes such as
# SQLITE_BUSY_SNAPSHOT carry them in the low byte).
_SQLITE_BUSY = {5, 6}
# PostgreSQL SQLSTATEs worth a second try: serialization failure, deadlock, lock not available,
# the server shutting down or starting, too many connections; and the whole class 08 (connection).
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"}

_deadline: ContextVar[float | None] = ContextVar("aftercare_busy_deadline", default=None)


def is_transient(exc: BaseException) -> bool:
    """True for an error of a busy database that a re-run of the unit of work may not meet again."""
    if isinstance(exc, DatabaseBusy):
        return False  # an inner unit already waited until the shared deadline
    if isinstance(exc, sa.exc.DisconnectionError | sa.exc.TimeoutError):  # pool: lost or exhausted
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:  # the driver lost the connection (server restarted, backend killed)
        return True
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _SQLITE_BUSY
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state:
        return state in _PG_TRANSIENT or state.startswith("08")
    # psycopg raises a bare OperationalError (no SQLSTATE) when it cannot reach the server at all
    module = type(orig).__module__ or ""
    if isinstance(exc, sa.exc.OperationalError) and module.startswith("psycopg"):
        return True
    text = str(orig).lower()
    return isinstance(exc, sa.exc.OperationalError) and ("database is locked" in text or "is busy" in text)


def busy_bound(kind: Literal["request", "step"] = "request") -> float:
    """Seconds a unit of work is re-run for: requests and commands, or flow steps (the run waits)."""
    settings = get_settings()
    return settings.busy_retry_step_seconds if kind == "step" else settings.busy_retry_seconds


def _policy(deadline: float, what: str) -> Any:
    """The tenacity policy of one unit: retry transient errors with full-jitter exponential back-off
    (0.1 s doubling up to 5 s, so that clicks and steps waiting on one lock spread out), never
    sleeping past the deadline and stopping at it."""
    import tenacity

    jitter = tenacity.wait_random_exponential(multiplier=0.1, max=5)

    def wait(state: tenacity.RetryCallState) -> float:
        return max(0.0, min(jitter(state), deadline - time.monotonic()))

    def warn(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "database busy (%s): %s runs again (attempt %d)",
            _reason(exc) if isinstance(exc, Exception) else exc,
            what,
            state.attempt_number + 1,
        )

    return dict(
        retry=tenacity.retry_if_exception(is_transient),
        stop=lambda state: time.monotonic() >= deadline,
        wait=wait,
        before_sleep=warn,
        reraise=True,
    )


def _busy(exc: Exception, started: float) -> DatabaseBusy:
    return DatabaseBusy(
        f"数据库繁忙，{time.monotonic() - started:.0f} 秒内未能完成，已撤销本次操作 / "
        f"database busy, gave up after {time.monotonic() - started:.0f} s: {_reason(exc)}"
    )


def run_retrying(
    work: Callable[[], T],
    *,
    kind: Literal["request", "step"] = "request",
    seconds: float | None = None,
    what: str = "the unit of work",
) -> T:
    """Call `work()`; while it fails on a busy database, call it again (the whole of it) until the
    deadline — this unit's bound, or the enclosing unit's deadline when nested — then DatabaseBusy."""
    import tenacity

    started = time.monotonic()
    outer = _deadline.get()
    deadline = (
        outer if outer is not None else started + (seconds if seconds is not None else busy_bound(kind))
    )
    token = _deadline.set(deadline)
    try:
        for attempt in tenacity.Retrying(**_policy(deadline, what)):
            with attempt:
                return work()
    except Exception as exc:
        if is_transient(exc):
            raise _busy(exc, started) from exc
        raise
    finally:
        _deadline.reset(token)
    raise AssertionError("unreachable: tenacity either returns, or raises")  # pragma: no cover


async def run_retrying_async(
    work: Callable[[], Awaitable[T]], *, seconds: float | None = None, what: str = "the request"
) -> T:
    """`run_retrying` for async work (the web's middleware re-runs a whole request this way); the
    deadline is shared with the sync units the request runs in its thread pool."""
    import tenacity

    started = time.monotonic()
    outer = _deadline.get()
    deadline = outer if outer is not None else started + (seconds if seconds is not None else busy_bound())
    token = _deadline.set(deadline)
    try:
        async for attempt in tenacity.AsyncRetrying(**_policy(deadline, what)):
            with attempt:
                return await work()
    except Exception as exc:
        if is_transient(exc):
            raise _busy(exc, started) from exc
        raise
    finally:
        _deadline.reset(token)
    raise AssertionError("unreachable: tenacity either returns, or raises")  # pragma: no cover


@overload
def retrying(fn: Callable[P, T], *, kind: Literal["request", "step"] = "request") -> Callable[P, T]: ...


@overload
def retrying(
    fn: None = None, *, kind: Literal["request", "step"] = "request"
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


def retrying(fn: Callable[P, T] | None = None, *, kind: Literal["request", "step"] = "request") -> Any:
    """Decorator: the function is one unit of work, re-run whole on a busy database (`run_retrying`).

    `kind="step"` for flow steps (tasks.ledger.step applies it to every step): their run waits
    `AFTERCARE_BUSY_RETRY_STEP_SECONDS` rather than failing."""

    def decorate(func: Callable[P, T]) -> Callable[P, T]:
        what = f"{func.__module__}.{func.__qualname__}"

        @functools.wraps(func)
        def unit(*args: P.args, **kwargs: P.kwargs) -> T:
            return run_retrying(lambda: func(*args, **kwargs), kind=kind, what=what)

        unit.busy_retry = kind  # type: ignore[attr-defined]  # tests/test_busy_database.py checks every step has it
        return unit

    return decorate(fn) if fn is not None else decorate


def transaction(
    work: Callable[[Session], T], *, url: str | None = None, kind: Literal["request", "step"] = "request"
) -> T:
    """`work(session)` in one transaction (`session_scope`), the whole of it re-run on a busy database."""

    def once() -> T:
        with session_scope(url) as session:
            return work(session)

    return run_retrying(once, kind=kind, what=getattr(work, "__qualname__", "a transaction"))
