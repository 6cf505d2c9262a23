"""Column types and helpers shared by every table.

Timestamps are stored in UTC with time zone. SQLite has no time-zone type, so `UTCDateTime`
refuses naive datetimes on the way in and hands back aware UTC datetimes on the way out, on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field


class UTCDateTime(TypeDecorator[datetime]):
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: aftercare stores aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utc_field(*, default: Any = None, nullable: bool = True, index: bool = False, **kw: Any) -> Any:
    """A timestamp column, UTC with time zone."""
    return Field(default=default, sa_type=UTCDateTime, nullable=nullable, index=index, **kw)


def json_field(*, default_factory: Any = dict, **kw: Any) -> Any:
    """A JSON column (TEXT on SQLite, JSON on PostgreSQL)."""
    return Field(default_factory=default_factory, sa_type=sa.JSON, **kw)
