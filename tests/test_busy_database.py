"""A busy database (DESIGN.md §7 rows 10, 11): a write that meets another process's write lock is
re-run whole until the lock goes — in a `transaction`, a flow step and a web click alike — and
after the bound the work gives up with nothing recorded: the web with a "系统繁忙" page (503).

Real SQLite files, and a real second process holding `BEGIN IMMEDIATE` (tests/fixtures/locks.py).
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import select

from tests.conftest import T0
from tests.fixtures.locks import sqlite_path, write_lock


@pytest.fixture
def sqlite_demo(aftercare_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite file with the demo data; SQLite's own busy wait short (200 ms), so that
    each try of a unit of work gives up quickly and the retry around it is what waits."""
    from deployments.seed import seed_demo
    from models.db import migrate, session_scope
    from models.settings import get_settings

    url = f"sqlite:///{aftercare_home / 'aftercare.db'}"
    monkeypatch.setenv("AFTERCARE_DATABASE_URL", url)
    monkeypatch.setenv("AFTERCARE_SQLITE_BUSY_TIMEOUT_MS", "200")
    get_settings.cache_clear()
    migrate(url)
    with session_scope(url) as s:
        seed_demo(s, today=T0.date(), now=T0)
    return url


def new_case(title: str = "存储控制器告警") -> int:
    from models import Case
    from models.db import session_scope

    with session_scope() as s:
        case = Case(kind="repair", customer_id=1, title=title, reported_at=T0, created_at=T0, updated_at=T0)
        s.add(case)
        s.flush()
        assert case.id is not None
        return case.id


def events(case_id: int, kind: str | None = None) -> list[str]:
    from models import Event
    from models.db import session_scope

    with session_scope() as s:
        rows = s.exec(select(Event).where(Event.case_id == case_id)).all()
        return [e.kind for e in rows if kind is None or e.kind == kind]


def note(case_id: int, key: str, calls: list[float]):
    def work(session):
        from models import append_event

        calls.append(time.monotonic())
        return append_event(session, case_id, "note", at=T0, data={"k": key}, key=key).id

    return work


def test_the_bounds_default_to_at_least_a_minute_and_refuse_nonsense(monkeypatch) -> None:
    from pydantic import ValidationError

    from models.settings import Settings

    monkeypatch.delenv("AFTERCARE_BUSY_RETRY_SECONDS", raising=False)
    monkeypatch.delenv("AFTERCARE_BUSY_RETRY_STEP_SECONDS", raising=False)
    settings = Settings()
    assert settings.busy_retry_seconds >= 60 and settings.busy_retry_step_seconds >= 60
    for raw in ("0", "-1", "a minute"):
        monkeypatch.setenv("AFTERCARE_BUSY_RETRY_SECONDS", raw)
        with pytest.raises(ValidationError, match="busy_retry_seconds"):
            Settings()


# --- the unit of work --------------------------------------------------------------------------


def test_a_transaction_waits_out_another_process_s_write_lock_and_records_once(sqlite_demo) -> None:
    from models.db import session_scope, transaction

    case_id = new_case()
    calls: list[float] = []
    with write_lock(sqlite_path(sqlite_demo), 3) as lock:
        # without the retry: SQLite's own busy wait runs out and the write is lost
        with pytest.raises(sa.exc.OperationalError, match="database is locked"), session_scope() as s:
            note(case_id, "plain", [])(s)
        event_id = transaction(note(case_id, "retried", calls))
        released = lock.wait()
    assert event_id is not None
    assert time.monotonic() >= released and calls[-1] >= lock.held_at + 2.5  # it really waited
    assert len(calls) > 2  # the whole unit ran again, not one statement
    assert events(case_id, "note") == ["note"]  # recorded once; the failed tries left nothing


def test_a_lock_held_past_the_bound_gives_up_with_nothing_recorded(sqlite_demo, monkeypatch) -> None:
    from models.db import DatabaseBusy, transaction
    from models.settings import get_settings

    monkeypatch.setenv("AFTERCARE_BUSY_RETRY_SECONDS", "1.5")
    get_settings.cache_clear()
    case_id = new_case()
    calls: list[float] = []
    with write_lock(sqlite_path(sqlite_demo), 4) as lock:
        started = time.monotonic()
        with pytest.raises(DatabaseBusy, match="数据库繁忙"):
            transaction(note(case_id, "too-late", calls))
        gave_up = time.monotonic() - started
        lock.release()  # seen: it gave up; the rest of the hold would only pass time
    assert 1.4 <= gave_up < 3.5 and len(calls) >= 2
    assert events(case_id, "note") == []


def test_nested_units_share_one_deadline(sqlite_demo, monkeypatch) -> None:
    """A helper that retries itself inside a request or a step stops at the outer deadline: the
    bound is the caller's, however deep the work goes."""
    from models.db import DatabaseBusy, run_retrying, transaction
    from models.settings import get_settings

    monkeypatch.setenv("AFTERCARE_BUSY_RETRY_SECONDS", "30")
    get_settings.cache_clear()
    case_id = new_case()
    outer_calls: list[float] = []

    def outer() -> int:
        outer_calls.append(time.monotonic())
        return transaction(note(case_id, "inner", []))  # its own bound would be 30 s

    with write_lock(sqlite_path(sqlite_demo), 4) as lock:
        started = time.monotonic()
        with pytest.raises(DatabaseBusy):
            run_retrying(outer, seconds=1.5)
        assert time.monotonic() - started < 3.5
        lock.release()
    assert len(outer_calls) == 1  # the inner unit used the whole deadline; the outer did not start over


def test_an_error_that_is_not_a_busy_database_is_not_retried(sqlite_demo) -> None:
    from models.db import run_retrying

    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise sa.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    with pytest.raises(sa.exc.IntegrityError):
        run_retrying(broken)
    assert calls == [1]


def test_every_step_is_a_unit_of_work_re_run_on_a_busy_database() -> None:
    """Every step of the step modules (tasks.ledger.Step, and any plain Prefect task left) runs under
    `models.db.retrying(kind="step")` — a new step module or a new way of declaring steps must keep it."""
    import importlib
    import pkgutil

    from prefect import Task

    import tasks
    from tasks.ledger import Step

    def steps_of(module: object) -> dict[str, object]:
        name = module.__name__  # type: ignore[attr-defined]
        return {
            f"{name}.{k}": v
            for k, v in vars(module).items()
            if isinstance(v, Step | Task) and getattr(v.fn, "__module__", name) == name
        }

    found: dict[str, object] = {}
    for info in pkgutil.iter_modules(tasks.__path__):
        found.update(steps_of(importlib.import_module(f"tasks.{info.name}")))
    found.update(steps_of(importlib.import_module("flows.summary")))
    assert len(found) >= 30, sorted(found)  # 55 when written: the scan found the steps
    missing = sorted(name for name, t in found.items() if getattr(t.fn, "busy_retry", None) != "step")  # type: ignore[attr-defined]
    assert missing == []


def test_a_flow_step_waits_for_the_lock_and_completes(sqlite_demo) -> None:
    """Every step is a unit of work (tasks.ledger.step): `record` — the step that ended a repair run
    Failed with `database is locked [INSERT INTO event …]` — waits and records its event once."""
    from tasks.cases import record

    case_id = new_case()
    with write_lock(sqlite_path(sqlite_demo), 3) as lock:
        event_id = record.fn(case_id, "remote_diagnosis", T0, key="diag")  # the step's own function
        assert time.monotonic() >= lock.held_at + 2.5
    assert event_id and events(case_id, "remote_diagnosis") == ["remote_diagnosis"]


def test_a_message_sent_while_the_database_locks_is_recorded_after_the_lock_and_never_sent_again(
    sqlite_demo,
) -> None:
    """The notifier's write after a send is its own unit of work: when another process takes the
    write lock right as a message goes out, the outcome waits for the lock instead of being lost —
    a lost outcome would send the message again once its lease ran out."""
    from apprise.decorators import notify
    from apprise.manager_plugins import NotificationManager

    from models.db import session_scope
    from models.outbox import Notification, NotificationStatus
    from tasks.notify import send_due

    sends: list[str] = []
    locks: list = []

    @notify(on="lockrec", name="sends, then another process locks the database")
    def _send(body: str, title: str, notify_type: str, *args, **kwargs) -> bool:
        sends.append(body)
        holder = write_lock(sqlite_path(sqlite_demo), 3)
        locks.append((holder, holder.__enter__()))
        return True

    with session_scope() as s:
        s.add(
            Notification(
                idempotency_key="busy-outcome",
                key="busy-outcome",
                recipient_kind="staff",
                recipient_id=1,
                recipient_name="张技术",
                channel="lockrec",
                address="lockrec://zhang",
                template="test",
                subject="测试",
                body="数据库忙时发送的消息",
                next_try_at=T0,
                created_at=T0,
            )
        )
    try:
        assert send_due(T0, worker="test") == 1
        ((holder, lock),) = locks
        assert time.monotonic() >= lock.held_at + 2.5  # the outcome waited for the lock
        holder.__exit__(None, None, None)
        # long after any lease: nothing is due again
        assert send_due(T0 + timedelta(hours=2), worker="test") == 0
    finally:
        NotificationManager().remove("lockrec")
    with session_scope() as s:
        row = s.exec(select(Notification).where(Notification.key == "busy-outcome")).one()
    assert row.status == NotificationStatus.SENT and sends == ["数据库忙时发送的消息"]


def test_a_keeper_step_that_meets_a_locked_database_says_so_in_one_line_and_runs_next_tick(
    sqlite_demo, caplog
) -> None:
    """The keeper is a loop: a step that meets the lock is done again at the next tick; the log
    says the database was busy, without a traceback."""
    import logging

    from flows.clock_keeper import tick
    from tasks.notify import send_due_step

    step = "tasks.notify.send_due_step"
    with write_lock(sqlite_path(sqlite_demo), 3), caplog.at_level(logging.WARNING, logger="aftercare.keeper"):
        result = tick(T0, steps=[send_due_step])
    assert result["steps"][step] == "error"
    [line] = [r for r in caplog.records if r.name == "aftercare.keeper"]
    assert line.levelname == "WARNING" and "busy database" in line.getMessage() and line.exc_info is None
    assert tick(T0, steps=[send_due_step])["steps"][step] == 0  # the lock is gone: the step runs


# --- the web -----------------------------------------------------------------------------------


@pytest.fixture
def web(sqlite_demo):
    from web.app import create_app
    from web.approvals import clock

    app = create_app()
    app.dependency_overrides[clock] = lambda: T0 + timedelta(hours=1)
    return TestClient(app)


def open_plan(case_id: int) -> tuple[int, str]:
    """A pending plan approval for the technical director, and the token of the link sent."""
    from models.db import session_scope
    from models.outbox import Notification
    from tasks.approvals import ApprovalRequest, open_approval

    with session_scope() as s:
        row = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="director-approval",
                version=1,
                subject="解决方案",
                content="更换电源模块，预计 30 分钟。",
                approver_role="technical_director",
                expires_at=T0 + timedelta(days=3),
                now=T0,
            ),
        )
        approval_id = row.id
    with session_scope() as s:
        body = s.exec(
            select(Notification.body).where(Notification.key.like(f"approval:{approval_id}:%"))
        ).first()
    token = re.search(r"/a/([A-Za-z0-9_.\-]+)", body or "")
    assert approval_id is not None and token
    return approval_id, token[1]


def decision_of(approval_id: int):
    from models.approvals import Approval
    from models.db import session_scope

    with session_scope() as s:
        row = s.get(Approval, approval_id)
        return row.decision if row else None


def test_an_approval_clicked_during_a_20_s_write_lock_waits_and_is_recorded_once(
    sqlite_demo, web, monkeypatch
) -> None:
    """DESIGN.md §7 row 10 as issue 15 found it: another process holds the write lock 20 s (SQLite's
    default busy wait, 10 s, runs out twice). The click waits and is recorded once the lock goes —
    not the bare 500 after 10 s with nothing recorded."""
    from models.settings import get_settings

    monkeypatch.delenv("AFTERCARE_SQLITE_BUSY_TIMEOUT_MS")  # the shipped busy wait, 10 s per try
    monkeypatch.delenv("AFTERCARE_BUSY_RETRY_SECONDS", raising=False)  # the shipped bound, 90 s
    get_settings.cache_clear()
    case_id = new_case()
    approval_id, token = open_plan(case_id)
    page = web.get(f"/a/{token}")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)[1]  # type: ignore[index]
    with write_lock(sqlite_path(sqlite_demo), 20) as lock:
        answer = web.post(f"/a/{token}", data={"csrf": csrf, "decision": "approved", "comment": "同意"})
        answered = time.monotonic()
        released = lock.wait()
    assert answered >= released - 0.5 and answered - lock.held_at >= 19.5  # it waited for the lock
    assert answer.status_code == 200, answer.text[:500]
    assert "已记录" in answer.text
    assert decision_of(approval_id) == "approved"
    assert events(case_id, "approval_decided") == ["approval_decided"]


def test_a_click_while_the_lock_outlasts_the_bound_answers_503_and_records_nothing(
    sqlite_demo, web, monkeypatch
) -> None:
    from models.settings import get_settings

    monkeypatch.setenv("AFTERCARE_BUSY_RETRY_SECONDS", "1.5")
    get_settings.cache_clear()
    case_id = new_case()
    approval_id, token = open_plan(case_id)
    page = web.get(f"/a/{token}")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)[1]  # type: ignore[index]
    with write_lock(sqlite_path(sqlite_demo), 5) as lock:
        answer = web.post(f"/a/{token}", data={"csrf": csrf, "decision": "approved", "comment": "同意"})
        assert time.monotonic() < lock.held_at + 4.5  # it gave up at the bound, before the lock went
        lock.release()
    assert answer.status_code == 503
    assert "系统繁忙，请稍后再试" in answer.text and "Traceback" not in answer.text
    assert answer.headers["retry-after"] == "60"
    assert "script-src 'self'" in answer.headers["content-security-policy"]  # a page like every other
    assert decision_of(approval_id) is None and events(case_id, "approval_decided") == []
    # nothing half-recorded: the same link works once the database is free again
    again = web.post(f"/a/{token}", data={"csrf": csrf, "decision": "approved", "comment": "同意"})
    assert again.status_code == 200 and decision_of(approval_id) == "approved"


def test_two_clicks_waiting_on_one_lock_record_one_decision(sqlite_demo, web) -> None:
    """The request is re-run whole: of two clicks that both waited, one is recorded, the other is
    told it was already decided — the retry never records a decision twice."""
    case_id = new_case()
    approval_id, token = open_plan(case_id)
    page = web.get(f"/a/{token}")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)[1]  # type: ignore[index]
    answers: list[int] = []

    def click() -> None:
        answers.append(
            web.post(
                f"/a/{token}", data={"csrf": csrf, "decision": "approved", "comment": "同意"}
            ).status_code
        )

    with write_lock(sqlite_path(sqlite_demo), 3) as lock:
        clicks = [threading.Thread(target=click) for _ in range(2)]
        for c in clicks:
            c.start()
        for c in clicks:
            c.join(timeout=60)
        lock.wait()
    assert sorted(answers) == [200, 409]
    assert decision_of(approval_id) == "approved"
    assert events(case_id, "approval_decided") == ["approval_decided"]


# --- PostgreSQL: the connection dies during a step ------------------------------------------------


@pytest.mark.skipif(
    not __import__("os").environ.get("AFTERCARE_TEST_PG_URL"),
    reason="needs AFTERCARE_TEST_PG_URL (scripts/start_test_postgres.sh)",
)
def test_a_step_whose_postgresql_connection_is_killed_mid_transaction_runs_again_and_records_once(
    aftercare_home, monkeypatch
) -> None:
    """DESIGN.md §7 row 11: the server ends the step's backend (`pg_terminate_backend`, as a
    restart or a failover does) between the step's statements; the step runs again on a new
    connection and its event is recorded once."""
    import os

    from deployments.seed import seed_demo
    from models.db import get_engine, migrate, session_scope
    from models.settings import get_settings
    from tasks.cases import record
    from tests.conftest import _drop_pg_database, _fresh_pg_database

    base = os.environ["AFTERCARE_TEST_PG_URL"]
    url, name = _fresh_pg_database(base)
    monkeypatch.setenv("AFTERCARE_DATABASE_URL", url)
    get_settings.cache_clear()
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        migrate(url)
        with session_scope(url) as s:
            seed_demo(s, today=T0.date(), now=T0)
        case_id = new_case()
        killed: list[int] = []
        inserts: list[int] = []

        def kill_the_backend(conn, cursor, statement, parameters, context, executemany) -> None:
            if not statement.lstrip().upper().startswith("INSERT INTO EVENT"):
                return
            inserts.append(1)
            if killed:
                return
            pid = conn.connection.dbapi_connection.info.backend_pid
            with admin.connect() as a:
                assert a.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
                while a.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ).scalar():
                    time.sleep(0.05)
            killed.append(pid)

        engine = get_engine(url)
        sa.event.listen(engine, "before_cursor_execute", kill_the_backend)
        try:
            event_id = record.fn(case_id, "remote_diagnosis", T0, key="diag")
        finally:
            sa.event.remove(engine, "before_cursor_execute", kill_the_backend)
        assert killed and len(inserts) == 2  # the first try died with its connection; the step ran again
        assert event_id and events(case_id, "remote_diagnosis") == ["remote_diagnosis"]
    finally:
        get_engine(url).dispose()
        admin.dispose()
        _drop_pg_database(base, name)


def test_a_signature_whose_decision_meets_the_lock_is_recorded_with_its_decision(sqlite_demo) -> None:
    """The sign page writes the signature, then decides the waiting signature approval, in two
    transactions. Another process takes the write lock between the two: the page waits for it, and
    the signature and its decision are both recorded, once — the flow is not left waiting."""
    from sqlalchemy.orm import Session as OrmSession

    from models.approvals import Approval
    from models.db import session_scope
    from models.reports import Signature
    from tasks.approvals import ApprovalRequest, open_approval, signature_step
    from tasks.cases import RepairRequest, customer_contact, open_case
    from tasks.links import sign_url
    from tasks.reports import issue_report
    from web.app import create_app
    from web.reports import page_now

    with session_scope() as s:
        case = open_case(s, RepairRequest(customer="TYDX", reported_by="王", description="告警"), now=T0)
        ctx = {
            "times": {
                "reported_at": T0,
                "contact_at": T0,
                "remote_at": T0,
                "arrived_at": None,
                "repaired_at": T0,
                "restored_at": T0,
            },
            "clocks": [],
            "solved_remotely": True,
            "diagnosis": "恢复",
            "command_log": "$ ls",
            "plan": None,
            "work_done": "远程恢复",
            "parts_used": [],
            "maintenance": "",
            "further_problems": [],
            "engineer": "刘工程师",
            "corrections": [],
        }
        report = issue_report(
            s, case.id, "service_report", template="repair/service_report", context=ctx, now=T0
        )
        contact = customer_contact(s, case.id)
        approval = open_approval(
            s,
            ApprovalRequest(
                case_id=case.id,
                step=signature_step("service_report"),
                version=report.version,
                subject="签字",
                content=report.content,
                kind="signature",
                approver_contact_ids=[contact.id],
                approver_role="customer",
                expires_at=T0 + timedelta(days=3),
                now=T0,
            ),
        )
        report_id, approval_id, content_hash = report.id, approval.id, report.content_hash

    locked: list = []

    def after_commit(session) -> None:  # the fault: the lock arrives right after the signature's commit
        if not locked and session.info.pop("signed", False):
            holder = write_lock(sqlite_path(sqlite_demo), 3)
            locked.append((holder, holder.__enter__()))

    def before_flush(session, _ctx, _instances) -> None:
        if any(isinstance(o, Signature) for o in session.new):
            session.info["signed"] = True

    app = create_app()
    app.dependency_overrides[page_now] = lambda: T0 + timedelta(minutes=5)
    client = TestClient(app)
    path = "/" + sign_url(report_id, now=T0, contact_id=contact.id).split("/", 3)[3]
    page = client.get(path)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    sa.event.listen(OrmSession, "before_flush", before_flush)
    sa.event.listen(OrmSession, "after_commit", after_commit)
    try:
        answer = client.post(
            path,
            data={
                "csrf": csrf,
                "content_hash": content_hash,
                "signer_name": "客户 王先生",
                "method": "typed",
                "statement": "",
                "action": "sign",
            },
        )
    finally:
        sa.event.remove(OrmSession, "before_flush", before_flush)
        sa.event.remove(OrmSession, "after_commit", after_commit)
        for holder, _ in locked:
            holder.__exit__(None, None, None)
    assert locked, "the lock was not taken between the signature and the decision"
    assert time.monotonic() >= locked[0][1].held_at + 2.5  # it waited for the lock
    assert answer.status_code == 200 and "签字成功" in answer.text, answer.text[:600]
    with session_scope() as s:
        assert s.get(Approval, approval_id).decision == "signed"
        assert len(s.exec(select(Signature).where(Signature.report_id == report_id)).all()) == 1
