"""Month end (PROCEDURES.md §4 steps 7–8): unreturned inspection reports, the monthly service
summary with its figures, the quarterly analysis, the customer's rating."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

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
    case = Case(
        kind=kind,
        customer_id=customer_id,
        contract_id=contract_id,
        reported_at=reported,
        created_at=reported,
        updated_at=reported,
        data=data,
        **kw,
    )
    session.add(case)
    session.flush()
    return case


def _clock(
    session: Session, case_id: int, kind: str, started: datetime, minutes: float, *, breached: bool = False
):
    from models.clocks import Clock

    stop = started + timedelta(minutes=minutes)
    session.add(
        Clock(
            case_id=case_id,
            kind=kind,
            severity=3,
            status="stopped",
            started_at=started,
            due_at=started + timedelta(minutes=60),
            met_at=None if breached else stop,
            breached_at=started + timedelta(minutes=60) if breached else None,
            stopped_at=stop,
        )
    )


def _issue(case_id: int, kind: str, template: str, context: dict, at: datetime, by: str) -> int:
    """A report issued the way the flows issue it (tasks.reports.issue, with the case's times and clocks)."""
    from tasks.reports import issue, report_context

    return issue.fn(case_id, kind, template, {**report_context.fn(case_id), **context}, at, by)["id"]


def _fault_report(case_id: int, at: datetime, **parts: str) -> int:
    """The lead's 故障处理报告 as flows/repair.py issues it: the FaultReportForm payload and the engineer."""
    form = {
        "customer_engineer": "王工",
        "symptoms": "告警",
        "business_impact": "无",
        "process": "检查并处理",
        "solution": "已处理",
        "advice": "加强巡检",
    } | parts
    return _issue(
        case_id, "fault_report", "repair/fault_report", {**form, "engineer": "刘工程师"}, at, "刘组长"
    )


def _accident_summary(case_id: int, account: str, at: datetime) -> int:
    """The team's 事故总结 as steps.written_account_received stores it (the AccountForm's `account`)."""
    return _issue(
        case_id,
        "accident_summary",
        "accident/summary",
        {"account": account, "engineer": "孙专家", "plan": None},
        at,
        "孙专家",
    )


def _inspection_problem_becomes_repair(
    monkeypatch: pytest.MonkeyPatch, insp_id: int, version: int, problem: dict, at: datetime
) -> tuple[str, int]:
    """What flows/inspection.py does with a problem (start_problem_repair, link_repair) and what the repair
    run then does first (take_request with its own run id): (run id, repair case id)."""
    import tasks.inspection
    from tasks.cases import take_request
    from tasks.inspection import link_repair, start_problem_repair

    started = []

    def fake_start(request, idempotency_key):  # run_deployment without a server: remember the request
        started.append(request)
        return str(uuid.uuid5(uuid.NAMESPACE_URL, idempotency_key))

    monkeypatch.setattr(tasks.inspection, "start_repair_run", SimpleNamespace(fn=fake_start))
    run_id = start_problem_repair.fn(insp_id, version, 1, problem, at)
    link_repair.fn(insp_id, version, problem["target"], problem["code"], run_id)
    return run_id, take_request.fn(started[-1], at, run_id)


def _checklist(session: Session, insp_id: int, server, storage, at: datetime) -> list[dict]:
    """Ten normal server items, a site problem fixed on site and a storage problem (tasks.inspection.store_checklist)."""
    from tasks.inspection import store_checklist

    def item(target, dev, code, label, result="normal", note="", fixed=False, severity=None):
        return {
            "target": target,
            "device_id": dev.id if dev else None,
            "device_class": dev.device_class if dev else "common",
            "code": code,
            "label": label,
            "result": result,
            "note": note,
            "fixed_on_site": fixed,
            "severity": severity,
            "target_label": f"{dev.model}（{dev.serial}）" if dev else "机房与管理",
            "serial": dev.serial if dev else None,
            "site": None,
        }

    items = [item(f"device:{server.id}", server, f"i{n}", f"检查项{n}") for n in range(10)]
    items.append(
        item("site", None, "room_env", "机房温度、湿度、供电情况", "abnormal", "空调滤网堵塞", fixed=True)
    )
    items.append(
        item(
            f"device:{storage.id}",
            storage,
            "disks",
            "硬盘状态与重构情况",
            "abnormal",
            "3号盘预警",
            severity=3,
        )
    )
    clean = {"prechecks": {"changes": "", "customer_reported": "", "backup_confirmed": True}, "items": items}
    problems = store_checklist(session, insp_id, 1, clean, at=at, by="刘工程师")
    session.commit()
    return problems


@pytest.fixture
def march(demo: str, session: Session, monkeypatch: pytest.MonkeyPatch) -> dict:
    """March 2026 at 北京某银行数据中心: three repairs (one found by the inspection), an accident, an
    inspection with two problems. Causes and analyses come from the reports the flows issue."""
    from models import Case, Contract, Customer, Device, Event, SparePart, Stock, StockMove
    from tasks.accident import record_review

    customer = session.exec(select(Customer).where(Customer.code == "BJYH")).one()
    contract = session.exec(select(Contract).where(Contract.customer_id == customer.id)).one()
    storage = session.exec(
        select(Device).where(Device.customer_id == customer.id, Device.device_class == "storage")
    ).first()
    server = session.exec(
        select(Device).where(Device.customer_id == customer.id, Device.device_class == "server")
    ).first()
    cid, kid = customer.id, contract.id

    _case(
        session,
        cid,
        kid,
        "repair",
        _at(2026, 2, 10),
        severity=3,
        status="closed",
        title="二月故障",
        closed_at=_at(2026, 2, 11),
    )
    insp = _case(
        session,
        cid,
        kid,
        "inspection",
        _at(2026, 3, 1, 1),
        period="2026-03",
        status="registered",
        title="巡检 2026-03",
        data={"visit_day": "2026-03-05", "period_end": "2026-03-31"},
    )
    session.commit()
    # the inspection on March 5: the disk warning becomes repair r1 (its own run opens the case)
    (problem,) = _checklist(session, insp.id, server, storage, _at(2026, 3, 5))
    run_id, r1_id = _inspection_problem_becomes_repair(monkeypatch, insp.id, 1, problem, _at(2026, 3, 5))
    r1 = session.get(Case, r1_id)
    r1.status, r1.closed_at = "closed", _at(2026, 3, 6)
    session.add(Event(case_id=r1.id, at=_at(2026, 3, 5, 15), kind="restored", actor="刘工程师"))
    _clock(session, r1.id, "first_contact", _at(2026, 3, 5), 10)
    _clock(session, r1.id, "arrival", _at(2026, 3, 5), 50)
    r2 = _case(
        session,
        cid,
        kid,
        "repair",
        _at(2026, 3, 12),
        severity=2,
        status="closed",
        title="服务器电源故障",
        device_id=server.id,
        closed_at=_at(2026, 3, 13),
    )
    session.add(Event(case_id=r2.id, at=_at(2026, 3, 12, 13), kind="restored", actor="陈工程师"))
    _clock(session, r2.id, "first_contact", _at(2026, 3, 12), 20)
    _clock(session, r2.id, "arrival", _at(2026, 3, 12), 90, breached=True)
    part = session.exec(select(SparePart).where(SparePart.code == "PSU-900W")).one()
    stock = session.exec(select(Stock).where(Stock.part_id == part.id)).one()
    session.add(
        StockMove(
            part_id=part.id,
            stock_id=stock.id,
            case_id=r2.id,
            key="issue-1",
            quantity=-1,
            reason="电源模块损坏",
            at=_at(2026, 3, 12, 11),
        )
    )
    acc = _case(
        session,
        cid,
        kid,
        "accident",
        _at(2026, 3, 20),
        severity=1,
        status="closed",
        title="核心存储宕机",
        device_id=storage.id,
        closed_at=_at(2026, 3, 25),
    )
    session.add(Event(case_id=acc.id, at=_at(2026, 3, 20, 20), kind="service_restored", actor="孙专家"))
    _case(
        session, cid, kid, "repair", _at(2026, 3, 28), severity=4, status="open", title="网络端口告警"
    )  # open at month end
    # an inspection of another customer whose report was never returned
    other = session.exec(select(Customer).where(Customer.code == "SJZY")).one()
    other_contract = session.exec(select(Contract).where(Contract.customer_id == other.id)).one()
    late = _case(
        session,
        other.id,
        other_contract.id,
        "inspection",
        _at(2026, 1, 1, 1),
        period="2026-Q1",
        status="report_pending",
        title="巡检 2026-Q1",
        data={"visit_day": "2026-03-24"},
    )
    session.commit()

    # the documents the flows issue: fault reports of the repairs, the accident's summary and review
    _fault_report(r1.id, _at(2026, 3, 6), cause="硬盘老化", solution="更换3号盘")
    _fault_report(
        r2.id,
        _at(2026, 3, 13),
        cause="电源模块故障",
        solution="更换 900W 电源模块",
        business_impact="一台数据库服务器停机3小时",
        advice="电源模块纳入季度巡检",
    )
    _accident_summary(acc.id, "双控制器同时触发固件缺陷，已升级固件并加入巡检项", _at(2026, 3, 23))
    record_review.fn(
        acc.id,
        1,
        {
            "participants": "吴总监，孙专家",
            "conclusion": "控制器固件缺陷",
            "actions": "全部同型号存储升级固件",
        },
        "吴总监",
        _at(2026, 3, 25),
    )
    session.expire_all()
    return {
        "customer_id": cid,
        "inspection": insp.id,
        "late": late.id,
        "r1": r1.id,
        "r2": r2.id,
        "acc": acc.id,
        "run_id": run_id,
    }


def test_summary_for_a_month_with_repairs_an_accident_and_an_inspection(
    march: dict, session: Session, demo: str
):
    from models.inspection import ServiceSummary
    from rules.calendar import DEFAULT_CALENDAR
    from tasks.summary import issue_summary

    row, created = issue_summary(
        session,
        march["customer_id"],
        kind="monthly",
        period="2026-03",
        first=date(2026, 3, 1),
        last=date(2026, 3, 31),
        now=_at(2026, 4, 1, 2),
        calendar=DEFAULT_CALENDAR,
    )
    session.commit()
    assert created
    f = row.figures
    assert f["faults"] == 4  # three repairs and the accident of March (February's is only in the trend)
    assert f["major_faults"] == 2  # the severity-2 repair and the accident
    assert f["by_cause"] == [["硬盘老化", 1], ["电源模块故障", 1], ["控制器固件缺陷", 1], ["原因待查", 1]]
    assert f["mttr_hours"] == 6.0  # (5 + 3 + 10) / 3 restored
    clocks = {c["kind"]: c for c in f["clocks"]}
    assert clocks["first_contact"]["compliance"] == 1.0 and clocks["first_contact"]["mean_minutes"] == 15.0
    assert (clocks["arrival"]["met"], clocks["arrival"]["breached"], clocks["arrival"]["max_minutes"]) == (
        1,
        1,
        90.0,
    )
    assert f["sla_compliance"] == 0.75
    assert f["trend"] == [
        ["2025-10", 0],
        ["2025-11", 0],
        ["2025-12", 0],
        ["2026-01", 0],
        ["2026-02", 1],
        ["2026-03", 4],
    ]
    assert f["trend_word"] == "上升"
    assert f["inspections"] == 1 and f["parts"] == 1 and f["open_issues"] == 1
    assert {"contract": "HT-2026-BJYH", "period": "2026-03", "state": "已完成", "reason": ""} in f[
        "plan_vs_done"
    ]
    html = row.content_html
    for part in (
        "服务概况",
        "重大故障分析",
        "故障明细及原因",
        "巡检情况",
        "备件更换",
        "维护操作",
        "计划与完成情况",
        "未结问题清单",
        "故障频率与趋势",
    ):
        assert part in html, part
    assert "双控制器同时触发固件缺陷" in html  # the accident's analysis: the team's accident summary
    assert "全部同型号存储升级固件" in html  # ... and the review meeting's actions
    assert (
        "业务影响：一台数据库服务器停机3小时" in html and "预防建议：电源模块纳入季度巡检" in html
    )  # r2's fault report
    assert "900W 电源模块" in html and "电源模块损坏" in html
    assert "空调滤网堵塞" in html and "现场已处理" in html
    assert f"已转维修 WX-{march['r1']:06d}" in html and "待处理" not in html  # the repair the problem became
    assert "网络端口告警" in html  # the open issue
    assert row.due_by == date(2026, 4, 8)  # Apr 1, 2, 3, 7, 8: Qingming (Apr 4–6) does not count
    assert not row.late
    again, created_again = issue_summary(
        session,
        march["customer_id"],
        kind="monthly",
        period="2026-03",
        first=date(2026, 3, 1),
        last=date(2026, 3, 31),
        now=_at(2026, 4, 2, 2),
        calendar=DEFAULT_CALENDAR,
    )
    assert not created_again and again.id == row.id
    assert len(session.exec(select(ServiceSummary)).all()) == 1


def test_month_end_lists_unreturned_reports_and_sends_each_customer_its_summary(
    march: dict, session: Session, demo: str
):
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


def test_a_summary_issued_after_the_fifth_working_day_is_marked_late(
    march: dict, session: Session, demo: str
):
    from rules.calendar import DEFAULT_CALENDAR
    from tasks.summary import issue_summary

    row, _ = issue_summary(
        session,
        march["customer_id"],
        kind="monthly",
        period="2026-03",
        first=date(2026, 3, 1),
        last=date(2026, 3, 31),
        now=_at(2026, 4, 10, 9),
        calendar=DEFAULT_CALENDAR,
        notify=False,
    )
    assert row.late


def test_customer_rating_is_recorded_once_and_checked(march: dict, session: Session, demo: str):
    from rules.calendar import DEFAULT_CALENDAR
    from tasks.summary import RATING_ITEMS, issue_summary, record_rating

    row, _ = issue_summary(
        session,
        march["customer_id"],
        kind="monthly",
        period="2026-03",
        first=date(2026, 3, 1),
        last=date(2026, 3, 31),
        now=_at(2026, 4, 1, 2),
        calendar=DEFAULT_CALENDAR,
        notify=False,
    )
    session.commit()
    with pytest.raises(ValueError, match="请为每一项选择"):
        record_rating(row.id, {"overall": "优"}, by="北京维护负责人", comment="", now=T0, url=demo)
    rating = {k: "优" for k in RATING_ITEMS} | {"uptime": "良"}
    saved = record_rating(row.id, rating, by="北京维护负责人", comment="响应及时", now=T0, url=demo)
    assert saved.rating["uptime"] == "良" and saved.rating["comment"] == "响应及时"
    with pytest.raises(ValueError, match="已由 北京维护负责人"):
        record_rating(row.id, rating, by="别人", comment="", now=T0, url=demo)


# ---- plan vs done: the reason of a moved or cancelled inspection ------------------------------------


def _april_inspection(session: Session, db_url: str) -> int:
    """BJYH's April 2026 inspection, planned by the daily tick of April 1."""
    from models import Case, Contract, Customer
    from tasks.inspection import plan_inspections

    plan_inspections(_at(2026, 4, 1, 1, 15), url=db_url)
    customer = session.exec(select(Customer).where(Customer.code == "BJYH")).one()
    contract = session.exec(select(Contract).where(Contract.customer_id == customer.id)).one()
    return session.exec(
        select(Case.id).where(
            Case.kind == "inspection", Case.contract_id == contract.id, Case.period == "2026-04"
        )
    ).one()


def _customer_answers_date_form(
    session: Session, case_id: int, version: int, answer: dict, at: datetime
) -> None:
    """The customer's answer on the date form (steps.customer_form: a form approval the contact decides by link)."""
    from tasks.approvals import ApprovalRequest, Approver, decide, open_approval
    from tasks.cases import customer_contact

    contact = customer_contact(session, case_id)
    row = open_approval(
        session,
        ApprovalRequest(
            case_id=case_id,
            step=f"date-v{version}",
            version=version,
            subject="巡检日期确认",
            content="请确认、改期或取消。",
            kind="form",
            approver_contact_ids=[contact.id],
            approver_role="customer",
            expires_at=at + timedelta(days=7),
            now=at - timedelta(hours=1),
            form_name="inspection-date",
        ),
    )
    session.commit()
    result = decide(
        row.id,
        "submitted",
        by=Approver("contact", contact.id),
        payload=answer,
        channel="link",
        now=at,
        wake=False,
    )
    assert result.outcome == "recorded", result


def _plan_vs_done(session: Session, customer_id: int) -> list[dict]:
    from tasks.summary import gather

    session.expire_all()
    facts = gather(
        session, customer_id, kind="monthly", period="2026-04", first=date(2026, 4, 1), last=date(2026, 4, 30)
    )
    return [p for p in facts.plan_vs_done if p["period"] == "2026-04"]


def test_an_inspection_the_customer_moved_shows_the_reason_in_plan_vs_done(session: Session, demo: str):
    from models import Case, Event
    from tasks.inspection import check_moved_day, fix_visit

    case_id = _april_inspection(session, demo)
    at = _at(2026, 4, 20, 9)
    _customer_answers_date_form(
        session,
        case_id,
        1,
        {"action": "改期", "day": "2026-05-07", "start": "10:00", "reason": "四月底系统割接，机房封闭"},
        at,
    )
    # what agree_date does with the answer: check the moved day, then (confirmed) fix the visit
    moved = check_moved_day.fn(case_id, "2026-05-07", "10:00", at)
    assert moved["problem"] == ""
    check_moved_day.fn(case_id, "2026-05-07", "10:00", at)  # a replayed step records nothing twice
    fix_visit.fn(case_id, "2026-05-07", "10:00", "北京维护负责人", at + timedelta(hours=1))
    session.expire_all()
    case = session.get(Case, case_id)
    assert (
        "四月底系统割接，机房封闭" in case.data["delay_reason"] and "2026-05-07" in case.data["delay_reason"]
    )
    assert len(case.data["moves"]) == 1
    assert (
        len(session.exec(select(Event).where(Event.case_id == case_id, Event.kind == "visit_moved")).all())
        == 1
    )
    (row,) = _plan_vs_done(session, case.customer_id)
    assert row["state"] == "未完成" and "四月底系统割接，机房封闭" in row["reason"]


def test_a_moved_day_that_cannot_be_kept_or_a_new_time_only_is_no_move(session: Session, demo: str):
    from models import Case
    from tasks.inspection import check_moved_day

    case_id = _april_inspection(session, demo)
    at = _at(2026, 4, 1, 9)
    _customer_answers_date_form(
        session, case_id, 1, {"action": "改期", "day": "2026-04-05", "reason": "周末"}, at
    )
    assert check_moved_day.fn(case_id, "2026-04-05", "09:30", at)[
        "problem"
    ]  # a holiday: explained, not moved
    proposed = session.get(Case, case_id).data["proposed_day"]
    assert (
        check_moved_day.fn(case_id, proposed, "14:00", at)["problem"] == ""
    )  # the proposal, at another time
    session.expire_all()
    assert "delay_reason" not in session.get(Case, case_id).data


def test_a_cancelled_inspection_shows_the_reason_in_plan_vs_done(session: Session, demo: str):
    from models import Case
    from tasks.inspection import cancel_inspection

    case_id = _april_inspection(session, demo)
    assert cancel_inspection(
        case_id, "设备下线迁移，本月不巡检", by="北京维护负责人", now=_at(2026, 4, 10), url=demo
    )
    (row,) = _plan_vs_done(session, session.get(Case, case_id).customer_id)
    assert row == {
        "contract": "HT-2026-BJYH",
        "period": "2026-04",
        "state": "已取消",
        "reason": "设备下线迁移，本月不巡检",
    }


# ---- an inspection problem and the repair it became -------------------------------------------------


def test_an_inspection_problem_shows_its_repair_once_the_repair_run_opened_it(march: dict, session: Session):
    from models import Case
    from models.inspection import ChecklistResult
    from tasks.summary import gather

    def handling() -> str:
        session.expire_all()
        facts = gather(
            session,
            march["customer_id"],
            kind="monthly",
            period="2026-03",
            first=date(2026, 3, 1),
            last=date(2026, 3, 31),
        )
        (insp,) = facts.inspections
        return next(p["handling"] for p in insp["problems"] if p["item"] == "硬盘状态与重构情况")

    r1 = session.get(Case, march["r1"])
    row = session.exec(select(ChecklistResult).where(ChecklistResult.item_code == "disks")).one()
    # the repair's intake links the problem to it (and tells the customer its number)
    assert row.repair_case_id == r1.id and row.repair_run_id == march["run_id"] == r1.flow_run_id
    assert r1.parent_id == march["inspection"]
    assert handling() == f"已转维修 {r1.number}"
    row.repair_case_id = None  # a row from before the intake linked it: found by the repair's run id
    session.commit()
    assert handling() == f"已转维修 {r1.number}"
    r1.flow_run_id = None  # e.g. a case opened again by hand: found as the inspection's child naming the item
    session.commit()
    assert handling() == f"已转维修 {r1.number}"
    r1.parent_id = None  # the run started but has not opened its case yet
    session.commit()
    assert handling() == "已转维修（工单建立中）"


def test_a_repair_handed_over_to_the_accident_flow_counts_neither_restored_nor_in_time(
    march: dict, session: Session
):
    """The repair's clocks stop when it is handed over (closed, neither met nor breached): the summary
    takes no restore time from them and leaves them out of SLA compliance."""
    from models import Contract
    from models.cases import CaseStatus
    from models.clocks import Clock
    from tasks.cases import set_status
    from tasks.summary import gather

    def facts() -> tuple[Any, Any]:
        session.expire_all()
        got = gather(
            session,
            march["customer_id"],
            kind="monthly",
            period="2026-03",
            first=date(2026, 3, 1),
            last=date(2026, 3, 31),
        )
        return got.figures, next(f for f in got.faults if f.title == "主板故障")

    contract = session.exec(select(Contract).where(Contract.customer_id == march["customer_id"])).one()
    repair = _case(
        session,
        march["customer_id"],
        contract.id,
        "repair",
        _at(2026, 3, 20),
        severity=2,
        status="open",
        title="主板故障",
    )
    session.add(
        Clock(
            case_id=repair.id,
            kind="restore",
            severity=2,
            status="running",
            started_at=_at(2026, 3, 20),
            due_at=_at(2026, 3, 20, 14),
        )
    )
    session.flush()
    before, _ = facts()
    set_status(session, repair.id, CaseStatus.HANDED_OVER, at=_at(2026, 3, 20, 12))  # inside its 4 hours
    session.flush()
    after, fault = facts()
    clock = session.exec(select(Clock).where(Clock.case_id == repair.id)).one()
    assert clock.status == "stopped" and clock.met_at is None and clock.breached_at is None
    assert fault.restored_at is None
    assert (
        after.sla_compliance == before.sla_compliance
    )  # a clock that closed with its case is not counted as met
