"""The records of PROCEDURES.md §1 round-trip through a real database file."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from models import Case, CaseKind, Contact, Contract, Customer, Event, Site, Staff, Stock, append_event
from models.cases import AppendOnlyError
from models.db import get_engine

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def _customer(session: Session) -> Customer:
    customer = Customer(code="C1", name="测试客户", created_at=T0)
    session.add(customer)
    session.flush()
    return customer


def test_demo_records_round_trip_with_aware_utc_times(demo: str) -> None:
    with Session(get_engine(demo)) as s:
        contract = s.exec(select(Contract).where(Contract.service_hours == "5x8")).one()
        assert contract.created_at == T0 and contract.created_at.tzinfo is not None
        sites = s.exec(select(Site).order_by(Site.distance_km)).all()
        assert [site.distance_km for site in sites] == [5.0, 120.0, 280.0, 480.0]
        director = next(p for p in s.exec(select(Staff)).all() if p.has_role("technical_director"))
        assert director.name == "吴总监" and director.notify_urls
        contact = s.exec(select(Contact).where(Contact.is_primary == True)).first()  # noqa: E712
        assert contact is not None and contact.quiet_start == time(22, 0)
        assert sum(st.quantity for st in s.exec(select(Stock)).all()) == 20


def test_timestamps_are_stored_in_utc_whatever_zone_they_came_in(session: Session) -> None:
    customer = _customer(session)
    shanghai = timezone(timedelta(hours=8))
    case = Case(
        kind=CaseKind.REPAIR,
        customer_id=customer.id,
        reported_at=datetime(2026, 11, 23, 10, 0, tzinfo=shanghai),
        created_at=T0,
        updated_at=T0,
        data={"说明": "中文数据"},
    )
    session.add(case)
    session.commit()
    session.expire_all()
    again = session.get(Case, case.id)
    assert again is not None
    assert again.reported_at == T0 and again.reported_at.utcoffset() == timedelta(0)
    assert again.data == {"说明": "中文数据"}
    assert again.number == f"WX-{case.id:06d}"


def test_naive_datetimes_are_refused(session: Session) -> None:
    session.add(Customer(code="N1", name="naive", created_at=datetime(2026, 1, 1)))
    with pytest.raises(Exception, match="naive datetime"):
        session.commit()


def test_event_log_is_append_only_and_keyed_events_are_written_once(session: Session) -> None:
    customer = _customer(session)
    case = Case(kind=CaseKind.REPAIR, customer_id=customer.id, reported_at=T0, created_at=T0, updated_at=T0)
    session.add(case)
    session.flush()
    first = append_event(session, case.id, "case.opened", at=T0, actor="王值班", key="open")
    again = append_event(
        session, case.id, "case.opened", at=T0 + timedelta(minutes=5), actor="王值班", key="open"
    )
    assert again.id == first.id
    session.commit()
    assert len(session.exec(select(Event).where(Event.case_id == case.id)).all()) == 1

    first.data = {"changed": True}
    with pytest.raises(AppendOnlyError):
        session.flush()
    session.rollback()
    session.delete(session.get(Event, first.id))
    with pytest.raises(AppendOnlyError):
        session.flush()


def test_one_inspection_per_contract_and_period(session: Session) -> None:
    customer = _customer(session)
    contract = Contract(
        code="HT-1",
        customer_id=customer.id,
        start_date=date(2026, 1, 1),
        end_date=date(2026, 12, 31),
        created_at=T0,
    )
    session.add(contract)
    session.flush()

    def inspection(period: str | None) -> Case:
        return Case(
            kind=CaseKind.INSPECTION,
            customer_id=customer.id,
            contract_id=contract.id,
            period=period,
            reported_at=T0,
            created_at=T0,
            updated_at=T0,
        )

    session.add(inspection("2026-11"))
    session.add(inspection("2026-12"))
    session.flush()
    session.add(inspection("2026-11"))
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()


def test_stock_cannot_go_negative(demo: str) -> None:
    with Session(get_engine(demo)) as s:
        stock = s.exec(select(Stock)).first()
        assert stock is not None
        stock.quantity = -1
        s.add(stock)
        with pytest.raises(IntegrityError):
            s.commit()


# --- notification addresses are checked on every write ---------------------------------------------


def test_a_person_with_an_address_apprise_cannot_use_is_refused_on_any_write(session: Session) -> None:
    from tasks.channels import ChannelError

    session.add(Staff(name="李调度", notify_urls=["nosuch://x"]))
    with pytest.raises(ChannelError, match=r"李调度: 通知地址无效 / invalid notification URL"):
        session.commit()
    session.rollback()
    assert session.exec(select(Staff)).all() == []

    good = Staff(name="王值班", notify_urls=[" json://127.0.0.1:8080/hook "])
    session.add(good)
    session.commit()
    session.expire_all()
    assert session.exec(select(Staff.notify_urls)).one() == ["json://127.0.0.1:8080/hook"]

    contact = Contact(
        customer_id=_customer(session).id, name="张经理", notify_urls=["mailto://zhang@example.com"]
    )
    session.add(contact)
    session.commit()
    contact.notify_urls = ["dingtalk://!!bad!!"]  # an edit of a stored person, not only a new one
    with pytest.raises(ChannelError, match="张经理: .*DingTalk"):
        session.flush()
    session.rollback()
    session.expire_all()
    assert session.get(Contact, contact.id).notify_urls == ["mailto://zhang@example.com"]


def test_a_case_moves_only_along_its_allowed_status_transitions() -> None:
    """An inspection goes planned → notified → on site → submitted → rejected → submitted → registered;
    a registered one cannot go back on site, a cancelled one cannot be planned again (clear message)."""
    from models.cases import CaseStatus, IllegalTransition

    case = Case(
        kind="inspection",
        customer_id=1,
        status=CaseStatus.PLANNED,
        reported_at=T0,
        created_at=T0,
        updated_at=T0,
    )
    later = T0 + timedelta(hours=1)
    for status in ("notified", "on_site", "submitted", "rejected", "submitted", "registered", "registered"):
        case.move_to(CaseStatus(status), later)
    assert case.status == CaseStatus.REGISTERED and case.updated_at == later
    with pytest.raises(IllegalTransition, match="案件状态不能从「已登记」变为「现场巡检中」"):
        case.move_to(CaseStatus.ON_SITE, later + timedelta(hours=1))
    assert case.status == CaseStatus.REGISTERED and case.updated_at == later  # nothing changed
    repair = Case(kind="repair", customer_id=1, reported_at=T0, created_at=T0, updated_at=T0)
    assert repair.move_to(CaseStatus.HANDED_OVER, later).ends_case
    with pytest.raises(IllegalTransition, match="handed_over to archived"):
        repair.move_to(CaseStatus.ARCHIVED, later)
