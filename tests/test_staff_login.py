"""The staff login over HTTP against a real SQLite file: passwords (Argon2 hashes), the throttle,
CSRF on the login and logout forms, sessions that end (expiry, logout everywhere, new password,
inactive person), role limits of `require_staff`, and `aftercare admin create`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient
from sqlmodel import select
from typer.testing import CliRunner

from models import Role
from tests.conftest import T0
from tests.staff_login import PASSWORD, form_csrf, log_in, make_account
from web.staff import StaffUser, require_staff

# a page only technical directors may open, and a form they post: the dependency as pages use it
probe = APIRouter()


@probe.get("/probe/directors")
def directors(user: Annotated[StaffUser, Depends(require_staff(Role.TECHNICAL_DIRECTOR))]) -> Any:
    return PlainTextResponse(f"hello {user.username}")


@probe.post("/probe/directors")
def directors_post(user: Annotated[StaffUser, Depends(require_staff(Role.TECHNICAL_DIRECTOR))]) -> Any:
    return PlainTextResponse(f"posted by {user.username}")


@pytest.fixture
def client(demo: str) -> TestClient:
    from web.app import create_app
    from web.board import board_now
    from web.staff import staff_now

    app = create_app()
    app.include_router(probe)
    now = {"at": T0}
    app.dependency_overrides[staff_now] = lambda: now["at"]
    app.dependency_overrides[board_now] = lambda: now["at"]
    c = TestClient(app)
    c.now = now  # type: ignore[attr-defined]
    return c


def test_a_login_opens_the_board_and_the_hash_is_argon2(client: TestClient) -> None:
    from models.accounts import Account
    from models.db import session_scope

    make_account("dispatcher1")
    answer = log_in(client, next="/")
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    assert "aftercare_staff=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    page = client.get("/")
    assert page.status_code == 200 and "调度看板" in page.text and "dispatcher1" in page.text
    with session_scope() as s:
        account = s.exec(select(Account)).one()
        assert account.password_hash.startswith("$argon2id$") and PASSWORD not in account.password_hash
        assert account.last_login_at == T0


def test_a_wrong_password_is_refused_without_saying_which_half_and_the_sixth_try_is_throttled(
    client: TestClient,
) -> None:
    make_account("dispatcher1")
    unknown = log_in(client, username="nobody", password="whatever-long")
    wrong = log_in(client, password="not the password")
    assert unknown.status_code == wrong.status_code == 401
    assert "登录名或密码不正确" in unknown.text and "登录名或密码不正确" in wrong.text
    for _ in range(4):
        assert log_in(client, password="not the password").status_code == 401
    # five failures within 15 minutes: even the right password waits now
    throttled = log_in(client)
    assert throttled.status_code == 429 and "登录失败次数过多" in throttled.text
    assert 0 < int(throttled.headers["retry-after"]) <= 15 * 60 + 1
    assert "aftercare_staff=" not in throttled.headers.get("set-cookie", "")
    client.now["at"] = T0 + timedelta(minutes=16)  # type: ignore[attr-defined]
    assert log_in(client).status_code == 303


def test_one_address_trying_many_names_is_throttled(client: TestClient) -> None:
    make_account("dispatcher1")
    for n in range(20):
        assert log_in(client, username=f"guess{n}", password="whatever-long").status_code == 401
    assert log_in(client).status_code == 429


def test_the_login_form_without_its_csrf_field_is_refused(client: TestClient) -> None:
    make_account("dispatcher1")
    client.get("/login")
    for csrf in ("", "forged"):
        answer = client.post(
            "/login",
            data={"username": "dispatcher1", "password": PASSWORD, "csrf": csrf},
            follow_redirects=False,
        )
        assert answer.status_code == 403 and "登录表单已失效" in answer.text


def test_logout_needs_the_csrf_field_and_ends_every_session_of_the_account(client: TestClient) -> None:
    make_account("dispatcher1")
    log_in(client)
    stolen = client.cookies.get("aftercare_staff")
    page = client.get("/")
    refused = client.post("/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403 and "表单已失效" in refused.text
    assert client.get("/", follow_redirects=False).status_code == 200  # still logged in
    out = client.post("/logout", data={"csrf": form_csrf(page)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    # the copied cookie of that session opens nothing any more
    again = client.get("/", cookies={"aftercare_staff": stolen}, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/login")


def test_a_session_expires_after_its_hours_and_a_password_change_or_leaving_ends_it(
    client: TestClient,
) -> None:
    from models import Staff
    from models.db import session_scope
    from tasks.accounts import find_account, set_password
    from web.staff import SESSION_HOURS

    staff_id = make_account("dispatcher1")
    log_in(client)
    client.now["at"] = T0 + timedelta(hours=SESSION_HOURS, seconds=-1)  # type: ignore[attr-defined]
    assert client.get("/", follow_redirects=False).status_code == 200
    client.now["at"] = T0 + timedelta(hours=SESSION_HOURS)  # type: ignore[attr-defined]
    assert client.get("/", follow_redirects=False).status_code == 303

    client.now["at"] = T0  # type: ignore[attr-defined]
    log_in(client)
    with session_scope() as s:
        account = find_account(s, "dispatcher1")
        assert account is not None
        set_password(s, account, "another long password", now=T0, actor="test")
    assert client.get("/", follow_redirects=False).status_code == 303
    assert log_in(client, password="another long password").status_code == 303
    with session_scope() as s:
        person = s.get(Staff, staff_id)
        assert person is not None
        person.active = False
    assert client.get("/", follow_redirects=False).status_code == 303
    assert log_in(client, password="another long password").status_code == 401


def test_role_limits_and_csrf_of_a_staff_page(client: TestClient) -> None:
    make_account("dispatcher1", roles=("dispatcher",))
    make_account("director1", roles=("technical_director",))
    make_account("admin1", roles=("administrator",))
    first = client.get("/probe/directors", follow_redirects=False)
    assert first.status_code == 303, (first.status_code, first.text[:300])
    assert first.headers["location"] == ("/login?next=/probe/directors")
    log_in(client, "dispatcher1")
    page = client.get("/probe/directors")
    assert page.status_code == 403 and "仅限技术总监" in page.text and "客户服务中心" in page.text
    for who in ("director1", "admin1"):  # the administrator holds every role
        log_in(client, who)
        assert client.get("/probe/directors").text == f"hello {who}"
        assert client.post("/probe/directors", data={}).status_code == 403  # no CSRF token
        csrf = form_csrf(client.get("/"))
        assert client.post("/probe/directors", data={"csrf": csrf}).text == f"posted by {who}"
        assert client.post("/probe/directors", headers={"X-CSRF-Token": csrf}).text == f"posted by {who}"


def test_after_the_login_only_a_path_of_this_site_is_followed(client: TestClient) -> None:
    make_account("dispatcher1")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        assert log_in(client, next=target).headers["location"] == "/"
    assert log_in(client, next="/probe/directors?x=1").headers["location"] == "/probe/directors?x=1"


def test_what_a_person_typed_as_login_name_is_shown_as_text(client: TestClient) -> None:
    answer = log_in(client, username="<img src=x onerror=alert(1)>", password="whatever-long")
    assert answer.status_code == 401 and "<img src=x" not in answer.text and "&lt;img" in answer.text


def test_admin_create_makes_the_first_administrator_from_a_password_file_never_a_default(
    client: TestClient, tmp_path: Path
) -> None:
    from deployments.cli import app
    from models.accounts import Account, AuditEntry
    from models.db import session_scope

    runner = CliRunner()
    no_password = runner.invoke(app, ["admin", "create", "--login", "admin", "--name", "管理员"])
    assert no_password.exit_code == 2 and "--password-file" in no_password.output  # CI has no terminal
    short = tmp_path / "short"
    short.write_text("short\n")
    weak = runner.invoke(
        app, ["admin", "create", "--login", "admin", "--name", "管理员", "--password-file", str(short)]
    )
    assert weak.exit_code == 2 and "至少 10 个字符" in weak.output
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    made = runner.invoke(
        app, ["admin", "create", "--login", "Admin", "--name", "管理员", "--password-file", str(secret)]
    )
    assert made.exit_code == 0, made.output
    again = runner.invoke(
        app, ["admin", "create", "--login", "admin", "--name", "x", "--password-file", str(secret)]
    )
    assert again.exit_code == 2 and "已存在" in again.output
    with session_scope() as s:
        account = s.exec(select(Account)).one()
        assert account.username == "admin"
        entry = s.exec(select(AuditEntry).where(AuditEntry.record == "account")).one()
        assert entry.changes["roles"] == ["administrator"] and entry.source == "cli"
        assert PASSWORD not in str(entry.changes)
    assert log_in(client, "admin").status_code == 303
    assert "系统管理员" in client.get("/").text
