"""The inspection flow's branches (PROCEDURES.md §4) on the fast layer (tests/fixtures/fastflow.py):
the flow body in-process, its answers scripted, every answer recorded by the real decide().
The end-to-end run on a real Prefect server, links clicked, is tests/test_inspection_e2e.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pendulum

from flows.inspection import inspection
from models import Case
from models.approvals import Approval
from rules.calendar import add_working_days
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, say
from tests.test_inspection_flow import _new_contract


def _local(moment: datetime) -> date:
    return pendulum.instance(moment).in_timezone("Asia/Shanghai").date()


def _extra(fast: FastFlow, code: str, visit_day: date, now: datetime) -> tuple[int, str]:
    """A contract of its own and an extra inspection on `visit_day`; returns the case and its run id."""
    from tasks.inspection import request_extra_inspection

    _new_contract(fast.db_url, code, _local(now) - timedelta(days=30), _local(now) + timedelta(days=335))
    case_id, created = request_extra_inspection(
        f"HT-{code}", visit_day, "重要业务上线前", now=now, url=fast.db_url
    )
    assert created
    run_id = f"inspection-{code}"
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        case.flow_run_id = run_id
        s.add(case)
        s.commit()
    return case_id, run_id


def _approval(fast: FastFlow, case_id: int, step: str, version: int | None = None) -> Approval:
    from sqlmodel import col, select

    with fast.session() as s:
        rows = s.exec(
            select(Approval)
            .where(Approval.case_id == case_id, Approval.step == step)
            .order_by(col(Approval.version))
        ).all()
    assert rows, f"no approval {step}"
    return rows[-1] if version is None else next(r for r in rows if r.version == version)


def test_a_proposal_confirmed_too_late_for_its_notice_is_proposed_again(fast: FastFlow) -> None:
    t0 = T0
    visit_day = add_working_days(_local(t0), 4)  # its notice is due 1 working day from now
    case_id, run_id = _extra(fast, "XJLATE", visit_day, t0)
    sunday = _local(t0) + timedelta(days=(6 - _local(t0).weekday()) % 7 + 7)
    # the customer answers 2 working days later (10:00 Beijing): too late for that notice
    late = datetime.combine(add_working_days(_local(t0), 2), datetime.min.time(), tzinfo=UTC) + timedelta(
        hours=2
    )
    outcome = fast.run(
        inspection,
        case_id,
        at=t0,
        run_id=run_id,
        script=[
            # the dispatcher first enters a Sunday: explained and asked again; then the suggested day
            say("date-proposal", {"day": sunday.isoformat()}, at=t0 + timedelta(minutes=20)),
            say(
                "date-proposal",
                {"day": visit_day.isoformat(), "start": "10:30"},
                at=t0 + timedelta(minutes=30),
            ),
            say("date-v1", {"action": "确认", "start": "10:30"}, at=late),
            say("date-v2", {"action": "取消", "reason": "本月不再安排"}, at=late + timedelta(hours=1)),
        ],
    )
    assert outcome == "cancelled"
    assert fast.refused == [], fast.refused
    proposals = [_approval(fast, case_id, "date-proposal", v) for v in (1, 2)]
    assert all(p.approver_role == "dispatcher" for p in proposals)
    assert "不是工作日" in proposals[1].content
    assert f"{visit_day} 10:30" in _approval(fast, case_id, "date-v1").subject
    v2 = _approval(fast, case_id, "date-v2")
    again = add_working_days(_local(late), 5)
    assert "太近" in v2.content and again.isoformat() in v2.subject, (v2.subject, v2.content)
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and "visit_at" not in case.data  # nothing fixed on the stale proposal
        assert case.status == "cancelled"


def test_customer_cancels_at_the_date_and_everyone_involved_is_told(fast: FastFlow) -> None:
    t0 = T0
    case_id, run_id = _extra(fast, "XJCXL", add_working_days(_local(t0), 8), t0)
    outcome = fast.run(
        inspection,
        case_id,
        at=t0,
        run_id=run_id,
        script=[
            say("date-proposal", {}, at=t0 + timedelta(minutes=30)),  # empty fields: the suggested day
            say(
                "date-v1", {"action": "取消", "reason": "机房搬迁，本月暂停巡检"}, at=t0 + timedelta(hours=1)
            ),
        ],
    )
    assert outcome == "cancelled"
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        assert case.status == "cancelled" and case.data["cancel_reason"] == "机房搬迁，本月暂停巡检"
    assert fast.events(case_id)[-1] == "inspection_cancelled"
    told = fast.notifications(case_id)
    assert told[:2] == [
        ("王值班", "form_request"),
        ("测试联系人", "form_request"),
    ]  # the proposal, then the date
    cancelled = {name for name, template in told if template == "inspection/cancelled"}
    assert cancelled == {"王值班", "李调度", "刘工程师", "陈工程师", "张技术", "测试联系人"}
    assert len(told) == 2 + len(cancelled)
