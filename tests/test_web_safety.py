"""Safe pages (issue 14): what a person types is shown as text on every page and in every message.

Script-bearing text goes into every free-text field of every form of every procedure (repair,
accident, inspection; the intake forms; approval comments and signatures; the checklist, the rating
and the report-signing pages). It is recorded through the real pages and tasks (real SQLite, the
real web app through TestClient); then every page that shows it is fetched — the approval, form,
signing, checklist and summary pages, the report pages and the message pages — and each page is
parsed: the text must be there *as text* (exactly as typed, `{{7*7}}` not evaluated), no element
may carry an `on…` attribute or inline script, and every response carries the security headers.
The notification bodies (recording Apprise plugin) carry the same text unescaped — they are plain
text — and a mail channel, which shows HTML, gets it escaped.
"""

from __future__ import annotations

import re
import stat
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlmodel import Session, col, select

from tests.conftest import T0

PIECES = ("<img src=x onerror=alert(1)>", "<script>alert(2)</script>", '"><svg onload=alert(3)>')
TEMPLATE_PIECES = ("{{7*7}}", "{% raw %}")
PAGE_AT = T0 + timedelta(hours=1)


def evil(tag: str) -> str:
    """A value that is markup and template syntax at once, marked with where it was typed."""
    return f"[{tag}]" + "".join(PIECES) + "".join(TEMPLATE_PIECES)


def plain(fn: Any) -> Any:
    """A Prefect task's own function (the tests call tasks the way a flow's run would, without a run)."""
    return getattr(fn, "fn", fn)


# --- reading a page the way a browser would ------------------------------------------------------


class _Document(HTMLParser):
    """Text and attribute values of a page (a sandboxed `srcdoc` frame's document included), and
    anything a browser would run: inline scripts, `on…` handlers, `javascript:` URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.runs: list[str] = []
        self._inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and not values.get("src"):
            self.runs.append("inline <script>")
            self._inline_script = True
        for name, value in attrs:
            if name.startswith("on"):
                self.runs.append(f"<{tag} {name}={value!r}>")
            if value is None:
                continue
            if value.strip().lower().startswith("javascript:"):
                self.runs.append(f"<{tag} {name}={value!r}>")
            self.text.append(value)
            if name == "srcdoc":
                inner = _Document()
                inner.feed(value)
                inner.close()
                self.text.extend(inner.text)
                self.runs.extend(inner.runs)

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._inline_script = False

    def handle_data(self, data: str) -> None:
        if self._inline_script and data.strip():
            self.runs.append(f"inline script {data.strip()[:60]!r}")
        self.text.append(data)


def assert_safe_headers(response: Any) -> None:
    csp = response.headers.get("content-security-policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    script = directives.get("script-src", directives.get("default-src", []))
    assert (
        script and "'unsafe-inline'" not in script and "'unsafe-eval'" not in script and "*" not in script
    ), csp
    assert "'none'" in directives.get("frame-ancestors", []), csp
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert response.headers.get("referrer-policy") == "no-referrer"
    assert response.headers.get("x-frame-options") == "DENY"


def shown(response: Any, *typed: str) -> str:
    """Assert the page runs nothing a person typed and shows each of `typed` as text; the page's text."""
    assert_safe_headers(response)
    page = response.text
    for piece in PIECES:
        assert piece not in page, (
            f"raw markup on {response.url}: …{page[max(0, page.find(piece) - 80) :][:200]}…"
        )
    doc = _Document()
    doc.feed(page)
    doc.close()
    assert not doc.runs, f"{response.url} would run: {doc.runs}"
    text = "\n".join(doc.text)
    for value in typed:
        assert value in text, f"{value!r} is not shown as text on {response.url}"
        if "{{7*7}}" in value:  # a template never evaluates what was typed
            assert value.replace("{{7*7}}", "49") not in text
    return text


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def web(demo: str) -> TestClient:
    from web.app import create_app

    client = TestClient(create_app())
    at(client, PAGE_AT)
    return client


def at(client: TestClient, moment: datetime) -> None:
    """The pages act at `moment` (their clock dependencies)."""
    from web.approvals import clock
    from web.reports import page_now

    client.app.dependency_overrides[clock] = lambda: moment  # type: ignore[attr-defined]
    client.app.dependency_overrides[page_now] = lambda: moment  # type: ignore[attr-defined]


def path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def link_of(approval_id: int) -> str:
    """The page path of the link that was sent for an approval (read from the outbox, as received)."""
    from models.approvals import Approval
    from models.db import session_scope
    from models.outbox import Notification
    from tasks.links import BadLink, verify_token

    with session_scope() as s:
        row = s.get(Approval, approval_id)
        assert row is not None
        bodies = s.exec(select(Notification.body).where(Notification.case_id == row.case_id)).all()
    for body in bodies:
        for url in re.findall(r"https?://\S+", body):
            token = url.rsplit("/", 1)[1]
            try:
                data = verify_token(token, "a", now=row.created_at)
            except BadLink:
                continue
            if int(data["a"]) == approval_id:
                return path(url)
    raise AssertionError(f"no link was sent for approval {approval_id}")


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page)[1]  # type: ignore[index]


def approval_row(approval_id: int) -> Any:
    from models.approvals import Approval
    from models.db import session_scope

    with session_scope() as s:
        return s.get(Approval, approval_id)


def contact_id(case_id: int) -> int:
    from tasks.cases import contact_of

    return int(plain(contact_of)(case_id))


# --- the forms -----------------------------------------------------------------------------------------


def procedure_forms() -> list[type[BaseModel]]:
    """Every form people fill through a link: the registry every form approval names (found, not
    listed: a new form is covered the day it is registered — an unregistered one cannot be asked)."""
    from models.forms import FORMS

    return list(FORMS.values())


def test_the_forms_found_are_the_procedures_forms() -> None:
    names = {f.__name__ for f in procedure_forms()}
    assert {
        "DiagnosisForm",
        "VisitForm",
        "OnsiteForm",
        "RepairForm",
        "GuidanceForm",
        "FaultReportForm",
        "PlanForm",
        "PartsForm",
        "TalkForm",
        "CallbackForm",
        "CorrectionForm",
        "AccountForm",
        "AccidentPlanForm",
        "PlanTestForm",
        "ExecutionForm",
        "ReviewForm",
        "DateForm",
        "ProposalForm",
        "ReconfirmForm",
        "UnsignedForm",
    } <= names


# Free-text fields that hold a date or a time of day: the refused answer carries the script, the
# recorded one a value that reads as what it is (a date check may refuse the rest).
# what is recorded for fields that are free text on the page but hold a number, a date or a table:
# a valid value (script inside it where the field's format leaves room for words)
DATE_TEXT = {
    "day": "",
    "start": "09:30",
    "linked_cases": "",  # case numbers only
    "rto_minutes": "60",
    "rpo_minutes": "0",
    "data_loss_minutes": "0",
    "extra_hours": "1.5",
    "steps": evil("steps").replace("|", "/") + " | 张工 | 30",
    "start_date": "2027-01-01",
    "end_date": "2027-12-31",
    "fee": "360000.00",  # recorded to the fen
    "training": evil("training").replace("|", "/") + " | 2027-01-15",
    "shifts": "张工 | 13800000000 | 2026-12-20 08:00 | 2026-12-20 20:00",
}


def _free_text(form: type[BaseModel]) -> list[str]:
    from models.forms import _field_kind

    return [
        name for name, field in form.model_fields.items() if _field_kind(field.annotation)[0] == "textarea"
    ]


def _fits(form: type[BaseModel], name: str, value: str) -> str:
    """`value`, cut to the field's declared maximum length (keeping the tag and the first piece)."""
    limit = min(
        (m.max_length for m in form.model_fields[name].metadata if hasattr(m, "max_length")), default=None
    )
    if limit is None or len(value) <= limit:
        return value
    short = value.split("]", 1)[0] + "]" + PIECES[0]
    return short[:limit]


def _other_values(spec: dict[str, Any], free: list[str]) -> dict[str, str]:
    values = {}
    for f in spec["fields"]:
        if f["name"] in free:
            continue
        if f["type"] == "choice":
            values[f["name"]] = f["options"][0]
        else:  # a time
            values[f["name"]] = "2026-11-23 10:30"
    return values


def fill_form_by_link(
    web: TestClient, case_id: int, n: int, form: type[BaseModel], subject: str, content: str
) -> None:
    """Ask for `form` the way a flow does, then answer it on its link page with script in every free-text field."""
    from models.db import session_scope
    from models.forms import form_name, form_spec
    from tasks.approvals import ApprovalRequest, open_approval

    spec = form_spec(form)
    with session_scope() as s:
        aid = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step=f"xss-{n}",
                version=1,
                subject=subject,
                content=content,
                kind="form",
                approver_role="technical_director",
                expires_at=T0 + timedelta(days=3),
                now=T0,
                form=spec,
                form_name=form_name(form),
            ),
        ).id
    link = link_of(aid)
    page = web.get(link)
    assert page.status_code == 200
    shown(page, subject, content)

    free = _free_text(form)
    assert free, f"{form.__name__} has no free-text field"
    typed = {name: _fits(form, name, evil(f"{form.__name__}.{name}")) for name in free}
    comment = evil(f"{form.__name__}.comment")
    others = _other_values(spec, free)
    fields = {f"f_{k}": v for k, v in {**others, **typed}.items()}

    # refused (a choice the page does not offer): the page comes back with what was typed
    refused = web.post(
        link, data={"csrf": csrf_of(page.text), "decision": "bogus", "comment": comment, **fields}
    )
    assert refused.status_code == 422, refused.text[:300]
    shown(refused, *typed.values(), comment)
    assert approval_row(aid).decision is None

    # recorded exactly as typed (never stored escaped)
    kept = {k: DATE_TEXT.get(k, v) for k, v in typed.items()}
    done = web.post(
        link,
        data={
            "csrf": csrf_of(page.text),
            "decision": "submitted",
            "comment": comment,
            **{f"f_{k}": v for k, v in {**others, **kept}.items()},
        },
    )
    assert done.status_code == 200, done.text[:600]
    shown(done, subject)
    row = approval_row(aid)
    assert row.decision == "submitted" and row.comment == comment
    for name, value in kept.items():
        if value:
            assert str(row.payload[name]) == value, name  # a number is recorded as a number
    # the link again: the page that says it was done (a message page)
    shown(web.get(link), subject)


# --- the one test that walks every page --------------------------------------------------------------


def test_typed_script_is_shown_as_text_on_every_page_and_in_every_message(
    demo: str, web: TestClient, notifications: Any, session: Session
) -> None:
    from flows.steps import CALLBACK_ITEMS, _plan_context
    from models.db import session_scope
    from tasks.approvals import ApprovalRequest, open_approval
    from tasks.cases import RepairRequest, Tell, take_request
    from tasks.reports import first_plan_of, issue

    # 1. intake: every free-text field of the repair request (the customer and site are looked up, not shown)
    request = RepairRequest(
        customer="TYDX",
        reported_by=_fits(RepairRequest, "reported_by", evil("intake.reported_by")),
        description=evil("intake.description") + "\n第二行：" + evil("intake.line2"),
        reported_at=T0,
    )
    case_id = plain(take_request)(
        request,
        T0,
        "run-xss",
        tell=[
            Tell(template="repair/opened", key="opened", roles=["dispatcher", "technical_lead", "engineer"]),
            Tell(template="repair/received", key="received", customer=True),
        ],
    )
    title = evil("intake.description")[:80]  # a case's title is its description's first line

    # 2. every form of every procedure, through its link page (the case title, the subject and the
    #    content — what earlier steps wrote — on the page as well)
    for n, form in enumerate(procedure_forms(), start=1):
        fill_form_by_link(
            web,
            case_id,
            n,
            form,
            subject=evil(f"{form.__name__}.subject"),
            content=evil(f"{form.__name__}.content") + "\n" + evil("intake.description"),
        )
    page = web.get(link_of(_open(case_id, "xss-case-title", "approval")))
    shown(page, title)

    # 3. the plan as the director sees it (the plan report's text) and his comment
    plan = plain(first_plan_of)(
        evil("plan.text") + "\n更换电源模块，预计 30 分钟。", evil("author")
    )  # a person's name: within issued_by's 100 characters
    assert plan is not None
    plan_doc = plain(issue)(case_id, "solution_plan", "common/plan", _plan_context(plan), T0, plan.author, 1)
    with session_scope() as s:
        director = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="plan-approval",
                version=1,
                subject=evil("approval.subject"),
                content=plan_doc["text"],
                approver_role="technical_director",
                expires_at=T0 + timedelta(days=3),
                now=T0,
            ),
        ).id
    link = link_of(director)
    page = web.get(link)
    shown(page, evil("plan.text"), evil("approval.subject"))
    refused = web.post(
        link, data={"csrf": csrf_of(page.text), "decision": "bogus", "comment": evil("director.comment")}
    )
    assert refused.status_code == 422
    shown(refused, evil("director.comment"), evil("plan.text"))
    done = web.post(
        link, data={"csrf": csrf_of(page.text), "decision": "revise", "comment": evil("director.comment")}
    )
    assert done.status_code == 200
    shown(done, evil("approval.subject"))
    assert approval_row(director).comment == evil("director.comment")

    # 4. the reports, with every typed text the flows put into them; each one's view and signing page
    docs: list[tuple[dict[str, Any], list[str]]] = [(plan_doc, [evil("plan.text")])]
    service = {
        "solved_remotely": False,
        "diagnosis": evil("report.diagnosis"),
        "command_log": evil("report.command_log"),
        "plan": plan.model_dump(),
        "work_done": evil("report.work_done"),
        "parts_used": [],
        "maintenance": evil("report.maintenance"),
        "further_problems": [evil("report.problem")],
        "engineer": evil("report.engineer"),
        "corrections": [evil("report.correction")],
    }
    docs.append(
        (
            plain(issue)(case_id, "service_report", "repair/service_report", service, T0, "刘工程师", 1),
            [v for k, v in service.items() if isinstance(v, str)]
            + [evil("report.problem"), evil("report.correction")],
        )
    )
    fault = {
        k: evil(f"fault.{k}")
        for k in (
            "customer_engineer",
            "symptoms",
            "business_impact",
            "process",
            "cause",
            "solution",
            "advice",
        )
    }
    docs.append(
        (
            plain(issue)(
                case_id,
                "fault_report",
                "repair/fault_report",
                {**fault, "engineer": evil("fault.by")},
                T0,
                "张技术",
                1,
            ),
            list(fault.values()),
        )
    )
    callback = {
        "customer_person": evil("callback.person"),
        "comments": evil("callback.comments"),
        "centre_confirmed": True,
        **{k: "优" for k in CALLBACK_ITEMS},
        "by": evil("callback.by"),
        "at": T0,
    }
    scores = [{"key": k, "label": label, "value": "优"} for k, label in CALLBACK_ITEMS.items()]
    docs.append(
        (
            plain(issue)(
                case_id,
                "callback_form",
                "common/callback_form",
                {"callback": callback, "scores": scores},
                T0,
                "调度员",
                1,
            ),
            [evil("callback.person"), evil("callback.comments")],
        )
    )
    account = {"account": evil("account.text"), "engineer": evil("account.by"), "plan": plan.model_dump()}
    docs.append(
        (
            plain(issue)(case_id, "written_account", "repair/written_account", account, T0, "刘工程师", 1),
            [evil("account.text")],
        )
    )
    docs += _accident_reports()

    for doc, typed in docs:
        view = web.get(path(doc["view_url"]))
        assert view.status_code == 200, doc["title"]
        shown(view, *typed)
        sign = web.get(path(doc["sign_url"]))
        assert sign.status_code == 200
        shown(sign, *typed)

    # 5. the customer signs the service report with a typed name: the thank-you and the report page show it
    report = docs[1][0]
    sign_page = web.get(path(report["sign_url"]))
    signed = web.post(
        path(report["sign_url"]),
        data={
            "csrf": csrf_of(sign_page.text),
            "content_hash": report["hash"],
            "signer_name": evil("signer")[:100],
            "method": "typed",
            "action": "sign",
        },
    )
    assert signed.status_code == 200 and "签字成功" in signed.text, signed.text[:400]
    shown(signed, evil("signer")[:100])
    shown(web.get(path(report["view_url"])), evil("signer")[:100])

    # 6. the customer's signature and objection on the generic signature page
    with session_scope() as s:
        sig = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="service-report-signature",
                version=1,
                subject=evil("signature.subject"),
                content=report["sign_text"],
                kind="signature",
                approver_role="customer",
                approver_contact_ids=[contact_id(case_id)],
                expires_at=T0 + timedelta(days=7),
                now=T0,
            ),
        ).id
    link = link_of(sig)
    page = web.get(link)
    shown(page, evil("signature.subject"), evil("report.diagnosis"))
    refused = web.post(
        link,
        data={
            "csrf": csrf_of(page.text),
            "decision": "bogus",
            "signer": evil("signature.signer"),
            "comment": evil("signature.comment"),
        },
    )
    assert refused.status_code == 422
    shown(refused, evil("signature.comment"))
    objected = web.post(
        link,
        data={
            "csrf": csrf_of(page.text),
            "decision": "objected",
            "signer": "客户",
            "comment": evil("signature.comment"),
        },
    )
    assert objected.status_code == 200
    shown(objected, evil("signature.subject"))

    # 7. the inspection checklist, its report, and the monthly summary with its rating
    _inspection_pages(web, session)
    _summary_page(web)

    # 8. an expired link's page and the renewal page (message pages)
    with session_scope() as s:
        late = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="xss-late",
                version=1,
                subject=evil("late.subject"),
                content="内容",
                approver_role="technical_director",
                expires_at=T0 + timedelta(minutes=30),
                now=T0,
            ),
        ).id
    link = link_of(late)
    page = web.get(link)
    assert page.status_code == 410
    shown(page)
    renewed = web.post(link + "/renew", data={"csrf": csrf_of(page.text)})
    assert renewed.status_code == 200
    shown(renewed, evil("late.subject"))

    # 9. the messages: plain text exactly as typed (no "&lt;"), and the dispatcher's incidents page
    from tasks.notify import send_due

    sent = notifications
    sent.down("log://staff/")  # the staff's channel is down: failures become incidents
    send_due(PAGE_AT, worker="test")
    messages = list(sent) + list(sent.refused)
    assert messages
    for m in messages:
        for text in (m.title, m.body):
            assert (
                "&lt;" not in text and "&gt;" not in text and "&#34;" not in text and "&amp;" not in text
            ), text
    everything = "\n".join(f"{m.title}\n{m.body}" for m in messages)
    for typed in (
        evil("intake.description"),
        _fits(RepairRequest, "reported_by", evil("intake.reported_by")),
        evil("approval.subject"),
        evil("signature.subject"),
        evil("DiagnosisForm.subject"),
        evil("late.subject"),
    ):
        assert typed in everything, typed
    from web.incidents import incidents_link

    board = web.get(path(incidents_link()))
    assert board.status_code == 200
    shown(board)


def _open(case_id: int, step: str, kind: str) -> int:
    from models.db import session_scope
    from tasks.approvals import ApprovalRequest, open_approval

    with session_scope() as s:
        return open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step=step,
                version=1,
                subject="审批",
                content="内容",
                kind=kind,
                approver_role="technical_director",
                expires_at=T0 + timedelta(days=3),
                now=T0,
            ),
        ).id


def _accident_reports() -> list[tuple[dict[str, Any], list[str]]]:
    """The accident intake (every free-text field of its form) and its reports, through the accident's tasks."""
    import tasks.accident as A
    from models.db import session_scope
    from models.reports import Report
    from tasks.reports import issue

    request = A.AccidentRequest(
        customer="TYDX",
        reported_by=_fits(A.AccidentRequest, "reported_by", evil("accident.reported_by")),
        description=evil("accident.description"),
        reported_at=T0,
        handover_reason=evil("accident.handover_reason"),
    )
    case_id = plain(A.open_accident)(request, T0, "run-xss-accident")
    plain(A.form_team)(case_id, T0)
    plan = plain(A.record_plan)(
        case_id,
        1,
        {
            "measures": evil("accident.measures"),
            "steps": evil("accident.step") + " | 30",
            "expected_effect": evil("accident.effect"),
            "fallback": evil("accident.fallback"),
            "executor": evil("accident.executor"),
            "tools": evil("accident.tools"),
            "spare_parts": "",
            "needs_testing": False,
        },
        "张技术",
        T0,
    )
    assert not plan.get("error"), plan
    plain(A.record_execution)(case_id, 1, "restored", evil("accident.execution_note"), "张技术", T0)
    context = {**plain(A.accident_report_context)(case_id), "corrections": [evil("accident.correction")]}
    service = plain(issue)(
        case_id,
        "accident_report",
        "accident/service_report",
        context,
        T0 + timedelta(hours=5),
        "紧急抢修小组",
        1,
    )
    summary = plain(issue)(
        case_id,
        "accident_summary",
        "accident/summary",
        {"account": evil("accident.account"), "engineer": evil("accident.engineer"), "plan": None},
        T0 + timedelta(days=2),
        "张技术",
        1,
    )
    review = plain(A.record_review)(
        case_id,
        1,
        {
            "participants": evil("review.participants"),
            "conclusion": evil("review.conclusion"),
            "actions": evil("review.actions"),
        },
        "吴总监",
        T0 + timedelta(days=6),
    )
    with session_scope() as s:
        row = s.get(Report, review["report_id"])
        assert row is not None
        from tasks.links import report_url, sign_url

        review_doc = {
            "title": row.title,
            "view_url": report_url(row.id, now=T0),
            "sign_url": sign_url(row.id, now=T0),
        }  # type: ignore[arg-type]
    return [
        (service, [evil("accident.description"), evil("accident.correction")]),
        (summary, [evil("accident.account")]),
        (review_doc, [evil("review.conclusion"), evil("review.actions")]),
    ]


def _inspection_pages(web: TestClient, session: Session) -> None:
    """The engineer's checklist page (every note and pre-check), then the inspection report built from it."""
    from models import Staff
    from models.db import session_scope
    from models.outbox import Notification
    from tasks.approvals import ApprovalRequest, open_approval
    from tasks.inspection import (
        checklist_spec,
        plan_inspections,
        record_checklist,
        report_context,
        report_version,
    )
    from tasks.links import CHECKLIST_PAGE
    from tasks.reports import issue

    visit = datetime(2026, 10, 13, 2, tzinfo=UTC)
    case_id = plan_inspections(datetime(2026, 9, 30, 17, 15, tzinfo=UTC)).created[0]
    with session_scope() as s:
        engineer = s.exec(select(Staff).where(Staff.name == "刘工程师")).one()
        spec = {**checklist_spec(s, case_id), "page": CHECKLIST_PAGE}
        aid = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="checklist-v1",
                version=1,
                subject=evil("checklist.subject"),
                content=evil("checklist.content"),
                kind="form",
                approver_staff_ids=[engineer.id],
                approver_role="engineer",
                expires_at=visit + timedelta(days=3),
                now=visit,
                form=spec,
                template="inspection/checklist_request",
                context={"page": CHECKLIST_PAGE},
            ),
        ).id
        body = s.exec(
            select(Notification.body).where(
                Notification.case_id == case_id, Notification.template == "inspection/checklist_request"
            )
        ).first()
    assert body
    link = path(re.search(r"https?://\S+", body)[0])  # type: ignore[index]
    at(web, visit + timedelta(hours=2))
    page = web.get(link)
    assert page.status_code == 200
    shown(page, evil("checklist.subject"), evil("checklist.content"))
    keys = sorted({k for k in re.findall(r'name="r\|([^"]+)"', page.text)})
    assert keys
    import html as html_lib

    keys = [html_lib.unescape(k) for k in keys]
    notes = {f"n|{k}": evil(f"note.{i}") for i, k in enumerate(keys)}
    data = {
        "csrf": csrf_of(page.text),
        "pre_changes": evil("pre_changes"),
        "pre_reported": evil("pre_reported"),
        "comment": evil("checklist.comment"),
        **{f"r|{k}": "normal" for k in keys},
        **notes,
    }
    refused = web.post(link, data=data)  # the backup is not confirmed: refused, what was typed kept
    assert refused.status_code == 422
    shown(refused, evil("pre_changes"), evil("pre_reported"), evil("checklist.comment"), *notes.values())
    done = web.post(
        link, data={**data, "pre_backup": "yes", "pre_agreed": "yes", "pre_agreed_by": evil("agreed")[:50]}
    )
    assert done.status_code == 200, done.text[:500]
    shown(done, evil("checklist.subject"))
    row = approval_row(aid)
    assert row.payload["prechecks"]["changes"] == evil("pre_changes")

    checked = plain(record_checklist)(case_id, 1, row.payload, visit + timedelta(hours=2), "刘工程师", spec)
    assert not checked["error"], checked
    context = {**plain(report_context)(case_id, 1), "report_key": "checklist-v1", "unsigned": None}
    doc = plain(issue)(
        case_id,
        "inspection_report",
        "inspection/report",
        context,
        visit + timedelta(hours=3),
        "刘工程师",
        plain(report_version)(case_id, "checklist-v1"),
    )
    at(web, visit + timedelta(hours=4))
    for url in (doc["view_url"], doc["sign_url"]):
        shown(web.get(path(url)), evil("pre_changes"), evil("pre_reported"), *list(notes.values())[:3])
    at(web, PAGE_AT)


def _summary_page(web: TestClient) -> None:
    """The monthly service summary's rating page: the comment and the name, refused then recorded."""
    from models.db import session_scope
    from models.outbox import Notification
    from tasks.inspection import calendar_for
    from tasks.summary import issue_summary

    now = datetime(2026, 11, 2, 2, tzinfo=UTC)
    with session_scope() as s:
        issue_summary(
            s,
            1,
            kind="monthly",
            period="2026-10",
            first=date(2026, 10, 1),
            last=date(2026, 10, 31),
            now=now,
            calendar=calendar_for(s),
        )
    with session_scope() as s:
        body = s.exec(
            select(Notification.body)
            .where(Notification.template == "inspection/service_summary")
            .order_by(col(Notification.id).desc())
        ).first()
    assert body
    link = path(re.search(r"https?://\S+", body)[0])  # type: ignore[index]
    at(web, now + timedelta(hours=1))
    page = web.get(link)
    assert page.status_code == 200
    shown(page)
    typed = {"comment": evil("rating.comment"), "by": evil("by")}  # a name: kept to 100 characters
    refused = web.post(link, data={"csrf": csrf_of(page.text), **typed})  # no item rated
    assert refused.status_code == 422
    shown(refused, *typed.values())
    rating = {f"rate_{k}": "优" for k in ("inspection", "repair", "uptime", "skill", "overall")}
    done = web.post(link, data={"csrf": csrf_of(page.text), **typed, **rating})
    assert done.status_code == 200, done.text[:400]
    shown(done, *typed.values())
    shown(web.get(link), *typed.values())
    at(web, PAGE_AT)


# --- mail shows HTML: the plain-text message is escaped there -----------------------------------------


def test_a_mail_channel_gets_the_text_escaped_as_html_and_chat_gets_it_as_typed(
    aftercare_home: Path, smtp_sink: Any
) -> None:
    from tasks.channels import deliver

    text = evil("mail.body") + "\n第二行"
    assert deliver(smtp_sink.url("zhang@example.com"), title=evil("mail.title"), body=text) is None
    [mail] = smtp_sink.messages
    assert mail.body.strip().startswith(evil("mail.body"))  # the plain part: as typed
    assert mail.subject == evil("mail.title")
    # the HTML part, as a mail client renders it: the text escaped, nothing to run
    assert mail.html
    for piece in PIECES:
        assert piece not in mail.html
    doc = _Document()
    doc.feed(mail.html)
    doc.close()
    assert not doc.runs, doc.runs
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in mail.html and "{{7*7}}" in mail.html


# --- headers, routes, the root page --------------------------------------------------------------------


def test_every_response_sends_the_security_headers_and_no_api_docs_are_served(db_url: str) -> None:
    from web.app import create_app

    client = TestClient(create_app())
    for url in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert_safe_headers(answer)
    for url in ("/health", "/static/signature-pad.js", "/a/not-a-token", "/reports/nothing", "/incidents/x"):
        assert_safe_headers(client.get(url))
    script = client.get("/static/signature-pad.js")
    assert script.status_code == 200 and "toDataURL" in script.text
    assert script.headers["content-type"].startswith(("application/javascript", "text/javascript"))


def test_the_root_page_is_the_board_behind_the_staff_login(db_url: str) -> None:
    from models.settings import get_settings
    from tests.staff_login import log_in, make_account
    from web.app import create_app

    client = TestClient(create_app())
    refused = client.get("/")  # followed to the login page
    assert refused.status_code == 200 and refused.headers["content-type"].startswith("text/html")
    assert str(refused.url).endswith("/login?next=/")
    assert "员工登录" in shown(refused) and '"detail"' not in refused.text
    assert_safe_headers(refused)
    make_account("dispatcher1")
    assert log_in(client).status_code == 303
    page = client.get("/")
    assert page.status_code == 200 and "调度看板" in shown(page)
    ui = get_settings().prefect_url.removesuffix("/api")
    assert f'href="{ui}"' in page.text
    assert_safe_headers(page)
    assert client.get("/health").status_code == 200


def test_the_signing_page_runs_no_inline_script_and_its_pad_still_posts_a_drawing(
    demo: str, web: TestClient, session: Session
) -> None:
    from models.reports import Signature
    from tasks.cases import RepairRequest, take_request
    from tasks.reports import issue

    case_id = plain(take_request)(
        RepairRequest(customer="TYDX", reported_by="王", description="存储告警", reported_at=T0),
        T0,
        "run-pad",
    )
    doc = plain(issue)(
        case_id,
        "service_report",
        "repair/service_report",
        {
            "solved_remotely": True,
            "diagnosis": "恢复",
            "command_log": "",
            "plan": None,
            "work_done": "远程恢复",
            "parts_used": [],
            "maintenance": "",
            "further_problems": [],
            "engineer": "刘工程师",
            "corrections": [],
        },
        T0,
        "刘工程师",
        1,
    )
    page = web.get(path(doc["sign_url"]))
    shown(page)
    assert '<script src="/static/signature-pad.js"' in page.text
    assert (
        'id="pad"' in page.text and 'id="image"' in page.text and 'name="image"' in page.text
    )  # what the script uses
    drawn = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    answer = web.post(
        path(doc["sign_url"]),
        data={
            "csrf": csrf_of(page.text),
            "content_hash": doc["hash"],
            "signer_name": "客户",
            "method": "drawn",
            "image": drawn,
            "action": "sign",
        },
    )
    assert answer.status_code == 200 and "签字成功" in answer.text
    saved = session.exec(select(Signature).where(Signature.report_id == doc["id"])).one()
    assert saved.method == "drawn" and saved.image == drawn


# --- renewing an expired link: one per approval per 10 minutes ----------------------------------------


def test_an_expired_links_renewal_sends_one_link_per_ten_minutes(demo: str, web: TestClient) -> None:
    from models.db import session_scope
    from models.outbox import Notification
    from tasks.approvals import ApprovalRequest, open_approval
    from tasks.cases import RepairRequest, take_request

    case_id = plain(take_request)(
        RepairRequest(customer="TYDX", reported_by="王", description="存储告警", reported_at=T0),
        T0,
        "run-renew",
    )
    with session_scope() as s:
        aid = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="plan-approval",
                version=1,
                subject="解决方案",
                content="更换电源模块",
                approver_role="technical_director",
                expires_at=T0 + timedelta(hours=1),
                now=T0,
            ),
        ).id
    link = link_of(aid)

    def renewals() -> int:
        with session_scope() as s:
            return len(
                s.exec(select(Notification).where(Notification.template == "approval_link_renewed")).all()
            )

    first_at = T0 + timedelta(hours=2)
    at(web, first_at)
    page = web.get(link)
    assert page.status_code == 410
    csrf = csrf_of(page.text)
    assert web.post(link + "/renew", data={"csrf": csrf}).status_code == 200
    assert renewals() == 1
    for later in (timedelta(seconds=1), timedelta(minutes=5), timedelta(minutes=9, seconds=59)):
        at(web, first_at + later)
        again = web.post(link + "/renew", data={"csrf": csrf})
        assert again.status_code == 429
        text = shown(again)
        assert "新链接已于 2026-11-23 12:00 发送给 吴总监" in text and "12:10 后再试" in text
        assert renewals() == 1  # nothing queued
    at(web, first_at + timedelta(minutes=10))
    assert web.post(link + "/renew", data={"csrf": csrf}).status_code == 200
    assert renewals() == 2


# --- what aftercare writes under its home is its owner's only ------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_home_is_0700_and_database_logs_secret_and_notification_log_are_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from deployments.supervisor import Supervisor
    from models.db import get_engine, migrate
    from models.settings import get_settings
    from tasks.channels import deliver

    old = os.umask(0o022)  # what a login shell usually has
    try:
        home = tmp_path / "var"
        monkeypatch.setenv("AFTERCARE_HOME", str(home))
        monkeypatch.delenv("AFTERCARE_SECRET_KEY", raising=False)
        monkeypatch.delenv("AFTERCARE_DATABASE_URL", raising=False)
        get_settings.cache_clear()
        settings = get_settings()
        settings.signing_key()
        migrate(settings.db_url)
        with get_engine(settings.db_url).connect() as conn:  # WAL mode: -wal and -shm exist while connected
            conn.exec_driver_sql("SELECT count(*) FROM approval").all()
            db = home / "aftercare.db"
            files = [db, home / "aftercare.db-wal", home / "aftercare.db-shm", home / "secret_key"]
            assert deliver("log://staff/13800000001", title="标题", body="正文") is None
            files.append(home / "notifications.log")
            sup = Supervisor(echo=lambda _: None, logs=home / "logs")
            child = sup.add("web", ["true"], dict(os.environ), restart=False)
            assert child.proc is not None
            child.proc.wait(timeout=30)
            sup.note("web exited")  # the supervisor's own log is private too
            files.append(home / "logs" / "supervisor.log")
            files.append(child.log)
            assert _mode(home) == 0o700 and _mode(home / "logs") == 0o700
            for f in files:
                assert f.exists() and _mode(f) == 0o600, f"{f.name}: {oct(_mode(f))}"
        get_engine(settings.db_url).dispose()
    finally:
        os.umask(old)
        get_settings.cache_clear()


def test_an_older_homes_wide_files_are_narrowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.db import get_engine
    from models.settings import get_settings

    home = tmp_path / "old"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    db = home / "aftercare.db"
    db.touch()
    db.chmod(0o644)
    monkeypatch.setenv("AFTERCARE_HOME", str(home))
    monkeypatch.delenv("AFTERCARE_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        url = get_settings().db_url
        get_engine(url)
        assert _mode(home) == 0o700 and _mode(db) == 0o600
        get_engine(url).dispose()
    finally:
        get_settings.cache_clear()


def test_two_web_processes_asked_at_once_send_one_fresh_link(demo: str) -> None:
    """The limit lives in the database: of two renewals racing (two web processes), one sends."""
    import threading

    from models.db import session_scope
    from models.outbox import Notification
    from tasks.approvals import ApprovalRequest, Approver, open_approval, renew_link
    from tasks.cases import RepairRequest, take_request
    from tasks.links import verify_token

    case_id = plain(take_request)(
        RepairRequest(customer="TYDX", reported_by="王", description="存储告警", reported_at=T0),
        T0,
        "run-race",
    )
    with session_scope() as s:
        aid = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="plan-approval",
                version=1,
                subject="解决方案",
                content="更换电源模块",
                approver_role="technical_director",
                expires_at=T0 + timedelta(hours=1),
                now=T0,
            ),
        ).id
    who = Approver.parse(str(verify_token(link_of(aid).rsplit("/", 1)[1], "a", now=T0)["p"]))
    now = T0 + timedelta(hours=2)
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def ask() -> None:
        start.wait()
        outcomes.append(renew_link(aid, who, now=now).outcome)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["recorded", "too_soon", "too_soon", "too_soon"]
    with session_scope() as s:
        assert (
            len(s.exec(select(Notification).where(Notification.template == "approval_link_renewed")).all())
            == 1
        )


def test_pages_and_reports_share_one_autoescaping_environment_and_no_template_carries_inline_script() -> None:
    """Every page is rendered by the one factory's environment (HTML escaped, text messages not), and no
    template needs what the Content-Security-Policy forbids: an inline script or an `on…` handler."""
    from tasks.render import TEMPLATES, environment
    from web.pages import STATIC, WEB_TEMPLATES, templates

    assert templates.env is environment(WEB_TEMPLATES)
    for env in (templates.env, environment()):
        assert env.autoescape("approvals/page.html.j2") is True  # type: ignore[operator]
        assert env.autoescape("repair/service_report.zh.html.j2") is True  # type: ignore[operator]
        assert env.autoescape("notify/repair/opened.zh.txt.j2") is False  # type: ignore[operator]
    assert environment().from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    for template in [*WEB_TEMPLATES.rglob("*.j2"), *TEMPLATES.rglob("*.html.j2")]:
        source = template.read_text(encoding="utf-8")
        for tag in re.findall(r"<script\b[^>]*>", source):
            assert "src=" in tag, f"{template}: inline script"
            src = re.search(r'src="/static/([^"]+)"', tag)
            assert src and (STATIC / src[1]).is_file(), f"{template}: {tag}"
        assert not re.search(r"<[a-zA-Z][^>]*\son[a-z]+\s*=", source), f"{template}: an on… handler"
        assert "javascript:" not in source, template
