"""The complaint flow's branches (投诉处理, PROCEDURES.md §7) on the fast layer
(tests/fixtures/fastflow.py): the flow body in-process, each answer recorded by the real decide()
the link page calls, the clock keeper ticked at scripted moments."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from flows.complaint import complaint
from models import Case, Event
from models.approvals import Approval
from models.clocks import Clock
from models.outbox import Notification
from models.reports import Report
from tasks.approvals import signature_step
from tasks.board import board
from tasks.complaints import ComplaintRequest
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, say

H, MIN, DAY = timedelta(hours=1), timedelta(minutes=1), timedelta(days=1)
OWNER, NEXT, DIRECTOR, CUSTOMER = "林客服经理", "孔经理", "吴总监", "北京维护负责人"
SIGN = signature_step("complaint_reply")

ANSWER = {"answer": "已收到您的投诉，由客服经理负责调查，明日答复处理方案", "done_by": "2026-11-30 10:00"}


def investigation(**more: Any) -> dict[str, str]:
    return {
        "facts": "工程师 11 月 20 日到场迟到 3 小时，未提前告知客户",
        "cause": "派工时未核对工程师行程",
        "responsibility": "服务工程师",
        "responsible": "刘工程师",
        "complete": "是",
        "resolution": "向客户书面致歉；派工流程增加行程核对",
        **more,
    }


def request(**form: Any) -> ComplaintRequest:
    return ComplaintRequest.model_validate(
        {
            "customer": "BJYH",
            "complainant": "王先生 13900000001",
            "about": "服务工程师",
            "engineer": "刘工程师",
            "description": "工程师到场迟到三小时，<b>没有</b>提前通知",
            "wish": "更换工程师并书面道歉",
            "channel": "投诉电话",
            "reported_at": T0.isoformat(),
            **form,
        }
    )


def events(fast: FastFlow, case_id: int) -> list[str]:
    return [e for e in fast.events(case_id) if e.startswith("complaint")]


def clock_of(fast: FastFlow, case_id: int, kind: str) -> Clock:
    with fast.session() as s:
        row = s.exec(select(Clock).where(Clock.case_id == case_id, Clock.kind == kind)).one()
        return row


def test_not_satisfied_reopens_one_level_up_and_closes_when_the_customer_signs(fast: FastFlow) -> None:
    t = T0
    outcome = fast.run(
        complaint,
        request(),
        at=t,
        script=[
            say("complaint-answer", ANSWER, by=OWNER, at=t + 40 * MIN),
            # compensation: the director approves the resolution first
            say("complaint-investigation", investigation(compensation="是"), by=OWNER, at=t + 5 * H),
            say("complaint-director", decision="approved", by=DIRECTOR, at=t + 6 * H),
            say(SIGN, decision="objected", by=CUSTOMER, comment="只道歉不够，要求更换工程师", at=t + 1 * DAY),
            # reopened at the next level of the ladder: the department manager investigates now
            say(
                "complaint-investigation",
                investigation(engineer_change="是", linked_cases="WX-1"),
                by=NEXT,
                at=t + 2 * DAY,
            ),
            say("complaint-director", decision="approved", by=DIRECTOR, at=t + 2 * DAY + H),
            say(SIGN, decision="signed", by=CUSTOMER, report=True, at=t + 3 * DAY),
        ],
    )
    assert fast.refused == []
    assert outcome.status == "closed" and outcome.replies == 2 and not outcome.closed_by_call
    case_id = outcome.case_id
    assert outcome.number == f"TS-{case_id:06d}"
    assert events(fast, case_id) == [
        "complaint_received",
        "complaint_answered",
        "complaint_investigated",
        "complaint_director_approved",
        "complaint_not_satisfied",
        "complaint_escalated",
        "complaint_cases_linked",
        "complaint_investigated",
        "complaint_director_approved",
        "complaint_reply_signed",
        "complaint_closed",
    ]
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "closed" and case.closed_at == t + 3 * DAY
        assert case.data["ladder_level"] == 1
        escalated = s.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == "complaint_escalated")
        ).one()
        assert escalated.data["manager"] == NEXT and escalated.data["reason"] == "reopened"
        # the signed reply letter (v2) names the earlier objection
        reply = s.exec(
            select(Report).where(
                Report.case_id == case_id, Report.kind == "complaint_reply", Report.version == 2
            )
        ).one()
        assert "只道歉不够" in reply.content and "&lt;b&gt;没有&lt;/b&gt;" in reply.content
        assert "/complaint/" in reply.content  # every report carries the customer's complaint link
        # the second round's investigation went to the department manager, not the owner
        second = s.exec(
            select(Approval).where(
                Approval.case_id == case_id, Approval.step == "complaint-investigation", Approval.version == 2
            )
        ).one()
        assert second.approver_role == "service_manager"
    assert clock_of(fast, case_id, "complaint_answer").met_at == t + 40 * MIN
    assert clock_of(fast, case_id, "complaint_close").met_at == t + 3 * DAY
    sent = fast.notifications(case_id)
    assert (CUSTOMER, "complaint/received") in sent and (OWNER, "complaint/opened") in sent
    assert (CUSTOMER, "complaint/first_answer") in sent and (CUSTOMER, "complaint/closed") in sent
    assert (NEXT, "complaint/escalated") in sent


def test_no_answer_in_three_working_days_the_manager_calls_and_records_it(fast: FastFlow) -> None:
    t = T0  # Monday 10:00; the reply goes out at 13:00: three working days later is Thursday 13:00
    outcome = fast.run(
        complaint,
        request(),
        at=t,
        script=[
            say("complaint-answer", ANSWER, by=OWNER, at=t + 30 * MIN),
            say("complaint-investigation", investigation(), by=OWNER, at=t + 3 * H),
            say(
                "complaint-call",
                {
                    "called_at": "2026-11-26 13:30",
                    "person": "王先生",
                    "satisfied": "是",
                    "notes": "客户表示满意",
                },
                by=OWNER,
                at=datetime(2026, 11, 26, 6, 0, tzinfo=UTC),
            ),
        ],
    )
    assert fast.refused == []
    assert outcome.status == "closed" and outcome.closed_by_call
    assert "timer:complaint-silence-1" in fast.waits
    with fast.session() as s:
        call = s.exec(
            select(Approval).where(Approval.case_id == outcome.case_id, Approval.step == "complaint-call")
        ).one()
        assert call.created_at == datetime(2026, 11, 26, 5, 0, tzinfo=UTC)  # Thursday 13:00 Beijing
        closed = s.exec(
            select(Event).where(Event.case_id == outcome.case_id, Event.kind == "complaint_closed")
        ).one()
        assert closed.data["by_call"] is True and closed.data["satisfied"] is True


def test_incomplete_round_and_director_return_each_mean_another_round(fast: FastFlow) -> None:
    t = T0
    outcome = fast.run(
        complaint,
        request(),
        at=t,
        script=[
            say("complaint-answer", ANSWER, by=OWNER, at=t + 30 * MIN),
            say(
                "complaint-investigation", investigation(complete="否", resolution=""), by=OWNER, at=t + 2 * H
            ),
            say("complaint-investigation", investigation(process_change="是"), by=OWNER, at=t + 4 * H),
            say(
                "complaint-director",
                decision="revise",
                by=DIRECTOR,
                comment="整改措施要写明负责人",
                at=t + 5 * H,
            ),
            say("complaint-investigation", investigation(process_change="是"), by=OWNER, at=t + 6 * H),
            say("complaint-director", decision="approved", by=DIRECTOR, at=t + 7 * H),
            say(SIGN, decision="signed", by=CUSTOMER, report=True, at=t + DAY),
        ],
    )
    assert fast.refused == []
    assert outcome.status == "closed"
    kinds = events(fast, outcome.case_id)
    assert kinds.count("complaint_investigated") == 3
    assert kinds.count("complaint_director_returned") == 1


def test_a_breached_first_answer_goes_up_the_ladder(fast: FastFlow) -> None:
    t = T0
    late = t + 2 * H + 5 * MIN
    outcome = fast.run(
        complaint,
        request(),
        at=t,
        # the first answer, still unanswered, is handed to the next manager with the escalation
        script=[say("complaint-answer", ANSWER, by=NEXT, at=t + 3 * H, ticks=(late,))],
        until="complaint-investigation",
    )
    case_id = fast.case_of_run()
    assert outcome.step == "complaint-investigation"
    answer = clock_of(fast, case_id, "complaint_answer")
    assert answer.breached_at == t + 2 * H
    assert fast.refused == []
    sent = fast.notifications(case_id)
    assert (NEXT, "escalation_breach") in sent  # the next manager up the customer's ladder
    assert (NEXT, "complaint/escalated") in sent
    with fast.session() as s:
        notice = s.exec(
            select(Notification).where(
                Notification.case_id == case_id, Notification.template == "complaint/escalated"
            )
        ).one()
        assert "请在 2 小时内答复客户投诉" in notice.body and "/a/" in notice.body  # the form and its link
        answered = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "complaint-answer")
        ).one()
        assert answered.decided_by == NEXT
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.data["ladder_level"] == 1
        # the dispatcher's board: the complaint waits for the manager it went up to, its clock in red
        (shown,) = [b for b in board(s, now=t + 3 * H) if b.number == case.number]
        assert shown.kind_zh == "投诉" and "孔经理" in shown.waits[0].text
        assert shown.deadline is not None and shown.deadline.breached is False  # the answer clock stopped


def test_an_unknown_customer_is_refused_with_a_message(fast: FastFlow) -> None:
    state = fast.run(complaint, request(customer="不存在的客户"), at=T0, script=[])
    assert "未知客户" in str(state.message)


def test_a_related_case_that_does_not_exist_is_named_as_typed(fast: FastFlow) -> None:
    state = fast.run(complaint, request(case_ref="WX-999999"), at=T0, script=[])
    assert "相关工单（编号 999999）不存在" in str(state.message)


def test_the_signed_reply_letter_prints_as_a_pdf_with_its_chinese_text(
    fast: FastFlow, tmp_path: Path
) -> None:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    from tasks.pdf import print_in_process
    from tasks.reports import signed_content

    t = T0
    outcome = fast.run(
        complaint,
        request(),
        at=t,
        script=[
            say("complaint-answer", ANSWER, by=OWNER, at=t + 30 * MIN),
            say("complaint-investigation", investigation(), by=OWNER, at=t + 3 * H),
            say(SIGN, decision="signed", by=CUSTOMER, report=True, at=t + DAY),
        ],
    )
    with fast.session() as s:
        reply = s.exec(
            select(Report).where(Report.case_id == outcome.case_id, Report.kind == "complaint_reply")
        ).one()
        html = signed_content(s, reply)
    path = tmp_path / "reply.pdf"
    path.write_bytes(print_in_process(html))
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    for words in (
        "投诉处理回复函",
        outcome.number,
        "处理结果",
        "派工流程增加行程核对",
        "客服经理",
        OWNER,
        "<b>没有</b>",
        "处理经过",  # the complaint's history, in Chinese
        "首次答复客户",
        "投诉首次答复",  # its clocks
    ):
        assert words in text, words
    assert "故障级别" not in text  # a complaint is not a fault: the head names the customer and contract


def test_a_complaint_taken_while_prefect_was_down_gets_its_flow_from_the_keeper(fast: FastFlow) -> None:
    from models.db import session_scope
    from tasks.answering import responding
    from tasks.complaints import open_complaint, start_unstarted

    with session_scope() as s:  # what the page or `aftercare complaint new` recorded before Prefect failed
        case_id = int(open_complaint(s, request(channel="网站"), now=T0).id)  # type: ignore[arg-type]
    with responding(fast):
        assert start_unstarted(T0 + 10 * timedelta(seconds=1)) == 0  # the page still starts it itself
        assert start_unstarted(T0 + MIN) == 1
        assert start_unstarted(T0 + 2 * MIN) == 0  # once
    ((deployment, parameters, run_id),) = fast.started
    assert deployment == "complaint/complaint" and parameters["request"]["case_id"] == case_id
    waiting = fast.run(
        complaint,
        ComplaintRequest.model_validate(parameters["request"]),
        run_id=run_id,
        script=[],
        until="complaint-answer",
    )
    assert waiting.step == "complaint-answer"
    with fast.session() as s:
        (case,) = s.exec(select(Case).where(Case.kind == "complaint")).all()  # adopted, not taken twice
        assert case.id == case_id and case.flow_run_id == run_id


def test_a_first_answer_promising_past_the_15_day_close_deadline_is_refused(fast: FastFlow) -> None:
    """The first answer's 预计处理完毕时间 is the promise the customer holds the provider to; past the
    complaint's close deadline (受理后 15 天, PROCEDURES.md §7) it is refused, naming the field and the
    deadline, and the manager's corrected answer goes through."""
    t = T0
    late = {**ANSWER, "done_by": "2026-12-31 10:00"}
    outcome = fast.run(
        complaint,
        request(),
        at=t,
        script=[
            say("complaint-answer", late, by=OWNER, at=t + 20 * MIN),
            say("complaint-answer", ANSWER, by=OWNER, at=t + 30 * MIN),
            say("complaint-investigation", investigation(), by=OWNER, at=t + 3 * H),
            say(SIGN, decision="signed", by=CUSTOMER, report=True, at=t + 1 * DAY),
        ],
    )
    close = clock_of(fast, outcome.case_id, "complaint_close")
    assert close.due_at is not None
    deadline = close.due_at.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
    assert [step for step, _ in fast.refused] == ["complaint-answer"]
    why = fast.refused[0][1]
    assert "预计处理完毕时间" in why and "投诉关闭期限" in why and deadline in why, why
    assert outcome.status == "closed"
    with fast.session() as s:
        answered = s.exec(
            select(Event).where(Event.case_id == outcome.case_id, Event.kind == "complaint_answered")
        ).one()
        assert answered.data["done_by"].startswith("2026-11-30")


def test_a_form_handed_up_the_ladder_is_no_longer_the_lower_managers(fast: FastFlow) -> None:
    """The first answer unanswered past 2 h goes up to the next manager, who owns it from then on:
    the lower manager's link (from the first notice) gives a clear page naming who has it now and
    records nothing; the next manager's link shows the form."""
    from fastapi.testclient import TestClient

    from models import Staff
    from tasks.approvals import Approver, approval_link
    from web.app import create_app
    from web.approvals import clock as page_clock

    t = T0
    fast.run(complaint, request(), at=t, script=[], until="complaint-answer")
    case_id = fast.case_of_run()
    fast.tick(t + 2 * H + 5 * MIN)
    with fast.session() as s:
        row = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "complaint-answer")
        ).one()
        lower = s.exec(select(Staff).where(Staff.name == OWNER)).one()
        upper = s.exec(select(Staff).where(Staff.name == NEXT)).one()
        assert row.approver_staff_ids == [upper.id]
        # the links as the notices carry them: `<base>/a/<token>`
        lower_link = approval_link(row, Approver("staff", lower.id)).rsplit("/", 1)[1]  # type: ignore[arg-type]
        upper_link = approval_link(row, Approver("staff", upper.id)).rsplit("/", 1)[1]  # type: ignore[arg-type]
    app = create_app()
    app.dependency_overrides[page_clock] = lambda: t + 3 * H
    web = TestClient(app)
    refused = web.get(f"/a/{lower_link}")
    assert refused.status_code == 403
    assert f"已随投诉升级转交 {NEXT} 处理" in refused.text and "Traceback" not in refused.text
    shown = web.get(f"/a/{upper_link}")
    assert shown.status_code == 200 and "预计处理完毕时间" in shown.text
    with fast.session() as s:
        again = s.get(Approval, row.id)
        assert again is not None and again.decision is None


def test_the_customer_answering_after_the_wait_wins_over_a_call_not_yet_recorded(fast: FastFlow) -> None:
    """3 working days passed, the manager is asked to call — then the customer signs the reply letter
    on its link before the call is recorded: the customer's answer closes the complaint (signed, not
    by call), the call form is withdrawn and its link records nothing."""
    t = T0  # Monday; the reply goes out at 13:00, the call is asked for Thursday 13:00 Beijing
    outcome = fast.run(
        complaint,
        request(),
        at=t,
        script=[
            say("complaint-answer", ANSWER, by=OWNER, at=t + 30 * MIN),
            say("complaint-investigation", investigation(), by=OWNER, at=t + 3 * H),
            say(
                SIGN, decision="signed", by=CUSTOMER, report=True, at=datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
            ),
        ],
    )
    assert fast.refused == []
    assert outcome.status == "closed" and not outcome.closed_by_call
    assert fast.waits[-2:] == ["timer:complaint-silence-1", "complaint-reply-signature"]
    case_id = outcome.case_id
    assert events(fast, case_id)[-3:] == [
        "complaint_answered_before_call",
        "complaint_reply_signed",
        "complaint_closed",
    ]
    from tasks.approvals import Approver, decide

    with fast.session() as s:
        call = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "complaint-call")
        ).one()
        assert call.decision is None and call.status == "superseded"
        owner = call.approver_staff_ids[0]
    late = decide(
        call.id,  # type: ignore[arg-type]
        "submitted",
        by=Approver("staff", owner),
        payload={
            "called_at": "2026-11-26 15:00",
            "person": "王先生",
            "satisfied": "否",
            "notes": "电话未接通",
        },
        channel="link",
        now=datetime(2026, 11, 26, 8, 0, tzinfo=UTC),
    )
    assert late.outcome == "superseded" and "不再需要处理" in late.message
