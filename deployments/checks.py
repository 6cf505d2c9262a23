"""`aftercare check`: is the database reachable, is Prefect reachable, are channels configured."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlmodel import select

from models.db import DatabaseError, ping, session_scope
from models.settings import Settings


def run_checks(settings: Settings, *, echo: Callable[[str], None] = print) -> bool:
    ok = True

    def report(good: bool, label: str, detail: str) -> None:
        nonlocal ok
        ok = ok and good
        echo(f"{'✔' if good else '✘'} {label}: {detail}")

    try:
        ping(settings.db_url)
        report(True, "数据库 / database", settings.db_url)
    except DatabaseError as exc:
        report(False, "数据库 / database", str(exc))
        return False

    api = settings.prefect_url
    try:
        healthy = httpx.get(f"{api}/health", timeout=5).status_code == 200
        report(healthy, "Prefect", api if healthy else f"{api} answered but is not healthy")
    except httpx.HTTPError as exc:
        report(False, "Prefect", f"无法连接 / not reachable at {api} ({type(exc).__name__}); is `aftercare up` running?")

    from models import Contact, Staff
    from tasks.channels import ChannelError, validate_url

    try:
        with session_scope(settings.db_url) as session:
            people = [("staff", s.name, s.notify_urls) for s in session.exec(select(Staff)).all()]
            people += [("contact", c.name, c.notify_urls) for c in session.exec(select(Contact)).all()]
    except Exception as exc:  # schema missing: not migrated yet
        report(False, "通知渠道 / channels", f"cannot read people ({type(exc).__name__}); run `aftercare migrate`")
        return False
    missing = [name for _, name, urls in people if not urls]
    bad: list[str] = []
    for _, name, urls in people:
        for url in urls:
            try:
                validate_url(url)
            except ChannelError as exc:
                bad.append(f"{name}: {exc}")
    report(not bad, "通知渠道 / channels", f"{len(people)} people, {len(missing)} without an address, {len(bad)} invalid")
    for line in bad:
        echo(f"    {line}")
    return ok
