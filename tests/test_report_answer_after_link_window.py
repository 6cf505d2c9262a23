"""The customer's answer on a report's sign page (web/reports.py) after the signature approval's own
link window (7 days, flows.steps.CUSTOMER_LINK) but within the sign link's 30 days, while the flow
still waits for exactly that answer: it is applied, never refused without a word (the approval's
`expires_at` is the validity of the approval's links; the run waits regardless). Driven as people
do: the complaint flow on the fast layer, the customer on the real report page, the messages sent
through the recording Apprise plugin."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import col, select

from flows.complaint import complaint
from models import Case, Contact, Event, Staff
from models.approvals import Approval, ApprovalStatus
from tasks.notify import send_due
from tests.conftest import T0
from tests.fixtures.fastflow import DRAWN, FastFlow, say
from tests.fixtures.notify import Recorder
from tests.test_complaint_branches import ANSWER, CUSTOMER, MIN, NEXT, OWNER, SIGN, H, investigation, request

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


def _page(fast: FastFlow, case_id: int, step: str = SIGN, at: datetime = ANSWERED) -> tuple[TestClient, str]:
    """The customer's browser on the report's sign link (from its signature request), at `at`."""
    from web.app import create_app
    from web.reports import page_now

    row = _letter(fast, case_id, step)
    url = re.search(r"https?://\S+/reports/sign/\S+", row.content)[0]  # type: ignore[index]
    app = create_app()
    app.dependency_overrides[page_now] = lambda: at
    return TestClient(app), "/reports/sign/" + url.rsplit("/reports/sign/", 1)[1]


def _fields(client: TestClient, path: str, **form: str) -> dict[str, str]:
    """What the sign page's form posts (its hidden fields read from the page as shown)."""
    page = client.get(path)
    assert page.status_code == 200, page.text[:500]
    return {
        "csrf": re.search(r'name="csrf" value="([^"]+)"', page.text)[1],  # type: ignore[index]
        "content_hash": re.search(r'name="content_hash" value="([^"]+)"', page.text)[1],  # type: ignore[index]
        "signer_name": "王先生",
        **form,
    }


def _send(client: TestClient, path: str, fields: dict[str, str]) -> str:
    answer = client.post(path, data=fields)
    assert answer.status_code == 200, answer.text[:800]
    return " ".join(re.sub(r"<[^>]+>", " ", answer.text).split())


def _post(client: TestClient, path: str, **form: str) -> str:
    return _send(client, path, _fields(client, path, **form))


def _letter(fast: FastFlow, case_id: int, step: str = SIGN) -> Approval:
    with fast.session() as s:
        return s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == step)).one()


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


def test_a_signature_the_flow_can_no_longer_take_is_kept_told_and_said_so(
    fast: FastFlow, notifications: Recorder
) -> None:
    """The customer objected to letter v1 (the complaint went one level up, round 2 under way), then
    signs v1 on its sign link: the flow cannot take it (v1 is answered) — kept in the history, the
    letter's issuer and the complaint's owner now told, the page says so instead of 签字成功."""
    t = T0
    waiting = fast.run(
        complaint,
        request(),
        at=t,
        until="complaint-investigation",
        script=[
            say("complaint-answer", ANSWER, by=OWNER, at=t + 30 * MIN),
            say("complaint-investigation", investigation(), by=OWNER, at=t + 3 * H),
            say(SIGN, decision="objected", by=CUSTOMER, comment="只道歉不够", at=t + 5 * H),
        ],
    )
    assert waiting.step == "complaint-investigation"
    case_id = fast.case_of_run()
    client, path = _page(fast, case_id)
    fields = _fields(client, path, action="sign", method="drawn", image=DRAWN)
    text = _send(client, path, fields)
    number = f"TS-{case_id:06d}"
    assert "签字成功" not in text and "已收到您的签字" in text
    assert f"已收到并记入 {number} 的处理记录" in text and "未能直接计入当前处理流程" in text
    assert "提出异议" in text and f"已告知 {OWNER}、{NEXT}" in text  # the issuer, the owner now
    letter = _letter(fast, case_id)
    assert (letter.decision, letter.comment) == ("objected", "只道歉不够")  # the flow's answer stands
    with fast.session() as s:
        kept = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "report_answer_kept")).one()
        assert (kept.actor, kept.at, kept.data["satisfied"], kept.data["version"]) == (
            "王先生",
            ANSWERED,
            True,
            1,
        )
    assert fast.events(case_id).count("complaint_closed") == 0
    sent = fast.notifications(case_id)
    assert (OWNER, "report_answer_kept") in sent and (NEXT, "report_answer_kept") in sent
    send_due(ANSWERED, worker="test")
    for name in (OWNER, NEXT):
        with fast.session() as s:
            staff = s.exec(select(Staff).where(Staff.name == name)).one()
        [body] = [m.body for m in notifications.to(staff) if "未能计入流程" in m.title]
        assert "王先生" in body and "签字确认" in body and "提出异议" in body
    # the same click again (a busy database re-running the request): kept once
    assert "已收到您的签字" in _send(client, path, fields)
    assert fast.events(case_id).count("report_answer_kept") == 1


def test_a_drill_report_signed_after_the_approval_link_window_goes_on_to_the_director(
    fast: FastFlow, notifications: Recorder
) -> None:
    """The same sign page serves every report (drill report, renewal notice, assurance plan …): the
    drill report signed on day 10 of its sign link, its approval's link window past, is taken."""
    from flows.drill import drill
    from rules.calendar import add_working_days
    from tests.test_drill_branches import RECOVERY, _at, _local, _request, _whole_drill_script

    wished = add_working_days(_local(T0), 10)
    script = _whole_drill_script(wished)
    cut = next(i for i, s in enumerate(script) if s.step == "drill-report-signature")
    req = _request(fast, "YLLATE", wished)
    waiting = fast.run(drill, req, at=T0, until="drill-report-signature", script=script[:cut])
    assert waiting.step == "drill-report-signature"
    case_id = fast.case_of_run()
    signed = (
        _at(wished, 10, 30) + 10 * 24 * H
    )  # day 10 after the report: its approval's link expired on day 7
    letter = _letter(fast, case_id, "drill-report-signature")
    assert letter.expires_at < signed
    client, path = _page(fast, case_id, "drill-report-signature", at=signed)
    text = _post(client, path, action="sign", method="drawn", image=DRAWN)
    assert "签字成功" in text and "已签字：王先生" in text
    letter = _letter(fast, case_id, "drill-report-signature")
    assert (letter.decision, letter.decided_at, letter.payload["signer_name"]) == ("signed", signed, "王先生")
    outcome = fast.run(
        drill,
        req,
        run_id=fast.run_id,
        at=signed,
        script=[
            say("drill-report-approval", decision="approved", by="吴总监", at=signed + H),
            say("recovery-plan-v2", RECOVERY, at=signed + 2 * H),
            say("recovery-plan-approval", decision="approved", by="吴总监", at=signed + 3 * H),
        ],
    )
    assert outcome == "archived" and fast.refused == []
    assert "report_answer_kept" not in fast.events(case_id)


def test_a_late_signature_then_an_objection_after_the_call_is_not_swallowed(
    fast: FastFlow, notifications: Recorder
) -> None:
    """After the call closed the complaint, the customer signs the letter (kept, told), then objects
    on the same link: a changed answer, not the same one again — kept and told as well, and the
    complaint the call closed opens again (closed only when the customer is satisfied)."""
    from tests.test_complaint_late_answer import _closed_by_call, _reply_page

    case_id = _closed_by_call(fast)
    started: list[tuple[int, Any, int]] = []
    client, path = _reply_page(fast, case_id, started)
    # the letter open in two tabs: signed in one, then the objection sent from the other
    fields = _fields(client, path, action="object", comment="再想想，问题没解决")
    assert "签字成功" in _post(client, path, action="sign", method="drawn", image=DRAWN)
    text = _send(client, path, fields)
    assert "此前已记录" not in text and "已收到您的意见" in text and "已重新打开" in text
    with fast.session() as s:
        late = s.exec(
            select(Event)
            .where(Event.case_id == case_id, Event.kind == "complaint_late_answer")
            .order_by(col(Event.id))
        ).all()
        assert [(e.data["satisfied"], e.data["comment"]) for e in late] == [
            (True, ""),
            (False, "再想想，问题没解决"),
        ]
        case = s.get(Case, case_id)
        assert case is not None and case.status == "open" and case.data["reopened"] == 1
    assert [times for _, _, times in started] == [1]
    sent = [t for who, t in fast.notifications(case_id) if who == OWNER]
    assert sent.count("complaint/late_answer") == 2
