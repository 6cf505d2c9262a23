"""The Prefect-UI routes against a real Prefect server and runner (DESIGN.md §7 rows 14 and 18):

- a repair or accident started with a request that cannot be taken ends at once, Failed with a
  Chinese message, and writes nothing;
- a form answered in the Prefect UI with a time that does not parse is refused: the run stays
  suspended (asking again), nothing is recorded; a wrong-shaped input is refused by the server;
  a good answer is recorded as entered in the Prefect UI on behalf of the person named, who is told.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pendulum
import pytest
from sqlmodel import select

from models import Case, Event
from models.approvals import Approval
from models.db import session_scope
from models.outbox import Notification
from models.wallclock import now as wall
from tests.test_approvals_flow import wait_paused_on

pytestmark = pytest.mark.timeout(300)

REQUEST = {
    "customer": "BJYH",
    "site": "亦庄机房",
    "reported_by": "客户 王先生 13900000000",
    "channel": "热线",
    "description": "存储阵列告警，部分 LUN 读写变慢",
    "severity": 3,
}


def bj(moment: Any) -> str:
    return pendulum.instance(moment).in_timezone("Asia/Shanghai").strftime("%Y-%m-%d %H:%M")


def test_a_request_that_cannot_be_taken_ends_the_run_at_once_and_writes_nothing(harness: Any) -> None:
    """DESIGN.md §7 row 14: malformed UI input → a clear message, no case, no message."""
    future = (wall() + timedelta(hours=2)).isoformat()
    bad = {
        "unknown customer": (
            "repair/repair",
            {"request": {**REQUEST, "customer": "不存在的客户"}},
            "未知客户",
        ),
        "unknown parent": (
            "repair/repair",
            {"request": {**REQUEST, "parent_case_id": 999999}},
            "关联工单 999999 不存在",
        ),
        "future report": ("repair/repair", {"request": {**REQUEST, "reported_at": future}}, "晚于当前时间"),
        "unknown repair": (
            "accident/accident",
            {"request": {"parent_case_id": 999999}},
            "维修单 999999 不存在",
        ),
    }
    runs = {
        name: (harness.run(deployment, parameters), says)
        for name, (deployment, parameters, says) in bad.items()
    }
    for name, (run_id, says) in runs.items():
        run = harness.wait(run_id, "Failed", timeout=90)
        assert says in (run.state.message or ""), f"{name}: {run.state.message}"
        with session_scope() as s:
            assert s.exec(select(Case).where(Case.flow_run_id == str(run_id))).first() is None, name
    # a severity the run form does not offer never becomes a run
    with pytest.raises(Exception, match="severity"):
        harness.run("repair/repair", {"request": {**REQUEST, "severity": "9 级"}}, as_form=True)


def test_a_bad_prefect_ui_answer_keeps_the_run_waiting_and_a_good_one_is_recorded_on_behalf(
    harness: Any,
) -> None:
    """DESIGN.md §7 row 18 (a wrong-shaped or wrong-valued resume is refused, the run stays
    suspended) and issue 14 item 4 (on behalf of X, X told)."""
    reported = wall() - timedelta(minutes=10)
    run_id = harness.run("repair/repair", {"request": {**REQUEST, "reported_at": reported.isoformat()}})
    wait_paused_on(harness, run_id, "diagnosis-v1")
    with session_scope() as s:
        case = s.exec(select(Case).where(Case.flow_run_id == str(run_id))).one()
    good = {
        "contacted_at": bj(reported + timedelta(minutes=3)),
        "result": "缓存策略被改，已恢复",
        "solved_remotely": "是",
    }

    # the step's own form in the Prefect UI: its fields with their Chinese labels
    from prefect.client.orchestration import get_client

    keyset = harness.read(run_id).state.state_details.run_input_keyset
    with get_client(sync_client=True) as client:
        schema = json.loads(client.read_flow_run_input(run_id, keyset["schema"]))
    titles = {name: p.get("title") for name, p in schema["properties"].items()}
    assert titles["contacted_at"].startswith("首次联系客户时间") and titles["approver"] == "填写人"
    assert schema["properties"]["solved_remotely"]["anyOf"][0]["enum"] == ["是", "否"]
    harness.resume(run_id, {"decision": "提交", "approver": "张技术", **good, "contacted_at": "明天下午三点"})
    wait_paused_on(harness, run_id, "diagnosis-v1-a2")  # refused by decide: asked again
    for shape in (
        {"decision": "提交", **good},  # no approver
        {"decision": "提交", "approver": "张技术", "data": good},  # a field the form does not have
        {"decision": "提交", "approver": "张技术", **good, "solved_remotely": "也许"},
    ):  # a choice not offered
        with pytest.raises(RuntimeError):  # the server refuses the shape; the run stays suspended
            harness.resume(run_id, shape)
    assert harness.read(run_id).state.is_paused()
    with session_scope() as s:
        row = s.exec(select(Approval).where(Approval.case_id == case.id, Approval.step == "diagnosis")).one()
        assert row.decision is None and row.payload == {}
        assert not s.exec(select(Event).where(Event.case_id == case.id, Event.kind == "form_decided")).all()

    harness.resume(run_id, {"decision": "提交", "approver": "张技术", **good})
    wait_paused_on(harness, run_id, "service-report-signature-v1")  # solved remotely: on to the signed report
    with session_scope() as s:
        row = s.exec(select(Approval).where(Approval.case_id == case.id, Approval.step == "diagnosis")).one()
        event = s.exec(select(Event).where(Event.case_id == case.id, Event.kind == "form_decided")).one()
        told = s.exec(
            select(Notification).where(
                Notification.case_id == case.id, Notification.template == "approval_entered_for_you"
            )
        ).all()
        contact = s.exec(select(Event).where(Event.case_id == case.id, Event.kind == "first_contact")).one()
    assert (row.decided_by, row.channel, row.payload["solved_remotely"]) == ("张技术", "prefect_ui", True)
    assert event.actor == "在 Prefect 界面代 张技术 录入"
    assert [n.recipient_name for n in told] == ["张技术"]
    assert contact.at == (reported + timedelta(minutes=3)).replace(second=0, microsecond=0)
