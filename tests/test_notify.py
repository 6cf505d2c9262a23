"""The outbox: rows written with their event, sent through real Apprise, retried, escalated to an
incident, held by quiet hours, claimed once by racing notifiers. Time passes by passing `now`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, time, timedelta

import pytest
from sqlmodel import Session, select

from models.cases import Case, Event, Incident
from models.outbox import Notification, NotificationStatus
from models.parties import Contact, Customer, Role, Staff
from tasks.notify import SendReport, claim, queue, quiet_release, run_notifier, send_due
from tests.conftest import T0
from tests.fixtures.notify import at_time

WORKER = "test-notifier"


def make_people(session: Session) -> dict[str, object]:
    """A customer contact with quiet hours, a dispatcher, an engineer, and an open repair case."""
    customer = Customer(code="KH01", name="测试客户", created_at=T0)
    session.add(customer)
    session.flush()
    contact = Contact(
        customer_id=customer.id,
        name="张经理",
        notify_urls=["record://contact/zhang"],
        quiet_start=time(22, 0),
        quiet_end=time(7, 30),
    )
    dispatcher = Staff(name="王值班", roles=[Role.DISPATCHER], notify_urls=["record://staff/wang"])
    engineer = Staff(name="刘工程师", roles=[Role.ENGINEER], notify_urls=["record://staff/liu"])
    session.add_all([contact, dispatcher, engineer])
    session.flush()
    case = Case(
        kind="repair",
        customer_id=customer.id,
        severity=3,
        title="存储告警",
        reported_at=T0,
        created_at=T0,
        updated_at=T0,
    )
    session.add(case)
    session.commit()
    return {"contact": contact, "dispatcher": dispatcher, "engineer": engineer, "case": case}


def notice(
    session: Session, people: dict, who: str, *, key: str, now: datetime, urgent: bool = False
) -> list[Notification]:
    return queue(
        session,
        recipients=[people[who]],
        template="outbox/test",
        context={"now": now},
        key=key,
        case_id=people["case"].id,
        now=now,
        urgent=urgent,
    )


def rows(session: Session) -> list[Notification]:
    session.expire_all()
    return list(session.exec(select(Notification).order_by(Notification.id)).all())


def test_queue_writes_rendered_rows_in_the_callers_transaction(session: Session, notifications) -> None:
    people = make_people(session)
    notice(session, people, "engineer", key="k1", now=T0)
    session.rollback()  # the event that caused it did not happen: neither did the message
    assert rows(session) == []

    written = notice(session, people, "engineer", key="k1", now=T0)
    session.commit()
    [row] = rows(session)
    assert written[0].id == row.id
    assert row.subject == "【测试】aftercare 通知渠道测试"
    assert "2026-11-23 10:00" in row.body and row.body.endswith("自动发送）")
    assert (row.status, row.channel, row.recipient_kind, row.recipient_name) == (
        "pending",
        "record",
        "staff",
        "刘工程师",
    )
    assert row.next_try_at == T0 and row.held_until is None

    assert send_due(T0, worker=WORKER) == 1
    assert notifications.to(people["engineer"]) == [("record://staff/liu", row.subject, row.body)]


def test_an_event_written_twice_sends_one_message(session: Session, notifications) -> None:
    people = make_people(session)
    for _ in range(2):  # e.g. a replayed task
        notice(session, people, "engineer", key="repair:1:accepted", now=T0)
        session.commit()
    notice(session, people, "engineer", key="repair:1:accepted", now=T0 + timedelta(hours=1))
    session.commit()
    assert len(rows(session)) == 1
    assert send_due(T0 + timedelta(hours=2), worker=WORKER) == 1
    assert send_due(T0 + timedelta(hours=3), worker=WORKER) == 0
    assert len(notifications.to("record://staff/liu")) == 1


def test_every_address_of_every_recipient_gets_its_own_row(session: Session, notifications) -> None:
    people = make_people(session)
    people["engineer"].notify_urls = ["record://staff/liu", "record://staff/liu-phone"]
    queue(
        session,
        recipients=[people["engineer"], people["dispatcher"]],
        template="outbox/test",
        context={"now": T0},
        key="k",
        case_id=None,
        now=T0,
    )
    session.commit()
    assert len(rows(session)) == 3
    assert send_due(T0, worker=WORKER) == 3
    assert sorted(s.url for s in notifications) == [
        "record://staff/liu",
        "record://staff/liu-phone",
        "record://staff/wang",
    ]


def test_channel_down_for_three_tries_then_back_is_sent_once_late(session: Session, notifications) -> None:
    people = make_people(session)
    notice(session, people, "engineer", key="k", now=T0)
    session.commit()
    notifications.down("record://staff/liu", times=3)

    # Back-off 60 s, 120 s, 240 s: tries at T0, +1 min, +3 min; the 4th at +7 min goes through.
    tries = [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)]
    for at in tries:
        assert send_due(at, worker=WORKER) == 0
        assert send_due(at + timedelta(seconds=30), worker=WORKER) == 0  # not due yet: nothing tried
    [row] = rows(session)
    assert (row.status, row.attempts, row.next_try_at) == ("pending", 3, T0 + timedelta(minutes=7))
    assert row.last_error == "Failed to send aftercare test recorder notification."

    assert send_due(T0 + timedelta(minutes=7), worker=WORKER) == 1
    [row] = rows(session)
    assert (row.status, row.attempts, row.sent_at, row.last_error) == (
        "sent",
        4,
        T0 + timedelta(minutes=7),
        None,
    )
    assert len(notifications.refused) == 3
    assert len(notifications.to(people["engineer"])) == 1
    assert session.exec(select(Incident)).all() == []


def test_channel_down_for_good_opens_an_incident_on_the_case(session: Session, notifications) -> None:
    people = make_people(session)
    notice(session, people, "engineer", key="k", now=T0)
    session.commit()
    notifications.down("record://staff/liu")

    now = T0
    for _ in range(6):  # AFTERCARE_NOTIFY_MAX_ATTEMPTS defaults to 6
        report = run_notifier(now, worker=WORKER)
        assert report.sent == 0 and report.claimed >= 1
        [row] = [r for r in rows(session) if r.recipient_name == "刘工程师"]
        now = row.next_try_at
    assert (row.status, row.attempts) == (NotificationStatus.FAILED, 6)
    incident = session.get(Incident, row.incident_id)
    assert incident is not None and incident.case_id == people["case"].id and incident.resolved_at is None
    assert incident.kind == "notification_failed" and "刘工程师" in incident.message
    assert incident.data["notification_id"] == row.id
    assert [e.kind for e in session.exec(select(Event).where(Event.case_id == people["case"].id))] == [
        "notification_failed"
    ]

    # The dispatcher hears of it at once (urgent), and nothing is tried again.
    assert send_due(now, worker=WORKER) == 1
    [alert] = notifications.to(people["dispatcher"])
    assert alert.title.startswith("【通知失败】") and "刘工程师" in alert.body
    assert send_due(now + timedelta(days=1), worker=WORKER) == 0
    assert len(notifications.refused) == 6


def test_recipient_without_address_is_an_incident_not_a_silent_drop(session: Session, notifications) -> None:
    people = make_people(session)
    people["engineer"].notify_urls = []
    notice(session, people, "engineer", key="k", now=T0)
    session.commit()
    failed = [r for r in rows(session) if r.recipient_name == "刘工程师"]
    assert [(r.status, r.channel) for r in failed] == [("failed", "none")]
    assert session.get(Incident, failed[0].incident_id) is not None
    assert send_due(T0, worker=WORKER) == 1  # the dispatcher's alert
    assert notifications.to(people["dispatcher"])[0].title.startswith("【通知失败】")


# --- quiet hours -----------------------------------------------------------------------------------


def test_quiet_release_spans_midnight_and_same_day_windows() -> None:
    night = (time(22, 0), time(7, 30))
    assert quiet_release(at_time(21, 59), *night) is None
    assert quiet_release(at_time(23, 0), *night) == at_time(7, 30, day_offset=1)
    assert quiet_release(at_time(6, 0), *night) == at_time(7, 30)
    assert quiet_release(at_time(7, 30), *night) is None
    lunch = (time(12, 0), time(13, 30))
    assert quiet_release(at_time(12, 15), *lunch) == at_time(13, 30)
    assert quiet_release(at_time(14, 0), *lunch) is None
    assert quiet_release(at_time(23, 0), None, None) is None


def test_quiet_hours_hold_routine_messages_until_morning_but_not_urgent_ones(
    session: Session, notifications
) -> None:
    people = make_people(session)
    late = at_time(23, 0)
    notice(session, people, "contact", key="routine", now=late)
    notice(session, people, "contact", key="severity-1", now=late, urgent=True)
    session.commit()
    routine = next(r for r in rows(session) if r.key == "routine")
    assert routine.next_try_at == routine.held_until == at_time(7, 30, day_offset=1)

    assert send_due(late, worker=WORKER) == 1
    assert send_due(at_time(3, 0, day_offset=1), worker=WORKER) == 0
    assert send_due(at_time(7, 30, day_offset=1), worker=WORKER) == 1
    assert [s.title for s in notifications.to(people["contact"])] == ["【测试】aftercare 通知渠道测试"] * 2
    assert {r.key: r.sent_at for r in rows(session)} == {
        "routine": at_time(7, 30, day_offset=1),
        "severity-1": late,
    }


def test_a_due_routine_message_found_inside_quiet_hours_waits_without_using_a_try(
    session: Session, notifications
) -> None:
    people = make_people(session)
    notice(session, people, "contact", key="k", now=at_time(21, 0))
    session.commit()
    # The notifier was down from 21:00 until 23:00: the message is due, but the contact sleeps.
    report = run_notifier(at_time(23, 0), worker=WORKER)
    assert (report.held, report.sent) == (1, 0)
    [row] = rows(session)
    assert (row.attempts, row.next_try_at) == (0, at_time(7, 30, day_offset=1))
    assert notifications == []


def test_a_retry_that_would_land_in_quiet_hours_waits_for_morning(session: Session, notifications) -> None:
    people = make_people(session)
    notice(session, people, "contact", key="k", now=at_time(21, 59, day_offset=0))
    session.commit()
    notifications.down("record://contact/zhang", times=1)
    assert send_due(at_time(21, 59), worker=WORKER) == 0
    [row] = rows(session)
    assert row.next_try_at == at_time(7, 30, day_offset=1)  # not 22:00


# --- racing notifiers ------------------------------------------------------------------------------


def test_a_claimed_row_is_not_taken_by_another_notifier_until_its_lease_runs_out(
    session: Session, notifications
) -> None:
    people = make_people(session)
    notice(session, people, "engineer", key="k", now=T0)
    session.commit()
    notice(session, people, "dispatcher", key="k", now=T0)
    session.commit()
    token_a, ids_a = claim(T0, worker="A", limit=1)  # A claimed one row, then (say) died before sending
    assert len(ids_a) == 1
    assert len(claim(T0, worker="C", limit=1)[1]) == 1  # the other row, for C (which we leave alone)
    assert claim(T0, worker="B")[1] == []
    assert send_due(T0 + timedelta(minutes=4), worker="B") == 0  # lease of 5 minutes still running
    assert send_due(T0 + timedelta(minutes=5), worker="B") == 2  # both leases ran out: taken over
    assert len(notifications) == 2
    assert [(r.status, r.claim_token) for r in rows(session)] == [("sent", None), ("sent", None)]


def test_two_notifiers_racing_send_each_row_once(session: Session, notifications) -> None:
    people = make_people(session)
    for i in range(60):
        queue(
            session,
            recipients=[people["engineer"], people["dispatcher"]],
            template="outbox/test",
            context={"now": T0},
            key=f"race-{i}",
            case_id=people["case"].id,
            now=T0,
        )
    session.commit()
    start = threading.Barrier(2)
    claimed: dict[str, int] = {}
    batches: list[int] = []
    failures: list[BaseException] = []

    def notifier(name: str) -> None:
        try:
            start.wait()
            total = 0
            while (report := run_notifier(T0, worker=name, limit=7)).claimed:
                batches.append(report.claimed)
                total += report.claimed
            claimed[name] = total
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    threads = [threading.Thread(target=notifier, args=(n,)) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    print("claimed per notifier:", claimed)
    assert claimed["A"] + claimed["B"] == 120
    assert max(batches) <= 7  # a claim never takes more than its limit
    assert len(notifications) == 120
    by_row = [r for r in rows(session) if r.status == "sent" and r.attempts == 1]
    assert len(by_row) == 120
    assert (
        len(notifications.to(people["engineer"])) == 60 and len(notifications.to(people["dispatcher"])) == 60
    )


class SlowChannel:
    """`slow://…`: a channel that answers slowly. Each send of the notifier under test moves its fake
    clock on by `seconds`; `during(n, rival)` runs `rival` while the n-th such send is under way (its
    own sends are recorded but take no time)."""

    def __init__(self, start: datetime, seconds: float) -> None:
        self.now = start
        self.seconds = seconds
        self.sent: list[str] = []
        self._rivals: dict[int, Callable[[], object]] = {}
        self._in_rival = False
        self._mine = 0

    def clock(self) -> datetime:
        return self.now

    def during(self, n: int, rival: Callable[[], object]) -> None:
        self._rivals[n] = rival

    def send(self, url: str) -> bool:
        self.sent.append(url)
        if not self._in_rival:
            self._mine += 1
            self.now += timedelta(seconds=self.seconds)
            if rival := self._rivals.pop(self._mine, None):
                self._in_rival = True
                try:
                    rival()
                finally:
                    self._in_rival = False
        return True


@pytest.fixture
def slow_channel() -> Iterator[SlowChannel]:
    from apprise.decorators import notify
    from apprise.manager_plugins import NotificationManager

    channel = SlowChannel(T0, seconds=200)

    def _send(body: str, title: str, notify_type: str, meta: dict, *args: object, **kwargs: object) -> bool:
        return channel.send(meta.get("url", ""))

    notify(on="slow", name="aftercare slow test channel")(_send)
    try:
        yield channel
    finally:
        NotificationManager().remove("slow")


def slow_rows(session: Session, n: int = 3) -> None:
    people = [Staff(name=f"慢{i}", notify_urls=[f"slow://staff/{i}"]) for i in range(n)]
    session.add_all(people)
    session.commit()
    queue(
        session,
        recipients=people,
        template="outbox/test",
        context={"now": T0},
        key="slow",
        case_id=None,
        now=T0,
        urgent=True,
    )
    session.commit()


def test_a_batch_outlasting_its_lease_leaves_rows_a_rival_took_over_to_the_rival(
    session: Session, slow_channel: SlowChannel
) -> None:
    # A claims 3 rows at T0 (lease 300 s); each of its sends takes 200 s. While its 2nd send is under
    # way (T0+400), B claims what is free then: row 3, whose lease ran out at T0+300, and sends it.
    slow_rows(session)
    rival: list[SendReport] = []
    slow_channel.during(2, lambda: rival.append(run_notifier(slow_channel.now, worker="B")))
    first = run_notifier(T0, worker="A", clock=slow_channel.clock)
    assert sorted(slow_channel.sent) == ["slow://staff/0", "slow://staff/1", "slow://staff/2"]  # once each
    [second] = rival
    assert (second.claimed, second.sent) == (1, 1)
    assert (first.claimed, first.sent, first.lost_claims) == (3, 2, 1)
    assert [(r.status, r.attempts, r.claim_token) for r in rows(session)] == [("sent", 1, None)] * 3


def test_a_row_whose_lease_ran_out_before_its_turn_is_left_for_the_next_pass(
    session: Session, slow_channel: SlowChannel
) -> None:
    slow_channel.seconds = 400  # the first send alone outlasts the 300 s lease
    slow_rows(session)
    first = run_notifier(T0, worker="A", clock=slow_channel.clock)
    assert (first.sent, first.lost_claims) == (1, 2)
    assert slow_channel.sent == ["slow://staff/0"]
    later = run_notifier(slow_channel.now, worker="C")
    assert (later.claimed, later.sent) == (2, 2)
    assert sorted(slow_channel.sent) == ["slow://staff/0", "slow://staff/1", "slow://staff/2"]


@pytest.fixture(autouse=True)
def _fast_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented defaults, whatever the developer's .env says."""
    from models.outbox import get_notify_settings

    for name in ("MAX_ATTEMPTS", "BACKOFF_SECONDS", "BACKOFF_MAX_SECONDS", "LEASE_SECONDS"):
        monkeypatch.delenv(f"AFTERCARE_NOTIFY_{name}", raising=False)
    get_notify_settings.cache_clear()
