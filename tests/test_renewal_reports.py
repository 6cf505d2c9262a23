"""The renewal's printed documents: the 续约通知函 and the 合同终止移交清单 as the customer opens them
(the report page through the FastAPI app, its PDF read back as text with pdftotext), in Chinese, the
new terms beside the previous ones, typed text escaped."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from flows.renewal import renewal
from models.reports import Report
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, say
from tests.test_renewal_branches import QUOTE, _open


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def _pdftotext(pdf: bytes, tmp_path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def _report(fast: FastFlow, case_id: int, kind: str) -> Report:
    with fast.session() as s:
        return s.exec(select(Report).where(Report.case_id == case_id, Report.kind == kind)).one()


def test_the_notice_page_and_pdf_show_the_quote_beside_the_previous_terms(
    fast: FastFlow, tmp_path: Path
) -> None:
    from tasks.links import report_url
    from web.app import create_app
    from web.reports import page_now

    case_id = _open(fast)
    fast.run(
        renewal,
        case_id,
        at=T0,
        until="renewal-answer-v1",
        script=[
            say("renewal-quote-v1", {**QUOTE, "note": "<script>alert(1)</script>按2027年价目"}, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
        ],
    )
    notice = _report(fast, case_id, "renewal_notice")
    assert notice.title == "续约通知函"
    app = create_app()
    app.dependency_overrides[page_now] = lambda: T0 + timedelta(minutes=5)
    client = TestClient(app)
    page = client.get(_path(report_url(notice.id, now=T0)))  # type: ignore[arg-type]
    assert page.status_code == 200
    assert "续约通知函" in page.text and "398000.00" in page.text and "480000.00" in page.text
    assert "<script>alert(1)</script>" not in page.text  # the typed note is escaped
    pdf = client.get(_path(report_url(notice.id, now=T0)) + "/pdf")  # type: ignore[arg-type]
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = _pdftotext(pdf.content, tmp_path)
    for words in (
        "续约通知函",
        "2027-01-22",
        "398000.00",
        "480000.00",
        "5x8",
        "7x24",
        "提前 60 天书面通知",
        "2026-11-23",
    ):
        assert words in text, words


def test_the_handover_checklist_prints_with_both_sides_signatures(fast: FastFlow, tmp_path: Path) -> None:
    from tasks.pdf import print_in_process

    case_id = _open(fast)
    fast.run(
        renewal,
        case_id,
        at=T0,
        script=[
            say("renewal-quote-v1", QUOTE, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
            say("renewal-answer-v1", {"choice": "终止", "reason": "业务迁移上云"}),
            say(
                "handover",
                {
                    "documents": "设备档案、配置文档",
                    "passwords": "管理账号已交客户",
                    "spare_parts": "无",
                    "open_cases": "无",
                },
                by="沈经理",
            ),
            say("handover-approval", decision="approved", by="高经理"),
            say("handover-signature", decision="signed", report=True),
        ],
    )
    handover = _report(fast, case_id, "handover")
    text = _pdftotext(print_in_process(handover.content), tmp_path)
    for words in ("合同终止移交清单", "业务迁移上云", "设备档案", "客户经理", "沈经理", "客户签字"):
        assert words in text, words


def test_the_monthly_summary_shows_each_renewal_and_how_far_ahead_the_customer_decided(
    fast: FastFlow,
) -> None:
    from datetime import date

    from models import Customer
    from tasks.summary import gather, render_summary

    case_id = _open(fast)
    fast.run(
        renewal,
        case_id,
        at=T0,
        script=[
            say("renewal-quote-v1", QUOTE, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
            say("renewal-answer-v1", {"choice": "续约"}, at=T0 + 3 * timedelta(days=1)),
        ],
    )
    with fast.session() as s:
        customer = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        facts = gather(
            s, customer.id, kind="monthly", period="2026-11", first=date(2026, 11, 1), last=date(2026, 11, 30)
        )  # type: ignore[arg-type]
    (line,) = facts.renewals
    assert line["contract"] == "HT-2026-BJYH" and line["end"] == "2027-01-22"
    assert line["state"] == "已续约：新合同 2027-01-23 至 2028-01-22"
    assert line["decided_days_before_end"] == 57  # answered 2026-11-26
    html = render_summary(facts, issued_at=T0, due_by=date(2026, 12, 7))
    assert "合同与续约" in html and "已续约：新合同 2027-01-23 至 2028-01-22" in html and "57 天" in html


def test_the_kpis_give_the_renewal_rate_and_how_far_ahead_customers_decided(fast: FastFlow) -> None:
    from datetime import date

    from rules import performance as perf
    from tasks.kpi import kpi_rows

    case_id = _open(fast)
    fast.run(
        renewal,
        case_id,
        at=T0,
        script=[
            say("renewal-quote-v1", QUOTE, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
            say("renewal-answer-v1", {"choice": "续约"}, at=T0 + 3 * timedelta(days=1)),
        ],
    )
    with fast.session() as s:
        _facts, rows = kpi_rows(s, "BJYH", first=date(2027, 1, 1), last=date(2027, 1, 31))
    (row,) = rows
    assert row.kpis.renewals == {"renewed": 1}
    assert row.kpis.renewal_rate == 1.0 and row.kpis.renewal_lead_days == 57.0
    shown = perf.flat(row.kpis)
    assert perf.shown("renewal_rate", shown["renewal_rate"]).startswith("100")
    assert ("renewal_lead_days", "续约答复距到期(天)") in perf.columns(rows)
