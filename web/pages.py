"""What every page of the approval web shares: the templates (the one autoescaping Jinja2
environment of `tasks.render.environment`), the static files, and the security headers.

Every response carries a Content-Security-Policy that lets no inline script run (`script-src
'self'`: the only script is `/static/signature-pad.js`), `X-Content-Type-Options: nosniff`,
`Referrer-Policy: no-referrer` (the links people follow carry their signed token: it must not
leak to another site in a Referer) and may not be framed by another site.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.settings import get_settings
from tasks.render import environment

WEB_TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"

# Starlette's `Jinja2Templates(directory=…)` builds its own environment, which autoescapes only
# `.html/.htm/.xml` names — our pages are `*.html.j2`. It is given the shared one instead.
templates = Jinja2Templates(env=environment(WEB_TEMPLATES))

_URL = re.compile(r"https?://[^\s<>\"']+")


def links(text: str) -> Markup:
    """Plain text, escaped, with this site's own links made links: the content of an approval lists
    the report's page and its signing page, and a person on a phone cannot copy a URL out of a
    page to open it. Other addresses stay text."""
    own = get_settings().web_base_url + "/"
    parts: list[Markup] = []
    last = 0
    for found in _URL.finditer(text or ""):
        url = found.group(0)
        if not url.startswith(own):
            continue
        parts.append(escape(text[last : found.start()]))
        parts.append(Markup('<a href="{0}">{0}</a>').format(url))  # format() escapes the URL
        last = found.end()
    parts.append(escape((text or "")[last:]))
    return Markup("").join(parts)


templates.env.filters["links"] = links

# Styles may be inline (the pages and the printable reports in their sandboxed frames carry
# <style> blocks and style attributes); scripts may not: only files served from this site run.
# `data:` images: a drawn signature is a PNG data URL; `frame-src` covers the reports' srcdoc frames.
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "frame-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response (pages, errors, static files, JSON).

    Pure ASGI rather than `BaseHTTPMiddleware`, which wraps streaming responses and background
    tasks in a second task group for no gain here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in self.raw}
                message["headers"] = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in names
                ] + self.raw
            await send(message)

        await self.app(scope, receive, with_headers)
