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
    return RepairRequest.model_validate(
        {
            "customer": "BJYH",
            "site": "亦庄机房",
            "reported_by": "客户 王先生 13900000000",
            "channel": "热线",
            "description": "存储阵列告警，部分 LUN 读写变慢",
            "severity": 3,
            "reported_at": at.isoformat(),
            **fields,
        }
    )


def clocks(fast: FastFlow, case_id: int) -> dict[str, str]:
    with fast.session() as s:
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
CALLBACK = {
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
}


def after_service(done_at: datetime) -> list[Say]:
    """Steps 13–17: fault report and account (filled early), callback after its timer, final approval."""
    return [
        say("fault-report", FAULT_REPORT, at=done_at + 2 * 60 * MIN),
        say(
            "written-account",
            {"account": "远程登录后检查日志，发现缓存策略被改，恢复后观察一小时正常。"},
            at=done_at + 3 * 60 * MIN,
        ),
        say("callback", CALLBACK, at=done_at + timedelta(days=1, minutes=30)),
        say("final-approval", decision="approved", at=done_at + timedelta(days=1, hours=2)),
    ]


def test_solved_remotely_goes_straight_to_the_signed_report(fast: FastFlow) -> None:
    t = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    outcome = fast.run(
        repair,
        request(t),
        at=t,
        script=[
            say(
                "diagnosis",
                {
                    "contacted_at": bj(t + 5 * MIN),
                    "fault_confirmed": "是",
                    "result": "缓存策略被改，已恢复",
                    "command_log": "$ show controller cache\n$ set cache policy=write-back",
                    "solved_remotely": "是",
                },
                at=t + 8 * MIN,
            ),
            # the customer opens the report from the signature request and signs it with a drawn signature
            say("service-report-signature", decision="signed", signer="王先生", report=True, at=t + 40 * MIN),
            *after_service(t + 40 * MIN),
        ],
    )
    assert outcome.status == "archived", outcome
    case_id = fast.case_of_run()
    # the callback waited for its timer: the scripted clock moved to its due time, then the form came
    assert fast.waits.index("timer:callback-due") < fast.waits.index("callback"), fast.waits

    events = fast.events(case_id)
    expected = [
        "opened",
        "first_contact",
        "remote_diagnosis",
        "restored",
        "service_report_signed",
        "sms_to_centre",
        "callback_done",
        "final_approved",
        "archived",
    ]
    assert [e for e in events if e in expected] == expected
    assert "plan_approved" not in events and "arrived" not in events  # no plan, no visit
    assert clocks(fast, case_id) == {
        "first_contact": "met",
        "remote_response": "met",
        "restore": "met",
        "callback": "met",
        "written_account": "met",
        "fault_report": "met",
        "workaround": "met",
        "analysis_report": "met",
    }
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "archived" and not case.out_of_contract
        reports = {r.kind: r for r in s.exec(select(Report).where(Report.case_id == case_id))}
        assert set(reports) == {"service_report", "fault_report", "callback_form", "written_account"}
        assert all(r.status == "archived" for r in reports.values())
        service = reports["service_report"]
        assert "远程解决" in service.content and "set cache policy=write-back" in service.content
        fault = reports["fault_report"]
        for label, moment in (
            ("报告时间", t),
            ("首次联系", t + 5 * MIN),
            ("远程诊断", t + 8 * MIN),
            ("业务恢复", t + 8 * MIN),
        ):
            assert f"<th>{label}</th><td>{bj(moment)}</td>" in fault.content, label
        assert "<th>到达现场</th><td>—（远程解决）</td>" in fault.content
        assert (
            "<th>项目技术负责人（远程处理）</th><td>张技术</td>" in fault.content
            and fault.issued_by == "张技术"
        )
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


PLAN_V1 = "更换故障电源模块：1. 备件出库 2. 上门热插拔更换 PSU 3. 检查告警清除，预计 30 分钟"


def on_site(t: datetime, *, parts: str = "PSU-900W x1", revised_plan: str = "") -> list[Say]:
    """Steps 1–6 with a hardware fault: diagnosis, director's approval, parts, visit, arrival, re-analysis.
    A parts list the store cannot take is corrected by the lead; a plan revised on site goes to the director."""
    return [
        say(
            "diagnosis",
            {
                "contacted_at": bj(t + 3 * MIN),
                "fault_confirmed": "是",
                "result": "PSU2 故障",
                "command_log": "$ ipmitool sdr | grep PSU",
                "solved_remotely": "否",
                "plan": PLAN_V1,
                "parts": parts,
            },
            at=t + 4 * MIN,
        ),
        say("plan-approval", decision="approved", at=t + 15 * MIN),
        *([say("parts-1", {"parts": "PSU-900W x1"}, at=t + 16 * MIN)] if parts != "PSU-900W x1" else []),
        say("visit", {"visit_at": bj(t + 45 * MIN), "coordinator_joins": "否"}, at=t + 18 * MIN),
        say(
            "onsite",
            {
                "arrived_at": bj(t + 40 * MIN),
                "room_rules_followed": "是",
                "findings": "确认 PSU2 损坏",
                "revised_plan": revised_plan,
            },
            at=t + 45 * MIN,
        ),
        # 001 §2.2.5.2: on arrival the customer signs the 技术服务申请 (on its report page)
        say(
            "service-request-signature",
            decision="signed",
            signer="北京维护负责人",
            report=True,
            at=t + 45 * MIN,
        ),
        *([say("onsite-revision", decision="approved", at=t + 50 * MIN)] if revised_plan else []),
    ]


def repaired(at: datetime, problems: str = "") -> Say:
    return say(
        "repair-1",
        {
            "completed": "是",
            "work_done": "更换 PSU2，告警清除",
            "repaired_at": bj(at - 5 * MIN),
            "maintenance": "清洁风扇滤网，检查其余电源",
            "problems": problems,
            "restored_at": bj(at - 10 * MIN),
        },
        at=at,
    )


def hardware(t: datetime, **fields: Any) -> RepairRequest:
    return request(t, description="服务器电源模块故障灯亮，冗余失效", severity=2, **fields)


def test_on_site_repair_with_one_objection_and_a_revised_plan(fast: FastFlow) -> None:
    t = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    outcome = fast.run(
        repair,
        hardware(t),
        at=t,
        script=[
            *on_site(t),
            say(
                "solution-plan-signature",
                decision="objected",
                comment="更换前请先备份配置，并安排在午休时间",
                at=t + 55 * MIN,
            ),
            say(
                "plan-v2",
                {"plan": PLAN_V1 + "；更换前备份 BMC 与 RAID 配置，12:00 午休时实施"},
                at=t + 60 * MIN,
            ),
            say("plan-approval", decision="approved", at=t + 65 * MIN),
            say("solution-plan-signature", decision="signed", at=t + 70 * MIN),
            repaired(t + 120 * MIN),
            say(
                "service-report-signature",
                decision="signed",
                signer="北京维护负责人",
                report=True,
                at=t + 130 * MIN,
            ),
            *after_service(t + 130 * MIN),
        ],
    )
    assert outcome.status == "archived", outcome
    case_id = fast.case_of_run()
    events = fast.events(case_id)
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
    assert clocks(fast, case_id) == {
        "first_contact": "met",
        "remote_response": "met",
        "restore": "met",
        "spare_part": "met",
        "arrival": "met",
        "callback": "met",
        "written_account": "met",
        "fault_report": "met",
        "analysis_report": "met",
        # no workaround was given and the service came back after 110 min: past the 30 min of level 2
        "workaround": "breached",
    }
    with fast.session() as s:
        # the restore clock stood still while each plan version was with the customer
        restore = s.exec(select(Clock).where(Clock.case_id == case_id, Clock.kind == "restore")).one()
        paused = [
            (datetime.fromisoformat(p["from"]), datetime.fromisoformat(p["to"])) for p in restore.pauses
        ]
        assert paused == [(t + 45 * MIN, t + 55 * MIN), (t + 65 * MIN, t + 70 * MIN)], restore.pauses
        plans = s.exec(
            select(Report)
            .where(Report.case_id == case_id, Report.kind == "solution_plan")
            .order_by(Report.version)
        ).all()
        assert [(p.version, p.status) for p in plans] in (
            [(1, "superseded"), (2, "archived")],
            [(1, "superseded"), (2, "issued")],
        )
        assert "午休" in plans[1].content and "客户提出异议后修订" in plans[1].content
        v2_signatures = s.exec(select(Signature).where(Signature.report_id == plans[1].id)).all()
        assert len(v2_signatures) == 1 and v2_signatures[0].is_valid_for(plans[1])
        service = s.exec(
            select(Report).where(Report.case_id == case_id, Report.kind == "service_report")
        ).one()
        assert (
            "现场维修" in service.content and "900W 电源模块" in service.content and "v2" in service.content
        )
    sent = set(fast.notifications(case_id))
    assert ("何备件", "repair/parts_issued") in sent
    assert ("郑协调", "repair/visit_coordinator") in sent and (
        "北京维护负责人",
        "repair/visit_booked",
    ) in sent
    assert ("郑协调", "repair/visit_booked") not in sent  # the customer's notice is not the coordinator's
    assert ("吴总监", "approval_request") in sent and ("张技术", "form_request") in sent
    assert ("北京维护负责人", "signature_request") in sent
    # the step ledger: every step recorded once under its key, every wait's decided read among them
    with fast.session() as s:
        from models.steps import StepRecord

        keys = s.exec(select(StepRecord.key).where(StepRecord.flow_run_id == fast.run_id)).all()
    assert len(keys) == len(set(keys)) and sum(k.startswith("approval-status:") for k in keys) >= 12


def test_director_sends_the_first_plan_back_to_the_lead(fast: FastFlow) -> None:
    from models.approvals import Approval

    t = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    waiting = fast.run(
        repair,
        request(t, description="交换机端口频繁闪断"),
        at=t,
        until="visit",
        script=[
            say(
                "diagnosis",
                {
                    "contacted_at": bj(t + 5 * MIN),
                    "result": "光模块疑似老化",
                    "solved_remotely": "否",
                    "plan": "上门更换光模块，观察端口状态",
                },
                at=t + 8 * MIN,
            ),
            say("plan-approval", decision="revise", comment="先核对备件库存并写明回退步骤", at=t + 20 * MIN),
            say(
                "plan-v2",
                {"plan": "上门更换光模块；无备件时临时改用备用端口；失败则回退到原端口并联系原厂"},
                at=t + 30 * MIN,
            ),
            say("plan-approval", decision="approved", at=t + 35 * MIN),
        ],
    )
    assert waiting.step == "visit"  # the approved v2 goes on to the visit booking
    case_id = fast.case_of_run()
    events = fast.events(case_id)
    assert [e for e in events if e.startswith("plan_")] == [
        "plan_written",
        "plan_returned",
        "plan_revised",
        "plan_approved",
    ]
    with fast.session() as s:
        approvals = s.exec(
            select(Approval)
            .where(Approval.case_id == case_id, Approval.step == "plan-approval")
            .order_by(Approval.version)
        ).all()  # type: ignore[arg-type]
        assert [(a.version, a.decision) for a in approvals] == [(1, "revise"), (2, "approved")]
        # "要求修改": the lead's form comes filled in with the plan to change
        revision = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "plan-v2")
        ).one()
        assert (
            revision.form["values"] == {"plan": "上门更换光模块，观察端口状态"}
            and "请修订" in revision.subject
        )
    sent = fast.notifications(case_id)
    assert sent.count(("吴总监", "approval_request")) == 2  # v1 and v2
    assert ("张技术", "form_request") in sent  # the lead is asked to revise
    assert not [who for who, template in sent if template == "plan_rejected"]  # a revision is no rejection


def test_a_rejected_plan_is_made_anew_with_the_engineer_not_edited(fast: FastFlow) -> None:
    """ "驳回" refuses the plan as a whole: the lead gets an empty form (not the old plan to edit), the
    engineer is told why, and the new version records that it follows a rejection."""
    from models.approvals import Approval

    t = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    diagnosis = say(
        "diagnosis",
        {
            "contacted_at": bj(t + 5 * MIN),
            "result": "风扇模块故障",
            "solved_remotely": "否",
            "plan": "业务高峰期直接热插拔更换风扇模块",
        },
        at=t + 8 * MIN,
    )
    rejected = say(
        "plan-approval",
        decision="rejected",
        comment="高峰期操作风险过大，须改在维护窗口并先切换流量",
        at=t + 20 * MIN,
    )
    run_id = "repair-rejected-plan"
    waiting = fast.run(
        repair,
        request(t, description="核心交换机风扇告警"),
        at=t,
        until="plan-v2",
        run_id=run_id,
        script=[diagnosis, rejected],
    )
    assert waiting.step == "plan-v2"
    case_id = fast.case_of_run()
    with fast.session() as s:
        anew = s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == "plan-v2")).one()
        assert "values" not in anew.form and "被驳回" in anew.subject and "驳回原因" in anew.content
    # the run goes on from its ledger (a replay, as after a wake-up): the recorded steps are not repeated
    waiting = fast.run(
        repair,
        request(t, description="核心交换机风扇告警"),
        run_id=run_id,
        until="visit",
        script=[
            say(
                "plan-v2",
                {"plan": "夜间维护窗口内先将流量切到备用交换机，再更换风扇模块，观察 30 分钟后切回"},
                at=t + 40 * MIN,
            ),
            say("plan-approval", decision="approved", at=t + 45 * MIN),
        ],
    )
    assert waiting.step == "visit"
    events = fast.events(case_id)
    assert [e for e in events if e.startswith("plan_")] == [
        "plan_written",
        "plan_returned",
        "plan_revised",
        "plan_approved",
    ]
    assert events.count("opened") == 1
    with fast.session() as s:
        plans = s.exec(
            select(Report)
            .where(Report.case_id == case_id, Report.kind == "solution_plan")
            .order_by(Report.version)
        ).all()  # type: ignore[arg-type]
        assert "技术总监驳回后重新制定" in plans[-1].content
    sent = fast.notifications(case_id)
    assert ("刘工程师", "plan_rejected") in sent or ("陈工程师", "plan_rejected") in sent


def test_lapsed_contract_is_taken_as_paid_service_and_every_message_says_so(fast: FastFlow) -> None:
    from models.outbox import Notification

    t = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    req = request(t, customer="TYDX", site=None, description="图书馆机房 UPS 告警")
    assert fast.run(repair, req, at=t, until="diagnosis", script=[], run_id="lapsed").step == "diagnosis"
    case_id = fast.case_of_run()
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.out_of_contract
        assert "已于 2026-03-31 到期" in case.data["paid_service_reason"]
        rows = s.exec(select(Notification).where(Notification.case_id == case_id)).all()
        assert {r.template for r in rows} >= {"repair/opened", "repair/received", "form_request"}
        for row in rows:
            assert "有偿服务" in row.subject + row.body, (row.template, row.subject)
    waiting = fast.run(
        repair,
        req,
        run_id="lapsed",
        until="service-report-signature",
        script=[
            say(
                "diagnosis",
                {"contacted_at": bj(t + 5 * MIN), "result": "电池老化告警", "solved_remotely": "是"},
                at=t + 8 * MIN,
            )
        ],
    )
    assert waiting.step == "service-report-signature"
    with fast.session() as s:
        report = s.exec(
            select(Report).where(Report.case_id == case_id, Report.kind == "service_report")
        ).one()
        assert "合同外 / 有偿服务" in report.content


def test_unknown_customer_or_foreign_site_fails_the_run_with_a_clear_message(fast: FastFlow) -> None:
    t = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    state = fast.run(
        repair,
        RepairRequest.model_validate(
            {
                "customer": "BJYH",
                "site": "门诊楼机房",
                "reported_by": "x",
                "description": "无法登录",
                "reported_at": t.isoformat(),
            }
        ),
        at=t,
        script=[],
    )
    assert state.is_failed() and "不属于客户" in state.message and "Traceback" not in state.message
    with fast.session() as s:
        assert s.exec(select(Case)).all() == []  # nothing written


def test_five_minute_talk_opens_two_new_linked_repairs(fast: FastFlow) -> None:
    t = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    waiting = fast.run(
        repair,
        hardware(t),
        at=t,
        until="service-report-signature",
        script=[
            *on_site(t),
            say("solution-plan-signature", decision="signed", at=t + 55 * MIN),
            repaired(t + 100 * MIN, problems="[2] 核心交换机端口间歇闪断\n机房空调温度偏高"),
        ],
    )
    assert waiting.step == "service-report-signature"
    case_id = fast.case_of_run()
    assert [name for name, _, _ in fast.started] == ["repair/repair", "repair/repair"]
    for _, params, run_id in list(fast.started):  # each new repair run takes its own case
        child = fast.run(
            repair,
            RepairRequest.model_validate(params["request"]),
            run_id=run_id,
            until="diagnosis",
            script=[],
        )
        assert child.step == "diagnosis"
    with fast.session() as s:
        children = sorted(
            s.exec(select(Case).where(Case.parent_id == case_id)).all(), key=lambda c: c.severity
        )
    assert [(c.kind, c.severity, c.channel, c.description) for c in children] == [
        ("repair", 2, "现场", "核心交换机端口间歇闪断"),
        ("repair", 4, "现场", "机房空调温度偏高"),
    ]
    assert all(c.flow_run_id for c in children)  # each is its own repair flow run
    events = fast.events(case_id)
    assert events.count("linked_case_opened") == 2 and "five_minute_talk" in events
    with fast.session() as s:
        service = s.exec(
            select(Report).where(Report.case_id == case_id, Report.kind == "service_report")
        ).one()
        assert "核心交换机端口间歇闪断" in service.content


def test_director_hands_an_unfinished_repair_over_to_the_accident_flow(fast: FastFlow) -> None:
    from flows.accident import accident
    from models import Event
    from models.approvals import Approval
    from models.assets import StockMove
    from tasks.accident import AccidentRequest

    t = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    revised = PLAN_V1 + "\n现场再分析：先排查主板供电，再更换 PSU2。"
    outcome = fast.run(
        repair,
        hardware(t),
        at=t,
        script=[
            *on_site(t, parts="PSU-9000W x1", revised_plan=revised),
            say("solution-plan-signature", decision="signed", at=t + 55 * MIN),
            say(
                "repair-1",
                {
                    "completed": "否",
                    "work_done": "更换 PSU 后仍无法上电",
                    "anomaly": "主板供电异常，业务中断",
                },
                at=t + 90 * MIN,
            ),
            say("guidance-1", {"guidance": "检查主板供电，无果则升级", "solvable": "否"}, at=t + 100 * MIN),
            say("handover", decision="approved", comment="主板故障，转事故处理", at=t + 110 * MIN),
        ],
    )
    assert outcome.status == "handed_over"  # the repair flow records the hand-over and ends
    case_id = fast.case_of_run()
    with fast.session() as s:
        asked = s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == "parts-1")).one()
    assert "PSU-9000W" in asked.content and "备件库中没有" in asked.content  # the lead is told why
    [(deployment, params, accident_run)] = fast.started
    assert deployment == "accident/accident" and outcome.accident_run == accident_run
    fast.run(
        accident, AccidentRequest.model_validate(params["request"]), run_id=accident_run, until="*", script=[]
    )
    with fast.session() as s:
        [accident_case] = s.exec(select(Case).where(Case.parent_id == case_id)).all()
        assert accident_case.kind == "accident"
        case = s.get(Case, case_id)
        assert case is not None and case.status == "handed_over"
        # the director's reason reaches the accident; the repair's own clocks stop, judged neither met nor
        # breached (the accident runs its own restore clock), so the keeper does not escalate a closed case
        taken = s.exec(
            select(Event).where(Event.case_id == accident_case.id, Event.kind == "handed_over_from_repair")
        ).one()
        assert taken.data["reason"] == "主板故障，转事故处理"
        # the corrected parts list was issued once; the plan revised on site (v2) was confirmed by the director
        moves = s.exec(select(StockMove).where(StockMove.case_id == case_id)).all()
        assert [(m.key, m.quantity) for m in moves] == [("parts-1:PSU-900W", -1)], moves
        approved = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "plan_approved")).all()
        assert [(e.data["step"], e.data["version"]) for e in approved] == [
            ("plan-approval", 1),
            ("onsite-revision", 2),
        ]
        restore = s.exec(select(Clock).where(Clock.case_id == case_id, Clock.kind == "restore")).one()
        assert restore.status == "stopped" and restore.met_at is None and restore.breached_at is None
        assert restore.next_check_at is None
    events = fast.events(case_id)
    assert [e for e in events if e in ("repair_anomaly", "lead_guidance", "handed_over")] == [
        "repair_anomaly",
        "lead_guidance",
        "handed_over",
    ]
    assert "service_report_signed" not in events
    sent = set(fast.notifications(case_id))
    assert {
        ("吴总监", "repair/handed_over"),
        ("郑协调", "repair/handed_over"),
        ("北京维护负责人", "repair/handed_over"),
    } <= sent


def test_a_refused_answer_records_nothing_and_the_wait_takes_the_next_one(fast: FastFlow) -> None:
    """The fast layer answers through the real decide(): a contact time in the future and a person who
    is not the approver are refused with their Chinese reasons, nothing recorded, the run still waits."""
    from models.approvals import Approval

    t = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    good = {"contacted_at": bj(t + 5 * MIN), "result": "缓存策略被改，已恢复", "solved_remotely": "是"}
    waiting = fast.run(
        repair,
        request(t),
        at=t,
        until="service-report-signature",
        script=[
            say(
                "diagnosis", {**good, "contacted_at": bj(t + 3 * 60 * MIN)}, at=t + 8 * MIN
            ),  # later than its answer
            say("diagnosis", good, by="王值班", at=t + 9 * MIN),  # the dispatcher is not the step's approver
            say("diagnosis", good, at=t + 10 * MIN),
        ],
    )
    assert waiting.step == "service-report-signature"
    assert [step for step, _ in fast.refused] == ["diagnosis", "diagnosis"], fast.refused
    assert (
        fast.refused[0][1]
        == "未记录，请更正：「首次联系客户时间」不能晚于当前时间（现在是 2026-11-23 10:08）"
    )
    assert "无权" in fast.refused[1][1]
    with fast.session() as s:
        row = s.exec(select(Approval).where(Approval.step == "diagnosis")).one()
    assert row.decided_by == "张技术" and row.decided_at == t + 10 * MIN
