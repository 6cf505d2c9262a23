"""Log in as a staff person, as a browser does: open /login, read the form's CSRF field, post it.

Used by the page tests of every staff page (board, back office, reports). Accounts are made through
the same `tasks.accounts.create_account` that `aftercare admin create` calls.
"""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import T0

PASSWORD = "correct horse battery"


def make_account(
    username: str = "dispatcher1",
    *,
    roles: tuple[str, ...] = ("dispatcher",),
    name: str | None = None,
    password: str = PASSWORD,
    staff_id: int | None = None,
) -> int:
    """A login (and a new staff person unless `staff_id`); returns the staff id."""
    from models.db import session_scope
    from tasks.accounts import create_account

    with session_scope() as session:
        account = create_account(
            session,
            username=username,
            password=password,
            now=T0,
            staff_id=staff_id,
            name=name or username,
            roles=list(roles),
        )
        return account.staff_id


def form_csrf(page: Any) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:2000]
    return match[1]


def log_in(client: Any, username: str = "dispatcher1", password: str = PASSWORD, next: str = "/") -> Any:
    """Post the login form; returns the answer (303 to `next` when the login worked)."""
    client.cookies.pop("aftercare_staff", None)  # as a browser with no session (the login page would skip)
    page = client.get("/login", params={"next": next}, follow_redirects=False)
    assert page.status_code == 200, page.text[:500]
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf": form_csrf(page), "next": next},
        follow_redirects=False,
    )
