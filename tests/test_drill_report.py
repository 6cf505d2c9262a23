"""The 演练报告 as the customer sees it: the report page (fetched through the FastAPI app) and the
printed PDF (its text read with pdftotext) show the timeline expected vs actual, the objectives, the
gaps and the drawn signature; the next drill of the system starts from the revised recovery plan and
shows the last drill's gaps to check."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import col, select

from flows.drill import drill
from models import Case
from models.reports import Report
from rules.calendar import add_working_days
from tasks.drill import DrillRequest
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, say
from tests.test_drill_branches import PLAN, _approval, _at, _local, _request, _whole_drill_script


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def test_the_signed_drill_report_prints_with_its_timeline_objectives_and_signature(
    fast: FastFlow, tmp_path: Path
) -> None:
    from tasks.links import report_url
    from web.app import create_app
    from web.reports import page_now

    wished = add_working_days(_local(T0), 10)
    assert (
        fast.run(drill, _request(fast, "YLPRINT", wished), at=T0, script=_whole_drill_script(wished))
        == "archived"
    )
    case_id = fast.case_of_run()
    with fast.session() as s:
        report = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "drill_report")).one()
    signed_at = _at(wished, 11, 30)

    app = create_app()
    app.dependency_overrides[page_now] = lambda: signed_at + timedelta(minutes=5)
    client = TestClient(app)
    page = client.get(_path(report_url(report.id, now=signed_at)))
    assert page.status_code == 200
    assert "演练报告" in page.text and "演练时间线（预计与实际）" in page.text
    assert "签字人：测试联系人" in page.text and "data:image/png;base64," in page.text  # the drawn signature

    pdf = client.get(_path(report_url(report.id, now=signed_at)) + "/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    (tmp_path / "report.pdf").write_bytes(pdf.content)
    text = subprocess.run(
        ["pdftotext", "-layout", str(tmp_path / "report.pdf"), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    squeezed = "".join(text.split())
    for expected in (
        "演练报告",
        "主备切换演练",
        "切换到备库",  # a timeline row: expected 20, actual 25, +5
        "RTO（恢复时间目标）",
        "60分钟；实际40.0分钟",
        "客户值班人员不熟悉业务验证步骤",
        "应急方案满足客户业务需要",
        "业务验证操作（2027-01-15前完成）",
        "签字人：测试联系人",
    ):
        assert expected in squeezed, (expected, text)

    # the next drill of the system: recovery plan v2 (approved after the gaps) is in force, so no
    # recovery plan is asked for; the lead's drill plan form shows the gaps to check and the training
    nxt = add_working_days(wished, 30)
    request = DrillRequest(customer="YLPRINT", system="核心业务系统", kind="failover", wished_day=nxt)
    before = len(fast.waits)
    waiting = fast.run(
        drill,
        request,
        at=_at(wished, 15),
        until="drill-plan-approval",
        script=[say("drill-plan", PLAN, at=_at(wished, 16))],
    )
    assert waiting.step == "drill-plan-approval"
    second = fast.case_of_run()
    form = _approval(fast, second, "drill-plan")[0]
    assert "应急恢复方案 v2" in form.content and "RTO 60 分钟" in form.content
    assert "备库切换脚本需手工确认参数" in form.content and "业务验证操作（未完成）" in form.content
    assert fast.waits[before:] == ["drill-plan", "drill-plan-approval"]
    with fast.session() as s:
        case = s.get(Case, second)
        assert case is not None and case.data["recovery_version"] == 2  # what this drill's RTO/RPO come from


def test_the_monthly_summary_shows_the_drill_and_its_objectives(fast: FastFlow) -> None:
    from datetime import date

    from tasks.summary import gather, render_summary

    wished = add_working_days(_local(T0), 10)  # 2026-12-07
    assert (
        fast.run(drill, _request(fast, "YLSUM", wished), at=T0, script=_whole_drill_script(wished))
        == "archived"
    )
    case_id = fast.case_of_run()
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        facts = gather(
            s,
            case.customer_id,
            kind="monthly",
            period="2026-12",
            first=date(2026, 12, 1),
            last=date(2026, 12, 31),
        )
        november = gather(
            s,
            case.customer_id,
            kind="monthly",
            period="2026-11",
            first=date(2026, 11, 1),
            last=date(2026, 11, 30),
        )
    assert november.drills == []
    assert [(d["number"], d["day"], d["rto_met"], d["rpo_met"], d["gaps"]) for d in facts.drills] == [
        (case.number, "2026-12-07", True, True, 2)
    ]
    html = render_summary(facts, issued_at=_at(date(2027, 1, 4), 9), due_by=date(2027, 1, 8))
    assert "应急演练" in html and case.number in html and "主备切换演练" in html


def test_the_drill_report_heads_with_customer_system_kind_and_day_not_a_fault_level(fast: FastFlow) -> None:
    wished = add_working_days(_local(T0), 10)
    assert (
        fast.run(drill, _request(fast, "YLHEAD", wished), at=T0, script=_whole_drill_script(wished))
        == "archived"
    )
    with fast.session() as s:
        report = s.exec(
            select(Report).where(Report.case_id == fast.case_of_run(), Report.kind == "drill_report")
        ).one()
        documents = s.exec(
            select(Report).where(
                Report.case_id == fast.case_of_run(), col(Report.kind).in_(("drill_plan", "recovery_plan"))
            )
        ).all()
    assert {d.kind for d in documents} == {"drill_plan", "recovery_plan"}
    for document in documents:  # the plans the director approves and the customer signs: the same head
        assert "故障级别" not in document.content and "核心业务系统：主备切换演练" in document.content
    head = report.content.split('<div class="section">')[0]  # what comes before the report's body
    assert "故障级别" not in report.content and "报告人 / 渠道" not in report.content
    for shown in (
        "<th>客户</th>",
        "YLHEAD",
        "<th>演练系统</th><td>核心业务系统</td>",
        "主备切换演练",
        str(wished),
    ):
        assert shown in head, shown
