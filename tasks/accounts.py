"""Staff accounts: passwords, the login throttle, ending sessions, and the audit history.

Passwords are hashed with pwdlib's recommended hasher (Argon2id through argon2-cffi): a maintained
library with a modern default and `verify_and_update`, so hashes made with older parameters are
re-hashed at the next login. No password is ever stored or logged in clear, and there is no default
one: the first administrator is made by `aftercare admin create`.

The throttle counts failed `LoginAttempt` rows in the database (not in a process's memory: any
number of web processes answer logins, and a restart must not reset the count). The rate-limit
libraries on the registry (`limits`, `slowapi`) keep their counters in memory, Redis or memcached,
none of which aftercare runs; a count over an indexed table is one query.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from pwdlib import PasswordHash
from sqlmodel import Session, col, func, select

from models import Role, Staff
from models.accounts import Account, AuditEntry, LoginAttempt

PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 200
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
THROTTLE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_NAME = 5  # then that login name waits until the window has passed
MAX_FAILURES_PER_ADDRESS = 20  # one address trying many names


class AccountError(ValueError):
    """A value for an account that cannot be used; the message (Chinese) says why."""


class LoginRefused(Exception):
    """The login failed; `message` is what the page says (never which half was wrong)."""

    def __init__(self, message: str, *, throttled: bool = False, retry_after: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.throttled = throttled
        self.retry_after = retry_after


@cache
def hasher() -> PasswordHash:
    return PasswordHash.recommended()


@cache
def _dummy_hash() -> str:
    # verifying against this for an unknown name takes as long as for a known one
    return hasher().hash("aftercare-no-such-account")


def hash_password(password: str) -> str:
    check_password(password)
    return hasher().hash(password)


def check_password(password: str) -> str:
    """The password if it may be used, else AccountError with the reason."""
    if len(password) < PASSWORD_MIN_LENGTH:
        raise AccountError(
            f"密码至少 {PASSWORD_MIN_LENGTH} 个字符 / at least {PASSWORD_MIN_LENGTH} characters"
        )
    if len(password) > PASSWORD_MAX_LENGTH:
        raise AccountError(f"密码最多 {PASSWORD_MAX_LENGTH} 个字符")
    if password != password.strip():
        raise AccountError("密码首尾不能有空格 / no spaces at either end")
    return password


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME.match(name):
        raise AccountError(f"登录名 {username!r} 无效：2–64 个小写字母、数字或 . _ -，以字母或数字开头")
    return name


def find_account(session: Session, username: str) -> Account | None:
    return session.exec(select(Account).where(Account.username == username.strip().lower())).first()


def create_account(
    session: Session,
    *,
    username: str,
    password: str,
    now: datetime,
    staff_id: int | None = None,
    name: str | None = None,
    roles: list[str] | None = None,
    actor: str = "命令行",
    actor_staff_id: int | None = None,
    source: str = "cli",
) -> Account:
    """A login for a staff person: an existing one (`staff_id`), or a new Staff row named `name`
    with `roles`. Roles given are added to the person's. Audited."""
    login = normalise_username(username)
    if find_account(session, login) is not None:
        raise AccountError(f"登录名 {login} 已存在")
    for role in roles or []:
        if role not in {r.value for r in Role}:
            raise AccountError(f"未知角色 {role!r}；可选：{', '.join(r.value for r in Role)}")
    if staff_id is not None:
        staff = session.get(Staff, staff_id)
        if staff is None:
            raise AccountError(f"没有编号为 {staff_id} 的员工")
        if session.exec(select(Account).where(Account.staff_id == staff_id)).first() is not None:
            raise AccountError(f"员工 {staff.name} 已有登录账号")
        staff.roles = sorted({*staff.roles, *(roles or [])})
    else:
        if not name or not name.strip():
            raise AccountError("请填写姓名（--name）或已有员工的编号（--staff-id）")
        staff = Staff(name=name.strip()[:100], roles=sorted(set(roles or [])))
    session.add(staff)
    session.flush()
    assert staff.id is not None
    account = Account(
        staff_id=staff.id,
        username=login,
        password_hash=hash_password(password),
        created_at=now,
        password_changed_at=now,
    )
    session.add(account)
    session.flush()
    audit(
        session,
        now=now,
        actor=actor,
        actor_staff_id=actor_staff_id,
        action="account",
        record="account",
        record_id=str(account.id),
        changes={"username": login, "staff": staff.name, "roles": staff.roles, "event": "created"},
        source=source,
    )
    return account


def set_password(
    session: Session, account: Account, password: str, *, now: datetime, actor: str, source: str = "cli"
) -> None:
    """A new password; every session of the account ends. Audited (without the password)."""
    account.password_hash = hash_password(password)
    account.password_changed_at = now
    account.session_version += 1
    session.add(account)
    audit(
        session,
        now=now,
        actor=actor,
        action="account",
        record="account",
        record_id=str(account.id),
        changes={"username": account.username, "event": "password_changed"},
        source=source,
    )


def end_sessions(session: Session, account_id: int) -> None:
    """Log the account out everywhere (its session cookies carry the old version)."""
    account = session.get(Account, account_id)
    if account is not None:
        account.session_version += 1
        session.add(account)


def _failures(session: Session, column: Any, value: str, since: datetime) -> tuple[int, datetime | None]:
    row = session.exec(
        select(func.count(), func.min(LoginAttempt.at)).where(
            column == value,
            col(LoginAttempt.ok).is_(False),
            col(LoginAttempt.at) > since,
        )
    ).one()
    return int(row[0]), row[1]


def throttled(session: Session, username: str, address: str, *, now: datetime) -> int:
    """Seconds until this name (or address) may try again; 0 when it may now."""
    since = now - THROTTLE_WINDOW
    waits = []
    for column, value, limit in (
        (LoginAttempt.username, username, MAX_FAILURES_PER_NAME),
        (LoginAttempt.address, address, MAX_FAILURES_PER_ADDRESS),
    ):
        if not value:
            continue
        count, oldest = _failures(session, column, value, since)
        if count >= limit and oldest is not None:
            waits.append(max(1, int((oldest + THROTTLE_WINDOW - now).total_seconds()) + 1))
    return max(waits, default=0)


def authenticate(
    session: Session, username: str, password: str, *, now: datetime, address: str = ""
) -> Account:
    """The account whose name and password these are, else LoginRefused (throttled or not).

    Every try is recorded; a throttled try is refused before the password is looked at."""
    login = username.strip().lower()[:64]
    wait = throttled(session, login, address, now=now)
    if wait:
        session.add(LoginAttempt(username=login, address=address[:64], at=now, ok=False))
        minutes = (wait + 59) // 60
        raise LoginRefused(f"登录失败次数过多，请 {minutes} 分钟后再试。", throttled=True, retry_after=wait)
    account = find_account(session, login) if login else None
    staff = session.get(Staff, account.staff_id) if account else None
    valid, new_hash = hasher().verify_and_update(
        password[:PASSWORD_MAX_LENGTH], account.password_hash if account else _dummy_hash()
    )
    ok = bool(account and staff and staff.active and valid)
    session.add(LoginAttempt(username=login, address=address[:64], at=now, ok=ok))
    if not ok or account is None:
        raise LoginRefused("登录名或密码不正确。")
    if new_hash:
        account.password_hash = new_hash
    account.last_login_at = now
    session.add(account)
    return account


def audit(
    session: Session,
    *,
    now: datetime,
    actor: str,
    action: str,
    record: str,
    record_id: str = "",
    changes: dict[str, Any] | None = None,
    actor_staff_id: int | None = None,
    source: str = "admin",
) -> AuditEntry:
    """One row of the audit history, in the caller's transaction (the change and its record commit
    together)."""
    entry = AuditEntry(
        at=now,
        actor=actor[:100],
        actor_staff_id=actor_staff_id,
        action=action,
        record=record,
        record_id=record_id[:60],
        changes=changes or {},
        source=source,
    )
    session.add(entry)
    return entry
