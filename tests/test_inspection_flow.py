"""The inspection against the real Prefect server: started once per contract × period whatever
happens; plus the steps of one inspection (checklist, problems, cancellation) on a real database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from tests.conftest import T0
from tests.fixtures.fastflow import say


def _new_contract(url: str, code: str, start: date, end: date) -> int:
    from models import Contact, Contract, Customer, Device, Site
    from models.db import session_scope

    with session_scope(url) as s:
        customer = Customer(code=code, name=f"{code} 巡检测试客户", created_at=T0)
        s.add(customer)
        s.flush()
        site = Site(customer_id=customer.id, name="主机房")
        s.add(site)
        s.add(
            Contact(
                customer_id=customer.id, name="测试联系人", is_primary=True, notify_urls=["log://contact/x"]
            )
        )
        contract = Contract(
            code=f"HT-{code}", customer_id=customer.id, start_date=start, end_date=end, created_at=T0
        )
        s.add(contract)
        s.flush()
        for cls, serial in (("server", f"{code}-SRV"), ("storage", f"{code}-STO")):
            s.add(
                Device(
                    customer_id=customer.id,
                    site_id=site.id,
                    contract_id=contract.id,
                    device_class=cls,
                    model=f"{cls} 型号",
                    serial=serial,
                )
            )
        return contract.id  # type: ignore[return-value]


def test_planned_inspection_starts_one_run_despite_duplicate_ticks_and_a_lost_write(harness):
    """The idempotent start against the real server: two ticks, and a restart that lost the run id."""
    import sqlalchemy as sa

    from models import Case
    from models.db import get_engine, session_scope
    from tasks.inspection import plan_inspections, start_inspection_runs

    # a contract of its own in 2028, so the shared database's demo contracts are not due
    contract_id = _new_contract(harness.db_url, "XJIDEM", date(2028, 3, 1), date(2029, 2, 28))
    now = datetime(2028, 3, 1, 17, 15, tzinfo=UTC)
    assert len(plan_inspections(now, url=harness.db_url).created) == 1
    assert plan_inspections(now, url=harness.db_url).created == []  # duplicate tick
    assert start_inspection_runs(now, url=harness.db_url) == 1
    with session_scope(harness.db_url) as s:
        case = s.exec(select(Case).where(Case.contract_id == contract_id)).one()
        first_run = case.flow_run_id
        # a crash after Prefect created the run but before our write: the run id is lost
        s.execute(sa.update(Case.__table__).where(Case.__table__.c.id == case.id).values(flow_run_id=None))
    get_engine(harness.db_url).dispose()  # and the process restarts
    assert start_inspection_runs(now, url=harness.db_url) == 1  # tries again ...
    with session_scope(harness.db_url) as s:
        again = s.exec(select(Case).where(Case.contract_id == contract_id)).one()
    assert again.flow_run_id == first_run  # ... and Prefect hands back the same run (idempotency key)
    assert start_inspection_runs(now, url=harness.db_url) == 0  # nothing pending any more
    run = harness.read(first_run)
    assert run.idempotency_key == f"inspection:{contract_id}:2028-03"
    assert run.parent_task_run_id is None  # not a subflow: it may suspend
    # the scheduled deployment itself, ticked again: nothing new
    tick = harness.run("plan-inspections/plan-inspections", {"now": now.isoformat()})
    done = harness.wait(tick, "Completed", timeout=90)
    assert done.state.result() == {"created": 0, "started": 0}


# ---- the steps of one inspection (database only) ------------------------------------------------


@pytest.fixture
def planned(demo: str) -> int:
    from tasks.inspection import plan_inspections

    result = plan_inspections(datetime(2026, 9, 30, 17, 15, tzinfo=UTC), url=demo)  # Oct 1 local
    return result.created[0]


def _answers(spec: dict, problems: dict[tuple[str, str], dict]) -> dict:
    items = []
    for t in spec["targets"]:
        for it in t["items"]:
            items.append(
                {
                    "target": t["target"],
                    "code": it["code"],
                    "result": "normal",
                    "note": "",
                    **problems.get((t["target"], it["code"]), {}),
                }
            )
    return {
        "prechecks": {
            "changes": "上月升级了存储微码",
            "backup_confirmed": True,
            "customer_reported": "无",
            "customer_agreed": True,
            "agreed_by": "王维护",
        },
        "items": items,
    }


def test_checklist_with_two_problems_yields_two_repairs_and_one_fixed_on_site(
    planned: int, session: Session, demo: str
):
    from models.db import session_scope
    from models.inspection import ChecklistResult
    from tasks.inspection import InspectionError, checklist_spec, parse_checklist, store_checklist

    with session_scope(demo) as s:
        spec = checklist_spec(s, planned)
    assert (
        spec["targets"][0]["target"] == "site" and len(spec["targets"]) == 1 + 4
    )  # BJYH: 2 sites × 2 devices
    server, storage = spec["targets"][1]["target"], spec["targets"][2]["target"]
    payload = _answers(
        spec,
        {
            (server, "power"): {"result": "abnormal", "note": "电源1告警", "severity": 2},
            (storage, "disks"): {"result": "abnormal", "note": "3号盘预警", "severity": 3},
            ("site", "room_env"): {"result": "abnormal", "note": "空调滤网堵塞", "fixed_on_site": True},
            (server, "cleaning"): {"result": "na"},
        },
    )
    clean = parse_checklist(spec, payload)
    with session_scope(demo) as s:
        problems = store_checklist(s, planned, 1, clean, at=T0, by="刘工程师")
    assert [(p["code"], p["severity"], p["serial"]) for p in problems] == [
        ("power", 2, "SNBJYH0SE00"),
        ("disks", 3, "SNBJYH0ST00"),
    ]
    with session_scope(demo) as s:  # a replay of the same version writes nothing twice
        store_checklist(s, planned, 1, clean, at=T0, by="刘工程师")
    rows = session.exec(select(ChecklistResult).where(ChecklistResult.case_id == planned)).all()
    assert len(rows) == sum(len(t["items"]) for t in spec["targets"])
    assert sum(r.result == "abnormal" for r in rows) == 3 and sum(r.result == "na" for r in rows) == 1

    bad = _answers(spec, {(server, "power"): {"result": "abnormal", "note": ""}})
    with pytest.raises(InspectionError, match="异常须填写说明"):
        parse_checklist(spec, bad)
    no_backup = {**payload, "prechecks": {"backup_confirmed": False}}
    with pytest.raises(InspectionError, match="备份"):
        parse_checklist(spec, no_backup)
    missing = {**payload, "items": payload["items"][:-3]}
    with pytest.raises(InspectionError, match="未填写"):
        parse_checklist(spec, missing)


def test_customer_cancellation_is_recorded_told_and_shown_in_plan_vs_done(
    planned: int, session: Session, demo: str
):
    from models import Case, Event
    from models.outbox import Notification
    from tasks.inspection import InspectionError, cancel_inspection
    from tasks.summary import gather

    at = datetime(2026, 10, 9, 2, tzinfo=UTC)
    with pytest.raises(InspectionError, match="取消原因"):
        cancel_inspection(planned, " ", by="客户", now=at, url=demo)
    assert cancel_inspection(planned, "机房搬迁，本月暂停巡检", by="北京维护负责人", now=at, url=demo)
    assert not cancel_inspection(planned, "再点一次", by="北京维护负责人", now=at, url=demo)
    session.expire_all()
    case = session.get(Case, planned)
    assert case.status == "cancelled" and case.data["cancel_reason"] == "机房搬迁，本月暂停巡检"
    events = session.exec(
        select(Event).where(Event.case_id == planned, Event.kind == "inspection_cancelled")
    ).all()
    assert len(events) == 1
    told = session.exec(
        select(Notification).where(
            Notification.case_id == planned, Notification.template == "inspection/cancelled"
        )
    ).all()
    # dispatchers, engineers, the technical lead and the customer contact
    assert {n.recipient_name for n in told} >= {"王值班", "李调度", "刘工程师", "陈工程师", "张技术"}
    assert any(n.recipient_kind == "contact" for n in told)
    facts = gather(
        session,
        case.customer_id,
        kind="monthly",
        period="2026-10",
        first=date(2026, 10, 1),
        last=date(2026, 10, 31),
    )
    assert {
        "contract": "HT-2026-BJYH",
        "period": "2026-10",
        "state": "已取消",
        "reason": "机房搬迁，本月暂停巡检",
    } in facts.plan_vs_done


def test_notice_is_queued_once_for_the_customer_and_the_engineer(planned: int, session: Session, demo: str):
    from models.outbox import Notification
    from tasks.inspection import queue_notice

    at = datetime(2026, 10, 9, 1, tzinfo=UTC)
    assert queue_notice(planned, at=at, url=demo) == 2
    queue_notice(planned, at=at, url=demo)
    rows = session.exec(select(Notification).where(Notification.template == "inspection/notice")).all()
    assert len(rows) == 2 and "2026-10-13" in rows[0].subject


def test_centre_cancels_a_sleeping_inspection_and_its_timers_fire_at_once(
    planned: int, session: Session, demo: str
):
    """`aftercare inspection cancel`: the run asleep until the notice day is not left waiting weeks — its
    timers fire now, so the keeper wakes it and it ends on its cancellation check."""
    from uuid import uuid4

    from models import Case
    from models.approvals import Timer
    from models.db import session_scope
    from tasks.inspection import InspectionError, cancel_inspection, end_waiting_run, find_inspection

    at = datetime(2026, 10, 9, 2, tzinfo=UTC)
    later = datetime(2026, 10, 20, 1, tzinfo=UTC)
    with session_scope(demo) as s:
        case = s.get(Case, planned)
        case.flow_run_id, case.status = str(uuid4()), "scheduled"
        s.add(case)
        s.add(Timer(case_id=planned, flow_run_id=case.flow_run_id, key="notice", due_at=later, created_at=at))
        s.add(Timer(case_id=None, flow_run_id=str(uuid4()), key="callback-2d", due_at=later, created_at=at))
        assert (
            find_inspection(s, case.number).id == planned and find_inspection(s, str(planned)).id == planned
        )
        with pytest.raises(InspectionError, match="XJ-000123"):
            find_inspection(s, "WX-000001")

    assert cancel_inspection(planned, "客户来电：机房断电检修，本月取消", by="李调度", now=at, url=demo)
    said = end_waiting_run(planned, at, url=demo)
    assert "Prefect" in said  # no server in this test: the keeper wakes the run (fired, not yet resumed)
    session.expire_all()
    timers = {t.key: t for t in session.exec(select(Timer))}
    assert timers["notice"].fired_at == at and timers["notice"].resumed_at is None
    assert timers["callback-2d"].fired_at is None  # another run's wait is untouched
    assert session.get(Case, planned).status == "cancelled"


def test_an_inspection_under_way_cannot_be_cancelled(planned: int, demo: str):
    from models import Case
    from models.db import session_scope
    from tasks.inspection import InspectionError, cancel_inspection

    with session_scope(demo) as s:
        case = s.get(Case, planned)
        case.status = "on_site"
        s.add(case)
    with pytest.raises(InspectionError, match="已到场"):
        cancel_inspection(planned, "太晚了", by="李调度", now=datetime(2026, 10, 13, 3, tzinfo=UTC), url=demo)


def test_unsigned_report_is_reissued_with_the_reason_and_the_managers_sign_off(
    planned: int, session: Session, demo: str
):
    """PROCEDURES.md §4 step 6: unsigned → the reason, signed by the department manager — on the report itself."""
    from models.db import session_scope
    from models.reports import Report
    from tasks.inspection import (
        checklist_spec,
        parse_checklist,
        report_context,
        report_version,
        store_checklist,
    )
    from tasks.reports import issue, plain_text

    with session_scope(demo) as s:
        spec = checklist_spec(s, planned)
    with session_scope(demo) as s:
        store_checklist(s, planned, 1, parse_checklist(spec, _answers(spec, {})), at=T0, by="刘工程师")
    context = report_context.fn(planned, 1)
    on_site = datetime(2026, 10, 13, 4, tzinfo=UTC)
    assert report_version.fn(planned, "checklist-v1") == 1
    first = issue.fn(
        planned,
        "inspection_report",
        "inspection/report",
        {**context, "report_key": "checklist-v1", "unsigned": None},
        on_site,
        "刘工程师",
        1,
    )
    assert "客户未签字" not in first["content"]

    signed_off = datetime(2026, 10, 13, 7, 30, tzinfo=UTC)  # 15:30 in Beijing
    unsigned = {
        "reason": "客户要求补充更换时间，已电话说明，报告先行提交",
        "manager": "孔经理",
        "at": signed_off,
        "customer_comment": "报告未写明3号盘的更换时间",
        "signed_version": 1,
    }
    version = report_version.fn(planned, "unsigned-v1")
    second = issue.fn(
        planned,
        "inspection_report",
        "inspection/report",
        {**context, "report_key": "unsigned-v1", "unsigned": unsigned},
        signed_off,
        "孔经理",
        version,
    )
    assert second["version"] == 2
    text = plain_text(second["content"])
    assert "客户未签字" in text and "第 2 版" in text
    assert "客户意见 报告未写明3号盘的更换时间" in text
    assert "未签字原因 客户要求补充更换时间，已电话说明，报告先行提交" in text
    assert "部门经理签字 孔经理 签字时间 2026-10-13 15:30" in text
    assert "客户未签字" in second["text"]  # what the centre is shown when it registers the report
    # a replayed step finds its version; the checklist filled in again after a rejection is the next one
    assert report_version.fn(planned, "unsigned-v1") == 2 and report_version.fn(planned, "checklist-v2") == 3
    statuses = [
        (r.version, r.status)
        for r in session.exec(select(Report).where(Report.case_id == planned).order_by(Report.version))
    ]
    assert statuses == [(1, "superseded"), (2, "issued")]


def _checklist_problems(planned: int, demo: str) -> list[dict[str, Any]]:
    """A checklist with two problems (a server's power, a storage's disks) not fixed on site."""
    from models.db import session_scope
    from tasks.inspection import checklist_spec, parse_checklist, store_checklist

    with session_scope(demo) as s:
        spec = checklist_spec(s, planned)
    server, storage = spec["targets"][1], spec["targets"][2]
    clean = parse_checklist(
        spec,
        _answers(
            spec,
            {
                (server["target"], "power"): {"result": "abnormal", "note": "电源1告警", "severity": 2},
                (storage["target"], "disks"): {"result": "abnormal", "note": "3号盘预警", "severity": 3},
            },
        ),
    )
    with session_scope(demo) as s:
        return store_checklist(s, planned, 1, clean, at=T0, by="刘工程师")


def _problem_repairs(planned: int, demo: str) -> list[Any]:
    """The two problems, each opened as a repair (as the inspection flow's repair runs do at intake)."""
    from models.db import session_scope
    from tasks.cases import Channel, RepairRequest, open_case

    problems = _checklist_problems(planned, demo)
    repairs = []
    for n, p in enumerate(problems, start=1):
        with session_scope(demo) as s:
            repair = open_case(
                s,
                RepairRequest(
                    customer="BJYH",
                    site=p["site"],
                    device=p["serial"],
                    reported_by="巡检工程师",
                    channel=Channel.INSPECTION,
                    severity=p["severity"],
                    reported_at=T0,
                    description=f"巡检发现：{p['target_label']}·{p['label']}：{p['note']}",
                    parent_case_id=planned,
                ),
                now=T0.replace(hour=T0.hour + n),
            )
            s.flush()
            s.expunge(repair)
            repairs.append(repair)
    return repairs


def test_every_problem_is_told_its_repair_number_and_its_result_within_two_working_days_of_the_fix(
    planned: int, demo: str, notifications
):
    """Issue 22 item 7 (PROCEDURES.md §4.5; 001 §2.3.3.8 "在解决问题结束后两工作日内反馈给客户"): each
    repair opened for a problem tells the customer its number (read from the recording Apprise
    plugin); the 2-working-day feedback clock runs from the problem's fix — not from the checklist,
    not to the repair's number — to the result fed back to the customer."""
    from models.clocks import Clock
    from models.db import session_scope
    from models.inspection import ChecklistResult
    from tasks.cases import customer_contact, problem_fixed_feedback
    from tasks.notify import send_due

    repairs = _problem_repairs(planned, demo)
    with session_scope(demo) as s:
        contact = customer_contact(s, planned)
        s.expunge(contact)
        linked = s.exec(
            select(ChecklistResult.repair_case_id).where(
                ChecklistResult.case_id == planned,
                ChecklistResult.repair_case_id != None,  # noqa: E711
            )
        ).all()
        assert sorted(linked) == sorted(r.id for r in repairs)
        # the repair's number told is not the feedback the clock waits for: no clock yet
        assert s.exec(select(Clock).where(Clock.kind == "inspection_feedback")).all() == []
    send_due(T0.replace(hour=T0.hour + 3), worker="test", url=demo)
    told = [m for m in notifications.to(contact) if "巡检问题反馈" in m.title]
    assert len(told) == 2
    for repair, message in zip(repairs, told, strict=True):
        assert repair.number in message.title and repair.number in message.body

    # the first repair fixed on Tuesday 10:00 and recorded an hour later: fed back in time; the second
    # fixed on Wednesday and recorded only the next Monday (3 working days later): a late feedback
    first, second = repairs
    tue, wed = T0 + timedelta(days=1), T0 + timedelta(days=2)
    assert problem_fixed_feedback.fn(first.id, tue, tue + timedelta(hours=1), "更换电源模块")
    assert problem_fixed_feedback.fn(second.id, wed, wed + timedelta(days=5), "更换3号盘")
    with session_scope(demo) as s:
        clocks = {
            c.case_id: c for c in s.exec(select(Clock).where(Clock.kind == "inspection_feedback")).all()
        }
        assert clocks[first.id].started_at == tue and clocks[first.id].met_at is not None
        assert clocks[second.id].breached_at is not None and clocks[second.id].met_at is None
    send_due(wed + timedelta(days=6), worker="test", url=demo)
    fixed = [m for m in notifications.to(contact) if "巡检问题已修复" in m.title]
    assert len(fixed) == 2 and first.number in fixed[0].title
    assert "更换电源模块" in fixed[0].body and "电源1告警" in fixed[0].body


def test_a_repair_that_is_no_inspection_problem_sends_no_problem_feedback(planned: int, demo: str):
    """Only a repair opened for an inspection's problem feeds a result back to the inspection's customer."""
    from models.clocks import Clock
    from models.db import session_scope
    from tasks.cases import RepairRequest, open_case, problem_fixed_feedback

    with session_scope(demo) as s:
        other = open_case(
            s,
            RepairRequest(customer="BJYH", site="亦庄机房", reported_by="王", description="硬盘告警"),
            now=T0,
        )
        s.flush()
        other_id = other.id
    assert not problem_fixed_feedback.fn(other_id, T0, T0, "更换硬盘")
    with session_scope(demo) as s:
        assert s.exec(select(Clock).where(Clock.kind == "inspection_feedback")).all() == []


def test_a_problem_repair_solved_remotely_feeds_its_result_back_through_the_repair_flow(
    planned: int, fast: Any
) -> None:
    """The same through the repair flow on the fast layer (the lead's diagnosis answered as on the
    link page): solved remotely → the inspection's customer gets the result, the clock is met."""
    import pendulum

    from flows.repair import repair
    from models import Event
    from models.clocks import Clock
    from tasks.cases import RepairRequest

    first = _checklist_problems(planned, fast.db_url)[0]
    problem = RepairRequest(
        customer="BJYH",
        site=first["site"],
        device=first["serial"],
        reported_by="巡检工程师",
        channel="巡检",
        severity=3,
        reported_at=T0,
        description=f"巡检发现：{first['target_label']}·{first['label']}：{first['note']}",
        parent_case_id=planned,
    )
    at = T0 + timedelta(hours=2)
    contacted = pendulum.instance(at).in_timezone("Asia/Shanghai").strftime("%Y-%m-%d %H:%M")
    fast.run(
        repair,
        problem,
        at=T0 + timedelta(hours=1),
        run_id="inspection-problem-remote",
        script=[
            say(
                "diagnosis",
                {"contacted_at": contacted, "result": "远程复位电源模块告警", "solved_remotely": "是"},
                at=at,
            )
        ],
        until="service-report-signature",
    )
    case_id = fast.case_of_run("inspection-problem-remote")
    with fast.session() as s:
        clock = s.exec(
            select(Clock).where(Clock.case_id == case_id, Clock.kind == "inspection_feedback")
        ).one()
        assert clock.met_at == at
        fed = s.exec(
            select(Event).where(Event.case_id == planned, Event.kind == "problem_fixed_fed_back")
        ).all()
        assert [e.data["repair_case_id"] for e in fed] == [case_id]
    assert fast.notifications(planned) == [
        ("北京维护负责人", "inspection/problem_feedback"),
        ("北京维护负责人", "inspection/problem_fixed"),
    ]
