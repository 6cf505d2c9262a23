"""Signed links (itsdangerous): the capability a person holds to act on one approval, report or form.

The one module that signs and verifies links and builds their URLs: tasks/ put them in messages,
web/ checks them when a page opens, so it lives below both (tasks/, imported by web/).

A token carries a small dict (e.g. approval id, approver, content hash) and its expiry, signed
with the site's secret and salted with its *purpose*, so a token made for one page can never be
replayed on another. Expiry is checked against a `now` the caller passes in (never the token
library's own clock), so tests and the keeper can move time by passing values.

    url = sign_link("a", {"a": 12, "p": "s:9", "h": "3f2a…"}, expires_at=due)
    data = verify_token(token, "a", now=now)        # raises ForgedLink / ExpiredLink
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from models.settings import get_settings


class BadLink(Exception):
    """A link that cannot be used; `data` holds what it said when the signature was good."""

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.data = data or {}


class ForgedLink(BadLink):
    """Signature wrong: forged or tampered with (or signed with another key)."""


class ExpiredLink(BadLink):
    """Genuine but past its expiry; `data` is trustworthy (used to offer a fresh link)."""


def _serializer(purpose: str) -> URLSafeSerializer:
    return URLSafeSerializer(get_settings().signing_key(), salt=f"aftercare:{purpose}")


def sign_token(purpose: str, data: dict[str, Any], *, expires_at: datetime) -> str:
    """A URL-safe signed token carrying `data` and its expiry (aware datetime)."""
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be an aware datetime")
    return str(_serializer(purpose).dumps({**data, "exp": int(expires_at.timestamp())}))


def verify_token(token: str, purpose: str, *, now: datetime) -> dict[str, Any]:
    """The token's data; ForgedLink if the signature is wrong, ExpiredLink if past its expiry."""
    try:
        data = _serializer(purpose).loads(token)
    except BadSignature as exc:
        raise ForgedLink("链接无效或已被篡改 / the link is invalid or was altered") from exc
    if not isinstance(data, dict) or "exp" not in data:
        raise ForgedLink("链接无效 / the link is invalid")
    expires_at = datetime.fromtimestamp(int(data["exp"]), UTC)
    data["expires_at"] = expires_at
    if now >= expires_at:
        raise ExpiredLink("链接已过期 / the link has expired", data)
    return data


def sign_link(purpose: str, data: dict[str, Any], *, expires_at: datetime, path: str | None = None) -> str:
    """The full URL people receive: `<public base>/<path or purpose>/<token>`."""
    base = get_settings().web_base_url
    return f"{base}/{(path or purpose).strip('/')}/{sign_token(purpose, data, expires_at=expires_at)}"


def verify_link(token: str, purpose: str, *, now: datetime) -> dict[str, Any]:
    """Same as `verify_token` (the name the page routes use)."""
    return verify_token(token, purpose, now=now)


def csrf_token(token: str) -> str:
    """The hidden form field of a page opened through `token`; a POST without it is refused.

    The link token is already the capability, but binding each form to the page that served it
    keeps a third-party site from posting a decision even if it learned the link.
    """
    key = get_settings().signing_key().encode()
    return hmac.new(key, f"csrf:{token}".encode(), sha256).hexdigest()[:32]


def check_csrf(token: str, value: str | None) -> bool:
    return bool(value) and hmac.compare_digest(csrf_token(token), value or "")


CHECKLIST_PAGE = "inspection/checklist"  # web/inspection.py: the checklist form behind the engineer's link


# ---------------------------------------------------------------------------------------------
# Report links: a view link cannot sign (its own purpose)

REPORT_VIEW, REPORT_SIGN = "report", "report-sign"
REPORT_LINK_LIFETIME = timedelta(days=30)


def report_url(report_id: int, *, now: datetime, lifetime: timedelta = REPORT_LINK_LIFETIME) -> str:
    """The link to read and print a report."""
    return sign_link(REPORT_VIEW, {"r": report_id}, expires_at=now + lifetime, path="reports")


def sign_url(
    report_id: int,
    *,
    now: datetime,
    contact_id: int | None = None,
    lifetime: timedelta = REPORT_LINK_LIFETIME,
) -> str:
    """The link where the customer signs a report (or objects to it)."""
    return sign_link(
        REPORT_SIGN, {"r": report_id, "c": contact_id}, expires_at=now + lifetime, path="reports/sign"
    )


# ---------------------------------------------------------------------------------------------
# The customer's complaint page (投诉, PROCEDURES.md §7): one link per customer, no login, printed
# on every report and notice the customer receives (web/complaints.py serves it)

COMPLAINT_PAGE = "complaint"
COMPLAINT_LINK_LIFETIME = timedelta(
    days=400
)  # a printed report is kept a year; every notice brings a fresh one


def complaint_url(customer_code: str, *, now: datetime) -> str:
    """The customer's own complaint page."""
    return sign_link(
        COMPLAINT_PAGE, {"cu": customer_code}, expires_at=now + COMPLAINT_LINK_LIFETIME, path="complaint"
    )


def complaint_customer(token: str, *, now: datetime) -> str:
    """The customer code a complaint-page token carries; ForgedLink / ExpiredLink otherwise."""
    code = verify_token(token, COMPLAINT_PAGE, now=now).get("cu")
    if not isinstance(code, str) or not code:
        raise ForgedLink("链接无效 / the link is invalid")
    return code
