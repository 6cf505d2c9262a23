"""The complaint flow (投诉处理, PROCEDURES.md §7) on a real Prefect server and runner, started from
its Prefect-UI run form and driven through the links people click: first answer, a resolution the
customer is not satisfied with (the run woken by the decision while it also waits for a time), the
investigation reopened one level up the manager ladder, then a resolution nobody answers — the
clock keeper's timer wakes the run after 3 working days and the manager's recorded call closes it.
The branches run on the fast layer: tests/test_complaint_branches.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlmodel import select

from models import Case, Event
from models.db import session_scope
from tasks.approvals import signature_step
from tests.conftest import T0

H, DAY, MIN = timedelta(hours=1), timedelta(days=1), timedelta(minutes=1)
OWNER, NEXT, CUSTOMER = "林客服经理", "孔经理", "北京维护负责人"


def test_a_complaint_from_the_run_form_to_closure_by_the_managers_call(harness: Any) -> None:
    from fastapi.testclient import TestClient

    from flows.clock_keeper import tick
    from tests.repair_driver import RepairDriver
    from web.app import create_app

    form = {  # what the Prefect UI's run form sends (the server checks it against the form's schema)
        "customer": "北京某银行数据中心（BJYH）",
        "complainant": "王先生 13900000001",
        "about": "服务工程师",
        "case_ref": "",
        "engineer": "刘工程师",
        "description": "工程师到场迟到三小时，没有提前通知",
        "wish": "书面道歉",
        "channel": "投诉电话",
        "reported_at": "2026-11-23 10:00",
    }
    run_id = harness.run("complaint/complaint", {"request": form}, as_form=True, idempotency_key="ts-real-1")
    web = RepairDriver(harness, TestClient(create_app()))
    case_id = web.case_of_run(run_id, timeout=90)

    web.act(
        case_id,
        "complaint-answer",
        "submitted",
        T0 + 30 * MIN,
        run_id=run_id,
        fields={"answer": "已收到投诉，客服经理负责调查", "done_by": "2026-11-30 10:00"},
    )
    investigation = {
        "facts": "派工时未核对工程师行程，导致迟到",
        "cause": "派工流程缺少行程核对",
        "responsibility": "服务流程",
        "complete": "是",
        "resolution": "书面致歉；派工流程增加行程核对",
    }
    web.act(case_id, "complaint-investigation", "submitted", T0 + 2 * H, run_id=run_id, fields=investigation)
    # the customer is not satisfied: the run waits for the answer or 3 working days, and wakes on the answer
    web.act(
        case_id,
        signature_step("complaint_reply"),
        "objected",
        T0 + DAY,
        run_id=run_id,
        comment="只有道歉不够",
    )
    # reopened one level up: the department manager investigates now
    web.act(
        case_id, "complaint-investigation", "submitted", T0 + DAY + 2 * H, run_id=run_id, fields=investigation
    )
    web.pending(case_id, signature_step("complaint_reply"), run_id)  # v2 sent; the customer says nothing
    # Tuesday 12:00 + 3 working days = Friday 12:00: the keeper's timer wakes the run
    tick(T0 + 4 * DAY + 2 * H + timedelta(minutes=1))
    web.act(
        case_id,
        "complaint-call",
        "submitted",
        T0 + 4 * DAY + 3 * H,
        run_id=run_id,
        fields={
            "called_at": "2026-11-27 12:30",
            "person": "王先生",
            "satisfied": "是",
            "notes": "客户表示满意",
        },
    )
    run = harness.wait(run_id, "Completed", timeout=90)
    assert run.state.name == "Completed"
    with session_scope() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "closed" and case.number.startswith("TS-")
        kinds = [e.kind for e in s.exec(select(Event).where(Event.case_id == case_id).order_by(Event.id))]
        escalated = s.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == "complaint_escalated")
        ).one()
    assert escalated.data["manager"] == NEXT
    assert [k for k in kinds if k.startswith("complaint")] == [
        "complaint_received",
        "complaint_answered",
        "complaint_investigated",
        "complaint_not_satisfied",
        "complaint_escalated",
        "complaint_investigated",
        "complaint_call",
        "complaint_closed",
    ]
