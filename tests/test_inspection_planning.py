"""Inspection planning (PROCEDURES.md §4): every contract, every period, exactly once."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlmodel import Session, select

from rules import inspection as rules
from rules.calendar import DEFAULT_CALENDAR
from tests.conftest import T0


def _contract(session: Session, code: str, start: date, end: date, frequency: str, every: int = 1) -> int:
    from models import Contract, Customer

    customer = Customer(code=code, name=f"{code} 客户", created_at=T0)
    session.add(customer)
    session.flush()
    contract = Contract(
        code=f"HT-{code}",
        customer_id=customer.id,
        start_date=start,
        end_date=end,
        inspection_frequency=frequency,
        inspection_every_months=every,
        created_at=T0,
    )
    session.add(contract)
    session.commit()
    return contract.id  # type: ignore[return-value]


def _inspections(session: Session) -> dict[int, list[str]]:
    from models import Case

    out: dict[int, list[str]] = defaultdict(list)
    session.expire_all()
    for case in session.exec(select(Case).where(Case.kind == "inspection").order_by(Case.id)).all():
        out[case.contract_id].append(case.period)  # type: ignore[index]
    return out


def _tick(day: date) -> datetime:
    """The daily tick at 01:15 Asia/Shanghai (17:15 UTC the day before)."""
    return datetime(day.year, day.month, day.day, 1, 15, tzinfo=UTC) - timedelta(hours=8)


# ---- pure rules -------------------------------------------------------------------------------


def test_monthly_period_is_due_from_its_first_day_until_its_last():
    kw = dict(frequency="monthly", contract_start=date(2026, 1, 1), contract_end=date(2026, 12, 31))
    assert [d.period.label for d in rules.due_periods(today=date(2026, 3, 1), **kw)] == ["2026-03"]
    assert [d.period.label for d in rules.due_periods(today=date(2026, 3, 31), **kw)] == ["2026-03"]
    # with a lead of 10 days, April is due from March 22
    assert [d.period.label for d in rules.due_periods(today=date(2026, 3, 22), lead_days=10, **kw)] == [
        "2026-03",
        "2026-04",
    ]


def test_contract_starting_mid_month_gets_that_month_and_a_lapsed_one_gets_nothing():
    kw = dict(frequency="monthly", contract_start=date(2026, 5, 20), contract_end=date(2026, 6, 15))
    assert rules.due_periods(today=date(2026, 5, 19), **kw) == []
    (due,) = rules.due_periods(today=date(2026, 5, 20), **kw)
    assert (due.period.label, due.window_start, due.window_end) == (
        "2026-05",
        date(2026, 5, 20),
        date(2026, 5, 31),
    )
    (june,) = rules.due_periods(today=date(2026, 6, 2), **kw)
    assert june.window_end == date(2026, 6, 15)
    assert rules.due_periods(today=date(2026, 6, 16), **kw) == []
    assert rules.due_periods(today=date(2026, 7, 1), **kw) == []


def test_quarterly_and_custom_periods():
    q = rules.due_periods(
        today=date(2026, 8, 9),
        frequency="quarterly",
        contract_start=date(2026, 1, 1),
        contract_end=date(2027, 1, 1),
    )
    assert [d.period.label for d in q] == ["2026-Q3"]
    c = rules.due_periods(
        today=date(2026, 6, 9),
        frequency="custom",
        every_months=2,
        contract_start=date(2026, 3, 15),
        contract_end=date(2027, 3, 1),
    )
    assert [(d.period.label, d.period.start, d.period.end) for d in c] == [
        ("2026-05/2M", date(2026, 5, 1), date(2026, 6, 30))
    ]
    with pytest.raises(rules.PlanningError, match="未知的巡检频率"):
        rules.due_periods(
            today=date(2026, 6, 9),
            frequency="weekly",
            contract_start=date(2026, 1, 1),
            contract_end=date(2027, 1, 1),
        )


def test_notice_dates_around_national_day_2026():
    # National Day 2026: Oct 1–7 off, Sat Oct 10 is a make-up working day (调休上班).
    d = rules.visit_dates(DEFAULT_CALENDAR, date(2026, 10, 9))  # Friday after the holiday
    assert d.notice_day == date(2026, 9, 29)  # Oct 8, Sep 30, Sep 29: the holiday week does not count
    assert d.reconfirm_day == date(2026, 10, 7)
    d = rules.visit_dates(DEFAULT_CALENDAR, date(2026, 10, 12))  # Monday: Sat Oct 10 (make-up), 9, 8 count
    assert d.notice_day == date(2026, 10, 8)
    d = rules.visit_dates(DEFAULT_CALENDAR, date(2026, 10, 8))
    assert d.notice_day == date(2026, 9, 28)


def test_notice_dates_around_spring_festival_2026():
    # Spring Festival 2026: Feb 15–23 off, Sat Feb 14 and Sat Feb 28 are make-up working days.
    d = rules.visit_dates(DEFAULT_CALENDAR, date(2026, 2, 24))  # first working day after the holiday
    assert d.notice_day == date(2026, 2, 12)  # Feb 13 and Sat Feb 14 (make-up) are the other two
    assert d.reconfirm_day == date(2026, 2, 22)  # two calendar days, holiday or not
    d = rules.visit_dates(DEFAULT_CALENDAR, date(2026, 3, 2))  # Monday: Feb 26, 27, Sat 28 count
    assert d.notice_day == date(2026, 2, 26)


def test_a_customer_date_inside_the_notice_or_on_a_holiday_is_refused_clearly():
    with pytest.raises(rules.PlanningError, match="不是工作日"):
        rules.check_visit_day(DEFAULT_CALENDAR, date(2026, 10, 5), today=date(2026, 9, 1))
    with pytest.raises(rules.PlanningError, match="太近"):
        rules.check_visit_day(DEFAULT_CALENDAR, date(2026, 10, 9), today=date(2026, 9, 30))
    rules.check_visit_day(DEFAULT_CALENDAR, date(2026, 10, 10), today=date(2026, 9, 25))  # make-up Saturday


def test_proposed_day_leaves_room_for_the_notice_across_the_holiday():
    day = rules.proposed_day(
        DEFAULT_CALENDAR,
        planned_on=date(2026, 10, 1),
        window_start=date(2026, 10, 1),
        window_end=date(2026, 10, 31),
    )
    assert day == date(2026, 10, 13)  # 5 working days after the holiday: Oct 8, 9, 10 (Sat, make-up), 12, 13
    rules.check_visit_day(DEFAULT_CALENDAR, day, today=date(2026, 10, 1))


# ---- the planner against a real database --------------------------------------------------------


def test_a_year_of_ticks_creates_exactly_the_right_inspections(session: Session, db_url: str):
    from tasks.inspection import plan_inspections

    monthly = _contract(session, "M", date(2026, 1, 1), date(2027, 12, 31), "monthly")
    quarterly = _contract(session, "Q", date(2025, 7, 1), date(2027, 6, 30), "quarterly")
    lapsing = _contract(session, "L", date(2025, 1, 1), date(2026, 6, 15), "monthly")
    mid = _contract(session, "S", date(2026, 9, 17), date(2027, 9, 16), "monthly")
    created = 0
    day = date(2026, 1, 1)
    while day <= date(2026, 12, 31):
        created += len(plan_inspections(_tick(day), url=db_url).created)
        day += timedelta(days=1)
    found = _inspections(session)
    assert found[monthly] == [f"2026-{m:02d}" for m in range(1, 13)]
    assert found[quarterly] == ["2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4"]
    assert found[lapsing] == [f"2026-{m:02d}" for m in range(1, 7)]  # lapses June 15: June is its last
    assert found[mid] == ["2026-09", "2026-10", "2026-11", "2026-12"]  # starts Sep 17: gets September
    assert created == 12 + 4 + 6 + 4


def test_duplicate_tick_and_restart_create_nothing_twice(session: Session, db_url: str):
    from models import Case, Event
    from models.db import get_engine
    from tasks.inspection import plan_inspections

    _contract(session, "D", date(2026, 1, 1), date(2026, 12, 31), "monthly")
    now = _tick(date(2026, 10, 1))
    first = plan_inspections(now, url=db_url)
    assert len(first.created) == 1
    assert plan_inspections(now, url=db_url).created == []  # the same tick twice
    assert plan_inspections(now + timedelta(hours=3), url=db_url).created == []  # a re-run later that day
    get_engine(db_url).dispose()  # a restart: new connections, nothing remembered in memory
    again = plan_inspections(now + timedelta(days=1), url=db_url)
    assert again.created == [] and again.already == 1
    session.expire_all()
    cases = session.exec(select(Case).where(Case.kind == "inspection")).all()
    assert len(cases) == 1
    case = cases[0]
    assert case.status == "planned" and case.period == "2026-10"
    assert case.data["proposed_day"] == "2026-10-13"
    events = session.exec(select(Event).where(Event.case_id == case.id)).all()
    assert [e.kind for e in events] == ["inspection_planned"]


def test_two_planners_at_once_create_one_inspection(session: Session, db_url: str):
    from concurrent.futures import ThreadPoolExecutor

    from tasks.inspection import plan_inspections

    _contract(session, "P", date(2026, 1, 1), date(2026, 12, 31), "monthly")
    now = _tick(date(2026, 4, 1))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: plan_inspections(now, url=db_url), range(4)))
    assert sum(len(r.created) for r in results) == 1
    assert _inspections(session) and sum(len(v) for v in _inspections(session).values()) == 1


def test_extra_inspection_on_request(session: Session, db_url: str):
    from tasks.inspection import InspectionError, request_extra_inspection

    _contract(session, "E", date(2026, 1, 1), date(2026, 12, 31), "monthly")
    now = _tick(date(2026, 5, 6))
    case_id, created = request_extra_inspection(
        "HT-E", date(2026, 5, 20), "5月23日核心系统升级前", now=now, url=db_url
    )
    assert created
    assert request_extra_inspection("HT-E", date(2026, 5, 20), "重复点击", now=now, url=db_url) == (
        case_id,
        False,
    )
    with pytest.raises(InspectionError, match="原因"):
        request_extra_inspection("HT-E", date(2026, 5, 21), "  ", now=now, url=db_url)
    with pytest.raises(InspectionError, match="未找到合同"):
        request_extra_inspection("HT-X", date(2026, 5, 21), "升级前", now=now, url=db_url)
    with pytest.raises(InspectionError, match="不在有效期"):
        request_extra_inspection("HT-E", date(2027, 1, 5), "升级前", now=now, url=db_url)
    assert _inspections(session)[1] == ["extra-2026-05-20"]


def test_dispatcher_registers_an_extra_inspection_of_one_site_with_clear_refusals(
    demo: str, session: Session
):
    """The form behind the `extra-inspection` deployment and `aftercare inspection extra`."""
    from models import Case
    from models.db import session_scope
    from tasks.inspection import ExtraInspectionRequest as Request
    from tasks.inspection import InspectionError, checklist_spec, open_extra_inspection

    now = datetime(2026, 11, 23, 2, tzinfo=UTC)  # Monday 10:00 in Beijing
    for request, message in [
        (Request(customer="NOPE", site="亦庄机房", reason="升级前"), "未知客户"),
        (
            Request(customer="BJYH", site="火星机房", reason="升级前"),
            "未知站点“火星机房”；.*亦庄机房、天津灾备机房",
        ),
        (Request(customer="BJYH", reason="升级前"), "请指定站点"),
        (
            Request(customer="BJYH", site="亦庄机房", reason="升级前", day=date(2026, 11, 25)),
            "太近.*最早可安排 2026-11-30",
        ),
        (Request(customer="BJYH", site="亦庄机房", reason="升级前", day=date(2026, 12, 5)), "不是工作日"),
        (Request(customer="TYDX", reason="升级前"), "没有有效的服务合同"),  # its contract lapsed in March
    ]:
        with pytest.raises(InspectionError, match=message):
            open_extra_inspection(request, now=now, url=demo)

    opened = open_extra_inspection(
        Request(
            customer="北京某银行",
            site="亦庄机房",
            reason="12月核心系统升级前",
            requested_by="王主任 13900000000",
        ),
        now=now,
        url=demo,
    )
    assert opened.created and opened.number.startswith("XJ-") and opened.contract == "HT-2026-BJYH"
    assert opened.day == date(2026, 11, 30)  # the earliest day the 3-working-day notice allows
    case = session.get(Case, opened.case_id)
    assert case.period == "extra-2026-11-30" and case.status == "planned" and case.channel == "request"
    assert case.description == "12月核心系统升级前" and case.reported_by == "王主任 13900000000"
    with session_scope(demo) as s:
        spec = checklist_spec(s, opened.case_id)
    # one site only: its own two devices, not the disaster-recovery room's
    assert spec["targets"][0]["site"] == "亦庄机房"
    assert [t["serial"] for t in spec["targets"][1:]] == ["SNBJYH0SE00", "SNBJYH0ST00"]
    again = open_extra_inspection(
        Request(customer="BJYH", site="亦庄机房", reason="重复提交", day=date(2026, 11, 30)),
        now=now,
        url=demo,
    )
    assert (again.case_id, again.created) == (opened.case_id, False)


def test_extra_inspection_is_a_deployment_with_a_chinese_form():
    from deployments.registry import all_deployments

    deployment = next(d for d in all_deployments() if d.name == "extra-inspection")
    assert deployment.flow_name == "extra-inspection"
    schema = deployment._parameter_openapi_schema.model_dump()
    form = schema["definitions"]["ExtraInspectionForm"]  # deployments.run_forms: the dispatcher's form
    assert form["title"] == "加做巡检 / extra inspection" and form["required"] == ["customer", "reason"]
    titles = {k: v["title"] for k, v in form["properties"].items()}
    assert titles == {
        "customer": "客户",
        "site": "机房/站点",
        "reason": "加做原因",
        "day": "建议巡检日期",
        "requested_by": "提出人",
    }
    assert all(v.get("description") for v in form["properties"].values())
