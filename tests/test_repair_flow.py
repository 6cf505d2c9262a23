"""The repair flow (PROCEDURES.md §2) end to end, driven as people drive it: a run started like the
dispatcher's form, every step answered by opening the link a notification carried and posting the
page, time moved by ticking the clock keeper with later moments.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from models import Case
from models.approvals import Approval
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
    request = {"customer": "BJYH", "site": "亦庄机房", "reported_by": "客户 王先生 13900000000", "channel": "热线",
               "description": "存储阵列告警，部分 LUN 读写变慢", "severity": 3, "reported_at": at.isoformat(), **fields}
    run_id = drive.h.run("repair/repair", {"request": request})
    return run_id, drive.case_of_run(run_id)


def clocks(drive: RepairDriver, case_id: int) -> dict[str, str]:
    with drive.session() as s:
        rows = s.exec(select(Clock).where(Clock.case_id == case_id)).all()
        return {c.kind: "breached" if c.breached_at else "met" if c.met_at else "running" for c in rows}


# What the lead posts on the fault-report form (故障处理报告, PROCEDURES.md §2 step 15).
FAULT_REPORT = {
    "customer_engineer": "客户 王先生", "symptoms": "阵列告警，LUN 读写慢", "business_impact": "核心业务响应变慢",
    "process": "远程登录检查控制器日志，重新平衡缓存", "cause": "控制器缓存策略异常", "solution": "恢复缓存策略",
    "advice": "每月巡检检查缓存策略"}


def after_service(drive: RepairDriver, run_id: Any, case_id: int, done_at: datetime) -> None:
    """Steps 13–17: fault report and account (filled early), callback after the timer, final approval."""
    drive.act(case_id, "fault-report", "submitted", done_at + timedelta(hours=2), run_id=run_id, fields=FAULT_REPORT)
    drive.act(case_id, "written-account", "submitted", done_at + timedelta(hours=3),
              fields={"account": "远程登录后检查日志，发现缓存策略被改，恢复后观察一小时正常。"})
    drive.h.wait(run_id, "Suspended")  # waiting for the callback timer
    drive.tick(done_at + timedelta(hours=23))  # not yet due: nothing happens
    with pytest.raises(AssertionError):
        drive.pending(case_id, "callback", timeout=1.5)
    drive.tick(done_at + timedelta(days=1, minutes=1))
    drive.act(case_id, "callback", "submitted", done_at + timedelta(days=1, minutes=30), run_id=run_id, fields={
        "customer_person": "王先生", "centre_confirmed": "是", "response": "优", "arrival": "良", "fix_speed": "优",
        "spare_parts": "良", "one_visit": "优", "follow_up": "优", "attitude": "优", "skill": "良", "overall": "优",
        "comments": "处理及时"})
    drive.act(case_id, "final-approval", "approved", done_at + timedelta(days=1, hours=2), run_id=run_id)
    drive.finish(run_id)


def test_solved_remotely_goes_straight_to_the_signed_report(drive: RepairDriver) -> None:
    t = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    run_id, case_id = start(drive, t)
    drive.act(case_id, "diagnosis", "submitted", t + timedelta(minutes=8), run_id=run_id, fields={
        "contacted_at": bj(t + timedelta(minutes=5)), "fault_confirmed": "是", "result": "缓存策略被改，已恢复",
        "command_log": "$ show controller cache\n$ set cache policy=write-back", "solved_remotely": "是"})
    # the customer opens the report from the signature request and signs it with a drawn signature
    drive.sign_on_report_page(case_id, "service-report-signature", t + timedelta(minutes=40), name="王先生",
                              run_id=run_id)
    after_service(drive, run_id, case_id, t + timedelta(minutes=40))

    events = drive.events(case_id)
    expected = ["opened", "first_contact", "remote_diagnosis", "restored", "service_report_signed", "sms_to_centre",
                "callback_done", "final_approved", "archived"]
    assert [e for e in events if e in expected] == expected
    assert "plan_approved" not in events and "arrived" not in events  # no plan, no visit
    assert clocks(drive, case_id) == {
        "first_contact": "met", "remote_response": "met", "restore": "met", "callback": "met",
        "written_account": "met", "fault_report": "met"}
    with drive.session() as s:
        case = s.get(Case, case_id)
        assert case.status == "archived" and not case.out_of_contract
        reports = {r.kind: r for r in s.exec(select(Report).where(Report.case_id == case_id))}
        assert set(reports) == {"service_report", "fault_report", "callback_form", "written_account"}
        assert all(r.status == "archived" for r in reports.values())
        service = reports["service_report"]
        assert "远程解决" in service.content and "set cache policy=write-back" in service.content
        fault = reports["fault_report"]
        for part in ("报告时间", "客户工程师", "业务影响", "处理过程", "原因分析", "解决方案", "预防建议"):
            assert part in fault.content
        # the 7 required parts carry what was filled in, not just their labels: the times from the log …
        for label, moment in (("报告时间", t), ("首次联系", t + timedelta(minutes=5)),
                              ("远程诊断", t + timedelta(minutes=8)), ("业务恢复", t + timedelta(minutes=8))):
            assert f"<th>{label}</th><td>{bj(moment)}</td>" in fault.content, label
        assert "<th>到达现场</th><td>—（远程解决）</td>" in fault.content
        # … the people, and every value the lead posted on the fault-report form
        # solved remotely by the technical lead, who also wrote the report: named by his own role
        assert "<th>项目技术负责人（远程处理）</th><td>张技术</td>" in fault.content and fault.issued_by == "张技术"
        assert "<th>服务工程师</th>" not in fault.content
        assert f"<th>客户工程师</th><td>{FAULT_REPORT['customer_engineer']}</td>" in fault.content
        for name, value in FAULT_REPORT.items():
            assert value in fault.content, name
        for section, value in (("故障现象与业务影响", FAULT_REPORT["symptoms"]), ("处理过程", FAULT_REPORT["process"]),
                               ("原因分析", FAULT_REPORT["cause"]), ("解决方案", FAULT_REPORT["solution"]),
                               ("预防建议", FAULT_REPORT["advice"])):
            assert fault.content.index(value) > fault.content.index(f"<h2>{section}</h2>"), section
        assert f"业务影响：{FAULT_REPORT['business_impact']}" in fault.content
        assert "优" in reports["callback_form"].content and "处理及时" in reports["callback_form"].content
        sigs = s.exec(select(Signature).where(Signature.report_id == service.id)).all()
        assert len(sigs) == 1 and sigs[0].method == "drawn" and sigs[0].is_valid_for(service)
    sent = drive.notifications(case_id)
    templates_to = {(who, tpl) for who, tpl in sent}
    assert ("张技术", "repair/opened") in templates_to and ("刘工程师", "repair/opened") in templates_to
    assert ("北京维护负责人", "repair/received") in templates_to
    assert ("北京维护负责人", "repair/fault_report") in templates_to
    assert ("王值班", "repair/done_sms") in templates_to and ("郑协调", "repair/callback_done") in templates_to
    assert not any(tpl.startswith("repair/visit") or tpl.startswith("repair/parts") for _, tpl in sent)


PLAN_V1 = "更换故障电源模块：1. 备件出库 2. 上门热插拔更换 PSU 3. 检查告警清除，预计 30 分钟"


def on_site(drive: RepairDriver, t: datetime, *, parts: str = "PSU-900W x1", revised_plan: str = "",
            **request: Any) -> tuple[Any, int]:
    """Steps 1–6 with a hardware fault: diagnosis, director's approval, parts, visit, arrival, re-analysis.
    A parts list the store cannot take is corrected by the lead; a plan revised on site goes to the director."""
    run_id, case_id = start(drive, t, description="服务器电源模块故障灯亮，冗余失效", severity=2, **request)
    drive.act(case_id, "diagnosis", "submitted", t + timedelta(minutes=4), run_id=run_id, fields={
        "contacted_at": bj(t + timedelta(minutes=3)), "fault_confirmed": "是", "result": "PSU2 故障",
        "command_log": "$ ipmitool sdr | grep PSU", "solved_remotely": "否", "plan": PLAN_V1, "parts": parts})
    drive.act(case_id, "plan-approval", "approved", t + timedelta(minutes=15), run_id=run_id)
    if parts != "PSU-900W x1":
        drive.act(case_id, "parts-1", "submitted", t + timedelta(minutes=16), run_id=run_id,
                  fields={"parts": "PSU-900W x1"})
    drive.act(case_id, "visit", "submitted", t + timedelta(minutes=18), run_id=run_id,
              fields={"visit_at": bj(t + timedelta(minutes=45)), "coordinator_joins": "否"})
    drive.act(case_id, "onsite", "submitted", t + timedelta(minutes=45), run_id=run_id, fields={
        "arrived_at": bj(t + timedelta(minutes=40)), "room_rules_followed": "是", "findings": "确认 PSU2 损坏",
        "revised_plan": revised_plan})
    if revised_plan:
        drive.act(case_id, "onsite-revision", "approved", t + timedelta(minutes=50), run_id=run_id)
    return run_id, case_id


def repaired(drive: RepairDriver, run_id: Any, case_id: int, at: datetime, problems: str = "") -> None:
    drive.act(case_id, "repair-1", "submitted", at, run_id=run_id, fields={
        "completed": "是", "work_done": "更换 PSU2，告警清除", "repaired_at": bj(at - timedelta(minutes=5)),
        "maintenance": "清洁风扇滤网，检查其余电源", "problems": problems, "restored_at": bj(at - timedelta(minutes=10))})


def test_on_site_repair_with_one_objection_and_a_revised_plan(drive: RepairDriver) -> None:
    t = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    run_id, case_id = on_site(drive, t)
    drive.act(case_id, "solution-plan-signature", "objected", t + timedelta(minutes=55), run_id=run_id,
              comment="更换前请先备份配置，并安排在午休时间")
    drive.act(case_id, "plan-v2", "submitted", t + timedelta(minutes=60), run_id=run_id,
              fields={"plan": PLAN_V1 + "；更换前备份 BMC 与 RAID 配置，12:00 午休时实施"})
    drive.act(case_id, "plan-approval", "approved", t + timedelta(minutes=65), run_id=run_id)
    drive.act(case_id, "solution-plan-signature", "signed", t + timedelta(minutes=70), run_id=run_id)
    repaired(drive, run_id, case_id, t + timedelta(minutes=120))
    drive.sign_on_report_page(case_id, "service-report-signature", t + timedelta(minutes=130), name="北京维护负责人",
                              run_id=run_id)
    after_service(drive, run_id, case_id, t + timedelta(minutes=130))

    events = drive.events(case_id)
    expected = ["opened", "first_contact", "remote_diagnosis", "plan_written", "plan_approved", "parts_issued",
                "visit_booked", "arrived", "onsite_analysis", "plan_objected", "plan_revised", "plan_approved",
                "plan_signed", "repaired", "preventive_maintenance", "five_minute_talk", "restored",
                "service_report_signed", "sms_to_centre", "callback_done", "final_approved", "archived"]
    assert [e for e in events if e in expected] == expected
    assert clocks(drive, case_id) == {
        "first_contact": "met", "remote_response": "met", "restore": "met", "spare_part": "met", "arrival": "met",
        "callback": "met", "written_account": "met", "fault_report": "met"}
    with drive.session() as s:
        # the restore clock stood still while each plan version was with the customer
        restore = s.exec(select(Clock).where(Clock.case_id == case_id, Clock.kind == "restore")).one()
        paused = [(datetime.fromisoformat(p["from"]), datetime.fromisoformat(p["to"])) for p in restore.pauses]
        m = timedelta(minutes=1)
        assert paused == [(t + 45 * m, t + 55 * m), (t + 65 * m, t + 70 * m)], restore.pauses
        plans = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "solution_plan")
                       .order_by(Report.version)).all()
        assert [(p.version, p.status) for p in plans] == [(1, "superseded"), (2, "archived")] or \
            [(p.version, p.status) for p in plans] == [(1, "superseded"), (2, "issued")]
        assert "午休" in plans[1].content and "客户提出异议后修订" in plans[1].content
        v2_signatures = s.exec(select(Signature).where(Signature.report_id == plans[1].id)).all()
        assert len(v2_signatures) == 1 and v2_signatures[0].is_valid_for(plans[1])
        service = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "service_report")).one()
        assert "现场维修" in service.content and "900W 电源模块" in service.content and "v2" in service.content
    sent = set(drive.notifications(case_id))
    assert ("何备件", "repair/parts_issued") in sent
    assert ("郑协调", "repair/visit_coordinator") in sent and ("北京维护负责人", "repair/visit_booked") in sent
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
    while (ran := Counter(t.name for t in drive.h.task_runs(run_id))) != stepped and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ran == stepped


def test_director_sends_the_first_plan_back_to_the_lead(drive: RepairDriver) -> None:
    t = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    run_id, case_id = start(drive, t, description="交换机端口频繁闪断")
    drive.act(case_id, "diagnosis", "submitted", t + timedelta(minutes=8), run_id=run_id, fields={
        "contacted_at": bj(t + timedelta(minutes=5)), "result": "光模块疑似老化", "solved_remotely": "否",
        "plan": "上门更换光模块，观察端口状态"})
    drive.act(case_id, "plan-approval", "revise", t + timedelta(minutes=20), run_id=run_id,
              comment="先核对备件库存并写明回退步骤")
    drive.act(case_id, "plan-v2", "submitted", t + timedelta(minutes=30), run_id=run_id,
              fields={"plan": "上门更换光模块；无备件时临时改用备用端口；失败则回退到原端口并联系原厂"})
    drive.act(case_id, "plan-approval", "approved", t + timedelta(minutes=35), run_id=run_id)
    drive.pending(case_id, "visit", run_id)  # the approved v2 goes on to the visit booking
    events = drive.events(case_id)
    assert [e for e in events if e.startswith("plan_")] == ["plan_written", "plan_returned", "plan_revised",
                                                            "plan_approved"]
    with drive.session() as s:
        from models.approvals import Approval

        approvals = s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == "plan-approval")
                           .order_by(Approval.version)).all()
        assert [(a.version, a.decision) for a in approvals] == [(1, "revise"), (2, "approved")]
        # "要求修改": the lead's form comes filled in with the plan to change
        revision = s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == "plan-v2")).one()
        assert revision.form["values"] == {"plan": "上门更换光模块，观察端口状态"} and "请修订" in revision.subject
    sent = drive.notifications(case_id)
    assert sent.count(("吴总监", "approval_request")) == 2  # v1 and v2
    assert ("张技术", "form_request") in sent  # the lead is asked to revise
    assert not [who for who, template in sent if template == "plan_rejected"]  # a revision is no rejection
    drive.h.read(run_id)  # the run is left waiting for the visit; the session's server ends it


def test_a_rejected_plan_is_made_anew_with_the_engineer_not_edited(drive: RepairDriver) -> None:
    """"驳回" refuses the plan as a whole: the lead gets an empty form (not the old plan to edit), the
    engineer is told why, and the new version records that it follows a rejection."""
    t = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    run_id, case_id = start(drive, t, description="核心交换机风扇告警")
    drive.act(case_id, "diagnosis", "submitted", t + timedelta(minutes=8), run_id=run_id, fields={
        "contacted_at": bj(t + timedelta(minutes=5)), "result": "风扇模块故障", "solved_remotely": "否",
        "plan": "业务高峰期直接热插拔更换风扇模块"})
    drive.act(case_id, "plan-approval", "rejected", t + timedelta(minutes=20), run_id=run_id,
              comment="高峰期操作风险过大，须改在维护窗口并先切换流量")
    drive.pending(case_id, "plan-v2", run_id)
    with drive.session() as s:
        from models.approvals import Approval

        anew = s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == "plan-v2")).one()
        assert "values" not in anew.form and "被驳回" in anew.subject and "驳回原因" in anew.content
    drive.act(case_id, "plan-v2", "submitted", t + timedelta(minutes=40), run_id=run_id,
              fields={"plan": "夜间维护窗口内先将流量切到备用交换机，再更换风扇模块，观察 30 分钟后切回"})
    drive.act(case_id, "plan-approval", "approved", t + timedelta(minutes=45), run_id=run_id)
    drive.pending(case_id, "visit", run_id)
    events = drive.events(case_id)
    assert [e for e in events if e.startswith("plan_")] == ["plan_written", "plan_returned", "plan_revised",
                                                            "plan_approved"]
    with drive.session() as s:

        plans = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "solution_plan")
                       .order_by(Report.version)).all()
        assert "技术总监驳回后重新制定" in plans[-1].content
    sent = drive.notifications(case_id)
    assert ("刘工程师", "plan_rejected") in sent or ("陈工程师", "plan_rejected") in sent
    drive.h.read(run_id)


def test_lapsed_contract_is_taken_as_paid_service_and_every_message_says_so(drive: RepairDriver) -> None:
    t = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    run_id, case_id = start(drive, t, customer="TYDX", site=None, description="图书馆机房 UPS 告警")
    drive.pending(case_id, "diagnosis", run_id)
    with drive.session() as s:
        from models.outbox import Notification

        case = s.get(Case, case_id)
        assert case.out_of_contract and "已于 2026-03-31 到期" in case.data["paid_service_reason"]
        rows = s.exec(select(Notification).where(Notification.case_id == case_id)).all()
        assert {r.template for r in rows} >= {"repair/opened", "repair/received", "form_request"}
        for row in rows:
            assert "有偿服务" in row.subject + row.body, (row.template, row.subject)
    drive.act(case_id, "diagnosis", "submitted", t + timedelta(minutes=8), run_id=run_id, fields={
        "contacted_at": bj(t + timedelta(minutes=5)), "result": "电池老化告警", "solved_remotely": "是"})
    drive.pending(case_id, "service-report-signature", run_id)
    with drive.session() as s:
        report = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "service_report")).one()
        assert "合同外 / 有偿服务" in report.content


def test_unknown_customer_or_foreign_site_fails_the_run_with_a_clear_message(drive: RepairDriver) -> None:
    t = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    run_id = drive.h.run("repair/repair", {"request": {
        "customer": "BJYH", "site": "门诊楼机房", "reported_by": "x", "description": "无法登录", "reported_at": t.isoformat()}})
    run = drive.h.wait(run_id, "Failed", timeout=90)
    assert "不属于客户" in run.state.message and "Traceback" not in run.state.message


def _cases_with_parent(drive: RepairDriver, parent: int, n: int, timeout: float = 90) -> list[Case]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with drive.session() as s:
            found = s.exec(select(Case).where(Case.parent_id == parent).order_by(Case.id)).all()
        if len(found) >= n:
            return list(found)
        time.sleep(0.2)
    raise AssertionError(f"{len(found)} cases linked to {parent}, expected {n}")


def test_five_minute_talk_opens_two_new_linked_repairs(drive: RepairDriver) -> None:
    t = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    run_id, case_id = on_site(drive, t)
    drive.act(case_id, "solution-plan-signature", "signed", t + timedelta(minutes=55), run_id=run_id)
    repaired(drive, run_id, case_id, t + timedelta(minutes=100),
             problems="[2] 核心交换机端口间歇闪断\n机房空调温度偏高")
    drive.pending(case_id, "service-report-signature", run_id)
    # each new repair run takes its own case: which of the two is written first is a race
    children = sorted(_cases_with_parent(drive, case_id, 2), key=lambda c: c.severity)
    assert [(c.kind, c.severity, c.channel, c.description) for c in children] == [
        ("repair", 2, "现场", "核心交换机端口间歇闪断"), ("repair", 4, "现场", "机房空调温度偏高")]
    assert all(c.flow_run_id for c in children)  # each is its own repair flow run
    events = drive.events(case_id)
    assert events.count("linked_case_opened") == 2 and "five_minute_talk" in events
    with drive.session() as s:
        service = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "service_report")).one()
        assert "核心交换机端口间歇闪断" in service.content


def test_director_hands_an_unfinished_repair_over_to_the_accident_flow(drive: RepairDriver) -> None:
    t = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    revised = PLAN_V1 + "\n现场再分析：先排查主板供电，再更换 PSU2。"
    run_id, case_id = on_site(drive, t, parts="PSU-9000W x1", revised_plan=revised)
    with drive.session() as s:
        asked = s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == "parts-1")).one()
    assert "PSU-9000W" in asked.content and "备件库中没有" in asked.content  # the lead is told why
    drive.act(case_id, "solution-plan-signature", "signed", t + timedelta(minutes=55), run_id=run_id)
    drive.act(case_id, "repair-1", "submitted", t + timedelta(minutes=90), run_id=run_id, fields={
        "completed": "否", "work_done": "更换 PSU 后仍无法上电", "anomaly": "主板供电异常，业务中断"})
    drive.act(case_id, "guidance-1", "submitted", t + timedelta(minutes=100), run_id=run_id,
              fields={"guidance": "检查主板供电，无果则升级", "solvable": "否"})
    drive.act(case_id, "handover", "approved", t + timedelta(minutes=110), run_id=run_id, comment="主板故障，转事故处理")
    drive.finish(run_id)  # the repair flow records the hand-over and ends
    with drive.session() as s:
        from models import Event

        handed = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "handed_over")).one()
    accident_run = handed.data["accident_run"]
    try:
        accident = _cases_with_parent(drive, case_id, 1)[0]
    except AssertionError as exc:
        state = drive.h.read(accident_run).state
        raise AssertionError(f"{exc}; accident run {accident_run}: {state.name if state else '?'} "
                             f"{state.message if state else ''}") from None
    assert accident.kind == "accident"
    with drive.session() as s:
        from models import Event
        from models.assets import StockMove

        case = s.get(Case, case_id)
        assert case.status == "handed_over"
        # the director's reason reaches the accident; the repair's own clocks stop, judged neither met nor
        # breached (the accident runs its own restore clock), so the keeper does not escalate a closed case
        taken = s.exec(select(Event).where(Event.case_id == accident.id, Event.kind == "handed_over_from_repair")).one()
        assert taken.data["reason"] == "主板故障，转事故处理"
        # the corrected parts list was issued once; the plan revised on site (v2) was confirmed by the director
        moves = s.exec(select(StockMove).where(StockMove.case_id == case_id)).all()
        assert [(m.key, m.quantity) for m in moves] == [("parts-1:PSU-900W", -1)], moves
        approved = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "plan_approved")).all()
        assert [(e.data["step"], e.data["version"]) for e in approved] == [("plan-approval", 1), ("onsite-revision", 2)]
        restore = s.exec(select(Clock).where(Clock.case_id == case_id, Clock.kind == "restore")).one()
        assert restore.status == "stopped" and restore.met_at is None and restore.breached_at is None
        assert restore.next_check_at is None
    events = drive.events(case_id)
    assert [e for e in events if e in ("repair_anomaly", "lead_guidance", "handed_over")] == [
        "repair_anomaly", "lead_guidance", "handed_over"]
    assert "service_report_signed" not in events
    sent = set(drive.notifications(case_id))
    assert {("吴总监", "repair/handed_over"), ("郑协调", "repair/handed_over"),
            ("北京维护负责人", "repair/handed_over")} <= sent
