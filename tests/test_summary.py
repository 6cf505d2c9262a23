"""Month end (PROCEDURES.md §4 steps 7–8): unreturned inspection reports, the monthly service
summary with its figures, the quarterly analysis, the customer's rating."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlmodel import Session, select

from tests.conftest import T0

CST = timedelta(hours=8)


def _at(y: int, m: int, d: int, hh: int = 10, mm: int = 0) -> datetime:
    """A local (Asia/Shanghai) time as aware UTC."""
    return datetime(y, m, d, hh, mm, tzinfo=UTC) - CST


def _case(session: Session, customer_id: int, contract_id: int, kind: str, reported: datetime, **kw):
    from models import Case

    data = kw.pop("data", {})
    case = Case(kind=kind, customer_id=customer_id, contract_id=contract_id, reported_at=reported, created_at=reported,
                updated_at=reported, data=data, **kw)
    session.add(case)
    session.flush()
    return case


def _clock(session: Session, case_id: int, kind: str, started: datetime, minutes: float, *, breached: bool = False):
    from models.clocks import Clock

    stop = started + timedelta(minutes=minutes)
    session.add(Clock(case_id=case_id, kind=kind, severity=3, status="stopped", started_at=started,
                      due_at=started + timedelta(minutes=60), met_at=None if breached else stop,
                      breached_at=started + timedelta(minutes=60) if breached else None, stopped_at=stop))


@pytest.fixture
def march(demo: str, session: Session) -> dict:
    """March 2026 at 北京某银行数据中心: three repairs, an accident, an inspection with two problems."""
    from models import Contract, Customer, Device, Event, SparePart, Stock, StockMove
    from models.inspection import ChecklistResult

    customer = session.exec(select(Customer).where(Customer.code == "BJYH")).one()
    contract = session.exec(select(Contract).where(Contract.customer_id == customer.id)).one()
    storage = session.exec(select(Device).where(Device.customer_id == customer.id, Device.device_class == "storage")).first()
    server = session.exec(select(Device).where(Device.customer_id == customer.id, Device.device_class == "server")).first()
    cid, kid = customer.id, contract.id

    _case(session, cid, kid, "repair", _at(2026, 2, 10), severity=3, status="closed", title="二月故障", closed_at=_at(2026, 2, 11))
    r1 = _case(session, cid, kid, "repair", _at(2026, 3, 5), severity=3, status="closed", title="存储硬盘告警",
               device_id=storage.id, closed_at=_at(2026, 3, 6), data={"cause": "硬盘老化"})
    session.add(Event(case_id=r1.id, at=_at(2026, 3, 5, 15), kind="restored", actor="刘工程师"))
    _clock(session, r1.id, "first_contact", _at(2026, 3, 5), 10)
    _clock(session, r1.id, "arrival", _at(2026, 3, 5), 50)
    r2 = _case(session, cid, kid, "repair", _at(2026, 3, 12), severity=2, status="closed", title="服务器电源故障",
               device_id=server.id, closed_at=_at(2026, 3, 13), data={"cause": "电源模块故障"})
    session.add(Event(case_id=r2.id, at=_at(2026, 3, 12, 13), kind="restored", actor="陈工程师"))
    _clock(session, r2.id, "first_contact", _at(2026, 3, 12), 20)
    _clock(session, r2.id, "arrival", _at(2026, 3, 12), 90, breached=True)
    part = session.exec(select(SparePart).where(SparePart.code == "PSU-900W")).one()
    stock = session.exec(select(Stock).where(Stock.part_id == part.id)).one()
    session.add(StockMove(part_id=part.id, stock_id=stock.id, case_id=r2.id, key="issue-1", quantity=-1,
                          reason="电源模块损坏", at=_at(2026, 3, 12, 11)))
    acc = _case(session, cid, kid, "accident", _at(2026, 3, 20), severity=1, status="closed", title="核心存储宕机",
                device_id=storage.id, closed_at=_at(2026, 3, 25),
                data={"cause": "控制器固件缺陷", "analysis": "双控制器同时触发固件缺陷，已升级固件并加入巡检项"})
    session.add(Event(case_id=acc.id, at=_at(2026, 3, 20, 20), kind="service_restored", actor="孙专家"))
    _case(session, cid, kid, "repair", _at(2026, 3, 28), severity=4, status="open", title="网络端口告警")  # open at month end

    insp = _case(session, cid, kid, "inspection", _at(2026, 3, 1, 1), period="2026-03", status="registered",
                 title="巡检 2026-03", data={"visit_day": "2026-03-17", "period_end": "2026-03-31"})
    for n in range(10):
        session.add(ChecklistResult(case_id=insp.id, version=1, target=f"device:{server.id}", device_id=server.id,
                                    device_class="server", item_code=f"i{n}", item_label=f"检查项{n}", result="normal",
                                    recorded_at=_at(2026, 3, 17)))
    session.add(ChecklistResult(case_id=insp.id, version=1, target="site", device_class="common", item_code="room_env",
                                item_label="机房温度、湿度、供电情况", result="abnormal", note="空调滤网堵塞",
                                fixed_on_site=True, recorded_at=_at(2026, 3, 17)))
    session.add(ChecklistResult(case_id=insp.id, version=1, target=f"device:{storage.id}", device_id=storage.id,
                                device_class="storage", item_code="disks", item_label="硬盘状态与重构情况",
                                result="abnormal", note="3号盘预警", severity=3, repair_case_id=r1.id,
                                recorded_at=_at(2026, 3, 17)))
    # an inspection of another customer whose report was never returned
    other = session.exec(select(Customer).where(Customer.code == "SJZY")).one()
    other_contract = session.exec(select(Contract).where(Contract.customer_id == other.id)).one()
    late = _case(session, other.id, other_contract.id, "inspection", _at(2026, 1, 1, 1), period="2026-Q1",
                 status="report_pending", title="巡检 2026-Q1", data={"visit_day": "2026-03-24"})
    session.commit()
    return {"customer_id": cid, "inspection": insp.id, "late": late.id, "r2": r2.id}


def test_summary_for_a_month_with_repairs_an_accident_and_an_inspection(march: dict, session: Session, demo: str):
    from models.inspection import ServiceSummary
    from rules.calendar import DEFAULT_CALENDAR
    from tasks.summary import issue_summary

    row, created = issue_summary(session, march["customer_id"], kind="monthly", period="2026-03", first=date(2026, 3, 1),
                                 last=date(2026, 3, 31), now=_at(2026, 4, 1, 2), calendar=DEFAULT_CALENDAR)
    session.commit()
    assert created
    f = row.figures
    assert f["faults"] == 4  # three repairs and the accident of March (February's is only in the trend)
    assert f["major_faults"] == 2  # the severity-2 repair and the accident
    assert f["by_cause"] == [["硬盘老化", 1], ["电源模块故障", 1], ["控制器固件缺陷", 1], ["原因待查", 1]]
    assert f["mttr_hours"] == 6.0  # (5 + 3 + 10) / 3 restored
    clocks = {c["kind"]: c for c in f["clocks"]}
    assert clocks["first_contact"]["compliance"] == 1.0 and clocks["first_contact"]["mean_minutes"] == 15.0
    assert (clocks["arrival"]["met"], clocks["arrival"]["breached"], clocks["arrival"]["max_minutes"]) == (1, 1, 90.0)
    assert f["sla_compliance"] == 0.75
    assert f["trend"] == [["2025-10", 0], ["2025-11", 0], ["2025-12", 0], ["2026-01", 0], ["2026-02", 1], ["2026-03", 4]]
    assert f["trend_word"] == "上升"
    assert f["inspections"] == 1 and f["parts"] == 1 and f["open_issues"] == 1
    assert {"contract": "HT-2026-BJYH", "period": "2026-03", "state": "已完成", "reason": ""} in f["plan_vs_done"]
    html = row.content_html
    for part in ("服务概况", "重大故障分析", "故障明细及原因", "巡检情况", "备件更换", "维护操作", "计划与完成情况",
                 "未结问题清单", "故障频率与趋势"):
        assert part in html, part
    assert "双控制器同时触发固件缺陷" in html  # the accident's analysis
    assert "900W 电源模块" in html and "电源模块损坏" in html
    assert "空调滤网堵塞" in html and "现场已处理" in html and "已转维修 WX-" in html
    assert "网络端口告警" in html  # the open issue
    assert row.due_by == date(2026, 4, 8)  # Apr 1, 2, 3, 7, 8: Qingming (Apr 4–6) does not count
    assert not row.late
    again, created_again = issue_summary(session, march["customer_id"], kind="monthly", period="2026-03",
                                         first=date(2026, 3, 1), last=date(2026, 3, 31), now=_at(2026, 4, 2, 2),
                                         calendar=DEFAULT_CALENDAR)
    assert not created_again and again.id == row.id
    assert len(session.exec(select(ServiceSummary)).all()) == 1


def test_month_end_lists_unreturned_reports_and_sends_each_customer_its_summary(march: dict, session: Session, demo: str):
    from models.inspection import ServiceSummary
    from models.outbox import Notification
    from tasks.summary import month_end

    now = _at(2026, 4, 1, 2)
    result = month_end(now, url=demo)
    assert result.month == "2026-03"
    # BJYH and SJZY had contracts in March (TYDX's lapsed on March 31, so it had one too)
    assert result.monthly == 3 and result.quarterly == 3  # March closes Q1
    session.expire_all()
    numbers = [n for n in session.exec(select(Notification)).all()]
    unreturned = [n for n in numbers if n.template == "inspection/unreturned_reports"]
    assert {n.recipient_name for n in unreturned} == {"吴总监", "钱监理"}
    assert f"XJ-{march['late']:06d}" in unreturned[0].body and "石家庄某医院信息中心" in unreturned[0].body
    assert f"XJ-{march['inspection']:06d}" not in unreturned[0].body  # registered: returned
    summaries = [n for n in numbers if n.template == "inspection/service_summary"]
    assert len(summaries) == 6 and all("/summary/" in n.body for n in summaries)
    # a second run the next day (or a restart) issues nothing again
    again = month_end(now + timedelta(days=1), url=demo)
    assert (again.monthly, again.quarterly) == (0, 0)
    session.expire_all()
    assert len(session.exec(select(Notification)).all()) == len(numbers)
    assert len(session.exec(select(ServiceSummary)).all()) == 6


def test_a_summary_issued_after_the_fifth_working_day_is_marked_late(march: dict, session: Session, demo: str):
    from rules.calendar import DEFAULT_CALENDAR
    from tasks.summary import issue_summary

    row, _ = issue_summary(session, march["customer_id"], kind="monthly", period="2026-03", first=date(2026, 3, 1),
                           last=date(2026, 3, 31), now=_at(2026, 4, 10, 9), calendar=DEFAULT_CALENDAR, notify=False)
    assert row.late


def test_customer_rating_is_recorded_once_and_checked(march: dict, session: Session, demo: str):
    from rules.calendar import DEFAULT_CALENDAR
    from tasks.summary import RATING_ITEMS, issue_summary, record_rating

    row, _ = issue_summary(session, march["customer_id"], kind="monthly", period="2026-03", first=date(2026, 3, 1),
                           last=date(2026, 3, 31), now=_at(2026, 4, 1, 2), calendar=DEFAULT_CALENDAR, notify=False)
    session.commit()
    with pytest.raises(ValueError, match="请为每一项选择"):
        record_rating(row.id, {"overall": "优"}, by="北京维护负责人", comment="", now=T0, url=demo)
    rating = {k: "优" for k in RATING_ITEMS} | {"uptime": "良"}
    saved = record_rating(row.id, rating, by="北京维护负责人", comment="响应及时", now=T0, url=demo)
    assert saved.rating["uptime"] == "良" and saved.rating["comment"] == "响应及时"
    with pytest.raises(ValueError, match="已由 北京维护负责人"):
        record_rating(row.id, rating, by="别人", comment="", now=T0, url=demo)
