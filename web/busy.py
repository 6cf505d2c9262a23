"""A busy database, as the web answers it: the whole request runs again, then "系统繁忙" (HTTP 503).

`BusyRetry` is an ASGI middleware around every page: it keeps the request's body, and while the
request fails on a busy database (SQLite `database is locked`, a PostgreSQL serialization or
connection error — `models.db.is_transient`) before any byte of the answer went out, it runs the
whole request again with jittered back-off (`models.db.run_retrying_async`), for up to
`AFTERCARE_BUSY_RETRY_SECONDS`. A click made while another process holds a long write therefore
waits and is recorded once the lock goes. When the bound passes, the person gets a clear page and
status 503 with `Retry-After`; every transaction of the failed tries was rolled back, so nothing of
the click is recorded and the same link works again later.

A request is the unit of work: the work of a request is idempotent (a decision is a conditional
write, events and messages have unique keys), so running it again never records anything twice.
Blocking helpers a request calls in its thread pool retry themselves until the same deadline.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.db import DatabaseBusy, run_retrying_async
from web.pages import templates

BUSY_TITLE = "系统繁忙"
BUSY_MESSAGE = "系统繁忙，请稍后再试。本次操作未被记录，请过几分钟后重新打开链接提交。"
RETRY_AFTER_SECONDS = 60


def busy_page() -> bytes:
    """The page a person sees when the database stayed busy for the whole bound."""
    return templates.env.get_template("busy.html.j2").render(title=BUSY_TITLE, message=BUSY_MESSAGE).encode()


class _Started(Exception):
    """Internal: the answer had begun when the error came; it cannot be taken back."""


class BusyRetry:
    """ASGI middleware: re-run a request that met a busy database; 503 page when it stays busy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)

        async def attempt() -> None:
            delivered = False

            async def replay() -> Message:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: the client's own disconnect

            started = False

            async def watch(message: Message) -> None:
                nonlocal started
                started = True
                await send(message)

            try:
                await self.app(scope, replay, watch)
            except Exception as exc:
                if started:  # half an answer is out: nothing to re-run
                    raise _Started() from exc
                raise

        try:
            await run_retrying_async(attempt, what=f"{scope.get('method')} {scope.get('path')}")
        except DatabaseBusy:
            await _send_busy(scope, send)
        except _Started as wrapped:
            raise wrapped.__cause__ from None  # type: ignore[misc]


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = bool(message.get("more_body", False))
    return b"".join(chunks)


async def _send_busy(scope: Scope, send: Send) -> None:
    accept = dict(scope.get("headers") or []).get(b"accept", b"").decode(errors="replace")
    if "application/json" in accept and "text/html" not in accept:
        import json

        payload: bytes = json.dumps({"detail": BUSY_MESSAGE}, ensure_ascii=False).encode()
        kind = b"application/json"
    else:
        payload, kind = busy_page(), b"text/html; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", kind),
        (b"content-length", str(len(payload)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
        (b"cache-control", b"no-store"),
    ]
    start: dict[str, Any] = {"type": "http.response.start", "status": 503, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": payload})
