"""Notifications: write them into the outbox with the event, send them later (DESIGN.md §4).

- `queue(session, ...)` renders `templates/notify/<template>.<lang>.txt.j2` and writes one
  `Notification` row per address of each recipient, in the CALLER's transaction (no commit), so a
  message exists exactly when the event that causes it does. Idempotent: the same `key` for the
  same person and address writes nothing new (INSERT … ON CONFLICT DO NOTHING on the unique
  idempotency key, so two racing transactions cannot both write it either).
- `send_due(now, worker=...)` claims due rows, sends them through Apprise outside any transaction,
  and records each outcome. A failure is retried with exponential back-off; after the last try the
  row is marked failed and an `Incident` is opened on the case, and the dispatchers are told.
- Claiming: one UPDATE of the claim columns whose WHERE re-checks that the row is still free. On
  PostgreSQL the candidate rows are picked `FOR UPDATE SKIP LOCKED`, so racing notifiers take
  different rows without waiting; SQLite has a single writer, so the UPDATE itself is the atomic
  claim (SQLAlchemy leaves FOR UPDATE out there). A claim is a lease: rows of a notifier that died
  are taken over once `claimed_until` passes.
- A batch can outlast its lease (200 rows, each send up to the channel timeout), so just before each
  send the notifier renews the lease of that one row, atomically and only if its claim still holds
  and has not run out (`renew`). A row whose lease ran out is not sent by this notifier: another one
  may have taken it over (or will), and only one of them may send it.
- Who sends: the clock keeper's step (`send_due_step`) under `aftercare up`; in a cluster, an
  `aftercare notifier` process per node (deployments.notifier) while the keepers leave it
  (AFTERCARE_KEEPER_SENDS=false). A sent row keeps its sender's name in `sent_by`.
- Quiet hours: non-urgent messages to someone inside their quiet hours (local time) are held until
  the hours end, when they are queued and again when they fall due. Urgent ones (severity 1–2,
  escalations) always go out.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from time import monotonic
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from models.cases import Case, Incident, append_event
from models.db import session_scope, transaction
from models.outbox import Notification, NotificationStatus, get_notify_settings
from models.parties import Contact, Customer, Role, Staff
from models.settings import get_settings
from tasks.channels import deliver, validate_url
from tasks.links import complaint_url
from tasks.people import staff_with_role
from tasks.render import render

Recipient = Staff | Contact

# The message that tells dispatchers a notification failed; it never reports its own failure,
# so a dispatcher channel that is down cannot start a loop.
FAILED_TEMPLATE = "outbox/notify_failed"


# --- rendering and queueing ----------------------------------------------------------------------


def render_message(template: str, context: dict[str, Any], lang: str = "zh") -> tuple[str, str]:
    """(subject, body) of a notification: the first line of the rendered text is the subject."""
    text = render(f"notify/{template}", lang=lang, fmt="txt", **context).strip("\n")
    subject, _, body = text.partition("\n")
    return subject.strip(), body.strip("\n")


def recipient_kind(person: Recipient) -> str:
    if isinstance(person, Staff):
        return "staff"
    if isinstance(person, Contact):
        return "contact"
    raise TypeError(f"a notification goes to a Staff or a Contact, not {type(person).__name__}")


def idempotency_key(key: str, kind: str, person_id: int, address: str) -> str:
    """One event, one person, one address → one row."""
    return hashlib.sha256(f"{key}\x1f{kind}\x1f{person_id}\x1f{address}".encode()).hexdigest()


def channel_of(address: str) -> str:
    return address.partition("://")[0].lower() if "://" in address else "none"


def queue(
    session: Session,
    *,
    recipients: Sequence[Recipient],
    template: str,
    context: dict[str, Any],
    key: str,
    case_id: int | None,
    now: datetime,
    urgent: bool = False,
    lang: str = "zh",
) -> list[Notification]:
    """Write the outbox rows of one event in the caller's transaction; returns them (new or already there).

    A recipient without any address gets a row that is failed at once, with an incident, so that a
    missing address is seen by a dispatcher instead of the message vanishing.
    """
    values = _values(session, Message(recipients, template, context, key, case_id, now, urgent, lang))
    if not values:
        return []
    session.execute(_insert_ignoring_duplicates(session, values))
    keys = [v["idempotency_key"] for v in values]
    rows = list(
        session.exec(
            select(Notification)
            .where(col(Notification.idempotency_key).in_(keys))
            .order_by(col(Notification.id))
        ).all()
    )
    for row in rows:
        if row.address == "" and row.status == NotificationStatus.PENDING:
            _give_up(session, row, "没有通知地址 / the recipient has no notification address", now)
    return rows


@dataclass(frozen=True)
class Message:
    """One event's message: what `queue` takes, as a value (so `queue_many` can take many)."""

    recipients: Sequence[Recipient]
    template: str
    context: dict[str, Any]
    key: str
    case_id: int | None
    now: datetime
    urgent: bool = False
    lang: str = "zh"


def _values(session: Session, m: Message) -> list[dict[str, Any]]:
    """The outbox rows of one message: one per address of each recipient (rendered once)."""
    subject, body = render_message(m.template, m.context, m.lang)
    values: list[dict[str, Any]] = []
    codes: dict[int, str] = {}
    for person in m.recipients:
        kind = recipient_kind(person)
        text = body
        if isinstance(person, Contact):  # every notice to a customer carries its complaint page [§7]
            text = f"{body}\n{complaint_line(session, person.customer_id, m.now, codes)}"
        if person.id is None:
            session.flush()
        assert person.id is not None
        addresses = [u.strip() for u in (person.notify_urls or []) if u and u.strip()] or [""]
        due = m.now if m.urgent else hold_until(m.now, person) or m.now
        for address in addresses:
            values.append(
                dict(
                    idempotency_key=idempotency_key(m.key, kind, person.id, address),
                    key=m.key[:200],
                    case_id=m.case_id,
                    recipient_kind=kind,
                    recipient_id=person.id,
                    recipient_name=(person.name or "")[:100],
                    channel=channel_of(address),
                    address=address,
                    template=m.template,
                    lang=m.lang,
                    subject=subject[:300],
                    body=text,
                    urgent=m.urgent,
                    status=NotificationStatus.PENDING,
                    attempts=0,
                    next_try_at=due,
                    held_until=due if due != m.now else None,
                    created_at=m.now,
                )
            )
    return values


def complaint_line(session: Session, customer_id: int, now: datetime, codes: dict[int, str]) -> str:
    """The line under a customer's notice: the separate complaint channel (PROCEDURES.md §7)."""
    if customer_id not in codes:
        customer = session.get(Customer, customer_id)
        codes[customer_id] = customer.code if customer is not None else ""
    if not codes[customer_id]:
        return ""
    return f"投诉与建议（直达客服经理，不经报修热线）：{complaint_url(codes[customer_id], now=now)}"


def queue_many(session: Session, messages: Sequence[Message]) -> int:
    """`queue` for many events at once (a month's notices): one INSERT for all rows, in the caller's
    transaction, with the same idempotency and missing-address handling; returns the row count.

    For bulk callers that already loaded their recipients: the statement is executed once with all
    rows (compiled once), instead of one render-insert-select round per event.
    """
    values = [v for m in messages for v in _values(session, m)]
    if not values:
        return 0
    # the table, not the entity: a plain executemany of one compiled statement
    session.execute(_insert_statement(session, Notification.__table__), values)
    empty = [v["idempotency_key"] for v in values if v["address"] == ""]
    if empty:
        for row in session.exec(select(Notification).where(col(Notification.idempotency_key).in_(empty))):
            if row.status == NotificationStatus.PENDING:
                _give_up(
                    session, row, "没有通知地址 / the recipient has no notification address", row.created_at
                )
    return len(values)


def _insert_statement(session: Session, target: Any = Notification) -> Any:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING, for the database in use."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(target).on_conflict_do_nothing(index_elements=["idempotency_key"])


def _insert_ignoring_duplicates(session: Session, values: list[dict[str, Any]]) -> Any:
    return _insert_statement(session).values(values)


# --- quiet hours ---------------------------------------------------------------------------------


def quiet_release(
    at: datetime, start: time | None, end: time | None, tz: str | None = None
) -> datetime | None:
    """When the quiet period that `at` falls in ends (aware UTC), or None if `at` is not quiet.

    `start`/`end` are local times of day (the business time zone, settings.timezone, by default); 22:00–07:30 spans midnight.
    """
    if start is None or end is None or start == end:
        return None
    zone = ZoneInfo(tz or get_settings().timezone)
    local = at.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    today_end = datetime.combine(local.date(), end, tzinfo=zone)
    if start < end:
        quiet = start <= clock < end
        release = today_end
    else:
        quiet = clock >= start or clock < end
        release = (
            today_end if clock < end else datetime.combine(local.date() + timedelta(days=1), end, tzinfo=zone)
        )
    return release.astimezone(at.tzinfo) if quiet else None


def hold_until(at: datetime, person: Recipient | None) -> datetime | None:
    """The moment a non-urgent message to `person` may go out, if quiet hours hold it at `at`."""
    if person is None:
        return None
    return quiet_release(at, person.quiet_start, person.quiet_end)


def backoff(attempts: int) -> timedelta:
    """Wait after the `attempts`-th failure: base, 2×base, 4×base … capped."""
    s = get_notify_settings()
    return timedelta(seconds=min(s.backoff_seconds * 2 ** max(attempts - 1, 0), s.backoff_max_seconds))


# --- sending -------------------------------------------------------------------------------------


@dataclass
class SendReport:
    """What one `send_due` pass did."""

    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    held: int = 0
    lost_claims: int = 0  # rows whose lease ran out while sending (another notifier took them)
    released: int = 0  # claimed rows handed back unsent because the notifier was told to stop
    errors: list[str] = field(default_factory=list)


def claim(now: datetime, *, worker: str, limit: int = 200, url: str | None = None) -> tuple[str, list[int]]:
    """Claim up to `limit` due rows for this notifier; returns (claim token, row ids)."""
    lease = timedelta(seconds=get_notify_settings().lease_seconds)
    token = uuid.uuid4().hex
    free = sa.and_(
        col(Notification.status) == NotificationStatus.PENDING,
        col(Notification.next_try_at) <= now,
        sa.or_(col(Notification.claimed_until).is_(None), col(Notification.claimed_until) <= now),
    )
    candidates = (
        sa.select(col(Notification.id))
        .where(free)
        .order_by(col(Notification.next_try_at), col(Notification.id))
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite: omitted, its single writer serialises
    )
    with session_scope(url) as session:
        if session.get_bind().dialect.name == "postgresql":
            # Lock the candidates first, skipping rows another notifier holds, then mark them.
            # (Not `UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`: PostgreSQL
            # may run that subquery once per row, and then the LIMIT does not bound the claim.)
            picked = list(session.execute(candidates).scalars())
            where: sa.ColumnElement[bool] = col(Notification.id).in_(picked)
        else:
            # SQLite: the UPDATE is the first statement of its transaction, so it takes the write
            # lock before it reads and sees every earlier claim (a SELECT first would read an
            # older snapshot and fail to upgrade); `free` is re-checked on the row itself.
            picked = [0]
            where = sa.and_(col(Notification.id).in_(candidates.scalar_subquery()), free)
        if picked:
            session.execute(
                sa.update(Notification)
                .where(where)
                .values(claimed_by=worker[:100], claim_token=token, claimed_until=now + lease)
                .execution_options(synchronize_session=False)
            )
    with session_scope(url) as session:
        ids = list(session.exec(select(Notification.id).where(Notification.claim_token == token)).all())
    return token, [i for i in ids if i is not None]


def renew(row_id: int | None, token: str, at: datetime, *, url: str | None = None) -> bool:
    """Extend this notifier's claim on one row just before sending it; False if the claim is gone.

    One UPDATE that re-checks the claim token and that the lease has not run out at `at`: if it had,
    another notifier may already have taken the row over (a claim only needs `claimed_until <= now`),
    and sending it here too would send it twice. The new lease covers at least a few send timeouts.
    """
    settings = get_notify_settings()
    hold = timedelta(seconds=max(settings.lease_seconds, 3 * settings.timeout_seconds))
    table = Notification.__table__
    with session_scope(url) as session:
        # RETURNING, not rowcount (see models.db.insert_ignore): the same on SQLite and PostgreSQL.
        renewed = session.execute(
            sa.update(table)
            .where(
                table.c.id == row_id,
                table.c.claim_token == token,
                table.c.status == NotificationStatus.PENDING,
                table.c.claimed_until > at,
            )
            .values(claimed_until=at + hold)
            .returning(table.c.id)
        ).scalar_one_or_none()
    return renewed is not None


def hand_back(row_ids: Sequence[int | None], token: str, *, url: str | None = None) -> int:
    """Hand back this claim's rows that were not sent (the notifier stops): free to claim at once."""
    if not row_ids:
        return 0
    table = Notification.__table__
    with session_scope(url) as session:
        freed = session.execute(
            sa.update(table)
            .where(
                table.c.id.in_(row_ids),
                table.c.claim_token == token,
                table.c.status == NotificationStatus.PENDING,
            )
            .values(claimed_by=None, claim_token=None, claimed_until=None)
            .returning(table.c.id)
        ).all()
    return len(freed)


def send_due(now: datetime, *, worker: str, limit: int = 200, url: str | None = None) -> int:
    """Send the due notifications; returns how many went out."""
    return run_notifier(now, worker=worker, limit=limit, url=url).sent


def run_notifier(
    now: datetime,
    *,
    worker: str,
    limit: int = 200,
    url: str | None = None,
    clock: Callable[[], datetime] | None = None,
    stop: Callable[[], bool] | None = None,
    report: SendReport | None = None,
) -> SendReport:
    """One pass of the notifier, with the full account of what happened.

    `clock` tells the time while the pass runs, to judge the leases before each send; by default it
    is `now` plus the time really elapsed since the pass began (sends are slow; `now` stays fixed).
    `stop` is asked before each row: once it says True, the rows not sent yet are handed back
    (`hand_back`) for any notifier to take at once, instead of waiting for their lease to run out.
    `report`, when given, is filled as the pass goes: a caller still has the account of the rows
    already sent when the pass ends with an error (the database went away mid-pass).
    """
    report = SendReport() if report is None else report
    token, ids = claim(now, worker=worker, limit=limit, url=url)
    report.claimed = len(ids)
    if not ids:
        return report
    started = monotonic()
    current = clock or (lambda: now + timedelta(seconds=monotonic() - started))
    with session_scope(url) as session:
        rows = list(
            session.exec(
                select(Notification).where(col(Notification.id).in_(ids)).order_by(col(Notification.id))
            ).all()
        )
        people = _recipients(session, rows)
    for done, row in enumerate(rows):
        if stop is not None and stop():
            report.released = hand_back([r.id for r in rows[done:]], token, url=url)
            break
        person = people.get((row.recipient_kind, row.recipient_id))
        release = None if row.urgent else hold_until(now, person)
        if release is not None:
            outcome: str | None = "held"
        elif not renew(row.id, token, current(), url=url):
            report.lost_claims += 1  # the lease ran out before its turn: not ours to send any more
            continue
        else:
            outcome = deliver(row.address, title=row.subject, body=row.body)
        # its own unit of work, re-run while the database is busy: a message sent but not recorded
        # would be sent again once its lease ran out
        state = transaction(
            functools.partial(
                _write_outcome,
                row_id=row.id,
                token=token,
                now=now,
                release=release,
                outcome=outcome,
                person=person,
            ),
            url=url,
        )
        if release is not None:
            report.held += state
        elif outcome is None:
            report.sent += state
        else:
            if state == 2:
                report.failed += 1
            elif state == 1:
                report.retrying += 1
            report.errors.append(f"#{row.id} {row.channel}: {outcome}")
        if not state:
            report.lost_claims += 1
    return report


def _write_outcome(
    session: Session,
    *,
    row_id: int | None,
    token: str,
    now: datetime,
    release: datetime | None,
    outcome: str | None,
    person: Recipient | None,
) -> int:
    """Record what became of one send (see `_record`): held for quiet hours, sent, or failed."""
    if release is not None:
        return _record(session, row_id, token, now, held=release)
    if outcome is None:
        return _record(session, row_id, token, now, sent=True)
    return _record(session, row_id, token, now, error=outcome, person=person)


def _recipients(session: Session, rows: Sequence[Notification]) -> dict[tuple[str, int], Recipient]:
    found: dict[tuple[str, int], Recipient] = {}
    staff_ids = {r.recipient_id for r in rows if r.recipient_kind == "staff"}
    contact_ids = {r.recipient_id for r in rows if r.recipient_kind == "contact"}
    if staff_ids:
        for staff in session.exec(select(Staff).where(col(Staff.id).in_(staff_ids))).all():
            found[("staff", staff.id or 0)] = staff
    if contact_ids:
        for contact in session.exec(select(Contact).where(col(Contact.id).in_(contact_ids))).all():
            found[("contact", contact.id or 0)] = contact
    return found


def _record(
    session: Session,
    row_id: int | None,
    token: str,
    now: datetime,
    *,
    sent: bool = False,
    held: datetime | None = None,
    error: str | None = None,
    person: Recipient | None = None,
) -> int:
    """Write one outcome, only while this claim still holds the row. 0: claim lost, 1: recorded,
    2: recorded as finally failed (incident opened)."""
    row = session.exec(
        select(Notification).where(Notification.id == row_id, Notification.claim_token == token)
    ).first()
    if row is None:
        return 0
    sender = row.claimed_by
    row.claimed_by = row.claim_token = None
    row.claimed_until = None
    if sent:
        row.status = NotificationStatus.SENT
        row.sent_at = now
        row.sent_by = sender
        row.attempts += 1
        row.last_error = None
    elif held is not None:
        row.next_try_at = held
        row.held_until = held
    else:
        row.attempts += 1
        row.last_error = (error or "")[:4000]
        if row.attempts >= get_notify_settings().max_attempts:
            session.add(row)
            _give_up(session, row, row.last_error, now)
            return 2
        retry_at = now + backoff(row.attempts)
        row.next_try_at = (None if row.urgent else hold_until(retry_at, person)) or retry_at
    session.add(row)
    return 1


def _give_up(session: Session, row: Notification, reason: str, now: datetime) -> Incident:
    """Mark a row failed for good and open the incident a dispatcher sees; tell the dispatchers."""
    row.status = NotificationStatus.FAILED
    row.last_error = reason
    incident = Incident(
        case_id=row.case_id,
        kind="notification_failed",
        message=(
            f"通知未能送达：{row.recipient_name}（{row.channel}）「{row.subject}」，"
            f"已尝试 {row.attempts} 次。原因：{reason}"
        ),
        data={
            "notification_id": row.id,
            "recipient_kind": row.recipient_kind,
            "recipient_id": row.recipient_id,
            "recipient_name": row.recipient_name,
            "channel": row.channel,
            "subject": row.subject,
            "attempts": row.attempts,
            "last_error": reason,
        },
        opened_at=now,
    )
    session.add(incident)
    session.flush()
    row.incident_id = incident.id
    session.add(row)
    if row.case_id is not None:
        append_event(
            session,
            row.case_id,
            "notification_failed",
            at=now,
            data={
                "notification_id": row.id,
                "recipient": row.recipient_name,
                "channel": row.channel,
                "error": reason,
            },
            key=f"notification-failed:{row.id}",
        )
    if row.template != FAILED_TEMPLATE:
        dispatchers = [
            p
            for p in staff_with_role(session, Role.DISPATCHER)
            if p.id != row.recipient_id or row.recipient_kind != "staff"
        ]
        if dispatchers:
            queue(
                session,
                recipients=dispatchers,
                template=FAILED_TEMPLATE,
                context={
                    "notification": row,
                    "incident": incident,
                    "case_number": _case_number(session, row.case_id),
                },
                key=f"incident:{incident.id}",
                case_id=row.case_id,
                now=now,
                urgent=True,
            )
    return incident


def _case_number(session: Session, case_id: int | None) -> str:
    if case_id is None:
        return ""

    case = session.get(Case, case_id)
    return case.number if case is not None else ""


# --- the clock keeper's step ---------------------------------------------------------------------


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def node_name() -> str:
    """This node's name: AFTERCARE_NODE (the cluster names its pieces so), else the host name."""
    return os.environ.get("AFTERCARE_NODE", "").strip() or socket.gethostname()


def send_due_step(now: datetime) -> int:
    """Keeper step: send what is due (listed in flows.clock_keeper.KEEPER_STEPS) — unless the
    notifiers send (AFTERCARE_KEEPER_SENDS=false, `aftercare cluster up`: deployments.notifier)."""
    if not get_settings().keeper_sends:
        return 0
    return send_due(now, worker=f"keeper@{worker_name()}")


# --- what a dispatcher does about a failed notification ----------------------------------------


class OutboxError(ValueError):
    """A dispatcher's action on the outbox that cannot be done; the message says why."""


def retry_failed(
    session: Session, notification_id: int, *, now: datetime, by: str, address: str | None = None
) -> Notification:
    """Send a failed notification again (optionally to a corrected address) and close its incident."""
    row = session.get(Notification, notification_id)
    if row is None:
        raise OutboxError(f"没有这条通知 / no notification #{notification_id}")
    if row.status != NotificationStatus.FAILED:
        raise OutboxError(
            f"通知 #{notification_id} 状态为 {row.status}，无需重发 / not failed, nothing to retry"
        )
    if address is not None:
        row.address = validate_url(address)
        row.channel = channel_of(row.address)
    if not row.address:
        raise OutboxError(
            f"通知 #{notification_id} 没有通知地址：请先为收件人填写地址 / no address to send to"
        )
    row.status = NotificationStatus.PENDING
    row.attempts = 0
    row.next_try_at = now
    row.last_error = None
    session.add(row)
    if row.incident_id is not None:
        resolve_incident(session, row.incident_id, now=now, by=by)
    return row


def resolve_incident(session: Session, incident_id: int, *, now: datetime, by: str) -> Incident:
    """Mark an incident as handled (idempotent: the first resolution stands)."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise OutboxError(f"没有这个事件 / no incident #{incident_id}")
    if incident.resolved_at is None:
        incident.resolved_at = now
        incident.resolved_by = by[:100]
        session.add(incident)
    return incident


def open_incidents(session: Session, *, limit: int = 500) -> list[Incident]:
    """Incidents nobody has resolved yet, newest first (the dispatcher's list)."""
    query = (
        select(Incident)
        .where(col(Incident.resolved_at).is_(None))
        .order_by(col(Incident.opened_at).desc(), col(Incident.id).desc())
    )
    return list(session.exec(query.limit(limit)).all())


def outbox_counts(session: Session) -> dict[str, int]:
    """Rows per status, for `aftercare outbox` and the incidents page."""
    counts = session.exec(select(Notification.status, sa.func.count()).group_by(Notification.status)).all()
    return {str(status): int(n) for status, n in counts}
