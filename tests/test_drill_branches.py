"""The emergency drill (应急演练, PROCEDURES.md §5) on the fast layer (tests/fixtures/fastflow.py): the
flow body in-process, every answer recorded by the real decide() the links hit, timers fired by the
real fire_due_timers, the working-day calendar real. The end-to-end run on a real Prefect server is
tests/test_drill_flow.py."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pendulum
from sqlmodel import col, select

from flows.drill import drill
from models import Case
from models.approvals import Approval
from models.clocks import Clock
from models.drill import DrillStepResult, RecoveryPlan, TrainingTask
from models.reports import Report
from rules.calendar import add_working_days
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


def test_a_drill_runs_from_its_request_to_the_archived_signed_report(fast: FastFlow) -> None:
    wished = add_working_days(_local(T0), 10)  # 2026-12-07, a Monday
    request = _request(fast, "YLMAIN", wished)
    done = _at(wished, 10, 30)
    outcome = fast.run(
        drill,
        request,
        at=T0,
        script=[
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
        ],
    )
    assert outcome == "archived"
    assert fast.refused == []
    case_id = fast.case_of_run()
    # the notice went out 5 working days ahead at 09:00, the re-confirmation 1 working day ahead
    notice_day, reconfirm_day = add_working_days(wished, -5), add_working_days(wished, -1)
    assert fast.waits.count("timer:drill-notice-r1") == 1
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
