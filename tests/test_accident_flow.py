"""The accident flow (事故处理服务流程) driven as its users drive it: a real Prefect server and runner,
every decision taken through `decide` (the one writer the link pages and the Prefect UI call),
time moved by the decision times and by ticking the clock keeper with later `now` values.

One end-to-end run here (the real layer); the flow's branches (failed tests past the window and
the vendor, a partial fix, an incomplete form, rejection and objection, the hand-over from a repair
with 30 hourly updates) run on the fast layer: tests/test_accident_branches.py.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import select

from models import Case, Event
from models.approvals import Approval
from models.db import session_scope
from models.outbox import Notification
from tasks.approvals import signature_step
from tests.conftest import T0
from tests.fixtures.prefect import _tail

H = timedelta(hours=1)
LEAD, DIRECTOR, GM, DISPATCHER = "张技术", "吴总监", "冯总经理", "王值班"
CUSTOMER, COORDINATOR, VENDOR = "北京维护负责人", "郑协调", "原厂支持"

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


class Driver:
    """One accident run, acted on the way its people act: through the links their notifications
    carried, on the real pages (the repair tests' `RepairDriver` does the clicking)."""

    def __init__(self, harness: Any, run_id: Any) -> None:
        from fastapi.testclient import TestClient

        from tests.repair_driver import RepairDriver
        from web.app import create_app

        self.harness, self.run_id = harness, run_id
        self.web = RepairDriver(harness, TestClient(create_app()))
        self.case_id = self.web.case_of_run(run_id, timeout=90)

    def act(
        self,
        step: str,
        version: int,
        decision: str,
        *,
        by: str,
        at: datetime,
        fields: dict | None = None,
        comment: str = "",
    ) -> None:
        """Open the link of the pending (step, version) and post the decision as `by`, at `at`."""
        if decision == "signed":
            row = self.web.pending(self.case_id, step, self.run_id)
            assert row.version == version, (step, row.version, version)
            self.web.sign_on_report_page(self.case_id, step, at, name=by, run_id=self.run_id)
        else:
            row = self.web.act(
                self.case_id, step, decision, at, run_id=self.run_id, fields=fields, comment=comment
            )
            assert row.version == version, (step, row.version, version)
        with session_scope() as s:
            decided = s.get(Approval, row.id)
        assert decided.decision == decision and decided.decided_by == by, (
            step,
            decided.decision,
            decided.decided_by,
        )

    def wait_for(self, probe: Any, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with session_scope() as s:
                found = probe(s)
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"timed out; run is {self.harness.state_name(self.run_id)}\n{self._story()}")

    def _story(self) -> str:
        """What the case shows so far: its approvals and events (for a failure message)."""
        with session_scope() as s:
            rows = s.exec(
                select(Approval).where(Approval.case_id == self.case_id).order_by(Approval.id)
            ).all()
            events = s.exec(select(Event).where(Event.case_id == self.case_id).order_by(Event.id)).all()
            lines = [f"approval {a.step} v{a.version} {a.status} {a.decision}" for a in rows]
            lines += [f"event {e.kind} {e.key} {e.at}" for e in events]
        return "\n".join(lines) + "\n--- runner log ---\n" + _tail(self.harness.runner.log)

    def events(self) -> list[str]:
        with session_scope() as s:
            return [
                e.kind for e in s.exec(select(Event).where(Event.case_id == self.case_id).order_by(Event.id))
            ]

    def event(self, kind: str) -> list[Event]:
        with session_scope() as s:
            return list(
                s.exec(
                    select(Event).where(Event.case_id == self.case_id, Event.kind == kind).order_by(Event.id)
                )
            )

    def sent(self, template: str | None = None) -> Counter:
        """(template, recipient) → how many outbox rows this case wrote."""
        with session_scope() as s:
            rows = s.exec(select(Notification).where(Notification.case_id == self.case_id)).all()
        return Counter(
            (r.template, r.recipient_name) for r in rows if template is None or r.template == template
        )

    def case(self) -> Case:
        with session_scope() as s:
            return s.get(Case, self.case_id)

    # the common stretch of the procedure: plan → director → (test) → customer
    def plan_to_execution(
        self, version: int, at: datetime, plan: dict | None = None, tested: bool | None = None
    ) -> datetime:
        self.act(f"accident-plan-v{version}", version, "submitted", by=LEAD, at=at, fields=plan or PLAN)
        self.act("plan-approval", version, "approved", by=DIRECTOR, at=at + timedelta(minutes=10))
        if tested is not None:
            self.act(
                "plan-test",
                version,
                "submitted",
                by=DIRECTOR,
                at=at + timedelta(minutes=20),
                fields={
                    "passed": "是" if tested else "否",
                    "note": "测试环境复现" if tested else "切换后仍报错",
                },
            )
            if not tested:
                return at + timedelta(minutes=20)
        self.act(
            signature_step("solution_plan"), version, "signed", by=CUSTOMER, at=at + timedelta(minutes=30)
        )
        return at + timedelta(minutes=30)


def _start(harness: Any, key: str, **form: Any) -> Driver:
    request = {
        "customer": "BJYH",
        "site": "亦庄机房",
        "reported_by": "客户 李四 13900000000",
        "description": "核心存储控制器故障，网银业务中断",
        "severity": 1,
        "reported_at": T0.isoformat(),
        **form,
    }
    return Driver(harness, harness.run("accident/accident", {"request": request}, idempotency_key=key))


def _finish_after_restore(d: Driver, restored_at: datetime, *, gm_rejects: bool = False) -> None:
    """§3 steps 7–10 as people do them: talk, report signed, callback, summary, review, GM."""
    from flows.clock_keeper import tick

    d.act(
        "maintenance",
        1,
        "submitted",
        by=LEAD,
        at=restored_at + timedelta(minutes=5),
        fields={"devices": "核心存储 A 控制器", "maintenance": "升级控制器固件，清洁风扇，检查电源冗余"},
    )
    d.act(
        "five-minute-talk",
        1,
        "submitted",
        by=LEAD,
        at=restored_at + timedelta(minutes=10),
        fields={"problems": ""},
    )
    signed = restored_at + timedelta(minutes=40)
    d.act(signature_step("accident_report"), 1, "signed", by=CUSTOMER, at=signed)
    d.harness.wait(d.run_id, "Suspended", timeout=90)  # waiting on the callback timer
    tick(signed + timedelta(days=1, minutes=1))  # the keeper fires the timer the next day
    d.act(
        "callback",
        1,
        "submitted",
        by=DISPATCHER,
        at=signed + timedelta(days=1, hours=1),
        fields={"customer_person": CUSTOMER, **SCORES, "comments": "处理及时"},
    )
    d.act(
        "written-account",
        1,
        "submitted",
        by=LEAD,
        at=signed + timedelta(days=2),
        fields={"account": "控制器固件缺陷导致双控切换失败；已升级固件并调整巡检项。"},
    )
    review = {
        "participants": f"{DIRECTOR}、{LEAD}、孙专家、周专家",
        "conclusion": "固件缺陷，处理得当",
        "actions": "全网同型号控制器升级固件",
    }
    d.act("review-meeting", 1, "submitted", by=DIRECTOR, at=signed + timedelta(days=3), fields=review)
    if gm_rejects:
        d.act(
            "gm-sign-off",
            1,
            "rejected",
            by=GM,
            at=signed + timedelta(days=4),
            comment="请补充对客户的赔付评估",
        )
        d.act(
            "review-meeting",
            2,
            "submitted",
            by=DIRECTOR,
            at=signed + timedelta(days=5),
            fields={**review, "actions": review["actions"] + "；赔付评估：按合同无需赔付"},
        )
        d.act("gm-sign-off", 2, "approved", by=GM, at=signed + timedelta(days=6))
    else:
        d.act("gm-sign-off", 1, "approved", by=GM, at=signed + timedelta(days=4))
    d.harness.wait(d.run_id, "Completed", timeout=90)


def test_plan_works_first_time_and_a_gm_rejection_goes_back_to_the_director(harness):
    d = _start(harness, "accident-first-time")
    at = d.plan_to_execution(1, T0 + 30 * timedelta(minutes=1))
    restored = at + timedelta(minutes=40)
    d.act(
        "plan-execution",
        1,
        "submitted",
        by=LEAD,
        at=restored,
        fields={"result": "restored", "note": "已恢复"},
    )
    _finish_after_restore(d, restored, gm_rejects=True)

    case = d.case()
    assert case.status == "archived" and case.closed_at is not None
    kinds = d.events()
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
    assert [e.data["result"] for e in d.event("execution_result")] == ["restored"]
    # the GM's rejection went back to the director, who held the review again (v2) before the sign-off
    [rejected] = d.event("gm_rejected")
    assert rejected.actor == GM and "赔付" in rejected.data["comment"]
    assert [e.data["version"] for e in d.event("review_meeting_held")] == [1, 2]
    assert (
        kinds.index("gm_rejected")
        < len(kinds) - 1 - kinds[::-1].index("review_meeting_held")
        < kinds.index("gm_signed_off")
    )
    from models.reports import Report

    with session_scope() as s:
        second = s.exec(
            select(Approval).where(
                Approval.case_id == d.case_id, Approval.step == "review-meeting", Approval.version == 2
            )
        ).one()
        reports = {
            (r.kind, r.version): r.status for r in s.exec(select(Report).where(Report.case_id == d.case_id))
        }
    assert "赔付" in second.content  # the director sees the GM's reason
    assert reports[("accident_report", 1)] == "archived" and reports[("accident_summary", 1)] == "archived"
    assert reports[("accident_review", 2)] == "archived"
    sent = d.sent()
    # step 1: the lead goes on site, the director and the coordinator are told
    assert {r for (t, r) in sent if t == "accident_opened"} == {LEAD, DIRECTOR, COORDINATOR}
    # step 2: every team member is told who is in the team and who speaks to the customer
    assert {r for (t, r) in sent if t == "accident_team"} == {LEAD, "孙专家", "周专家", "刘工程师"}
    assert {r for (t, r) in sent if t == "accident_restored"} == {COORDINATOR, DIRECTOR, CUSTOMER}
    assert {r for (t, r) in sent if t == "accident_archived"} == {DIRECTOR, COORDINATOR}
    assert not [
        k
        for k in sent
        if k[0]
        in (
            "accident_vendor_support",
            "accident_vendor_daily",
            "accident_director_on_site",
            "accident_standby",
        )
    ]
