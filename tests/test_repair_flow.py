"""The repair flow (PROCEDURES.md §2) end to end on the real layer, driven as people drive it: a run
started like the dispatcher's form on a real Prefect server and runner, every step answered by
opening the link a notification carried and posting the page, time moved by ticking the clock
keeper with later moments.

One end-to-end run here; the flow's branches (remote fix, plan sent back or rejected, paid service,
a refused request, the 5-minute talk, hand-over, parts corrections) run on the fast layer:
tests/test_repair_branches.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from models.clocks import Clock
from models.reports import Report, Signature
from tests.repair_driver import RepairDriver

pytestmark = pytest.mark.timeout(300)


def bj(moment: datetime) -> str:
    """How a person types a time on the form: Beijing time."""
    return pendulum.instance(moment).in_timezone("Asia/Shanghai").strftime("%Y-%m-%d %H:%M")


@pytest.fixture
def drive(harness: Any) -> RepairDriver:
    from web.app import create_app

    return RepairDriver(harness, TestClient(create_app()))


def start(drive: RepairDriver, at: datetime, **fields: Any) -> tuple[Any, int]:
    request = {
        "customer": "BJYH",
        "site": "亦庄机房",
        "reported_by": "客户 王先生 13900000000",
        "channel": "热线",
        "description": "存储阵列告警，部分 LUN 读写变慢",
        "severity": 3,
        "reported_at": at.isoformat(),
        **fields,
    }
    run_id = drive.h.run("repair/repair", {"request": request})
    return run_id, drive.case_of_run(run_id)


def clocks(drive: RepairDriver, case_id: int) -> dict[str, str]:
    with drive.session() as s:
        rows = s.exec(select(Clock).where(Clock.case_id == case_id)).all()
        return {c.kind: "breached" if c.breached_at else "met" if c.met_at else "running" for c in rows}


# What the lead posts on the fault-report form (故障处理报告, PROCEDURES.md §2 step 15).
FAULT_REPORT = {
    "customer_engineer": "客户 王先生",
    "symptoms": "阵列告警，LUN 读写慢",
    "business_impact": "核心业务响应变慢",
    "process": "远程登录检查控制器日志，重新平衡缓存",
    "cause": "控制器缓存策略异常",
    "solution": "恢复缓存策略",
    "advice": "每月巡检检查缓存策略",
}


def after_service(drive: RepairDriver, run_id: Any, case_id: int, done_at: datetime) -> None:
    """Steps 13–17: fault report and account (filled early), callback after the timer, final approval."""
    drive.act(
        case_id, "fault-report", "submitted", done_at + timedelta(hours=2), run_id=run_id, fields=FAULT_REPORT
    )
    drive.act(
        case_id,
        "written-account",
        "submitted",
        done_at + timedelta(hours=3),
        fields={"account": "远程登录后检查日志，发现缓存策略被改，恢复后观察一小时正常。"},
    )
    drive.h.wait(run_id, "Suspended")  # waiting for the callback timer
    drive.tick(
        done_at + timedelta(hours=23)
    )  # not yet due: nothing happens (the tick is done when it returns)
    with drive.session() as s:
        from models.approvals import Timer

        timer = s.exec(
            select(Timer).where(Timer.flow_run_id == str(run_id), Timer.key == "callback-due")
        ).one()
        assert timer.fired_at is None and timer.due_at > done_at + timedelta(hours=23)
    assert drive.h.state_name(run_id) == "Suspended"
    drive.tick(done_at + timedelta(days=1, minutes=1))
    drive.act(
        case_id,
        "callback",
        "submitted",
        done_at + timedelta(days=1, minutes=30),
        run_id=run_id,
        fields={
            "customer_person": "王先生",
            "centre_confirmed": "是",
            "response": "优",
            "arrival": "良",
            "fix_speed": "优",
            "spare_parts": "良",
            "one_visit": "优",
            "follow_up": "优",
            "attitude": "优",
            "skill": "良",
            "overall": "优",
            "comments": "处理及时",
        },
    )
    drive.act(case_id, "final-approval", "approved", done_at + timedelta(days=1, hours=2), run_id=run_id)
    drive.finish(run_id)


PLAN_V1 = "更换故障电源模块：1. 备件出库 2. 上门热插拔更换 PSU 3. 检查告警清除，预计 30 分钟"


def on_site(
    drive: RepairDriver, t: datetime, *, parts: str = "PSU-900W x1", revised_plan: str = "", **request: Any
) -> tuple[Any, int]:
    """Steps 1–6 with a hardware fault: diagnosis, director's approval, parts, visit, arrival, re-analysis.
    A parts list the store cannot take is corrected by the lead; a plan revised on site goes to the director."""
    run_id, case_id = start(drive, t, description="服务器电源模块故障灯亮，冗余失效", severity=2, **request)
    drive.act(
        case_id,
        "diagnosis",
        "submitted",
        t + timedelta(minutes=4),
        run_id=run_id,
        fields={
            "contacted_at": bj(t + timedelta(minutes=3)),
            "fault_confirmed": "是",
            "result": "PSU2 故障",
            "command_log": "$ ipmitool sdr | grep PSU",
            "solved_remotely": "否",
            "plan": PLAN_V1,
            "parts": parts,
        },
    )
    drive.act(case_id, "plan-approval", "approved", t + timedelta(minutes=15), run_id=run_id)
    if parts != "PSU-900W x1":
        drive.act(
            case_id,
            "parts-1",
            "submitted",
            t + timedelta(minutes=16),
            run_id=run_id,
            fields={"parts": "PSU-900W x1"},
        )
    drive.act(
        case_id,
        "visit",
        "submitted",
        t + timedelta(minutes=18),
        run_id=run_id,
        fields={"visit_at": bj(t + timedelta(minutes=45)), "coordinator_joins": "否"},
    )
    drive.act(
        case_id,
        "onsite",
        "submitted",
        t + timedelta(minutes=45),
        run_id=run_id,
        fields={
            "arrived_at": bj(t + timedelta(minutes=40)),
            "room_rules_followed": "是",
            "findings": "确认 PSU2 损坏",
            "revised_plan": revised_plan,
        },
    )
    # 001 §2.2.5.2: on arrival the customer signs the 技术服务申请 on its report page
    drive.sign_on_report_page(
        case_id, "service-request-signature", t + timedelta(minutes=45), name="北京维护负责人", run_id=run_id
    )
    if revised_plan:
        drive.act(case_id, "onsite-revision", "approved", t + timedelta(minutes=50), run_id=run_id)
    return run_id, case_id


def repaired(drive: RepairDriver, run_id: Any, case_id: int, at: datetime, problems: str = "") -> None:
    drive.act(
        case_id,
        "repair-1",
        "submitted",
        at,
        run_id=run_id,
        fields={
            "completed": "是",
            "work_done": "更换 PSU2，告警清除",
            "repaired_at": bj(at - timedelta(minutes=5)),
            "maintenance": "清洁风扇滤网，检查其余电源",
            "problems": problems,
            "restored_at": bj(at - timedelta(minutes=10)),
        },
    )


def test_on_site_repair_with_one_objection_and_a_revised_plan(drive: RepairDriver) -> None:
    t = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    run_id, case_id = on_site(drive, t)
    drive.act(
        case_id,
        "solution-plan-signature",
        "objected",
        t + timedelta(minutes=55),
        run_id=run_id,
        comment="更换前请先备份配置，并安排在午休时间",
    )
    drive.act(
        case_id,
        "plan-v2",
        "submitted",
        t + timedelta(minutes=60),
        run_id=run_id,
        fields={"plan": PLAN_V1 + "；更换前备份 BMC 与 RAID 配置，12:00 午休时实施"},
    )
    drive.act(case_id, "plan-approval", "approved", t + timedelta(minutes=65), run_id=run_id)
    drive.act(case_id, "solution-plan-signature", "signed", t + timedelta(minutes=70), run_id=run_id)
    repaired(drive, run_id, case_id, t + timedelta(minutes=120))
    drive.sign_on_report_page(
        case_id, "service-report-signature", t + timedelta(minutes=130), name="北京维护负责人", run_id=run_id
    )
    after_service(drive, run_id, case_id, t + timedelta(minutes=130))

    events = drive.events(case_id)
    expected = [
        "opened",
        "first_contact",
        "remote_diagnosis",
        "plan_written",
        "plan_approved",
        "parts_issued",
        "visit_booked",
        "arrived",
        "onsite_analysis",
        "plan_objected",
        "plan_revised",
        "plan_approved",
        "plan_signed",
        "repaired",
        "preventive_maintenance",
        "five_minute_talk",
        "restored",
        "service_report_signed",
        "sms_to_centre",
        "callback_done",
        "final_approved",
        "archived",
    ]
    assert [e for e in events if e in expected] == expected
    assert clocks(drive, case_id) == {
        "first_contact": "met",
        "remote_response": "met",
        "restore": "met",
        "spare_part": "met",
        "arrival": "met",
        "callback": "met",
        "written_account": "met",
        "fault_report": "met",
        "analysis_report": "met",
        "workaround": "breached",
    }  # no workaround given, restored after the 30 min of level 2
    with drive.session() as s:
        # the restore clock stood still while each plan version was with the customer
        restore = s.exec(select(Clock).where(Clock.case_id == case_id, Clock.kind == "restore")).one()
        paused = [
            (datetime.fromisoformat(p["from"]), datetime.fromisoformat(p["to"])) for p in restore.pauses
        ]
        m = timedelta(minutes=1)
        assert paused == [(t + 45 * m, t + 55 * m), (t + 65 * m, t + 70 * m)], restore.pauses
        plans = s.exec(
            select(Report)
            .where(Report.case_id == case_id, Report.kind == "solution_plan")
            .order_by(Report.version)
        ).all()
        assert [(p.version, p.status) for p in plans] == [(1, "superseded"), (2, "archived")] or [
            (p.version, p.status) for p in plans
        ] == [(1, "superseded"), (2, "issued")]
        assert "午休" in plans[1].content and "客户提出异议后修订" in plans[1].content
        v2_signatures = s.exec(select(Signature).where(Signature.report_id == plans[1].id)).all()
        assert len(v2_signatures) == 1 and v2_signatures[0].is_valid_for(plans[1])
        service = s.exec(
            select(Report).where(Report.case_id == case_id, Report.kind == "service_report")
        ).one()
        assert (
            "现场维修" in service.content and "900W 电源模块" in service.content and "v2" in service.content
        )
    sent = set(drive.notifications(case_id))
    assert ("何备件", "repair/parts_issued") in sent
    assert ("郑协调", "repair/visit_coordinator") in sent and (
        "北京维护负责人",
        "repair/visit_booked",
    ) in sent
    assert ("郑协调", "repair/visit_booked") not in sent  # the customer's notice is not the coordinator's
    assert ("吴总监", "approval_request") in sent and ("张技术", "form_request") in sent
    assert ("北京维护负责人", "signature_request") in sent
    each_step_ran_once(drive, run_id)


def each_step_ran_once(drive: RepairDriver, run_id: Any) -> None:
    """Across all the run's wake-ups, one Prefect task run per step, named by its ledger key: a
    replay made none for a finished step (the fresh reads — decided yet? fired yet? — make none)."""
    import time
    from collections import Counter

    keys = drive.h.ledger_keys(run_id)
    stepped = Counter(k for k in keys if not k.startswith(("approval-status:", "timer-fired:")))
    assert sum(k.startswith("approval-status:") for k in keys) >= 12  # the waits the run went through
    deadline = time.monotonic() + 20  # Prefect records task runs from their events, a moment later
    while (
        ran := Counter(t.name for t in drive.h.task_runs(run_id))
    ) != stepped and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ran == stepped
