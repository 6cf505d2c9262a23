"""`aftercare notifier` (deployments/notifier.py): the outbox sent by a process per node.

Two real notifier processes on one database send a burst of rows through the real `log://` channel
(one file both append to) — each row once, both take a share, SIGTERM stops both; on PostgreSQL
their connections are cut mid-run and they go on. The fast tests: `--every` refused in one line, the
keeper leaves the outbox to the notifiers when told, a stop hands the rest of a batch back, and a
locked database ends a pass, not the loop. (tests/test_notify.py races two notifiers in threads;
this file is about the process and its loop.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from deployments.cli import app
from deployments.notifier import NotifierError, loop, parse_every
from models.db import get_engine, migrate, session_scope
from models.outbox import Notification, NotificationStatus
from models.parties import Role, Staff
from models.settings import Settings, get_settings
from tasks.notify import claim, queue, run_notifier, send_due_step
from tests.conftest import T0

ROOT = Path(__file__).resolve().parent.parent


def engineers(session: Session, count: int, prefix: str) -> list[Staff]:
    """`count` people, each with an address of their own: a line of the log names its row."""
    people = [
        Staff(name=f"工程师{i}", roles=[Role.ENGINEER], notify_urls=[f"log://staff/{prefix}{i}"])
        for i in range(count)
    ]
    session.add_all(people)
    session.flush()
    return people


def burst(url: str, count: int, prefix: str, now: datetime) -> set[str]:
    """Queue `count` due rows (one per person); returns their addresses."""
    with session_scope(url) as session:
        people = engineers(session, count, prefix)
        rows = queue(
            session,
            recipients=people,
            template="outbox/test",
            context={"now": now},
            key=f"burst-{prefix}",
            case_id=None,
            now=now,
        )
        return {r.address for r in rows}


def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def sent_count(url: str, prefix: str) -> int:
    with session_scope(url) as s:
        return s.exec(
            select(sa.func.count())
            .select_from(Notification)
            .where(
                Notification.status == NotificationStatus.SENT,
                col(Notification.address).like(f"log://staff/{prefix}%"),
            )
        ).one()


# --- two real processes --------------------------------------------------------------------------


def test_two_notifier_processes_send_each_row_once_and_stop_on_sigterm(
    db_url: str, aftercare_home: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    # a claim lost with a cut connection is taken over after 5 s, not 5 minutes
    env.update({"AFTERCARE_NOTIFY_LEASE_SECONDS": "5", "PYTHONUNBUFFERED": "1"})
    outputs = [tmp_path / f"notifier-{i}.out" for i in (1, 2)]
    procs = []
    for i, out in enumerate(outputs, start=1):
        with out.open("w") as handle:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "deployments.cli", "notifier", "--every", "0.2"],
                    env={**env, "AFTERCARE_NODE": f"notifier-{i}"},
                    cwd=ROOT,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        wait_for(
            "both notifiers started", lambda: all("notifier started" in o.read_text() for o in outputs), 90
        )
        expected = burst(db_url, 400, "a", datetime.now(UTC))
        if db_url.startswith("postgresql"):
            # the database drops every connection of both notifiers while they send: each loop goes on
            wait_for("a first row sent", lambda: sent_count(db_url, "a") > 0, 60)
            with get_engine(db_url).connect() as conn:
                cut = conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            assert cut >= 2  # the notifiers' pooled connections (the test's own pool reconnects too)
        wait_for("the first burst sent", lambda: sent_count(db_url, "a") == 400, 120)
        expected |= burst(db_url, 100, "b", datetime.now(UTC))  # and they still send afterwards
        wait_for("the second burst sent", lambda: sent_count(db_url, "b") == 100, 60)
        assert [p.poll() for p in procs] == [None, None]
        stopping = time.monotonic()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=15) for p in procs]
        stopped_in = time.monotonic() - stopping
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = [o.read_text() for o in outputs]
    assert codes == [0, 0], texts
    assert stopped_in < 5, stopped_in  # 0.1 s measured at load average 20 (2 cores)
    assert all("Traceback" not in t and "stopped" in t for t in texts), texts
    lines = [json.loads(line) for line in (aftercare_home / "notifications.log").read_text().splitlines()]
    delivered = Counter(line["to"] for line in lines)
    assert set(delivered) == expected and len(expected) == 500
    assert max(delivered.values()) == 1  # no row went out twice
    with session_scope(db_url) as s:
        rows = list(s.exec(select(Notification)))
    assert {(r.status, r.attempts) for r in rows} == {(NotificationStatus.SENT, 1)}
    by = Counter(r.sent_by for r in rows)
    print("rows sent per notifier:", dict(by), f"stopped in {stopped_in:.2f} s")
    assert set(by) == {"notifier@notifier-1", "notifier@notifier-2"}, by  # both took a share
    # each said what it sent as it went, and the total when it stopped
    for i, text in enumerate(texts, start=1):
        assert f"notifier@notifier-{i}: 发送 / sent " in text, text
        total = re.search(r"stopped, (\d+) sent", text)
        assert total and int(total[1]) == by[f"notifier@notifier-{i}"], text


# --- the command's option ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "nan", "inf", "3601", "", "1s"])
def test_a_bad_interval_is_refused_in_one_line(aftercare_home: Path, bad: str) -> None:
    answer = CliRunner().invoke(app, ["notifier", "--every", bad])
    assert answer.exit_code == 2
    lines = answer.output.strip().splitlines()
    assert len(lines) == 1 and "--every" in lines[0] and "秒" in lines[0], answer.output
    assert "Traceback" not in answer.output
    assert answer.exception is None or isinstance(answer.exception, SystemExit)


def test_an_interval_is_read_as_seconds() -> None:
    assert parse_every("2") == 2.0 and parse_every(" 0.5 ") == 0.5 and parse_every(3600) == 3600.0
    with pytest.raises(NotifierError):
        parse_every("0.05")


# --- who sends: the keeper, or the notifiers --------------------------------------------------------


def test_the_keeper_leaves_the_outbox_to_the_notifiers_when_told(
    session: Session, notifications, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().keeper_sends is True  # `aftercare up`: the keeper sends, as before
    people = engineers(session, 3, "k")
    queue(
        session, recipients=people, template="outbox/test", context={"now": T0}, key="k", case_id=None, now=T0
    )
    session.commit()

    monkeypatch.setenv("AFTERCARE_KEEPER_SENDS", "false")  # what `aftercare cluster up` gives its keepers
    get_settings.cache_clear()
    assert send_due_step(T0) == 0
    assert notifications == []
    session.expire_all()
    assert {r.status for r in session.exec(select(Notification))} == {NotificationStatus.PENDING}

    monkeypatch.setenv("AFTERCARE_KEEPER_SENDS", "true")
    get_settings.cache_clear()
    assert send_due_step(T0) == 3
    session.expire_all()
    sent_by = {r.sent_by for r in session.exec(select(Notification))}
    assert len(sent_by) == 1 and sent_by.pop().startswith("keeper@")  # recorded with the row


# --- the loop ------------------------------------------------------------------------------------


def test_a_stop_hands_the_rest_of_the_batch_back_at_once(session: Session, notifications) -> None:
    people = engineers(session, 10, "s")
    queue(
        session, recipients=people, template="outbox/test", context={"now": T0}, key="s", case_id=None, now=T0
    )
    session.commit()
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 3  # SIGTERM arrives while the third row is being sent

    report = run_notifier(T0, worker="A", stop=stop)
    assert (report.claimed, report.sent, report.released) == (10, 3, 7)
    assert len(notifications) == 3
    _token, ids = claim(T0, worker="B")  # free for another notifier now, not when the lease runs out
    assert len(ids) == 7


def test_a_locked_database_ends_a_pass_not_the_loop(
    aftercare_home: Path, notifications, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite locked by another writer longer than the busy timeout: each pass says so in one line;
    once the lock is gone the next pass sends."""
    path = aftercare_home / "locked.db"
    url = f"sqlite:///{path}"
    migrate(url)
    burst(url, 5, "l", T0)
    monkeypatch.setenv("AFTERCARE_SQLITE_BUSY_TIMEOUT_MS", "100")
    get_settings.cache_clear()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process writing
    said: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=lambda: said.append(
            str(loop(every=0.05, stop=stop, echo=said.append, clock=lambda: T0, worker="notifier@n", url=url))
        )
    )
    thread.start()
    try:
        wait_for("two passes refused", lambda: sum("database unavailable" in s for s in said) >= 2, 30)
        assert notifications == []
        blocker.execute("ROLLBACK")
        wait_for("the rows sent", lambda: sent_count(url, "l") == 5, 30)
    finally:
        blocker.close()
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert said[-1] == "5"  # the loop returned what it sent
    refused = [s for s in said if "database unavailable" in s]
    assert all("locked" in s and "\n" not in s for s in refused), refused
    assert "notifier@n: 发送 / sent 5" in said
    assert len(notifications) == 5
    get_engine(url).dispose()


def test_check_says_when_due_messages_go_unsent_and_who_sent_lately(
    session: Session, notifications, db_url: str
) -> None:
    """`aftercare check`: with the keepers leaving the outbox to the notifiers, no notifier running
    means nothing goes out — due rows waiting unclaimed over 10 minutes are a ✘ line."""
    from datetime import timedelta

    from deployments.checks import outbox_check

    people = engineers(session, 3, "c")
    queue(
        session, recipients=people, template="outbox/test", context={"now": T0}, key="c", case_id=None, now=T0
    )
    session.commit()
    good, label, detail = outbox_check(db_url, T0 + timedelta(minutes=5))
    assert good and "none" in detail
    good, label, detail = outbox_check(db_url, T0 + timedelta(minutes=11))
    assert (
        not good
        and label == "发件箱 / outbox"
        and detail.startswith("3 条")
        and "aftercare notifier" in detail
    )
    later = T0 + timedelta(minutes=11)
    assert run_notifier(later, worker="notifier@n1").sent == 3
    good, _label, detail = outbox_check(db_url, later + timedelta(minutes=1))
    assert good and detail.endswith("by: notifier@n1 3"), detail
