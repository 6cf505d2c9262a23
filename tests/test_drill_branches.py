"""The emergency drill (应急演练, PROCEDURES.md §5) on the fast layer (tests/fixtures/fastflow.py): the
flow body in-process, every answer recorded by the real decide() the links hit, timers fired by the
real fire_due_timers, the working-day calendar real. The end-to-end run on a real Prefect server is
tests/test_drill_flow.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pendulum
from sqlmodel import col, select

from flows.drill import drill
from models import Case
from models.approvals import Approval
from models.clocks import Clock
from models.drill import DrillPlan, DrillStepResult, RecoveryPlan, TrainingTask
from models.reports import Report
from rules.calendar import add_working_days, is_working_day
from tasks.drill import DrillRequest
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, Say, say
from tests.test_inspection_flow import _new_contract

MIN = timedelta(minutes=1)


def _local(moment: datetime) -> date:
    return pendulum.instance(moment).in_timezone("Asia/Shanghai").date()


def _at(day: date, hh: int, mm: int = 0) -> datetime:
    """Beijing `day hh:mm` as UTC."""
    return pendulum.datetime(day.year, day.month, day.day, hh, mm, tz="Asia/Shanghai").in_timezone("UTC")


def _bj(moment: datetime) -> str:
    return pendulum.instance(moment).in_timezone("Asia/Shanghai").strftime("%Y-%m-%d %H:%M")


RECOVERY = {
    "scope": "核心业务系统数据库故障、主机房断电",
    "devices": "核心数据库主备两台、存储一套、核心交换机",
    "rto_minutes": "60",
    "rpo_minutes": "5",
    "steps": "确认故障并宣布启动预案 | 张技术 | 10\n切换到备用数据库 | 刘工程师 | 30\n业务验证 | 客户值班 | 15",
    "contacts": "张技术 13800000003；客户值班 010-12345678",
}
PLAN = {
    "scenario": "模拟主数据库宕机",
    "failover": "将业务切换到备用数据库",
    "restore": "演练结束后回切到主数据库",
    "steps": "停止主库服务 | 刘工程师 | 5\n切换到备库 | 刘工程师 | 20\n业务验证 | 客户值班 | 15",
    "rollback": "切换失败时立即恢复主库服务，由张技术决定",
    "business_window": "周一 09:30 至 12:00",
    "participants": "我方：张技术、刘工程师；客户：值班工程师",
}


def _request(fast: FastFlow, code: str, wished: date, **more: Any) -> DrillRequest:
    _new_contract(fast.db_url, code, _local(T0) - timedelta(days=30), _local(T0) + timedelta(days=335))
    return DrillRequest(customer=code, system="核心业务系统", kind="主备切换演练", wished_day=wished, **more)


def _steps(day: date, failed_at: int | None = None) -> list[Say]:
    """The drill lead's three step forms on `day` from 09:30 (each 5/25/10 minutes)."""
    out, start = [], _at(day, 9, 30)
    for n, minutes in ((1, 5), (2, 25), (3, 10)):
        end = start + minutes * MIN
        fields = {"started_at": _bj(start), "ended_at": _bj(end), "result": "成功"}
        if n == failed_at:
            fields.update(
                result="失败", abort="是", rollback="已恢复主库服务，业务未受影响", note="备库无法接管"
            )
        out.append(say("drill-step", fields, at=end + MIN))
        if n == failed_at:
            break
        start = end
    return out


def _approval(fast: FastFlow, case_id: int, step: str) -> list[Approval]:
    with fast.session() as s:
        return list(
            s.exec(
                select(Approval)
                .where(Approval.case_id == case_id, Approval.step == step)
                .order_by(col(Approval.id))
            ).all()
        )


def _whole_drill_script(wished: date) -> list[Say]:
    """Every answer of a drill on `wished` that goes well, from T0 to the archive (with two gaps)."""
    done = _at(wished, 10, 30)
    return [
        say("recovery-plan-v1", RECOVERY, at=T0 + 20 * MIN),
        say("recovery-plan-approval", decision="approved", by="吴总监", at=T0 + 40 * MIN),
        say("drill-plan", PLAN, at=T0 + 60 * MIN),
        say("drill-plan-approval", decision="approved", by="吴总监", at=T0 + 80 * MIN),
        say("drill-plan-signature", decision="signed", at=T0 + 100 * MIN),
        say("drill-date", {"action": "确认"}, at=T0 + 120 * MIN),
        say("drill-reconfirm-r1", {"action": "确认"}, at=_at(add_working_days(wished, -1), 11)),
        *_steps(wished),
        say(
            "drill-evaluation",
            {
                "data_loss_minutes": "2",
                "gaps": "备库切换脚本需手工确认参数\n客户值班人员不熟悉业务验证步骤",
                "meets_need": "是",
                "improvements": "切换脚本参数化",
                "training": "业务验证操作 | 2027-01-15",
            },
            at=done,
        ),
        say("drill-report-signature", decision="signed", report=True, at=done + 60 * MIN),
        say("drill-report-approval", decision="approved", by="吴总监", at=done + 90 * MIN),
        say(
            "recovery-plan-v2",
            {**RECOVERY, "steps": RECOVERY["steps"] + "\n检查切换脚本参数 | 刘工程师 | 5"},
            at=done + 120 * MIN,
        ),
        say("recovery-plan-approval", decision="approved", by="吴总监", at=done + 150 * MIN),
    ]


def test_a_drill_runs_from_its_request_to_the_archived_signed_report(fast: FastFlow) -> None:
    wished = add_working_days(_local(T0), 10)  # 2026-12-07, a Monday
    request = _request(fast, "YLMAIN", wished)
    outcome = fast.run(
        drill,
        request,
        at=T0,
        script=_whole_drill_script(wished),
    )
    assert outcome == "archived"
    assert fast.refused == []
    case_id = fast.case_of_run()
    # the notice went out 5 working days ahead at 09:00, the re-confirmation 1 working day ahead
    notice_day, reconfirm_day = add_working_days(wished, -5), add_working_days(wished, -1)
    assert fast.waits.count("timer:drill-notice-1") == 1
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "archived"
        assert case.data["notice_at"] == _at(notice_day, 9).isoformat()
        assert case.data["reconfirm_at"] == _at(reconfirm_day, 10).isoformat()
        evaluation = case.data["evaluation"]
        assert evaluation["actual_total"] == 40.0 and evaluation["expected_total"] == 40
        assert evaluation["rto_met"] and evaluation["rpo_met"] and evaluation["completed"]
        results = s.exec(select(DrillStepResult).where(DrillStepResult.case_id == case_id)).all()
        assert [r.result for r in results] == ["成功"] * 3
        # the gaps became recovery plan v2, approved; the training a task with its due day
        versions = s.exec(select(RecoveryPlan).order_by(col(RecoveryPlan.version))).all()
        assert [(p.version, p.approved_by) for p in versions] == [(1, "吴总监"), (2, "吴总监")]
        assert "演练发现的差距" in versions[1].reason and len(versions[1].steps) == 4
        training = s.exec(select(TrainingTask).where(TrainingTask.case_id == case_id)).one()
        assert (training.topic, training.due_on) == ("业务验证操作", date(2027, 1, 15))
        report = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "drill_report")).one()
        assert report.status == "archived"
        assert "演练报告" in report.content and "达到" in report.content and "满足" in report.content
        assert "客户值班人员不熟悉业务验证步骤" in report.content
        report_clock = s.exec(
            select(Clock).where(Clock.case_id == case_id, Clock.kind == "drill_report")
        ).one()
    assert report_clock.status == "stopped" and report_clock.met_at is not None
    told = fast.notifications(case_id)
    notice = {name for name, template in told if template == "drill/notice"}
    assert notice == {"测试联系人", "张技术", "刘工程师", "吴总监"}  # both sides' participants
    assert ("测试联系人", "drill/training") in told


def _plan_agreed_script(start: datetime) -> list[Say]:
    """Recovery plan v1 and drill plan v1 approved and signed, from `start`, 10 minutes apart."""
    return [
        say("recovery-plan-v1", RECOVERY, at=start + 10 * MIN),
        say("recovery-plan-approval", decision="approved", by="吴总监", at=start + 20 * MIN),
        say("drill-plan", PLAN, at=start + 30 * MIN),
        say("drill-plan-approval", decision="approved", by="吴总监", at=start + 40 * MIN),
        say("drill-plan-signature", decision="signed", at=start + 50 * MIN),
    ]


def test_bad_input_is_refused_and_the_plan_goes_round_the_director_and_the_customers_objection(
    fast: FastFlow,
) -> None:
    wished = add_working_days(_local(T0), 10)
    request = _request(fast, "YLLOOP", wished)
    outcome = fast.run(
        drill,
        request,
        at=T0,
        until="drill-date",
        script=[
            # an RTO of 0 and an unreadable step table are refused, the field named; the next answer is taken
            say("recovery-plan-v1", {**RECOVERY, "rto_minutes": "0"}, at=T0 + 5 * MIN),
            say("recovery-plan-v1", {**RECOVERY, "steps": "切换到备库，30分钟"}, at=T0 + 6 * MIN),
            say("recovery-plan-v1", RECOVERY, at=T0 + 10 * MIN),
            say("recovery-plan-approval", decision="approved", by="吴总监", at=T0 + 20 * MIN),
            say("drill-plan", PLAN, at=T0 + 30 * MIN),
            say(
                "drill-plan-approval",
                decision="revise",
                comment="回退须写明时限",
                by="吴总监",
                at=T0 + 40 * MIN,
            ),
            say(
                "drill-plan",
                {**PLAN, "rollback": "切换失败 10 分钟内恢复主库服务，由张技术决定"},
                at=T0 + 50 * MIN,
            ),
            say("drill-plan-approval", decision="approved", by="吴总监", at=T0 + 60 * MIN),
            say("drill-plan-signature", decision="objected", comment="业务窗口须改到周六", at=T0 + 70 * MIN),
            say("drill-plan", {**PLAN, "business_window": "周六 22:00 至 次日 04:00"}, at=T0 + 80 * MIN),
            say("drill-plan-approval", decision="approved", by="吴总监", at=T0 + 90 * MIN),
            say("drill-plan-signature", decision="signed", at=T0 + 100 * MIN),
        ],
    )
    assert outcome.step == "drill-date"  # left waiting on the customer's date
    assert [step for step, _ in fast.refused] == ["recovery-plan-v1", "recovery-plan-v1"]
    assert "恢复时间目标 RTO（分钟）」须大于 0" in fast.refused[0][1]
    assert "应写成：操作 | 负责人 | 预计分钟" in fast.refused[1][1]
    case_id = fast.case_of_run()
    # 要求修改: the lead's v2 form came filled in with v1; the customer's objection made v3
    v2, v3 = _approval(fast, case_id, "drill-plan")[1:]
    assert v2.form["values"]["rollback"] == PLAN["rollback"] and "回退须写明时限" in v2.content
    assert "业务窗口须改到周六" in v3.content
    with fast.session() as s:
        plans = s.exec(
            select(DrillPlan).where(DrillPlan.case_id == case_id).order_by(col(DrillPlan.version))
        ).all()
        assert [p.version for p in plans] == [1, 2, 3]
        assert plans[2].business_window == "周六 22:00 至 次日 04:00"
        case = s.get(Case, case_id)
        assert case is not None and case.data["plan_version"] == 3
        # every version of the plan was issued; the customer signed v3
        issued = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "drill_plan")).all()
        assert sorted(r.version for r in issued) == [1, 2, 3]
    assert fast.answered[-1] == ("drill-plan-signature", 3, "signed")
    assert "plan_objected" in fast.events(case_id)


def test_the_customer_moves_the_day_a_holiday_needs_confirming_and_a_cancel_at_reconfirmation_tells_everyone(
    fast: FastFlow,
) -> None:
    wished = add_working_days(_local(T0), 10)
    holiday = date(2027, 1, 1)  # 元旦
    moved = date(2027, 1, 5)  # a Tuesday after the New Year holiday
    request = _request(fast, "YLMOVE", wished)
    answered = T0 + 2 * timedelta(hours=1)
    outcome = fast.run(
        drill,
        request,
        at=T0,
        script=[
            *_plan_agreed_script(T0),
            # 改期 without a reason is refused on the form itself
            say("drill-date", {"action": "改期", "day": moved.isoformat()}, at=answered),
            # a holiday without confirming it: explained, asked again
            say(
                "drill-date",
                {"action": "改期", "day": holiday.isoformat(), "reason": "年底业务低谷"},
                at=answered,
            ),
            say(
                "drill-date",
                {"action": "改期", "day": moved.isoformat(), "start": "09:00", "reason": "元旦后业务低谷"},
                at=answered + MIN,
            ),
            say("drill-date", {"action": "确认"}, at=answered + 2 * MIN),
            say(
                "drill-reconfirm-r1",
                {"action": "取消", "reason": "系统升级提前，本期演练取消"},
                at=_at(date(2027, 1, 4), 11),
            ),
        ],
    )
    assert outcome == "cancelled"
    assert fast.refused == [("drill-date", "未记录，请更正：「原因」改期或取消时必填")]
    case_id = fast.case_of_run()
    dates = _approval(fast, case_id, "drill-date")
    assert "是节假日或休息日" in dates[1].content and "确认在休息日演练" in dates[1].content
    assert f"{moved} 09:00" in dates[2].subject
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "cancelled"
        # the move is on the record with its reason, as an inspection's is
        assert [(m["from"], m["to"], m["reason"]) for m in case.data["moves"]] == [
            (wished.isoformat(), moved.isoformat(), "元旦后业务低谷")
        ]
        # notice 5 working days before 2027-01-05 (back over 元旦: 12-28), re-confirmation 1 working day
        # before (01-04, not the Sunday two calendar days before)
        assert case.data["notice_at"] == _at(date(2026, 12, 28), 9).isoformat()
        assert case.data["reconfirm_at"] == _at(date(2027, 1, 4), 10).isoformat()
        assert case.data["cancel_reason"] == "系统升级提前，本期演练取消"
    assert fast.waits[-3:] == ["timer:drill-notice-1", "timer:drill-reconfirm-day-1", "drill-reconfirm-r1"]
    told = fast.notifications(case_id)
    assert {n for n, t in told if t == "drill/notice"} == {"测试联系人", "张技术", "刘工程师", "吴总监"}
    assert {n for n, t in told if t == "drill/cancelled"} == {
        "测试联系人",
        "张技术",
        "刘工程师",
        "吴总监",
        "王值班",
    }


def test_a_move_at_reconfirmation_sends_the_notice_again_for_the_new_day(fast: FastFlow) -> None:
    wished = add_working_days(_local(T0), 10)  # 2026-12-07
    later = add_working_days(wished, 5)  # 2026-12-14
    request = _request(fast, "YLRECONF", wished)
    outcome = fast.run(
        drill,
        request,
        at=T0,
        until="drill-step",
        script=[
            *_plan_agreed_script(T0),
            say("drill-date", {"action": "确认"}, at=T0 + 2 * timedelta(hours=1)),
            say(
                "drill-reconfirm-r1",
                {"action": "改期", "day": later.isoformat(), "reason": "客户值班人员出差"},
                at=_at(add_working_days(wished, -1), 11),
            ),
            say("drill-reconfirm-r2", {"action": "确认"}, at=_at(add_working_days(later, -1), 11)),
        ],
    )
    assert outcome.step == "drill-step"
    case_id = fast.case_of_run()
    assert fast.waits.count("timer:drill-notice-2") == 1
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "on_site"
        assert case.data["drill_day"] == later.isoformat()
        # the new day's notice: 5 working days before it (12-07, after the move on 12-04)
        assert case.data["notice_at"] == _at(add_working_days(later, -5), 9).isoformat()
        assert case.data["start_at"] == _at(later, 9, 30).isoformat()
    notices = [n for n, t in fast.notifications(case_id) if t == "drill/notice"]
    assert len(notices) == 8  # four participants, told twice
    # the dispatcher's board says the waits in words
    from models.approvals import Timer
    from tasks.board import timer_waiting

    with fast.session() as s:
        timers = {t.key: t for t in s.exec(select(Timer).where(Timer.case_id == case_id)).all()}
    assert timer_waiting(timers["drill-start"]).what == f"演练开始时间到 {later} 09:30"
    assert timer_waiting(timers["drill-notice-2"]).what.startswith("演练通知日到")


def test_a_failed_step_aborts_the_drill_and_the_report_says_the_objectives_were_missed(
    fast: FastFlow,
) -> None:
    wished = add_working_days(_local(T0), 10)
    request = _request(fast, "YLABORT", wished)
    done = _at(wished, 10, 0)
    outcome = fast.run(
        drill,
        request,
        at=T0,
        until="drill-report-signature",
        script=[
            *_plan_agreed_script(T0),
            say("drill-date", {"action": "确认"}, at=T0 + 2 * timedelta(hours=1)),
            say("drill-reconfirm-r1", {"action": "确认"}, at=_at(add_working_days(wished, -1), 11)),
            # a step that ends before it starts is refused, the field named
            say(
                "drill-step",
                {
                    "started_at": _bj(_at(wished, 9, 40)),
                    "ended_at": _bj(_at(wished, 9, 30)),
                    "result": "成功",
                },
                at=_at(wished, 9, 41),
            ),
            # aborting without saying what was rolled back is refused too
            say(
                "drill-step",
                {
                    "started_at": _bj(_at(wished, 9, 30)),
                    "ended_at": _bj(_at(wished, 9, 35)),
                    "result": "失败",
                    "abort": "是",
                },
                at=_at(wished, 9, 41),
            ),
            *_steps(wished, failed_at=2),
            say(
                "drill-evaluation",
                {"data_loss_minutes": "0", "gaps": "备库未同步", "meets_need": "否"},
                at=done,
            ),
        ],
    )
    assert outcome.step == "drill-report-signature"
    assert [s for s, _ in fast.refused] == ["drill-step", "drill-step"]
    assert "「实际结束时间」不能早于实际开始时间（" in fast.refused[0][1]
    assert "「回退情况」中止演练时必填" in fast.refused[1][1]
    case_id = fast.case_of_run()
    with fast.session() as s:
        results = s.exec(select(DrillStepResult).where(DrillStepResult.case_id == case_id)).all()
        assert [(r.position, r.result) for r in results] == [(1, "成功"), (2, "失败")]
        assert results[1].rollback == "已恢复主库服务，业务未受影响"
        case = s.get(Case, case_id)
        assert case is not None and case.status == "report_pending"
        evaluation = case.data["evaluation"]
        assert not evaluation["completed"] and not evaluation["rto_met"] and evaluation["rpo_met"]
        assert [st["result"] for st in evaluation["steps"]] == ["成功", "失败", "未执行"]
        report = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "drill_report")).one()
    assert "演练在第 2 步中止" in report.content and "已恢复主库服务" in report.content
    assert "不能满足" in report.content and "未达到" in report.content
    assert "drill_aborted" in fast.events(case_id)


def test_a_wished_day_on_a_holiday_without_confirmation_is_refused_with_a_clear_message(
    fast: FastFlow,
) -> None:
    request = _request(fast, "YLHOL", date(2027, 1, 1))
    outcome = fast.run(drill, request, at=T0, script=[])
    assert outcome.is_failed()
    assert "期望日期无法安排：2027-01-01 是节假日或休息日" in outcome.message
    with fast.session() as s:
        assert s.exec(select(Case).where(Case.kind == "drill")).first() is None  # nothing written
    # confirmed, the same day is taken
    confirmed = DrillRequest(
        customer="YLHOL", system="核心业务系统", kind="failover", wished_day=date(2027, 1, 1), day_off_ok="是"
    )
    waiting = fast.run(drill, confirmed, at=T0, script=[], until="recovery-plan-v1")
    assert waiting.step == "recovery-plan-v1"


def test_the_planner_opens_one_drill_per_contract_and_period_as_often_as_the_contract_says(
    fast: FastFlow,
) -> None:
    from models import Contract
    from tasks.drill import plan_drills

    _new_contract(fast.db_url, "YLQ", _local(T0) - timedelta(days=30), _local(T0) + timedelta(days=335))
    _new_contract(fast.db_url, "YLNONE", _local(T0) - timedelta(days=30), _local(T0) + timedelta(days=335))
    with fast.session() as s:
        for contract in s.exec(select(Contract)).all():
            if contract.code == "HT-YLQ":
                contract.sla_policy = {"drill": {"per_year": 4}}
            elif contract.code == "HT-YLNONE":
                contract.sla_policy = {"drill": {"per_year": 0}}
            s.add(contract)
        s.commit()
    first = plan_drills(T0, url=fast.db_url)
    again = plan_drills(T0 + timedelta(hours=1), url=fast.db_url)
    assert first and again == []  # idempotent: one per contract and period
    with fast.session() as s:
        drills = s.exec(select(Case).where(Case.kind == "drill")).all()
        contracts = {c.id: c.code for c in s.exec(select(Contract)).all()}
    periods = {contracts[d.contract_id]: d.period for d in drills}
    assert periods["HT-YLQ"] == "2026-Q4"  # the contract says four a year
    assert "HT-YLNONE" not in periods  # … or none
    assert set(periods.values()) - {"2026-Q4"} == {"2026-H2"}  # everyone else: the default twice a year
    # the next half year opens the next one
    assert len(plan_drills(datetime(2027, 1, 4, 2, tzinfo=UTC), url=fast.db_url)) == len(drills)
    for d in drills:
        wished = date.fromisoformat(d.data["wished_day"])
        assert is_working_day(wished) and wished >= add_working_days(_local(T0), 5)


def test_a_report_not_out_within_two_working_days_escalates_to_the_lead_and_the_director(
    fast: FastFlow,
) -> None:
    from models.clocks import Escalation

    wished = add_working_days(_local(T0), 10)  # Monday 2026-12-07
    request = _request(fast, "YLLATE", wished)
    waiting = fast.run(
        drill,
        request,
        at=T0,
        until="drill-evaluation",
        script=[
            *_plan_agreed_script(T0),
            say("drill-date", {"action": "确认"}, at=T0 + 2 * timedelta(hours=1)),
            say("drill-reconfirm-r1", {"action": "确认"}, at=_at(add_working_days(wished, -1), 11)),
            *_steps(wished),
        ],
    )
    assert waiting.step == "drill-evaluation"
    case_id = fast.case_of_run()
    ended = _at(wished, 10, 11)  # the last step's answer
    with fast.session() as s:
        clock = s.exec(select(Clock).where(Clock.case_id == case_id, Clock.kind == "drill_report")).one()
    # 2 working days from Monday 10:11: Wednesday 10:11 (a 7x24 contract counts whole working days)
    assert clock.due_at == ended + timedelta(days=2), clock.due_at
    fast.tick(clock.due_at - MIN)

    def breaches() -> list[Any]:
        with fast.session() as s:
            return list(s.exec(select(Escalation).where(Escalation.clock_id == clock.id)).all())

    assert breaches() == []
    fast.tick(clock.due_at + MIN)
    assert [(e.kind, e.level) for e in breaches()] == [("breach", 0)]
    told = {name for name, template in fast.notifications(case_id) if template == "escalation_breach"}
    assert told == {"张技术", "吴总监"}


def test_a_training_task_that_comes_due_is_told_once_and_recorded_when_held(fast: FastFlow) -> None:
    from tasks.drill import training_done

    wished = add_working_days(_local(T0), 10)
    assert (
        fast.run(drill, _request(fast, "YLTRAIN", wished), at=T0, script=_whole_drill_script(wished))
        == "archived"
    )
    case_id = fast.case_of_run()

    def reminders() -> list[str]:
        return sorted(n for n, t in fast.notifications(case_id) if t == "drill/training_due")

    fast.tick(_at(date(2027, 1, 14), 23))  # the day before it is due
    assert reminders() == []
    fast.tick(_at(date(2027, 1, 15), 0, 5))
    fast.tick(_at(date(2027, 1, 16), 9))  # told once, not on every tick
    assert reminders() == ["张技术", "测试联系人", "郑协调"]
    with fast.session() as s:
        task = s.exec(select(TrainingTask).where(TrainingTask.case_id == case_id)).one()
    assert training_done(task.id, by="张技术", now=_at(date(2027, 1, 18), 15), url=fast.db_url)  # type: ignore[arg-type]
    assert not training_done(task.id, by="张技术", now=_at(date(2027, 1, 18), 16), url=fast.db_url)  # type: ignore[arg-type]
    with fast.session() as s:
        task = s.get(TrainingTask, task.id)
        assert task is not None and task.done_by == "张技术" and task.done_at == _at(date(2027, 1, 18), 15)
    assert "training_done" in fast.events(case_id)


def test_a_rejected_recovery_plan_is_written_anew_and_the_engineer_is_told_what_was_rejected(
    fast: FastFlow,
) -> None:
    from models.outbox import Notification

    wished = add_working_days(_local(T0), 10)
    waiting = fast.run(
        drill,
        _request(fast, "YLREJ", wished),
        at=T0,
        until="drill-plan",
        script=[
            say("recovery-plan-v1", RECOVERY, at=T0 + 10 * MIN),
            say(
                "recovery-plan-approval",
                decision="rejected",
                comment="未覆盖存储故障",
                by="吴总监",
                at=T0 + 20 * MIN,
            ),
            say("recovery-plan-v2", {**RECOVERY, "scope": "核心数据库与存储故障"}, at=T0 + 30 * MIN),
            say("recovery-plan-approval", decision="approved", by="吴总监", at=T0 + 40 * MIN),
        ],
    )
    assert waiting.step == "drill-plan"
    case_id = fast.case_of_run()
    v2 = _approval(fast, case_id, "recovery-plan-v2")[0]
    assert "values" not in v2.form and "未覆盖存储故障" in v2.content  # 驳回: an empty form, the reason shown
    with fast.session() as s:
        versions = s.exec(select(RecoveryPlan).order_by(col(RecoveryPlan.version))).all()
        assert [(p.version, p.approved_by) for p in versions] == [(1, None), (2, "吴总监")]
        told = s.exec(
            select(Notification).where(
                Notification.case_id == case_id, Notification.template == "plan_rejected"
            )
        ).one()
    assert told.recipient_name == "刘工程师" and "应急恢复方案第 1 版被技术总监驳回" in told.subject


def test_the_planner_flow_starts_one_run_per_drill_and_that_run_carries_the_scheduled_case(
    fast: FastFlow,
) -> None:
    from flows.drill import plan_drills_flow

    _new_contract(fast.db_url, "YLSCHED", _local(T0) - timedelta(days=30), _local(T0) + timedelta(days=335))
    first = fast.run(plan_drills_flow, T0, script=[])
    again = fast.run(plan_drills_flow, T0 + timedelta(days=1), script=[])
    assert first["created"] == first["started"] >= 1 and again == {"created": 0, "started": 0}
    runs = [(d, p, r) for d, p, r in fast.started if d == "drill/drill"]
    assert len(runs) == first["started"]  # one run per drill, by its contract × period key
    with fast.session() as s:
        mine = next(
            (c for c in s.exec(select(Case).where(Case.kind == "drill")).all() if c.reported_by == "system"),
            None,
        )
    assert mine is not None  # a drill the planner opened
    _, parameters, run_id = next(r for r in runs if r[1]["request"]["case_id"] == mine.id)
    waiting = fast.run(
        drill, DrillRequest.model_validate(parameters["request"]), run_id=run_id, at=T0, script=[], until="*"
    )
    assert waiting.step == "recovery-plan-v1"  # the scheduled drill's run goes on from its case
    assert fast.case_of_run(run_id) == mine.id


def test_the_directors_return_of_the_drill_report_goes_to_the_drill_lead_not_the_dispatcher(
    fast: FastFlow,
) -> None:
    wished = add_working_days(_local(T0), 10)
    script = _whole_drill_script(wished)
    at = next(i for i, s in enumerate(script) if s.step == "drill-report-approval")
    done = script[at].at
    assert done is not None
    script[at : at + 1] = [
        say("drill-report-approval", decision="revise", comment="请补充回切耗时", by="吴总监", at=done),
        # the lead who wrote the report answers the return (a dispatcher here would be refused)
        say(
            "drill-report-approval-answer",
            {"correction": "已补充回切耗时 12 分钟"},
            by="张技术",
            at=done + MIN,
        ),
        say("drill-report-approval", decision="approved", by="吴总监", at=done + 2 * MIN),
    ]
    outcome = fast.run(drill, _request(fast, "YLBACK", wished), at=T0, script=script)
    assert outcome == "archived" and fast.refused == []
    (answer,) = _approval(fast, fast.case_of_run(), "drill-report-approval-answer")
    assert answer.approver_role == "technical_lead" and answer.decided_by == "张技术"
    assert [a.version for a in _approval(fast, fast.case_of_run(), "drill-report-approval")] == [1, 2]
