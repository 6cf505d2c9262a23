"""The accident flow's branches (事故处理服务流程, PROCEDURES.md §3) on the fast layer
(tests/fixtures/fastflow.py): the flow body in-process, its answers scripted, every answer recorded
by the real decide(), the clock keeper ticked at scripted moments while the flow waits.
The end-to-end run on a real Prefect server, links clicked, is tests/test_accident_flow.py."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import select

from flows.accident import accident
from models import Case, Event
from models.approvals import Approval
from models.outbox import Notification
from tasks.accident import AccidentRequest
from tasks.approvals import signature_step
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, Say, say

H, MIN = timedelta(hours=1), timedelta(minutes=1)
LEAD, DIRECTOR, GM, DISPATCHER = "张技术", "吴总监", "冯总经理", "王值班"
CUSTOMER, COORDINATOR, VENDOR = "北京维护负责人", "郑协调", "原厂支持"
SIGN = signature_step("solution_plan")

PLAN = {
    "measures": "隔离故障存储控制器，业务切换到备用控制器",
    "steps": "隔离故障控制器 | 20\n切换到备用控制器并校验业务 | 40",
    "expected_effect": "网银业务在 1 小时内恢复",
    "fallback": "切回原控制器，启用同档次备机",
    "executor": "孙专家",
    "tools": "笔记本、串口线",
    "spare_parts": "",
    "needs_testing": "否",
}
# 事故后预防性维护 (PROCEDURES.md §3 step 7), as the lead fills it in
MAINTENANCE = {
    "devices": "核心存储 A 控制器、B 控制器",
    "maintenance": "升级两台控制器固件，清洁风扇，检查电源冗余",
    "findings": "",
}
SCORES = {
    k: "优"
    for k in (
        "response",
        "arrival",
        "fix_speed",
        "spare_parts",
        "one_visit",
        "follow_up",
        "attitude",
        "skill",
        "overall",
    )
}


def request(**form: Any) -> AccidentRequest:
    return AccidentRequest.model_validate(
        {
            "customer": "BJYH",
            "site": "亦庄机房",
            "reported_by": "客户 李四 13900000000",
            "description": "核心存储控制器故障，网银业务中断",
            "severity": 1,
            "reported_at": T0.isoformat(),
            **form,
        }
    )


def plan_to_execution(
    version: int,
    at: datetime,
    plan: dict[str, str] | None = None,
    tested: bool | None = None,
    ticks: tuple[datetime, ...] = (),
) -> tuple[list[Say], datetime]:
    """The common stretch of the procedure: plan → director → (test) → customer."""
    script = [
        say(f"accident-plan-v{version}", plan or PLAN, by=LEAD, at=at, ticks=ticks),
        say("plan-approval", decision="approved", by=DIRECTOR, at=at + 10 * MIN),
    ]
    if tested is not None:
        script.append(
            say(
                "plan-test",
                {"passed": "是" if tested else "否", "note": "测试环境复现" if tested else "切换后仍报错"},
                by=DIRECTOR,
                at=at + 20 * MIN,
            )
        )
        if not tested:
            return script, at + 20 * MIN
    script.append(say(SIGN, decision="signed", by=CUSTOMER, report=True, at=at + 30 * MIN))
    return script, at + 30 * MIN


def finish_after_restore(restored_at: datetime, *, gm_rejects: bool = False) -> list[Say]:
    """§3 steps 7–10 as people do them: talk, report signed, callback, summary, review, GM."""
    signed = restored_at + 40 * MIN
    review = {
        "participants": f"{DIRECTOR}、{LEAD}、孙专家、周专家",
        "conclusion": "固件缺陷，处理得当",
        "actions": "全网同型号控制器升级固件",
    }
    script = [
        say("maintenance", MAINTENANCE, by=LEAD, at=restored_at + 5 * MIN),
        say("five-minute-talk", {"problems": ""}, by=LEAD, at=restored_at + 10 * MIN),
        say(signature_step("accident_report"), decision="signed", by=CUSTOMER, report=True, at=signed),
        say(
            "callback",
            {"customer_person": CUSTOMER, **SCORES, "comments": "处理及时"},
            by=DISPATCHER,
            at=signed + timedelta(days=1, hours=1),
        ),
        say(
            "written-account",
            {"account": "控制器固件缺陷导致双控切换失败；已升级固件并调整巡检项。"},
            by=LEAD,
            at=signed + timedelta(days=2),
        ),
        say("review-meeting", review, by=DIRECTOR, at=signed + timedelta(days=3)),
    ]
    if gm_rejects:
        script += [
            say(
                "gm-sign-off",
                decision="rejected",
                by=GM,
                at=signed + timedelta(days=4),
                comment="请补充对客户的赔付评估",
            ),
            say(
                "review-meeting",
                {**review, "actions": review["actions"] + "；赔付评估：按合同无需赔付"},
                by=DIRECTOR,
                at=signed + timedelta(days=5),
            ),
            say("gm-sign-off", decision="approved", by=GM, at=signed + timedelta(days=6)),
        ]
    else:
        script.append(say("gm-sign-off", decision="approved", by=GM, at=signed + timedelta(days=4)))
    return script


def events(fast: FastFlow, case_id: int, kind: str) -> list[Event]:
    with fast.session() as s:
        return list(
            s.exec(select(Event).where(Event.case_id == case_id, Event.kind == kind).order_by(Event.id))
        )


def sent(fast: FastFlow, case_id: int, template: str | None = None) -> Counter[tuple[str, str]]:
    """(template, recipient) → how many outbox rows this case wrote."""
    with fast.session() as s:
        rows = s.exec(select(Notification).where(Notification.case_id == case_id)).all()
    return Counter((r.template, r.recipient_name) for r in rows if template is None or r.template == template)


def decided_by(fast: FastFlow, case_id: int) -> set[tuple[str, str]]:
    """(step, who decided) of every decided approval: each answer was given by the person scripted."""
    with fast.session() as s:
        return {
            (a.step, a.decided_by or "")
            for a in s.exec(select(Approval).where(Approval.case_id == case_id))
            if a.decision
        }


def test_plan_works_first_time_and_a_gm_rejection_goes_back_to_the_director(fast: FastFlow) -> None:
    from models.reports import Report

    plan, at = plan_to_execution(1, T0 + 30 * MIN)
    restored = at + 40 * MIN
    fast.run(
        accident,
        request(),
        at=T0,
        script=[
            *plan,
            say("plan-execution", {"result": "restored", "note": "已恢复"}, by=LEAD, at=restored),
            *finish_after_restore(restored, gm_rejects=True),
        ],
    )
    case_id = fast.case_of_run()
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "archived" and case.closed_at is not None
    assert ("gm-sign-off", GM) in decided_by(fast, case_id) and (SIGN, CUSTOMER) in decided_by(fast, case_id)
    kinds = fast.events(case_id)
    order = [
        "opened",
        "accident_opened",
        "team_formed",
        "plan_submitted",
        "plan_approved",
        "plan_signed",
        "execution_result",
        "restored",
        "preventive_maintenance",
        "five_minute_talk",
        "accident_report_signed",
        "sms_to_centre",
        "callback_done",
        "review_meeting_held",
        "gm_rejected",
        "gm_signed_off",
        "archived",
    ]
    positions = [kinds.index(k) for k in order]
    assert positions == sorted(positions), kinds
    assert "vendor_support_started" not in kinds and "director_on_site" not in kinds
    assert [e.data["result"] for e in events(fast, case_id, "execution_result")] == ["restored"]
    # the GM's rejection went back to the director, who held the review again (v2) before the sign-off
    [rejected] = events(fast, case_id, "gm_rejected")
    assert rejected.actor == GM and "赔付" in rejected.data["comment"]
    assert [e.data["version"] for e in events(fast, case_id, "review_meeting_held")] == [1, 2]
    assert (
        kinds.index("gm_rejected")
        < len(kinds) - 1 - kinds[::-1].index("review_meeting_held")
        < kinds.index("gm_signed_off")
    )
    with fast.session() as s:
        second = s.exec(
            select(Approval).where(
                Approval.case_id == case_id, Approval.step == "review-meeting", Approval.version == 2
            )
        ).one()
        reports = {
            (r.kind, r.version): r.status for r in s.exec(select(Report).where(Report.case_id == case_id))
        }
    assert "赔付" in second.content  # the director sees the GM's reason
    assert reports[("accident_report", 1)] == "archived" and reports[("accident_summary", 1)] == "archived"
    assert reports[("accident_review", 2)] == "archived"
    out = sent(fast, case_id)
    # step 1: the lead goes on site, the director and the coordinator are told
    assert {r for (t, r) in out if t == "accident_opened"} == {LEAD, DIRECTOR, COORDINATOR}
    # step 2: every team member is told who is in the team and who speaks to the customer
    assert {r for (t, r) in out if t == "accident_team"} == {LEAD, "孙专家", "周专家", "刘工程师"}
    assert {r for (t, r) in out if t == "accident_restored"} == {COORDINATOR, DIRECTOR, CUSTOMER}
    assert {r for (t, r) in out if t == "accident_archived"} == {DIRECTOR, COORDINATOR}
    assert not [
        k
        for k in out
        if k[0]
        in (
            "accident_vendor_support",
            "accident_vendor_daily",
            "accident_director_on_site",
            "accident_standby",
        )
    ]


def test_failed_tests_past_the_window_bring_in_the_vendor_and_a_partial_fix_the_director(
    fast: FastFlow,
) -> None:
    tested = dict(PLAN, needs_testing="是")
    first, failed_1 = plan_to_execution(1, T0 + H, plan=tested, tested=False)  # T0+1h20: inside the window
    second, failed_2 = plan_to_execution(
        2, failed_1 + 2 * H, plan=tested, tested=False
    )  # T0+3h40: window over
    # while the vendor is engaged it gets a daily report (the keeper, a day later)
    third, at = plan_to_execution(3, failed_2 + 25 * H, ticks=(failed_2 + 24 * H,))
    partial = say(
        "plan-execution",
        {"result": "partial", "note": "部分业务恢复", "standby_needed": "是"},
        by=LEAD,
        at=at + H,
    )
    fourth, at = plan_to_execution(4, at + 2 * H)
    waiting = fast.run(
        accident,
        request(tolerance_hours=3),
        at=T0,
        until="maintenance",
        script=[
            *first,
            *second,
            *third,
            partial,
            *fourth,
            say("plan-execution", {"result": "restored"}, by=LEAD, at=at + H),
        ],
    )
    assert waiting.step == "maintenance"
    case_id = fast.case_of_run()
    fast.tick(failed_2 + 72 * H)  # restored: no more daily reports
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "restored"
    assert [e.data["version"] for e in events(fast, case_id, "plan_test_failed")] == [1, 2]
    vendor = events(fast, case_id, "vendor_support_started")
    # the window (3 h) closed before the second test failed: the support dates from its close
    assert vendor[0].at == T0 + 3 * H and vendor[0].actor == DIRECTOR and vendor[0].data["attempt"] == 1
    assert [e.data["version"] for e in events(fast, case_id, "plan_submitted")] == [1, 2, 3, 4]
    assert [e.data["result"] for e in events(fast, case_id, "execution_result")] == ["partial", "restored"]
    assert [e.data["version"] for e in events(fast, case_id, "director_on_site")] == [3]
    assert [e.data["attempt"] for e in vendor] == [1, 2]
    # the standby machine went out by itself at half of the 4-hour restore time; the lead's later
    # request found it there and sent nothing twice
    [standby] = events(fast, case_id, "standby_machine_requested")
    assert standby.at == T0 + 2 * H and standby.actor == "system"
    assert sent(fast, case_id, "accident_vendor_support") == {
        ("accident_vendor_support", p): 2 for p in (VENDOR, DIRECTOR)
    }
    assert sent(fast, case_id, "accident_vendor_daily") == {("accident_vendor_daily", VENDOR): 1}
    assert sent(fast, case_id, "accident_director_on_site") == {("accident_director_on_site", DIRECTOR): 1}
    assert sent(fast, case_id, "accident_standby") == {
        ("accident_standby", p): 1 for p in (VENDOR, "何备件", COORDINATOR)
    }


def test_an_incomplete_form_a_rejection_and_an_objection_each_give_a_structured_plan(fast: FastFlow) -> None:
    from tasks.accident import accident_report_context

    at = T0 + 30 * MIN
    v2 = dict(PLAN, steps="切换到备用控制器并校验业务 | 40\n隔离故障控制器 | 20")
    v3 = dict(v2, measures="22:00 业务低峰后隔离故障存储控制器，业务切换到备用控制器")
    waiting = fast.run(
        accident,
        request(),
        at=T0,
        until="maintenance",
        script=[
            # a step line without its minutes is not taken: the lead gets the form again, told what is wrong
            say("accident-plan-v1", dict(PLAN, steps="隔离故障控制器"), by=LEAD, at=at),
            say("accident-plan-v1-again1", PLAN, by=LEAD, at=at + 5 * MIN),
            # the director sends v1 back: the lead writes v2 on the accident plan form, with the reason shown
            say("plan-approval", decision="rejected", by=DIRECTOR, comment="先切换再隔离", at=at + 10 * MIN),
            say("accident-plan-v2", v2, by=LEAD, at=at + 20 * MIN),
            say("plan-approval", decision="approved", by=DIRECTOR, at=at + 25 * MIN),
            # the customer objects to v2: v3 on the same form, approved by the director again, then signed
            say(
                SIGN, decision="objected", by=CUSTOMER, comment="请在 22:00 业务低峰后切换", at=at + 40 * MIN
            ),
            say("accident-plan-v3", v3, by=LEAD, at=at + 50 * MIN),
            say("plan-approval", decision="approved", by=DIRECTOR, at=at + 55 * MIN),
            say(SIGN, decision="signed", by=CUSTOMER, report=True, at=at + 60 * MIN),
            say("plan-execution", {"result": "restored"}, by=LEAD, at=at + 120 * MIN),
        ],
    )
    assert waiting.step == "maintenance"
    case_id = fast.case_of_run()
    with fast.session() as s:
        again = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "accident-plan-v1-again1")
        ).one()
        form_v2 = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "accident-plan-v2")
        ).one()
    assert "分钟数" in again.content  # the message names the missing part
    assert "先切换再隔离" in form_v2.content
    assert [e.data["version"] for e in events(fast, case_id, "plan_submitted")] == [1, 2, 3]
    assert [e.data["version"] for e in events(fast, case_id, "plan_returned")] == [1]
    assert [e.data["version"] for e in events(fast, case_id, "plan_objected")] == [2]
    assert [e.data["version"] for e in events(fast, case_id, "plan_signed")] == [3]
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "restored"
    assert sorted(case.data["plans"]) == ["1", "2", "3"] and case.data["final_plan_version"] == 3
    assert (
        "先切换再隔离" in case.data["plans"]["2"]["reason"] and "22:00" in case.data["plans"]["3"]["reason"]
    )
    # the report shows the structured plan that was carried out (v3), not v1
    facts = accident_report_context.fn(case_id)
    assert facts["final_version"] == 3
    assert facts["final_plan"]["measures"].startswith("22:00")
    assert [step["action"] for step in facts["final_plan"]["steps"]] == [
        "切换到备用控制器并校验业务",
        "隔离故障控制器",
    ]


def test_handover_from_a_repair_keeps_its_history_and_30_hours_bring_30_hourly_updates(
    fast: FastFlow,
) -> None:
    from models import CaseKind, append_event
    from models.db import session_scope
    from tasks.accident import accident_history
    from tasks.cases import RepairRequest, open_case, start_accident_run

    with session_scope() as s:
        repair = open_case(
            s,
            RepairRequest(
                customer="BJYH",
                site="亦庄机房",
                reported_by="客户 王五",
                description="存储阵列告警，性能下降",
                severity=2,
                reported_at=T0,
            ),
            kind=CaseKind.REPAIR,
            now=T0,
        )
        append_event(s, repair.id, "remote_diagnosis", at=T0 + H, actor=LEAD, key="remote")
        repair_id, repair_number = repair.id, repair.number
    from tasks.answering import responding

    with responding(fast):  # the repair's hand-over step starts the accident run: noted, run here next
        run_id = start_accident_run.fn(repair_id, "维修无法完成", f"{repair_id}:accident:1")
    [(deployment, params, started_id)] = fast.started
    assert deployment == "accident/accident" and started_id == run_id
    req = AccidentRequest.model_validate(params["request"])
    fast.run(accident, req, at=T0 + 2 * H, run_id=run_id, until="accident-plan-v1", script=[])
    case_id = fast.case_of_run(run_id)
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.data.get("accident_team")
    assert case.parent_id == repair_id and case.data["found_by"] == "repair" and case.severity == 2
    assert case.description == "存储阵列告警，性能下降"
    [handover] = events(fast, case_id, "handed_over_from_repair")
    assert handover.data["repair"] == repair_number
    assert [h["kind"] for h in handover.data["history"]] == ["opened", "remote_diagnosis"]
    with fast.session() as s:
        repair_kinds = [e.kind for e in s.exec(select(Event).where(Event.case_id == repair_id))]
        history = [line["text"] for line in accident_history(s, case_id)]
    assert "handed_over_to_accident" in repair_kinds and "linked_case_opened" in repair_kinds
    assert history[:2] == [
        "[维修单] 工单受理（热线，2 级）",
        "[维修单] 远程诊断",
    ]  # Chinese, never the raw kind
    assert {r for (_, r) in sent(fast, case_id, "accident_opened")} == {LEAD, DIRECTOR, COORDINATOR}

    started = case.reported_at
    plan, _ = plan_to_execution(1, started + 10 * MIN)
    # the keeper ticks every hour while the plan is carried out; the run replays from its ledger
    hourly = tuple(started + hour * H + timedelta(seconds=30) for hour in range(1, 31))
    waiting = fast.run(
        accident,
        req,
        run_id=run_id,
        until="maintenance",
        script=[
            *plan,
            say(
                "plan-execution",
                {"result": "restored"},
                by=LEAD,
                at=started + 30 * H + 30 * MIN,
                ticks=hourly,
            ),
        ],
    )
    assert waiting.step == "maintenance"
    for hour in (31, 32, 40):
        fast.tick(started + hour * H)
    with fast.session() as s:
        restored = s.get(Case, case_id)
        assert restored is not None and restored.status == "restored"
    assert [e.data["n"] for e in events(fast, case_id, "progress_update")] == list(range(1, 31))
    assert sent(fast, case_id, "accident_progress") == {
        ("accident_progress", COORDINATOR): 30,
        ("accident_progress", CUSTOMER): 30,
    }
    [standby] = events(
        fast, case_id, "standby_machine_requested"
    )  # half of the 4-hour restore time of severity 2
    assert standby.at == started + 2 * H and standby.actor == "system"
    assert (
        events(fast, case_id, "vendor_support_started") == []
        and events(fast, case_id, "director_on_site") == []
    )
