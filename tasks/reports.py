"""Reports: render from a template, issue (content + hash), sign, edit, print to PDF.

A report is issued once per (case, kind, version): rendering the same facts again returns the
issued row, so a replayed step issues nothing twice. Editing an issued report changes its hash,
and every signature made on the old content stops being valid (DESIGN.md §7 row 20).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from models import Case, CaseKind, Contact, Event, Role, Staff, append_event
from models.clocks import Clock
from models.db import session_scope
from models.reports import REPORT_TITLES_ZH, Report, ReportKind, Signature, content_hash
from rules.plans import Plan, PlanError, first_plan, revise
from rules.sla import CLOCK_LABELS_ZH
from tasks.cases import Tell, case_facts, team_member
from tasks.ledger import step
from tasks.links import complaint_url, report_url, sign_url
from tasks.notify import queue
from tasks.pdf import html_to_pdf
from tasks.people import NobodyForRole
from tasks.render import render


class ReportError(ValueError):
    """A report that cannot be issued or signed; the message says why."""


# PROCEDURES.md §2 step 15: what a fault-handling report (故障处理报告) must contain at least.
FAULT_REPORT_PARTS: dict[str, str] = {
    "times": "报告 / 远程 / 到场 / 修复时间",
    "people": "工程师与客户工程师",
    "symptoms": "故障现象与业务影响",
    "process": "处理过程",
    "cause": "原因分析",
    "solution": "解决方案",
    "advice": "预防建议",
}


def missing_fault_report_parts(facts: dict[str, Any]) -> list[str]:
    """The required parts a fault report's facts leave empty (Chinese names); [] when complete."""
    times = facts.get("times") or {}
    checks = {
        "times": bool(times.get("reported_at")) and bool(times.get("repaired_at") or times.get("remote_at")),
        "people": bool(facts.get("engineer")) and bool(facts.get("customer_engineer")),
        "symptoms": bool((facts.get("symptoms") or "").strip())
        and bool((facts.get("business_impact") or "").strip()),
        "process": bool((facts.get("process") or "").strip()),
        "cause": bool((facts.get("cause") or "").strip()),
        "solution": bool((facts.get("solution") or "").strip()),
        "advice": bool((facts.get("advice") or "").strip()),
    }
    return [FAULT_REPORT_PARTS[k] for k, ok in checks.items() if not ok]


def issue_report(
    session: Session,
    case_id: int,
    kind: ReportKind | str,
    *,
    template: str,
    context: dict[str, Any],
    now: datetime,
    by: str = "system",
    version: int = 1,
    lang: str = "zh",
) -> Report:
    """Render and store a report (idempotent per case, kind and version)."""
    existing = session.exec(
        select(Report).where(Report.case_id == case_id, Report.kind == str(kind), Report.version == version)
    ).first()
    if existing is not None:
        return existing
    facts = case_facts(session, case_id).as_dict()
    title = REPORT_TITLES_ZH.get(str(kind), str(kind))
    html = render(
        template,
        lang=lang,
        fmt="html",
        case=facts,
        title=title,
        version=version,
        issued_at=now,
        issued_by=by,
        complaint_url=complaint_url(facts["customer_code"], now=now),
        **context,
    )
    report = Report(
        case_id=case_id,
        kind=str(kind),
        version=version,
        title=title,
        content=html,
        content_hash=content_hash(html),
        data=_jsonable(context),
        status="issued",
        issued_by=by,
        issued_at=now,
    )
    session.add(report)
    session.flush()
    # an older version of the same document is replaced by this one
    for older in session.exec(
        select(Report).where(
            Report.case_id == case_id, Report.kind == str(kind), col(Report.version) < version
        )
    ):
        if older.status == "issued":
            older.status = "superseded"
            session.add(older)
    append_event(
        session,
        case_id,
        "report_issued",
        at=now,
        actor=by,
        key=f"report:{kind}:v{version}",
        data={"report_id": report.id, "kind": str(kind), "version": version, "hash": report.content_hash},
    )
    return report


def edit_report(session: Session, report_id: int, content: str, *, now: datetime, by: str) -> Report:
    """Change an issued report's content; its hash changes, so earlier signatures stop matching."""
    report = session.get(Report, report_id)
    if report is None:
        raise ReportError(f"报告 {report_id} 不存在 / no report {report_id}")
    report.content = content
    report.content_hash = content_hash(content)
    report.edited_at = now
    session.add(report)
    append_event(
        session,
        report.case_id,
        "report_edited",
        at=now,
        actor=by,
        data={"report_id": report_id, "hash": report.content_hash},
    )
    return report


def sign_report(
    session: Session,
    report_id: int,
    *,
    signed_hash: str,
    signer_name: str,
    method: str,
    now: datetime,
    image: str = "",
    statement: str = "",
    contact_id: int | None = None,
    staff_id: int | None = None,
    channel: str = "web",
) -> Signature:
    """Record a signature on the content the signer saw (`signed_hash`); refuse if it has changed since."""
    report = session.get(Report, report_id)
    if report is None:
        raise ReportError(f"报告 {report_id} 不存在 / no report {report_id}")
    if signed_hash != report.content_hash:
        raise ReportError(
            "报告在您查看后已被修改，请重新查看后再签字 / the report changed after you opened it"
        )
    name = (signer_name or "").strip()
    if not name:
        raise ReportError("请填写签字人姓名 / the signer's name is required")
    if method not in {"drawn", "typed", "statement"}:
        raise ReportError(f"未知签字方式 / unknown signing method {method!r}")
    if method == "drawn" and not image.startswith("data:image/png;base64,"):
        raise ReportError("请在签字框内手写签名 / draw the signature in the box")
    if method == "statement" and not statement.strip():
        raise ReportError("请勾选确认声明 / tick the statement")
    for old in session.exec(select(Signature).where(Signature.report_id == report_id)):
        if old.is_valid_for(report):
            return old  # already signed this content: the second click changes nothing
    signature = Signature(
        report_id=report_id,
        content_hash=report.content_hash,
        signer_name=name[:100],
        signer_contact_id=contact_id,
        signer_staff_id=staff_id,
        method=method,
        image=image,
        statement=statement[:400],
        channel=channel,
        signed_at=now,
    )
    session.add(signature)
    session.flush()
    append_event(
        session,
        report.case_id,
        "report_signed",
        at=now,
        actor=name,
        key=f"signed:{report_id}:{report.content_hash[:16]}",
        data={
            "report_id": report_id,
            "signature_id": signature.id,
            "hash": report.content_hash,
            "method": method,
        },
    )
    return signature


def valid_signature(session: Session, report_id: int) -> Signature | None:
    """The signature that still matches the report's current content, if any."""
    report = session.get(Report, report_id)
    if report is None:
        return None
    for sig in session.exec(
        select(Signature).where(Signature.report_id == report_id).order_by(col(Signature.id).desc())
    ):
        if sig.is_valid_for(report):
            return sig
    return None


def report_pdf(report: Report, content: str | None = None) -> bytes:
    """The report as PDF (WeasyPrint in a worker process, tasks.pdf; the print CSS is part of the HTML).
    `content`: what to print instead of the issued content — `signed_content(...)` of a signed report."""
    return html_to_pdf(report.content if content is None else content)


# The customer's cell of the signature block (templates/common/_signatures) between these markers is
# filled in when a signed report is shown or printed; the issued content (what the hash binds) keeps it blank.
SIGNATURE_SLOT = re.compile(r"<!--customer-signature-->.*?<!--/customer-signature-->", re.S)
METHOD_ZH = {"drawn": "手写签名", "typed": "以姓名签署", "statement": "勾选确认声明"}
PNG_DATA_URL = "data:image/png;base64,"


def _png_data_url(image: str) -> str:
    """The drawn signature as a data: URL if it really is a PNG, else "" (shown without the image)."""
    if not image.startswith(PNG_DATA_URL):
        return ""
    try:
        data = base64.b64decode(image[len(PNG_DATA_URL) :], validate=True)
    except (binascii.Error, ValueError):
        return ""
    return image if data.startswith(b"\x89PNG\r\n\x1a\n") else ""


def on_behalf_of(session: Session, signature: Signature) -> str:
    """The customer's contact the signer signed for, when that is someone else ("" otherwise)."""
    contact = session.get(Contact, signature.signer_contact_id) if signature.signer_contact_id else None
    return (
        contact.name if contact is not None and contact.name and contact.name != signature.signer_name else ""
    )


def signer_label(session: Session, signature: Signature) -> str:
    """Who signed: the typed name, and for whom ("李先生（代表 北京维护负责人）")."""
    behalf = on_behalf_of(session, signature)
    return f"{signature.signer_name}（代表 {behalf}）" if behalf else signature.signer_name


def signed_content(session: Session, report: Report, signature: Signature | None = None) -> str:
    """The report as the customer signed it: the signature block shows the drawn signature, who
    signed (on behalf of which contact) and when. Unsigned (or signed content since edited): as issued."""
    signature = signature or valid_signature(session, report.id)  # type: ignore[arg-type]
    if signature is None or not signature.is_valid_for(report):
        return report.content
    cell = render(
        "common/_signed",
        lang="zh",
        fmt="html",
        image=_png_data_url(signature.image),
        signer=signature.signer_name,
        on_behalf_of=on_behalf_of(session, signature),
        signed_at=signature.signed_at,
        method_zh=METHOD_ZH.get(signature.method, signature.method),
        statement=signature.statement,
    )
    slot = f"<!--customer-signature-->{cell}<!--/customer-signature-->"
    if SIGNATURE_SLOT.search(report.content):
        return SIGNATURE_SLOT.sub(lambda _m: slot, report.content, count=1)
    # a report issued without the block (or edited out of it): the signature goes at its end
    block = f'<div class="section signatures"><h2>客户签字</h2><table class="sign"><tr><th>客户签字</th><td>{slot}</td></tr></table></div>'
    head, sep, tail = report.content.rpartition("</body>")
    return f"{head}{block}{sep}{tail}" if sep else report.content + block


def timeline(session: Session, case_id: int) -> dict[str, Any]:
    """The moments a report names, read from the case's event log (first occurrence of each)."""
    case = session.get(Case, case_id)
    assert case is not None
    events = list(
        session.exec(select(Event).where(Event.case_id == case_id).order_by(col(Event.at), col(Event.id)))
    )
    first: dict[str, Any] = {}
    for e in events:
        first.setdefault(e.kind, e)

    def at(kind: str) -> datetime | None:
        event = first.get(kind)
        if event is None:
            return None
        value = event.data.get("at")
        return datetime.fromisoformat(value) if isinstance(value, str) else event.at

    return {
        "reported_at": case.reported_at,
        "contact_at": at("first_contact"),
        "remote_at": at("remote_diagnosis"),
        "arrived_at": at("arrived"),
        "repaired_at": at("repaired"),
        "restored_at": at("restored"),
        # 业务先恢复: the first workaround given (remote or on site), its time and what it was
        "workaround_at": at("workaround"),
        "workaround": first["workaround"].data.get("workaround", "") if "workaround" in first else "",
    }


def clock_summary(session: Session, case_id: int) -> list[dict[str, Any]]:
    """Each SLA clock of the case with its due time and whether it was met (for the reports)."""
    rows = session.exec(select(Clock).where(Clock.case_id == case_id).order_by(col(Clock.id)))
    out = []
    for clock in rows:
        out.append(
            {
                "kind": clock.kind,
                "label": CLOCK_LABELS_ZH.get(clock.kind, clock.kind),
                "started_at": clock.started_at,
                "due_at": getattr(clock, "due_at", None),
                "met_at": getattr(clock, "met_at", None),
                "breached_at": getattr(clock, "breached_at", None),
                "stopped": clock.status
                == "stopped",  # stopped, neither met nor breached: the case closed under it
                # a deadline resting on a year whose official holiday notice is not entered yet
                "provisional": bool(getattr(clock, "provisional", False)),
            }
        )
    return out


def plain_text(html: str) -> str:
    """The readable text of a rendered report (the approval page shows text, not markup)."""
    from html.parser import HTMLParser

    class _Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag in {"style", "script", "title"}:
                self.skip += 1
            elif tag in {"p", "div", "tr", "h1", "h2", "h3", "li", "br", "pre", "section"}:
                self.parts.append("\n")

        def handle_endtag(self, tag: str) -> None:
            if tag in {"style", "script", "title"}:
                self.skip -= 1
            elif tag in {"td", "th"}:
                self.parts.append(" ")

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = _Text()
    parser.feed(html)
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    return "\n".join(line for line in lines if line)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# --- tasks ------------------------------------------------------------------------------------


@step("issue", title="出具报告 / issue a report", key="{kind}-v{version}")
def issue(
    case_id: int,
    kind: str,
    template: str,
    context: dict[str, Any],
    now: datetime,
    by: str = "system",
    version: int = 1,
    tell: list[Tell] | None = None,
) -> dict[str, Any]:
    """Render and store a report; returns {id, hash, title, content} (the content the signer will see).
    `tell`: messages about the report (as `tasks.cases.record`'s), queued in the same transaction,
    each with a signed link to the report."""
    with session_scope() as session:
        ctx = dict(context)
        ctx.setdefault("times", timeline(session, case_id))
        ctx.setdefault("clocks", clock_summary(session, case_id))
        report = issue_report(
            session, case_id, kind, template=template, context=ctx, now=now, by=by, version=version
        )
        for notice in tell or []:
            notice.queue(session, case_id, now=now, report_id=report.id)

        case = session.get(Case, case_id)
        contact_id = case.data.get("contact_id") if case else None
        view, sign = report_url(report.id, now=now), sign_url(report.id, now=now, contact_id=contact_id)  # type: ignore[arg-type]
        text = f"{plain_text(report.content)}\n\n查看与打印全文：{view}"
        return {
            "id": report.id,
            "hash": report.content_hash,
            "title": report.title,
            "content": report.content,
            "version": report.version,
            "text": text,
            "view_url": view,
            "sign_url": sign,
            "sign_text": f"{text}\n手写签名或勾选确认：{sign}",
        }


@step("report-context", title="报告所需事实 / report facts")
def report_context(case_id: int) -> dict[str, Any]:
    """Times and clocks of the case as they stand now (each call is its own step: read after new events)."""
    with session_scope() as session:
        return {"times": timeline(session, case_id), "clocks": clock_summary(session, case_id)}


@step("bind-signature", title="记录客户签字 / bind the signature", key="{report_id}")
def bind_signature(
    report_id: int, signer_name: str, payload: dict[str, Any], at: datetime, contact_id: int | None = None
) -> int:
    """Store the customer's signature (from the signing page's payload) bound to the report's hash."""
    with session_scope() as session:
        existing = valid_signature(session, report_id)
        if existing is not None:
            return int(existing.id)  # type: ignore[arg-type]
        report = session.get(Report, report_id)
        assert report is not None
        sig = sign_report(
            # the approvals page signs the approval's text (its own hash); the report page sends the
            # report's hash as `report_hash`. Without it, the signature binds to the report as issued.
            session,
            report_id,
            signed_hash=payload.get("report_hash") or report.content_hash,
            signer_name=payload.get("signer_name") or payload.get("signer") or signer_name,
            method=payload.get("method") or "typed",
            image=payload.get("image") or "",
            statement=payload.get("statement") or "",
            contact_id=contact_id,
            now=at,
            channel=payload.get("channel") or "web",
        )
        return int(sig.id)  # type: ignore[arg-type]


@step("set-report-status", title="报告状态 / report status", key="{status}")
def set_report_status(report_ids: list[int], status: str, at: datetime) -> None:
    """Mark reports approved / archived."""
    with session_scope() as session:
        for rid in report_ids:
            report = session.get(Report, rid)
            if report is not None and report.status != "superseded":
                report.status = status
                session.add(report)


@step("revise-plan", title="修订方案 / revise the plan")
def revise_plan(plan: Plan, text: str, reason: str, author: str, note: str) -> Plan | None:
    """Plan v+1 from the lead's text; None when the text is unusable (the form is asked for again)."""
    try:
        return revise(plan, text, reason=reason, author=author, note=note)
    except PlanError:
        return None


@step("first-plan-of", title="首版方案 / first plan")
def first_plan_of(text: str, author: str) -> Plan | None:
    """Plan v1 from the lead's text; None when the text is unusable."""
    try:
        return first_plan(text, author=author)
    except PlanError:
        return None


@step("report-bundle", title="审批材料 / the bundle to approve")
def report_bundle(report_ids: list[int]) -> str:
    """The reports to approve, one after another, as one HTML page body (each call reads them anew)."""
    with session_scope() as session:
        parts = []
        for rid in report_ids:
            report = session.get(Report, rid)
            if report is not None:
                sig = valid_signature(session, rid)
                mark = f"（客户已签字：{signer_label(session, sig)}）" if sig else ""
                parts.append(f"【{report.title} v{report.version}{mark}】\n{plain_text(report.content)}")
        # the approval page shows text: each document's readable text, one after another
        return "\n\n".join(parts)


# --- the customer's answer on a report's sign page that no waiting flow can take -------------------
#
# The page decides the report version's signature approval (web.reports). When it cannot — the
# customer answered that version otherwise before, a newer version replaced it, nobody asked for this
# signature by link — the answer is still the customer's: kept in the case's history and told to the
# people who own the case, and the page says so. (A complaint reply letter answered after the
# manager's call: tasks.complaints.late_reply_answer.)

ANSWER_OWNER = {  # who owns a case kind's answers besides the report's issuer
    str(CaseKind.COMPLAINT): Role.SERVICE_MANAGER,
    str(CaseKind.RENEWAL): Role.ACCOUNT_MANAGER,
}


def keep_unapplied_answer(
    session: Session, report_id: int, *, satisfied: bool, by: str, comment: str, why: str, now: datetime
) -> str:
    """The customer's answer (signed = satisfied, or an objection) that the flow cannot take, kept in
    the caller's transaction: a `report_answer_kept` history entry (who, when, which version, why not
    taken), the report's issuer and the case's owner told (`report_answer_kept`, urgent for an
    objection). Idempotent per answer. Returns the page's confirmation, in Chinese."""
    report = session.get(Report, report_id)
    assert report is not None
    case = session.get(Case, report.case_id)
    assert case is not None and case.id is not None
    answer, why = ("签字确认" if satisfied else "异议"), why.strip().rstrip("。")
    digest = hashlib.sha256(f"{satisfied}:{by}:{comment}".encode()).hexdigest()[:12]
    key = f"answer-kept:{report_id}:{digest}"
    data = {
        "report_id": report_id,
        "title": report.title,
        "version": report.version,
        "satisfied": satisfied,
        "answer_zh": answer,
        "comment": comment,
        "why": why,
    }
    append_event(session, case.id, "report_answer_kept", at=now, actor=by[:100], key=key, data=data)
    people = _answer_owners(session, case, report)
    queue(
        session,
        recipients=people,
        template="report_answer_kept",
        context={"case": case_facts(session, case.id).as_dict(), "by": by, "at": now, **data},
        key=f"{case.id}:{key}",
        case_id=case.id,
        now=now,
        urgent=not satisfied,
    )
    who = "、".join(p.name for p in people) or "客户服务中心"
    return (
        f"您对{report.title}（第 {report.version} 版）的{answer}已收到并记入 {case.number} 的处理记录，"
        f"但未能直接计入当前处理流程：{why}。已告知 {who}，将尽快与您联系。"
    )


def _answer_owners(session: Session, case: Case, report: Report) -> list[Staff]:
    """Who is told of a kept answer: the report's issuer (when a staff member) and the case's owner
    (the complaint's manager, the renewal's account manager, else the service centre's dispatcher)."""
    issuer = session.exec(select(Staff).where(Staff.name == report.issued_by, Staff.active == True)).first()  # noqa: E712
    try:
        owner: Staff | None = team_member(session, case.id, ANSWER_OWNER.get(case.kind, Role.DISPATCHER))  # type: ignore[arg-type]
    except NobodyForRole:
        owner = None
    return list({p.id: p for p in (issuer, owner) if p is not None}.values())
