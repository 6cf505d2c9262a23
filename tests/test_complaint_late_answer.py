"""The customer's own answer to the complaint reply letter, given on the letter's link after the
manager's call already decided it (PROCEDURES.md §7): never lost. It is written to the case history
and told to the owner; "not satisfied" on a complaint the call closed reopens it one level up the
manager ladder ("closed only when solved and the customer is satisfied") and the complaint flow goes
on from the investigation. Driven as people do: the flow on the fast layer, the customer on the real
report page (web/reports.py), the messages sent through the recording Apprise plugin."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import select

from flows.complaint import complaint
from models import Case, Event, Staff
from models.approvals import Approval
from models.reports import Report
from tasks.complaints import ComplaintRequest, complaint_history, start_complaint_run
from tasks.notify import send_due
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, say
from tests.fixtures.notify import Recorder
from tests.test_complaint_branches import ANSWER, CUSTOMER, MIN, NEXT, OWNER, SIGN, H, investigation, request

CALLED = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)  # Thursday 14:00 Beijing: the call closes it
LATE = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # Friday 10:00 Beijing: the customer answers the letter
SATISFIED_CALL = {
    "called_at": "2026-11-26 13:30",
    "person": "王先生",
    "satisfied": "是",
    "notes": "客户表示满意",
}


def _closed_by_call(fast: FastFlow) -> int:
    t = T0
    outcome = fast.run(
        complaint,
        request(),
        at=t,
        script=[
            say("complaint-answer", ANSWER, by=OWNER, at=t + 30 * MIN),
            say("complaint-investigation", investigation(), by=OWNER, at=t + 3 * H),
            say("complaint-call", SATISFIED_CALL, by=OWNER, at=CALLED),
        ],
    )
    assert outcome.status == "closed" and outcome.closed_by_call and fast.refused == []
    return int(outcome.case_id)


def _reply_page(fast: FastFlow, case_id: int, started: list[tuple[int, Any, int]]) -> tuple[TestClient, str]:
    """The customer's browser on the sign link of reply letter v1 (from its signature request), at LATE."""
    from tasks.answering import responding
    from web.app import create_app
    from web.reports import complaint_starter, page_now

    with fast.session() as s:
        row = s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == SIGN)).one()
    url = re.search(r"https?://\S+/reports/sign/\S+", row.content)[0]  # type: ignore[index]

    def start(case: int, req: ComplaintRequest, reopened: int = 0) -> str:
        started.append((case, req, reopened))
        with responding(fast):  # the fast layer notes the run the real start_complaint_run starts
            return start_complaint_run(case, req, reopened)

    app = create_app()
    app.dependency_overrides[page_now] = lambda: LATE
    app.dependency_overrides[complaint_starter] = lambda: start
    return TestClient(app), "/reports/sign/" + url.rsplit("/reports/sign/", 1)[1]


def _post(client: TestClient, path: str, **form: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text[:500]
    fields = {
        "csrf": re.search(r'name="csrf" value="([^"]+)"', page.text)[1],  # type: ignore[index]
        "content_hash": re.search(r'name="content_hash" value="([^"]+)"', page.text)[1],  # type: ignore[index]
        "signer_name": "王先生",
        **form,
    }
    answer = client.post(path, data=fields)
    assert answer.status_code == 200, answer.text[:800]
    return " ".join(re.sub(r"<[^>]+>", " ", answer.text).split())


def _staff(fast: FastFlow, name: str) -> Staff:
    with fast.session() as s:
        return s.exec(select(Staff).where(Staff.name == name)).one()


def test_not_satisfied_after_the_call_closed_it_reopens_one_level_up_and_the_flow_goes_on(
    fast: FastFlow, notifications: Recorder
) -> None:
    case_id = _closed_by_call(fast)
    started: list[tuple[int, Any, int]] = []
    client, path = _reply_page(fast, case_id, started)
    text = _post(client, path, action="object", comment="问题没有解决，工程师至今未更换")
    number = f"TS-{case_id:06d}"
    assert "已收到您的意见" in text and f"投诉 {number}" in text and "已重新打开" in text and NEXT in text
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "open" and case.closed_at is None
        assert case.data["ladder_level"] == 1 and case.data["reopened"] == 1
        late = s.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == "complaint_late_answer")
        ).one()
        assert (late.actor, late.at, late.data["satisfied"], late.data["call_by"]) == (
            "王先生",
            LATE,
            False,
            OWNER,
        )
    # the history says it in Chinese, who and when
    lines = [(h["at"], h["by"], h["text"]) for h in complaint_history.fn(case_id)["history"]]
    assert (
        LATE,
        "王先生",
        f"客户在 {OWNER} 电话回访后对第 1 版处理结果答复不满意：问题没有解决，工程师至今未更换",
    ) in lines
    assert any("投诉重新打开（第 1 次），升级至 孔经理" in t for _, _, t in lines)
    sent = fast.notifications(case_id)
    assert (OWNER, "complaint/late_answer") in sent and (NEXT, "complaint/late_answer") in sent
    assert (NEXT, "complaint/escalated") in sent
    assert send_due(LATE, worker="test") >= 3
    owner_titles = notifications.titles(_staff(fast, OWNER))
    assert f"【{number}】客户在电话回访后答复不满意，投诉已重新打开" in owner_titles
    body = next(m.body for m in notifications.to(_staff(fast, NEXT)) if "重新打开" in m.title)
    assert "问题没有解决" in body and "升级至 孔经理 重新调查" in body
    # the flow starts again (one run per reopening) and goes on from the investigation, one level up
    [(case, req, times)] = started
    assert (case, times) == (case_id, 1)
    [(deployment, parameters, run_id)] = fast.started
    assert deployment == "complaint/complaint"
    again = fast.run(
        complaint,
        ComplaintRequest.model_validate(parameters["request"]),
        run_id=run_id,
        at=LATE,
        script=[
            say(
                "complaint-investigation",
                investigation(resolution="更换服务工程师并书面致歉"),
                by=NEXT,
                at=LATE + H,
            ),
            say(SIGN, decision="signed", by=CUSTOMER, report=True, at=LATE + 3 * H),
        ],
    )
    assert fast.refused == []
    assert again.status == "closed" and again.replies == 2 and not again.closed_by_call
    assert fast.events(case_id).count("complaint_closed") == 2
    with fast.session() as s:
        reply = s.exec(select(Report).where(Report.case_id == case_id, Report.version == 2)).one()
        assert "问题没有解决，工程师至今未更换" in reply.content  # the v2 letter names the objection
        case = s.get(Case, case_id)
        assert case is not None and case.status == "closed" and case.closed_at == LATE + 3 * H


def test_satisfied_after_the_call_is_kept_and_told_and_the_complaint_stays_closed(
    fast: FastFlow, notifications: Recorder
) -> None:
    from tests.fixtures.fastflow import DRAWN

    case_id = _closed_by_call(fast)
    started: list[tuple[int, Any, int]] = []
    client, path = _reply_page(fast, case_id, started)
    text = _post(client, path, action="sign", method="drawn", image=DRAWN)
    number = f"TS-{case_id:06d}"
    assert "签字成功" in text and f"已收到并记入投诉 {number} 的处理记录" in text and "确认关闭" in text
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "closed"
        late = s.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == "complaint_late_answer")
        ).one()
        assert late.data["satisfied"] is True and late.actor == "王先生"
    assert "complaint_reopened" not in fast.events(case_id) and started == []
    sent = fast.notifications(case_id)
    assert (OWNER, "complaint/late_answer") in sent and (NEXT, "complaint/late_answer") not in sent
    send_due(LATE, worker="test")
    assert f"【{number}】客户在电话回访后签字确认满意" in notifications.titles(_staff(fast, OWNER))
    # the same answer again (a second click, a busy database re-running the request): recorded once
    from models.db import transaction
    from tasks.complaints import late_reply_answer

    with fast.session() as s:
        letter = s.exec(select(Report).where(Report.case_id == case_id, Report.version == 1)).one()
    twice = transaction(
        lambda s: late_reply_answer(s, int(letter.id), satisfied=True, by="王先生", comment="", now=LATE)  # type: ignore[arg-type]
    )
    assert twice is not None and "此前已记录" in twice.message
    assert fast.events(case_id).count("complaint_late_answer") == 1


def test_an_answer_after_a_not_satisfied_call_is_kept_and_told_while_the_new_round_goes_on(
    fast: FastFlow,
) -> None:
    """The call said "not satisfied" (the complaint went one level up, round 2 under way); the
    customer then objects on the first letter too: recorded and told, nothing reopened or moved."""
    t = T0
    waiting = fast.run(
        complaint,
        request(),
        at=t,
        until="complaint-investigation",
        script=[
            say("complaint-answer", ANSWER, by=OWNER, at=t + 30 * MIN),
            say("complaint-investigation", investigation(), by=OWNER, at=t + 3 * H),
            say(
                "complaint-call",
                {**SATISFIED_CALL, "satisfied": "否", "notes": "客户不满意"},
                by=OWNER,
                at=CALLED,
            ),
        ],
    )
    assert waiting.step == "complaint-investigation"
    case_id = fast.case_of_run()
    started: list[tuple[int, Any, int]] = []
    client, path = _reply_page(fast, case_id, started)
    text = _post(client, path, action="object", comment="同意电话中的意见：仍需更换工程师")
    assert "已收到您的意见" in text and "记入投诉" in text and "重新打开" not in text
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "open" and case.data["ladder_level"] == 1
        assert "reopened" not in case.data
    assert fast.events(case_id).count("complaint_escalated") == 1 and started == []
    assert "complaint_late_answer" in fast.events(case_id)
    assert (NEXT, "complaint/late_answer") in fast.notifications(case_id)  # the owner now
