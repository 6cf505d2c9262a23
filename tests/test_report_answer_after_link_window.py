"""The customer's answer on a report's sign page (web/reports.py) after the signature approval's own
link window (7 days, flows.steps.CUSTOMER_LINK) but within the sign link's 30 days, while the flow
still waits for exactly that answer: it is applied, never refused without a word (the approval's
`expires_at` is the validity of the approval's links; the run waits regardless). Driven as people
do: the complaint flow on the fast layer, the customer on the real report page, the messages sent
through the recording Apprise plugin."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlmodel import select

from flows.complaint import complaint
from models import Case, Contact, Event
from models.approvals import Approval, ApprovalStatus
from tasks.notify import send_due
from tests.conftest import T0
from tests.fixtures.fastflow import DRAWN, FastFlow, say
from tests.fixtures.notify import Recorder
from tests.test_complaint_branches import ANSWER, CUSTOMER, MIN, OWNER, SIGN, H, investigation, request

ANSWERED = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)  # day 11 of the letter: its approval link expired on day 7


def _waiting(fast: FastFlow) -> int:
    """The reply letter v1 out, 3 working days of silence passed, the manager's call not recorded: the
    run waits for the customer's answer or the call (left suspended there)."""
    t = T0
    waiting = fast.run(
        complaint,
        request(),
        at=t,
        until=SIGN,
        script=[
            say("complaint-answer", ANSWER, by=OWNER, at=t + 30 * MIN),
            say("complaint-investigation", investigation(), by=OWNER, at=t + 3 * H),
        ],
    )
    assert waiting.step == SIGN
    case_id = fast.case_of_run()
    with fast.session() as s:
        letter = s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == SIGN)).one()
        assert letter.status == ApprovalStatus.PENDING and letter.expires_at < ANSWERED  # the window passed
    return case_id


def _page(fast: FastFlow, case_id: int) -> tuple[TestClient, str]:
    """The customer's browser on the letter's sign link (from its signature request), at ANSWERED."""
    from web.app import create_app
    from web.reports import page_now

    with fast.session() as s:
        row = s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == SIGN)).one()
    url = re.search(r"https?://\S+/reports/sign/\S+", row.content)[0]  # type: ignore[index]
    app = create_app()
    app.dependency_overrides[page_now] = lambda: ANSWERED
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


def _letter(fast: FastFlow, case_id: int) -> Approval:
    with fast.session() as s:
        return s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == SIGN)).one()


def test_signed_after_the_approval_link_window_closes_the_waiting_complaint(
    fast: FastFlow, notifications: Recorder
) -> None:
    case_id = _waiting(fast)
    client, path = _page(fast, case_id)
    text = _post(client, path, action="sign", method="drawn", image=DRAWN)
    assert "签字成功" in text and "已签字：王先生" in text
    letter = _letter(fast, case_id)
    assert (letter.decision, letter.decided_at, letter.channel) == ("signed", ANSWERED, "link")
    # the run wakes to the answer: the customer's own signature closes it, the call is withdrawn
    run_id = fast.run_id
    outcome = fast.run(complaint, request(), run_id=run_id, at=ANSWERED, script=[])
    assert outcome.status == "closed" and not outcome.closed_by_call and outcome.replies == 1
    assert fast.refused == []
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "closed" and case.closed_at == ANSWERED
        call = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "complaint-call")
        ).one()
        assert call.decision is None and call.status == ApprovalStatus.SUPERSEDED
        before = s.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == "complaint_answered_before_call")
        ).one()
        assert (before.actor, before.at) == (CUSTOMER, ANSWERED)
        contact = s.exec(select(Contact).where(Contact.name == CUSTOMER)).one()
    assert "complaint_late_answer" not in fast.events(case_id)
    assert (CUSTOMER, "complaint/closed") in fast.notifications(case_id)
    send_due(ANSWERED, worker="test")
    assert f"【TS-{case_id:06d}】投诉处理完毕" in notifications.titles(contact)


def test_objected_after_the_approval_link_window_reopens_the_investigation(fast: FastFlow) -> None:
    case_id = _waiting(fast)
    client, path = _page(fast, case_id)
    text = _post(client, path, action="object", comment="工程师仍未更换，不满意")
    assert "已提交异议" in text
    letter = _letter(fast, case_id)
    assert (letter.decision, letter.comment, letter.decided_at) == (
        "objected",
        "工程师仍未更换，不满意",
        ANSWERED,
    )
    waiting = fast.run(
        complaint, request(), run_id=fast.run_id, at=ANSWERED, until="complaint-investigation", script=[]
    )
    assert waiting.step == "complaint-investigation" and fast.refused == []
    with fast.session() as s:
        objected = s.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == "complaint_not_satisfied")
        ).one()
        assert objected.data["comment"] == "工程师仍未更换，不满意" and objected.at == ANSWERED
        assert not objected.data["by_call"]
