"""Staff logins and the audit history of the back office.

An `Account` is the login of one `Staff` person (the person, roles and addresses stay on Staff); the
password is stored only as a hash (`tasks.accounts`, pwdlib/Argon2). `session_version` is part of
every session cookie: logging out or changing the password raises it, and every session made before
ends at once. `LoginAttempt` rows back the login throttle (they are counted in the database, so any
number of web processes share one count). `AuditEntry` is who changed which record, when and how —
written by the admin pages, the import and the account commands.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from models.base import json_field, utc_field


class Account(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff.id", unique=True, index=True)
    username: str = Field(max_length=64, unique=True, index=True)
    password_hash: str = Field(max_length=255)
    session_version: int = Field(default=0)
    created_at: datetime = utc_field(nullable=False)
    password_changed_at: datetime = utc_field(nullable=False)
    last_login_at: datetime | None = utc_field(default=None)


class LoginAttempt(SQLModel, table=True):
    """One try to log in (the throttle counts the failed ones of a name and of an address)."""

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, index=True)
    address: str = Field(default="", max_length=64, index=True)
    at: datetime = utc_field(nullable=False, index=True)
    ok: bool = Field(default=False)


class RefusedPost(SQLModel, table=True):
    """A post a public page refused (invalid values, a bad form or link): the page's flood limit
    counts them per link (`subject`, the customer's code) and per address, as valid posts are
    counted by what they created (tasks.complaints.check_refused_posts)."""

    id: int | None = Field(default=None, primary_key=True)
    page: str = Field(max_length=40, index=True)
    subject: str = Field(default="", max_length=64, index=True)
    address: str = Field(default="", max_length=64, index=True)
    at: datetime = utc_field(nullable=False, index=True)


class AuditEntry(SQLModel, table=True):
    """A change to a back-office record: who (the staff person, by name too: the row outlives
    renames), when, what (`record` is the table, `record_id` its key) and the changed values."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = utc_field(nullable=False, index=True)
    actor: str = Field(max_length=100)
    actor_staff_id: int | None = Field(default=None, foreign_key="staff.id", index=True)
    action: str = Field(max_length=20, description="create / update / delete / import / account")
    record: str = Field(max_length=60, index=True)
    record_id: str = Field(default="", max_length=60)
    changes: dict[str, Any] = json_field(default_factory=dict)
    source: str = Field(default="admin", max_length=20, description="admin / import / cli")
