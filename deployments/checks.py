"""`aftercare check`: is the database reachable, is Prefect reachable, does every scheduled
deployment have its next run, are Prefect's own services healthy, are channels configured."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlmodel import select

from models.db import DatabaseError, ping, session_scope
from models.settings import Settings, business_timezone


def run_checks(settings: Settings, *, echo: Callable[[str], None] = print) -> bool:
    ok = True

    def report(good: bool, label: str, detail: str) -> None:
        nonlocal ok
        ok = ok and good
        echo(f"{'✔' if good else '✘'} {label}: {detail}")

    # PDFs: a font that covers Chinese, or every report prints boxes (tasks/pdf.py)
    from tasks.pdf import PdfError, cjk_font_problem

    try:
        problem, used = cjk_font_problem()
    except PdfError as exc:
        problem, used = str(exc), ""
    report(problem is None, "中文字体 / CJK font", used if problem is None else problem)

    try:
        ping(settings.db_url)
        report(True, "数据库 / database", settings.db_url)
    except DatabaseError as exc:
        report(False, "数据库 / database", str(exc))
        return False

    api = settings.prefect_url
    healthy = False
    try:
        with prefect_api(api) as client:
            healthy = client.get("/health").status_code == 200
        report(healthy, "Prefect", api if healthy else f"{api} answered but is not healthy")
    except httpx.HTTPError as exc:
        report(
            False,
            "Prefect",
            f"无法连接 / not reachable at {api} ({type(exc).__name__}); is `aftercare up` running?",
        )
    if healthy:
        for good, label, detail in schedule_checks(api, tz=settings.timezone):
            report(good, label, detail)
        for good, label, detail in pool_checks(api):
            report(good, label, detail)
    for good, label, detail in redis_checks():
        report(good, label, detail)
    for good, label, detail in cluster_checks(settings):
        report(good, label, detail)
    # `aftercare up`'s server, or the services process of `aftercare cluster up` (deployments.cluster)
    for server_log in [settings.home / "logs" / name for name in ("prefect-server.log", "services.log")]:
        if not server_log.exists():
            continue
        errors = prefect_service_errors(server_log)
        report(
            not errors,
            "Prefect 服务日志 / server log",
            f"{server_log}: no service error since the server started"
            if not errors
            else f"Prefect 后台服务出错 / {len(errors)} service error(s) since the server started — "
            f"scheduled runs may never be created; see {server_log}",
        )
        for line in errors[-3:]:
            echo(f"    {line}")

    from models import Contact, Staff
    from tasks.channels import ChannelError, validate_url

    try:
        with session_scope(settings.db_url) as session:
            people = [("staff", s.name, s.notify_urls) for s in session.exec(select(Staff)).all()]
            people += [("contact", c.name, c.notify_urls) for c in session.exec(select(Contact)).all()]
    except Exception as exc:  # schema missing: not migrated yet
        report(
            False,
            "通知渠道 / channels",
            f"cannot read people ({type(exc).__name__}); run `aftercare migrate`",
        )
        return False
    missing = [name for _, name, urls in people if not urls]
    bad: list[str] = []
    for _, name, urls in people:
        for url in urls:
            try:
                validate_url(url)
            except ChannelError as exc:
                bad.append(f"{name}: {exc}")
    report(
        not bad,
        "通知渠道 / channels",
        f"{len(people)} people, {len(missing)} without an address, {len(bad)} invalid",
    )
    for line in bad:
        echo(f"    {line}")
    report(*outbox_check(settings.db_url, datetime.now(UTC)))
    return ok


# ---- the outbox: is anyone sending it ---------------------------------------------------------

OUTBOX_OVERDUE = timedelta(minutes=10)


def outbox_check(db_url: str, now: datetime) -> tuple[bool, str, str]:
    """(good, label, detail): no due message has waited unclaimed for OUTBOX_OVERDUE — something
    sends the outbox (`aftercare up`'s keeper, or the `aftercare notifier` of each cluster node, whose
    keepers leave it to them); the detail names who sent in the last hour (`Notification.sent_by`)."""
    import sqlalchemy as sa

    from models.outbox import Notification, NotificationStatus

    table = Notification.__table__
    with session_scope(db_url) as session:
        overdue = session.execute(
            sa.select(sa.func.count())
            .select_from(table)
            .where(
                table.c.status == NotificationStatus.PENDING,
                table.c.next_try_at <= now - OUTBOX_OVERDUE,
                sa.or_(table.c.claimed_until.is_(None), table.c.claimed_until <= now),
            )
        ).scalar_one()
        senders = session.execute(
            sa.select(table.c.sent_by, sa.func.count())
            .where(table.c.sent_at >= now - timedelta(hours=1))
            .group_by(table.c.sent_by)
            .order_by(table.c.sent_by)
        ).all()
    who = ", ".join(f"{name or '?'} {n}" for name, n in senders) or "none"
    if overdue:
        return (
            False,
            "发件箱 / outbox",
            f"{overdue} 条通知到期超过 10 分钟仍未发送：没有发送进程在运行？/ {overdue} due messages unsent "
            f"for over 10 min — is `aftercare up` (its keeper) or an `aftercare notifier` per node running? "
            f"(sent in the last hour: {who})",
        )
    return True, "发件箱 / outbox", f"nothing overdue; sent in the last hour by: {who}"


# ---- Prefect: scheduled deployments and the server's services -----------------------------------


def prefect_api(api: str) -> httpx.Client:
    """An HTTP client for the Prefect API (with Prefect's basic auth when PREFECT_API_AUTH_STRING is set).
    Plain HTTP, not Prefect's client: `check` must answer even when Prefect's settings are wrong."""
    auth_string = os.environ.get("PREFECT_API_AUTH_STRING", "")
    user, _, password = auth_string.partition(":")
    return httpx.Client(
        base_url=api.rstrip("/"), timeout=5, auth=httpx.BasicAuth(user, password) if auth_string else None
    )


def pool_checks(api: str) -> list[tuple[bool, str, str]]:
    """(good, label, detail) for each work pool that has deployments (`aftercare deploy --pool`):
    how many of its workers are online — none means nothing runs its flows."""
    checks: list[tuple[bool, str, str]] = []
    try:
        with prefect_api(api) as client:
            answer = client.post("/work_pools/filter", json={"limit": 50})
            answer.raise_for_status()
            for pool in answer.json():
                name = pool["name"]
                deployments = client.post(
                    "/deployments/filter", json={"work_pools": {"name": {"any_": [name]}}, "limit": 200}
                )
                deployments.raise_for_status()
                if not deployments.json():
                    continue
                workers = client.post(f"/work_pools/{name}/workers/filter", json={"limit": 100})
                workers.raise_for_status()
                online = sorted(w["name"] for w in workers.json() if w.get("status") == "ONLINE")
                checks.append(
                    (
                        bool(online),
                        f"工作池 / work pool {name}",
                        f"{len(deployments.json())} deployments, {len(online)} workers online"
                        + (
                            f" ({', '.join(online)})"
                            if online
                            else " — 没有在线的 worker，流程不会运行 / no worker online"
                        ),
                    )
                )
    except httpx.HTTPError as exc:
        checks.append((False, "工作池 / work pools", f"Prefect API error ({type(exc).__name__}: {exc})"))
    return checks


def pieces_file(settings: Settings) -> Path:
    """The pieces of a cluster and where they are: written by `aftercare cluster up`
    (deployments.cluster), or by hand on a cluster across machines (README "production")."""
    return settings.home / "cluster" / "pieces.json"


def cluster_checks(settings: Settings, now: datetime | None = None) -> list[tuple[bool, str, str]]:
    """On a cluster (its pieces file present): each API server and approval web answers its health
    check, and one clock keeper holds the lease. The balancer is the "Prefect" line, the workers the
    work-pool line, Redis and PostgreSQL their own lines."""
    import json

    path = pieces_file(settings)
    if not path.exists():
        return []
    try:
        pieces = {p["name"]: p["where"] for p in json.loads(path.read_text())}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [(False, "集群 / cluster", f"{path}: cannot be read ({type(exc).__name__}: {exc})")]
    checks = []
    for name, where in pieces.items():
        if name.startswith(("api-", "web-")):
            health = where.rstrip("/") + "/health"
            try:
                client = prefect_api(where) if name.startswith("api-") else httpx.Client(timeout=5)
                with client:
                    status = client.get(health).status_code
                checks.append((status == 200, f"集群 / cluster {name}", f"{where} (HTTP {status})"))
            except httpx.HTTPError as exc:
                checks.append(
                    (
                        False,
                        f"集群 / cluster {name}",
                        f"无法连接 / not reachable at {where} ({type(exc).__name__})",
                    )
                )
    if any(name.startswith("keeper-") for name in pieces):
        checks.append(keeper_check(settings, now or datetime.now(UTC)))
    return checks


def keeper_check(settings: Settings, now: datetime) -> tuple[bool, str, str]:
    """Does a clock keeper hold the lease now (flows.clock_keeper): without one no clock is kept."""
    from flows.clock_keeper import KEEPER_LEASE
    from models.leases import current

    with session_scope(settings.db_url) as session:
        lease = current(session, KEEPER_LEASE, now)
        if lease is None:
            return (False, "时钟守护 / clock keeper", "no keeper holds the lease: no clock is kept")
        left = (lease.expires_at - now).total_seconds()
        return (True, "时钟守护 / clock keeper", f"lease held by {lease.holder}, {left:.0f} s left")


def redis_checks() -> list[tuple[bool, str, str]]:
    """When Prefect uses Redis (prefect-redis as its messaging broker, `aftercare cluster up`): does
    it answer?"""
    if not os.environ.get("PREFECT_MESSAGING_BROKER", "").startswith("prefect_redis"):
        return []
    import redis

    host = os.environ.get("PREFECT_REDIS_MESSAGING_HOST", "localhost")
    port = int(os.environ.get("PREFECT_REDIS_MESSAGING_PORT", "6379") or 6379)
    try:
        redis.Redis(
            host=host,
            port=port,
            username=os.environ.get("PREFECT_REDIS_MESSAGING_USERNAME") or None,
            password=os.environ.get("PREFECT_REDIS_MESSAGING_PASSWORD") or None,
            socket_timeout=2,
        ).ping()
    except redis.RedisError as exc:
        return [(False, "Redis", f"无法连接 / not reachable at {host}:{port} ({type(exc).__name__})")]
    return [(True, "Redis", f"{host}:{port} (Prefect's messaging broker and cache)")]


@dataclass
class ScheduleState:
    """One scheduled deployment as the Prefect server sees it."""

    name: str  # flow-name/deployment-name
    registered: bool
    paused: bool
    next_run: datetime | None  # the earliest Scheduled run still ahead (created by Prefect's scheduler)
    crons: list[str]


def scheduled_deployments() -> list[Any]:
    """Every deployment aftercare serves that has a schedule (deployments.registry): a new cron
    deployment is checked without touching this file."""
    from deployments.registry import all_deployments

    return [d for d in all_deployments() if d.schedules]


def schedule_states(api: str, now: datetime | None = None) -> list[ScheduleState]:
    """Ask the Prefect API, for each scheduled deployment, whether it is registered and active and
    when its next Scheduled run starts."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    states: list[ScheduleState] = []
    with prefect_api(api) as client:
        for d in scheduled_deployments():
            name = f"{d.flow_name}/{d.name}"
            crons = [str(getattr(s.schedule, "cron", s.schedule)) for s in d.schedules]
            answer = client.get(f"/deployments/name/{d.flow_name}/{d.name}")
            if answer.status_code == 404:
                states.append(ScheduleState(name, False, False, None, crons))
                continue
            answer.raise_for_status()
            deployment = answer.json()
            active = any(s.get("active", True) for s in deployment.get("schedules") or [])
            runs = client.post(
                "/flow_runs/filter",
                json={
                    "deployments": {"id": {"any_": [deployment["id"]]}},
                    "flow_runs": {
                        "state": {"type": {"any_": ["SCHEDULED"]}},
                        "expected_start_time": {"after_": moment.isoformat()},
                    },
                    "sort": "EXPECTED_START_TIME_ASC",
                    "limit": 1,
                },
            )
            runs.raise_for_status()
            found = runs.json()
            next_run = datetime.fromisoformat(found[0]["expected_start_time"]) if found else None
            states.append(
                ScheduleState(name, True, bool(deployment.get("paused")) or not active, next_run, crons)
            )
    return states


def schedule_checks(
    api: str, *, tz: str | None = None, now: datetime | None = None
) -> list[tuple[bool, str, str]]:
    """(good, label, detail) for each scheduled deployment: its next run time in `tz`, or why it has none."""
    try:
        states = schedule_states(api, now)
    except httpx.HTTPError as exc:
        return [(False, "定时流程 / schedules", f"Prefect API error ({type(exc).__name__}: {exc})")]
    tz = tz or business_timezone()
    zone = ZoneInfo(tz)
    checks: list[tuple[bool, str, str]] = []
    for state in states:
        label = f"定时流程 / schedule {state.name}"
        if not state.registered:
            checks.append(
                (
                    False,
                    label,
                    "未注册 / not registered with Prefect — is the runner of `aftercare up` running?",
                )
            )
        elif state.paused:
            checks.append(
                (False, label, "已暂停 / paused — no run will start until the runner serves it again")
            )
        elif state.next_run is None:
            checks.append(
                (
                    False,
                    label,
                    "没有待运行的计划 / no upcoming run: Prefect's scheduler created none "
                    "(see the Prefect server log)",
                )
            )
        else:
            at = state.next_run.astimezone(zone).strftime("%Y-%m-%d %H:%M")
            checks.append((True, label, f"下次运行 / next run {at} ({tz}), cron {', '.join(state.crons)}"))
    return checks


# A record of Prefect's server log: "03:00:01.282 | ERROR   | docket.dependencies - message"
_RECORD = re.compile(r"^\d\d:\d\d:\d\d\.\d+ \| (?P<level>[A-Z]+)\s*\| (?P<logger>\S+) - (?P<message>.*)$")
# Printed by `prefect server start` each time it starts; the log is appended to across restarts.
_SERVER_STARTED = "Configure Prefect to communicate with the server"
# The background services (scheduler, late runs, pause expirations, ...) run as docket tasks.
_SERVICE_LOGGERS = ("prefect.server.services", "docket")
_SERVICE_CODE = "prefect/server/services/"
_LOG_TAIL_BYTES = 4_000_000


def service_errors_in(text: str) -> list[str]:
    """The errors of Prefect's background services in a server log since the server last started:
    an ERROR/CRITICAL record of a service logger, or any traceback through prefect/server/services.
    Each is one line: time, logger, message and the exception that ended the traceback."""
    start = text.rfind(_SERVER_STARTED)
    lines = text[start:].splitlines() if start >= 0 else text.splitlines()
    chunks: list[tuple[re.Match[str] | None, list[str]]] = [(None, [])]
    for line in lines:
        record = _RECORD.match(line)
        if record:
            chunks.append((record, []))
        else:
            chunks[-1][1].append(line)
    errors: list[str] = []
    for record, rest in chunks:
        body = "\n".join(rest)
        traced = "Traceback (most recent call last)" in body and _SERVICE_CODE in body
        flagged = (
            record is not None
            and record["level"] in ("ERROR", "CRITICAL")
            and (record["logger"].startswith(_SERVICE_LOGGERS) or _SERVICE_CODE in body)
        )
        if not (traced or flagged):
            continue
        raised = [r.strip() for r in rest if r.strip() and not r.startswith((" ", "\t", "Traceback"))]
        head = f"{record['logger']} {record['level']}: {record['message'].strip()}" if record else "traceback"
        errors.append(head + (f" — {raised[-1]}" if raised else ""))
    return errors


def prefect_service_errors(log: Path) -> list[str]:
    """service_errors_in() of the Prefect server log `log` (its last few MB)."""
    try:
        with log.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _LOG_TAIL_BYTES))
            return service_errors_in(handle.read().decode(errors="replace"))
    except FileNotFoundError:
        return []
