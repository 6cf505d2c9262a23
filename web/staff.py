"""员工登录 / the staff login: every page that is not reached through a signed link asks for it.

A page for staff declares who may open it with one dependency:

    from web.staff import StaffUser, require_staff

    @router.get("/kpi")
    def kpi(user: Annotated[StaffUser, Depends(require_staff(Role.COORDINATOR))]) -> HTMLResponse: ...

`require_staff()` (no roles) lets in any logged-in staff person; with roles, anyone holding one of
them (an administrator holds them all). Not logged in: 303 to `/login?next=<the page>`; logged in
without the role: a Chinese 403 page. On POST/PUT/PATCH/DELETE it also checks the CSRF token — the
form field `csrf` or the header `X-CSRF-Token`, the value of `user.csrf` (templates put
`<input type="hidden" name="csrf" value="{{ user.csrf }}">` in every form).

The session is a cookie signed with the site's secret (itsdangerous, through `tasks.links`:
purpose-salted, expiry checked against the clock the page is given — `staff_now`, which tests
override). It carries the account, the account's `session_version` and a random nonce (the CSRF
token is an HMAC of it). It ends after `SESSION_HOURS`, on logout (the version is raised: every
session of the account ends, also a copied cookie), on a password change, and when the person is
made inactive. HttpOnly, SameSite=Lax, Secure when the site is served over https.

Approval, report, form and board links stay as they are: the signed link is the capability.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from hashlib import sha256
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from models import Role, Staff, wallclock
from models.accounts import Account
from models.db import session_scope
from models.parties import ROLE_LABELS_ZH
from models.settings import get_settings
from tasks.accounts import LoginRefused, authenticate, end_sessions
from tasks.links import BadLink, sign_token, verify_token
from web.pages import templates

router = APIRouter()

COOKIE = "aftercare_staff"
LOGIN_COOKIE = "aftercare_login"  # the login form's own CSRF nonce, before any session exists
SESSION_PURPOSE = "staff-session"
LOGIN_PURPOSE = "staff-login-form"
SESSION_HOURS = 12  # one working shift and its overtime; then the person logs in again
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def staff_now() -> datetime:
    """The moment a session is checked at (tests override this dependency with a fixed time)."""
    return wallclock.now()


SessionNow = Annotated[datetime, Depends(staff_now)]


@dataclass(frozen=True)
class StaffUser:
    """The logged-in person, as a page sees them."""

    account_id: int
    staff_id: int
    username: str
    name: str
    roles: tuple[str, ...]
    csrf: str = field(repr=False)

    @property
    def is_admin(self) -> bool:
        return Role.ADMINISTRATOR.value in self.roles

    def may(self, *roles: Role | str) -> bool:
        """Holds one of `roles` (an administrator holds every role); no roles: any staff."""
        return not roles or self.is_admin or any(str(r) in self.roles for r in roles)

    @property
    def role_labels(self) -> list[str]:
        return [ROLE_LABELS_ZH.get(Role(r), r) for r in self.roles if r in Role._value2member_map_]


class LoginRequired(Exception):
    def __init__(self, next_url: str, reason: str = "") -> None:
        self.next_url = next_url
        self.reason = reason


class NotAllowed(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def _hmac(purpose: str, nonce: str) -> str:
    key = get_settings().signing_key().encode()
    return hmac.new(key, f"{purpose}:{nonce}".encode(), sha256).hexdigest()[:32]


def _secure() -> bool:
    return get_settings().web_base_url.startswith("https://")


def session_cookie(account: Account, *, now: datetime) -> str:
    """The signed session value for a login made at `now`."""
    return sign_token(
        SESSION_PURPOSE,
        {"a": account.id, "v": account.session_version, "n": secrets.token_urlsafe(16)},
        expires_at=now + timedelta(hours=SESSION_HOURS),
    )


def user_of(session: Session, cookie: str | None, *, now: datetime) -> StaffUser | None:
    """The staff person a session cookie belongs to, or None (absent, forged, expired, ended)."""
    if not cookie:
        return None
    try:
        data = verify_token(cookie, SESSION_PURPOSE, now=now)
    except BadLink:
        return None
    account = session.get(Account, int(data.get("a", 0)))
    if account is None or account.session_version != data.get("v"):
        return None
    staff = session.get(Staff, account.staff_id)
    if staff is None or not staff.active or staff.id is None or account.id is None:
        return None
    return StaffUser(
        account_id=account.id,
        staff_id=staff.id,
        username=account.username,
        name=staff.name,
        roles=tuple(staff.roles),
        csrf=_hmac("staff-csrf", str(data.get("n", ""))),
    )


def current_staff(request: Request, now: datetime) -> StaffUser | None:
    with session_scope() as session:
        return user_of(session, request.cookies.get(COOKIE), now=now)


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


async def check_csrf(request: Request, expected: str) -> bool:
    """Is the form field `csrf` or the header `X-CSRF-Token` this session's token?"""
    given = request.headers.get("x-csrf-token")
    if not given and "form" in (request.headers.get("content-type") or ""):
        value = (await request.form()).get("csrf")
        given = value if isinstance(value, str) else None
    return bool(given) and hmac.compare_digest(given or "", expected)


def require_staff(*roles: Role) -> Callable[[Request, datetime], Awaitable[StaffUser]]:
    """The dependency a staff page declares: the logged-in person holding one of `roles`."""

    async def dependency(request: Request, now: SessionNow) -> StaffUser:
        user = current_staff(request, now)
        if user is None:
            raise LoginRequired(_here(request))
        if not user.may(*roles):
            names = "、".join(ROLE_LABELS_ZH.get(r, str(r)) for r in roles)
            raise NotAllowed(f"此页面仅限{names}使用；您的角色：{'、'.join(user.role_labels) or '无'}。")
        if request.method not in SAFE_METHODS and not await check_csrf(request, user.csrf):
            raise NotAllowed("表单已失效（缺少或错误的校验码），请刷新页面后重新提交。")
        return user

    return dependency


def safe_next(value: str | None) -> str:
    """Where to go after the login: a path of this site only (never `//other.site` or a URL)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def _login_page(
    *, next_url: str, error: str = "", status: int = 200, username: str = "", nonce: str | None = None
) -> HTMLResponse:
    nonce = nonce or secrets.token_urlsafe(16)
    html = templates.get_template("staff/login.html.j2").render(
        next_url=next_url, error=error, username=username, csrf=_hmac(LOGIN_PURPOSE, nonce)
    )
    response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="lax", secure=_secure(), path="/login"
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, now: SessionNow, next: str = "/") -> Response:
    if current_staff(request, now) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(next_url=safe_next(next))


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    now: SessionNow,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=400)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    target = safe_next(next)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(csrf, _hmac(LOGIN_PURPOSE, nonce)):
        return _login_page(
            next_url=target, error="登录表单已失效，请重新输入。", status=403, username=username
        )
    if not username.strip() or not password:
        return _login_page(next_url=target, error="请填写登录名和密码。", status=400, username=username)
    address = request.client.host if request.client else ""
    refused: LoginRefused | None = None
    with session_scope() as session:
        try:
            account = authenticate(session, username, password, now=now, address=address)
            cookie = session_cookie(account, now=now)
        except LoginRefused as exc:  # the failed attempt is committed with the scope: the throttle counts it
            refused = exc
    if refused is not None:
        page = _login_page(
            next_url=target,
            error=refused.message,
            status=429 if refused.throttled else 401,
            username=username,
            nonce=nonce,
        )
        if refused.throttled:
            page.headers["Retry-After"] = str(refused.retry_after)
        return page
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="lax",
        secure=_secure(),
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(user: Annotated[StaffUser, Depends(require_staff())]) -> Response:
    """Ends every session of the account (the version in their cookies no longer matches)."""
    with session_scope() as session:
        end_sessions(session, user.account_id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _refused_page(title: str, message: str, status: int) -> HTMLResponse:
    html = templates.get_template("staff/refused.html.j2").render(title=title, message=message)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def install(app: FastAPI) -> None:
    """The answers to `LoginRequired` (to the login page) and `NotAllowed` (a 403 page)."""

    async def to_login(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        if request.method not in SAFE_METHODS:
            return _refused_page("需要登录", "登录已过期，请重新登录后再提交。", 401)
        return RedirectResponse(f"/login?next={quote(exc.next_url, safe='/')}", status_code=303)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NotAllowed)
        return _refused_page("无权操作", exc.message, 403)

    app.add_exception_handler(LoginRequired, to_login)
    app.add_exception_handler(NotAllowed, not_allowed)


def staff_context(user: StaffUser | None) -> dict[str, Any]:
    """What the page header shows for a logged-in person (name, roles, the logout form's token)."""
    return {"user": user}
