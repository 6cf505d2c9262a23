"""The repair flow's branches (PROCEDURES.md §2) on the fast layer (tests/fixtures/fastflow.py):
the flow body in-process, its answers scripted, every answer recorded by the real decide().
The end-to-end run on a real Prefect server, links clicked, is tests/test_repair_flow.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
from sqlmodel import select

from flows.repair import repair
from models import Case
from models.clocks import Clock
from models.reports import Report, Signature
from tasks.cases import RepairRequest
from tests.fixtures.fastflow import FastFlow, Say, say

MIN = timedelta(minutes=1)


def bj(moment: datetime) -> str:
    """How a person types a time on the form: Beijing time."""
    return pendulum.instance(moment).in_timezone("Asia/Shanghai").strftime("%Y-%m-%d %H:%M")


def request(at: datetime, **fields: Any) -> RepairRequest:
    return RepairRequest.model_validate({
        "customer": "BJYH", "site": "亦庄机房", "reported_by": "客户 王先生 13900000000", "channel": "热线",
        "description": "存储阵列告警，部分 LUN 读写变慢", "severity": 3, "reported_at": at.isoformat(), **fields})


def clocks(fast: FastFlow, case_id: int) -> dict[str, str]:
    with fast.session() as s:
        rows = s.exec(select(Clock).where(Clock.case_id == case_id)).all()
        return {c.kind: "breached" if c.breached_at else "met" if c.met_at else "running" for c in rows}


# What the lead posts on the fault-report form (故障处理报告, PROCEDURES.md §2 step 15).
FAULT_REPORT = {
    "customer_engineer": "客户 王先生", "symptoms": "阵列告警，LUN 读写慢", "business_impact": "核心业务响应变慢",
    "process": "远程登录检查控制器日志，重新平衡缓存", "cause": "控制器缓存策略异常", "solution": "恢复缓存策略",
    "advice": "每月巡检检查缓存策略"}
CALLBACK = {"customer_person": "王先生", "centre_confirmed": "是", "response": "优", "arrival": "良", "fix_speed": "优",
            "spare_parts": "良", "one_visit": "优", "follow_up": "优", "attitude": "优", "skill": "良", "overall": "优",
            "comments": "处理及时"}


def after_service(done_at: datetime) -> list[Say]:
    """Steps 13–17: fault report and account (filled early), callback after its timer, final approval."""
    return [say("fault-report", FAULT_REPORT, at=done_at + 2 * 60 * MIN),
            say("written-account", {"account": "远程登录后检查日志，发现缓存策略被改，恢复后观察一小时正常。"},
                at=done_at + 3 * 60 * MIN),
            say("callback", CALLBACK, at=done_at + timedelta(days=1, minutes=30)),
            say("final-approval", decision="approved", at=done_at + timedelta(days=1, hours=2))]


def test_solved_remotely_goes_straight_to_the_signed_report(fast: FastFlow) -> None:
    t = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    outcome = fast.run(repair, request(t), at=t, script=[
        say("diagnosis", {"contacted_at": bj(t + 5 * MIN), "fault_confirmed": "是", "result": "缓存策略被改，已恢复",
                          "command_log": "$ show controller cache\n$ set cache policy=write-back",
                          "solved_remotely": "是"}, at=t + 8 * MIN),
        # the customer opens the report from the signature request and signs it with a drawn signature
        say("service-report-signature", decision="signed", signer="王先生", report=True, at=t + 40 * MIN),
        *after_service(t + 40 * MIN)])
    assert outcome.status == "archived", outcome
    case_id = fast.case_of_run()
    # the callback waited for its timer (2 days from the signature … its due time moved the clock)
    assert "timer:callback-2d" in fast.waits or any(w.startswith("timer:") for w in fast.waits), fast.waits

    events = fast.events(case_id)
    expected = ["opened", "first_contact", "remote_diagnosis", "restored", "service_report_signed", "sms_to_centre",
                "callback_done", "final_approved", "archived"]
    assert [e for e in events if e in expected] == expected
    assert "plan_approved" not in events and "arrived" not in events  # no plan, no visit
    assert clocks(fast, case_id) == {
        "first_contact": "met", "remote_response": "met", "restore": "met", "callback": "met",
        "written_account": "met", "fault_report": "met"}
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "archived" and not case.out_of_contract
        reports = {r.kind: r for r in s.exec(select(Report).where(Report.case_id == case_id))}
        assert set(reports) == {"service_report", "fault_report", "callback_form", "written_account"}
        assert all(r.status == "archived" for r in reports.values())
        service = reports["service_report"]
        assert "远程解决" in service.content and "set cache policy=write-back" in service.content
        fault = reports["fault_report"]
        for label, moment in (("报告时间", t), ("首次联系", t + 5 * MIN), ("远程诊断", t + 8 * MIN),
                              ("业务恢复", t + 8 * MIN)):
            assert f"<th>{label}</th><td>{bj(moment)}</td>" in fault.content, label
        assert "<th>到达现场</th><td>—（远程解决）</td>" in fault.content
        assert "<th>项目技术负责人（远程处理）</th><td>张技术</td>" in fault.content and fault.issued_by == "张技术"
        assert "<th>服务工程师</th>" not in fault.content
        for name, value in FAULT_REPORT.items():
            assert value in fault.content, name
        assert "优" in reports["callback_form"].content and "处理及时" in reports["callback_form"].content
        sigs = s.exec(select(Signature).where(Signature.report_id == service.id)).all()
        assert len(sigs) == 1 and sigs[0].method == "drawn" and sigs[0].is_valid_for(service)
    sent = set(fast.notifications(case_id))
    assert ("张技术", "repair/opened") in sent and ("刘工程师", "repair/opened") in sent
    assert ("北京维护负责人", "repair/received") in sent and ("北京维护负责人", "repair/fault_report") in sent
    assert ("王值班", "repair/done_sms") in sent and ("郑协调", "repair/callback_done") in sent
    assert not any(tpl.startswith("repair/visit") or tpl.startswith("repair/parts") for _, tpl in sent)
