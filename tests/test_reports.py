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
    case = open_case(
        session, RepairRequest(customer="TYDX", reported_by="王", description="<script>x</script>告警"), now=T
    )
    ctx = {
        "times": {
            "reported_at": T,
            "contact_at": T,
            "remote_at": T,
            "arrived_at": None,
            "repaired_at": T,
            "restored_at": T,
        },
        "clocks": [],
        "solved_remotely": True,
        "diagnosis": "恢复",
        "command_log": "$ ls",
        "plan": None,
        "work_done": "远程恢复",
        "parts_used": [],
        "maintenance": "",
        "further_problems": [],
        "engineer": "刘工程师",
        "corrections": [],
        **context,
    }
    report = issue_report(
        session, case.id, "service_report", template="repair/service_report", context=ctx, now=T
    )
    session.commit()
    return report


def test_report_is_rendered_escaped_with_a_hash_and_prints_to_pdf(demo: str, session) -> None:  # noqa: ANN001
    report = _report(session)
    assert "<script>x</script>" not in report.content and "&lt;script&gt;" in report.content
    assert "合同外 / 有偿服务" in report.content and len(report.content_hash) == 64
    assert report_pdf(report).startswith(b"%PDF")


def test_signed_then_edited_report_needs_a_new_signature(demo: str, session) -> None:  # noqa: ANN001
    report = _report(session)
    sig = sign_report(
        session, report.id, signed_hash=report.content_hash, signer_name="客户", method="typed", now=T
    )
    assert valid_signature(session, report.id) == sig
    edit_report(
        session, report.id, report.content.replace("远程恢复", "远程恢复（补充）"), now=T, by="刘工程师"
    )
    assert valid_signature(session, report.id) is None
    with pytest.raises(ReportError, match="已被修改"):
        sign_report(
            session, report.id, signed_hash=sig.content_hash, signer_name="客户", method="typed", now=T
        )


def test_fault_report_needs_its_seven_parts() -> None:
    assert len(missing_fault_report_parts({})) == 7
    full = {
        "times": {"reported_at": T, "repaired_at": T},
        "engineer": "a",
        "customer_engineer": "b",
        "symptoms": "s",
        "business_impact": "i",
        "process": "p",
        "cause": "c",
        "solution": "x",
        "advice": "y",
    }
    assert missing_fault_report_parts(full) == []


def test_sign_page_takes_a_drawn_signature_and_refuses_a_forged_link(demo: str, session) -> None:  # noqa: ANN001
    from tasks.links import report_url, sign_url
    from web.app import create_app
    from web.reports import page_now

    report = _report(session)
    app = create_app()
    app.dependency_overrides[page_now] = lambda: T + timedelta(minutes=5)
    client = TestClient(app)
    path = "/" + sign_url(report.id, now=T).split("/", 3)[3]
    page = client.get(path)
    assert page.status_code == 200 and "canvas" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    bad = client.post(
        path,
        data={
            "csrf": csrf,
            "content_hash": report.content_hash,
            "signer_name": "客户",
            "method": "drawn",
            "image": "",
        },
    )
    assert bad.status_code == 422 and "手写签名" in bad.text
    ok = client.post(
        path,
        data={
            "csrf": csrf,
            "content_hash": report.content_hash,
            "signer_name": "客户",
            "method": "drawn",
            "image": DRAWN,
        },
    )
    assert ok.status_code == 200 and "签字成功" in ok.text
    session.expire_all()
    assert valid_signature(session, report.id).method == "drawn"
    assert client.get(path[:-3] + "xyz").status_code == 403
    view = client.get("/" + report_url(report.id, now=T).split("/", 3)[3])
    assert view.status_code == 200 and "客户已签字" in view.text


def test_accident_reports_share_the_report_base_and_mark_paid_service(demo: str, session) -> None:  # noqa: ANN001
    """The accident service report, summary and review report extend common/report_base: the same
    print CSS, header and signature block as the repair reports, and the 有偿服务 mark out of contract."""
    import tasks.accident as A

    case_id = A.open_accident.fn(
        A.AccidentRequest(
            customer="TYDX", reported_by="客户 孙老师", description="图书馆机房核心交换机宕机", reported_at=T
        ),
        T,
        "run-paid",
    )
    A.form_team.fn(case_id, T)
    context = {**A.accident_report_context.fn(case_id), "corrections": ["恢复时间以客户记录为准"]}
    session.expire_all()
    service = issue_report(
        session,
        case_id,
        "accident_report",
        template="accident/service_report",
        context=context,
        now=T + timedelta(hours=5),
        by="紧急抢修小组",
    )
    summary = issue_report(
        session,
        case_id,
        "accident_summary",
        template="accident/summary",
        now=T + timedelta(days=2),
        context={"account": "控制器固件缺陷导致宕机，已升级固件", "engineer": "张技术", "plan": None},
        by="张技术",
    )
    session.commit()
    review = A.record_review.fn(
        case_id,
        1,
        {"participants": "吴总监, 张技术", "conclusion": "固件缺陷，已整改", "actions": "全网升级固件"},
        "吴总监",
        T + timedelta(days=6),
    )
    session.expire_all()
    review_report = session.get(Report, review["report_id"])
    for report in (service, summary, review_report):
        content = report.content
        assert "@page" in content and "@media print" in content  # the shared print CSS
        assert '<div class="paid">合同外 / 有偿服务：' in content and "已于 2026-03-31 到期" in content
        assert "<th>客户</th>" in content and "<th>合同</th>" in content  # the shared header
    s = service.content
    assert "<h1>事故处理服务报告</h1>" in s
    for section in (
        "事故概况",
        "事故级别",
        "事故描述",
        "开始时间",
        "恢复时间",
        "紧急抢修小组",
        "客户联系人",
        "原厂商支持",
        "备机",
        "进展通报",
        "处理过程",
        "最终方案",
        "根据客户意见的更正",
        "恢复时间以客户记录为准",
    ):
        assert section in s, section
    assert "事故立案" in s and "紧急抢修小组组建" in s  # the history, in Chinese
    assert "客户签字" in s and "张技术（紧急抢修小组组长）" in s  # the shared signature block
    assert "<h1>事故总结</h1>" in summary.content and "控制器固件缺陷导致宕机" in summary.content
    r = review_report.content
    assert (
        "<h1>事故技术评审会议报告</h1>" in r
        and "固件缺陷，已整改" in r
        and "全网升级固件" in r
        and "吴总监、张技术" in r
    )
