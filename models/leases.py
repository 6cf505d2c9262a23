"""Leases (租约): a named role that one process at a time may hold, until its lease runs out.

The clock keeper holds the lease `clock-keeper` and renews it on every wake-up; a second keeper —
started by a restarted `aftercare up`, or a keeper run scheduled again by the stuck-run sweep —
finds it held and exits at once. A keeper that died without releasing it (its process killed)
stops renewing, and its lease runs out after `ttl`: then the next keeper takes it over.

Each change is one conditional statement, so two processes that race for a lease cannot both win,
on SQLite and PostgreSQL alike (RETURNING tells whether it applied, as in models.db.insert_ignore).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, select

from models.base import utc_field
from models.db import insert_ignore

RELEASED = datetime(1970, 1, 1, tzinfo=UTC)  # a released lease has run out long ago


class Lease(SQLModel, table=True):
    name: str = Field(primary_key=True, max_length=100)
    holder: str = Field(max_length=200)
    expires_at: datetime = utc_field(nullable=False)


def take(session: Session, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take (or keep) the lease `name` for `holder` until now + ttl. True when `holder` holds it;
    False when another holder's lease has not run out yet."""
    until = now + ttl
    if insert_ignore(session, Lease, {"name": name, "holder": holder, "expires_at": until}) is not None:
        return True
    table = Lease.__table__  # type: ignore[attr-defined]
    taken = session.execute(
        sa.update(table)
        .where(table.c.name == name, sa.or_(table.c.holder == holder, table.c.expires_at <= now))
        .values(holder=holder, expires_at=until)
        .returning(table.c.name)
    )
    return taken.first() is not None


def renew(session: Session, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Extend `holder`'s lease; False when it is no longer `holder`'s (another took it over)."""
    table = Lease.__table__  # type: ignore[attr-defined]
    renewed = session.execute(
        sa.update(table)
        .where(table.c.name == name, table.c.holder == holder)
        .values(expires_at=now + ttl)
        .returning(table.c.name)
    )
    return renewed.first() is not None


def release(session: Session, name: str, holder: str | None = None) -> bool:
    """End the lease now (only `holder`'s, when given): the next process may take it at once."""
    table = Lease.__table__  # type: ignore[attr-defined]
    stmt = sa.update(table).where(table.c.name == name)
    if holder is not None:
        stmt = stmt.where(table.c.holder == holder)
    return session.execute(stmt.values(expires_at=RELEASED).returning(table.c.name)).first() is not None


def current(session: Session, name: str, now: datetime) -> Lease | None:
    """The lease `name` if it is held at `now` (not run out, not released)."""
    lease = session.exec(select(Lease).where(Lease.name == name)).first()
    return lease if lease is not None and lease.expires_at > now else None
