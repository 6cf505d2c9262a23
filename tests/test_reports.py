"""Reports: issued with a hash, signed on the web page, a signed-then-edited report loses its signature."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from models.reports import Report
from tasks.cases import RepairRequest, open_case
from tasks.reports import (
    ReportError,
    edit_report,
    issue_report,
    missing_fault_report_parts,
    report_pdf,
    sign_report,
    valid_signature,
)

T = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
DRAWN = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def _report(session, **context) -> Report:  # noqa: ANN001, ANN003
    case = open_case(session, RepairRequest(customer="TYDX", reported_by="王", description="<script>x</script>告警"),
                     now=T)
    ctx = {"times": {"reported_at": T, "contact_at": T, "remote_at": T, "arrived_at": None, "repaired_at": T,
                     "restored_at": T}, "clocks": [], "solved_remotely": True, "diagnosis": "恢复", "command_log": "$ ls",
           "plan": None, "work_done": "远程恢复", "parts_used": [], "maintenance": "", "further_problems": [],
           "engineer": "刘工程师", "corrections": [], **context}
    report = issue_report(session, case.id, "service_report", template="repair/service_report", context=ctx, now=T)
    session.commit()
    return report


def test_report_is_rendered_escaped_with_a_hash_and_prints_to_pdf(demo: str, session) -> None:  # noqa: ANN001
    report = _report(session)
    assert "<script>x</script>" not in report.content and "&lt;script&gt;" in report.content
    assert "合同外 / 有偿服务" in report.content and len(report.content_hash) == 64
    assert report_pdf(report).startswith(b"%PDF")


def test_signed_then_edited_report_needs_a_new_signature(demo: str, session) -> None:  # noqa: ANN001
    report = _report(session)
    sig = sign_report(session, report.id, signed_hash=report.content_hash, signer_name="客户", method="typed", now=T)
    assert valid_signature(session, report.id) == sig
    edit_report(session, report.id, report.content.replace("远程恢复", "远程恢复（补充）"), now=T, by="刘工程师")
    assert valid_signature(session, report.id) is None
    with pytest.raises(ReportError, match="已被修改"):
        sign_report(session, report.id, signed_hash=sig.content_hash, signer_name="客户", method="typed", now=T)


def test_fault_report_needs_its_seven_parts() -> None:
    assert len(missing_fault_report_parts({})) == 7
    full = {"times": {"reported_at": T, "repaired_at": T}, "engineer": "a", "customer_engineer": "b",
            "symptoms": "s", "business_impact": "i", "process": "p", "cause": "c", "solution": "x", "advice": "y"}
    assert missing_fault_report_parts(full) == []


def test_sign_page_takes_a_drawn_signature_and_refuses_a_forged_link(demo: str, session) -> None:  # noqa: ANN001
    from web.app import create_app
    from web.reports import page_now, report_url, sign_url

    report = _report(session)
    app = create_app()
    app.dependency_overrides[page_now] = lambda: T + timedelta(minutes=5)
    client = TestClient(app)
    path = "/" + sign_url(report.id, now=T).split("/", 3)[3]
    page = client.get(path)
    assert page.status_code == 200 and "canvas" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    bad = client.post(path, data={"csrf": csrf, "content_hash": report.content_hash, "signer_name": "客户",
                                  "method": "drawn", "image": ""})
    assert bad.status_code == 422 and "手写签名" in bad.text
    ok = client.post(path, data={"csrf": csrf, "content_hash": report.content_hash, "signer_name": "客户",
                                 "method": "drawn", "image": DRAWN})
    assert ok.status_code == 200 and "签字成功" in ok.text
    session.expire_all()
    assert valid_signature(session, report.id).method == "drawn"
    assert client.get(path[:-3] + "xyz").status_code == 403
    view = client.get("/" + report_url(report.id, now=T).split("/", 3)[3])
    assert view.status_code == 200 and "客户已签字" in view.text
