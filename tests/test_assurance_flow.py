"""Major-event assurance end to end on a real Prefect server and runner (tests/fixtures/prefect.py):
started the way the Prefect UI's run form starts it, every answer posted on the page its link opens,
the timers fired by the clock keeper at the moments they are due. The branches are in
tests/test_assurance_branches.py (fast layer)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pendulum
from sqlmodel import select

from models import Case, Event
from models.db import session_scope
from models.outbox import Notification
from tasks.approvals import signature_step
from tests.test_accident_flow import Driver

H = timedelta(hours=1)
LEAD, DIRECTOR, COORDINATOR, CUSTOMER = "张技术", "吴总监", "郑协调", "北京维护负责人"


def test_an_assurance_runs_from_the_run_form_to_the_signed_report(harness: Any) -> None:
    now = pendulum.now("Asia/Shanghai")
    first, last = now.add(days=30).date(), now.add(days=32).date()  # four weeks ahead: no approval needed
    form = {
        "customer": "北京某银行数据中心（BJYH）",
        "site": "亦庄机房",
        "event": "重大会议通信保障",
        "starts": first.isoformat(),
        "ends": last.isoformat(),
        "requested_by": "北京维护负责人 13900000000",
        "requested_at": "",
        "onsite": True,
        "requirements": "核心交易系统",
    }
    run_id = harness.run(
        "assurance/assurance", {"request": form}, idempotency_key=f"assurance-e2e-{now}", as_form=True
    )
    d = Driver(harness, run_id)
    start = pendulum.datetime(first.year, first.month, first.day, tz="Asia/Shanghai").in_timezone("UTC")
    end = (
        pendulum.datetime(last.year, last.month, last.day, tz="Asia/Shanghai").add(days=1).in_timezone("UTC")
    )
    at = datetime.fromisoformat(now.in_timezone("UTC").isoformat())

    plan = "保障方案：会议期间工程师驻场，每两小时巡视核心存储与服务器，故障 10 分钟内响应。"
    d.act("assurance-plan-1", 1, "submitted", by=LEAD, at=at + 0.1 * H, fields={"plan": plan})
    d.act("plan-approval", 1, "approved", by=DIRECTOR, at=at + 0.2 * H)
    d.act(signature_step("assurance_plan"), 1, "signed", by=CUSTOMER, at=at + 0.3 * H)

    # a week before the period the keeper fires the roster timer; the coordinator's roster goes out
    ask = start - timedelta(days=7)
    d.web.tick(ask + timedelta(minutes=1))
    roster = (
        f"刘工程师 | 13800000004 | {first.isoformat()} | {first.add(days=1).isoformat()}\n"
        f"陈工程师 | 13800000005 | {first.add(days=2).isoformat()} 00:00 | {last.isoformat()}"
    )
    d.act("duty-roster", 1, "submitted", by=COORDINATOR, at=ask + H, fields={"shifts": roster})
    d.wait_for(
        lambda s: s.exec(select(Event).where(Event.case_id == d.case_id, Event.kind == "roster_sent")).first()
    )

    # the period passes; afterwards the lead's report, signed by the customer on the report page
    d.web.tick(start + timedelta(minutes=1))
    d.web.tick(end + timedelta(minutes=1))
    d.act(
        "assurance-report",
        1,
        "submitted",
        by=LEAD,
        at=end + H,
        fields={"summary": "会议期间系统运行平稳", "extra_effort": "", "extra_hours": "0"},
    )
    d.act(signature_step("assurance_report"), 1, "signed", by=CUSTOMER, at=end + 2 * H)
    harness.wait(run_id, "Completed", timeout=90)

    case = d.case()
    assert case.status == "archived" and case.number.startswith("BZ-")
    kinds = d.events()
    for kind in (
        "assurance_in_force",
        "pre_inspection_planned",
        "roster_sent",
        "assurance_started",
        "assurance_ended",
    ):
        assert kind in kinds, (kind, kinds)
    with session_scope() as s:
        sent = s.exec(select(Event).where(Event.case_id == d.case_id, Event.kind == "roster_sent")).one()
        assert sent.data["before_period"] and sent.data["in_time"] and sent.at < start
        assert "roster_overdue" not in kinds  # in before its day: nobody was chased
        told = s.exec(
            select(Notification).where(
                Notification.case_id == d.case_id, Notification.template == "assurance/roster"
            )
        ).one()
        assert told.recipient_name == CUSTOMER
        pre = s.exec(select(Case).where(Case.parent_id == d.case_id, Case.kind == "inspection")).one()
        assert pre.flow_run_id  # the inspection flow's own run was started for it
