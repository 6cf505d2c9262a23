"""The complaint's two clocks (PROCEDURES.md §7) on both calendars: the first answer within 2 hours
and the close within 15 days, started at intake on the contract's calendar — working time on a
5x8 contract (a Friday-evening complaint is due Monday morning; the National Day holidays do
not count), wall-clock time on 7x24 — and a breach moves the complaint up the customer's manager
ladder, once, the next manager told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from models import Case, Event
from models.outbox import Notification
from tasks.clocks import find_clock, fire_due_clocks
from tasks.complaints import ComplaintRequest, open_complaint

# demo data: BJYH has a 7x24 contract, SJZY a 5x8 one (09:00–18:00, the official calendar)
FRI_17 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)  # Friday 17:00 Beijing
SEP_30_17 = datetime(2026, 9, 30, 9, 0, tzinfo=UTC)  # the evening before the National Day holidays


def take(session: Session, customer: str, at: datetime) -> Case:
    request = ComplaintRequest(customer=customer, complainant="王先生", description="工程师迟到三小时")
    case = open_complaint(session, request, now=at)
    session.commit()
    return case


@pytest.mark.parametrize(
    ("customer", "at", "answer_due", "close_due"),
    [
        # 7x24: two hours and fifteen days of the wall clock
        ("BJYH", FRI_17, FRI_17 + timedelta(hours=2), FRI_17 + timedelta(days=15)),
        # 5x8: one working hour left on Friday, the second on Monday from 09:00 → Monday 10:00
        ("SJZY", FRI_17, datetime(2026, 11, 30, 2, 0, tzinfo=UTC), FRI_17 + timedelta(days=15)),
        # 5x8 before the National Day holidays (1–7 October off): the second hour is on Thursday 8 October
        ("SJZY", SEP_30_17, datetime(2026, 10, 8, 2, 0, tzinfo=UTC), SEP_30_17 + timedelta(days=15)),
    ],
)
def test_both_clocks_start_at_intake_on_the_contracts_calendar(
    demo: str, session: Session, customer: str, at: datetime, answer_due: datetime, close_due: datetime
) -> None:
    case = take(session, customer, at)
    answer = find_clock(session, case.id, "complaint_answer")  # type: ignore[arg-type]
    close = find_clock(session, case.id, "complaint_close")  # type: ignore[arg-type]
    assert answer is not None and close is not None
    assert answer.started_at == at and close.started_at == at
    assert answer.due_at == answer_due
    assert close.due_at == close_due
    assert answer.terms["service_hours"] == ("5x8" if customer == "SJZY" else "7x24")


def test_a_breach_on_5x8_waits_for_working_time_then_climbs_the_ladder_once(
    demo: str, session: Session
) -> None:
    case = take(session, "SJZY", FRI_17)
    assert fire_due_clocks(FRI_17 + timedelta(hours=3)) == 0  # Friday 20:00: no working time has passed
    monday_10 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    assert fire_due_clocks(monday_10 + timedelta(minutes=1)) == 1
    assert fire_due_clocks(monday_10 + timedelta(minutes=2)) == 0  # once
    session.expire_all()
    row = session.get(Case, case.id)
    assert row is not None and row.data["ladder_level"] == 1
    climbed = session.exec(
        select(Event).where(Event.case_id == case.id, Event.kind == "complaint_escalated")
    ).one()
    assert climbed.data == {"level": 1, "manager": "孔经理", "reason": "complaint_answer", "handed_over": 0}
    told = {
        n.recipient_name
        for n in session.exec(
            select(Notification).where(
                Notification.case_id == case.id, Notification.template == "escalation_breach"
            )
        )
    }
    assert told == {"林客服经理", "孔经理"}  # the owner and the next manager up the customer's ladder


def test_the_close_clock_breach_climbs_one_more_level(demo: str, session: Session) -> None:
    case = take(session, "BJYH", FRI_17)
    fire_due_clocks(FRI_17 + timedelta(hours=2, minutes=1))
    fire_due_clocks(FRI_17 + timedelta(days=15, minutes=1))
    session.expire_all()
    row = session.get(Case, case.id)
    assert row is not None and row.data["ladder_level"] == 2
    managers = [
        e.data["manager"]
        for e in session.exec(
            select(Event).where(Event.case_id == case.id, Event.kind == "complaint_escalated")
        )
    ]
    assert managers == ["孔经理", "吴总监"]


def test_the_monthly_summary_lists_the_complaints_with_their_clocks(demo: str, session: Session) -> None:
    from datetime import date

    from tasks.summary import gather, render_summary

    case = take(session, "BJYH", FRI_17)  # 27 November
    fire_due_clocks(FRI_17 + timedelta(hours=3))  # the first answer came too late
    customer_id = case.customer_id
    facts = gather(
        session,
        customer_id,
        kind="monthly",
        period="2026-11",
        first=date(2026, 11, 1),
        last=date(2026, 11, 30),
    )
    (line,) = facts.complaints
    assert (line["number"], line["answered"], line["closed"], line["verdict"]) == (
        case.number,
        "超时",
        "进行中",
        "处理中",
    )
    html = render_summary(facts, issued_at=FRI_17 + timedelta(days=5), due_by=date(2026, 12, 7))
    assert "投诉处理" in html and case.number in html
    december = gather(
        session,
        customer_id,
        kind="monthly",
        period="2026-12",
        first=date(2026, 12, 1),
        last=date(2026, 12, 31),
    )
    assert december.complaints == []
