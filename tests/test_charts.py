"""KPI charts (tasks/charts.py, issue 24): SVG drawn by matplotlib with the packaged CJK font, and
embedded in the monthly service summary (阶段性服务总结) and its printed PDF."""

from __future__ import annotations

import base64
import shutil
import subprocess
import warnings
from datetime import date
from pathlib import Path

import pytest
from sqlmodel import Session

from tests.test_summary import _at, march  # noqa: F401 - the March fixture of the summary tests


def test_a_chart_is_svg_with_its_chinese_drawn_in_the_packaged_font_and_the_same_each_time():
    from tasks.charts import bar_chart, line_chart

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a glyph missing from the font is a warning: fail on it
        bars = bar_chart("各类设备故障数", ["存储", "服务器"], [2, 1])
        line = line_chart("平均修复时间趋势（小时）", ["2026-10", "2026-11"], {"平均修复时间": [4.0, None]})
    for svg in (bars, line):
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
        # the text is drawn as glyph outlines of the packaged Noto Sans CJK (no font needed to view it)
        assert "NotoSansCJK" in svg
        assert "<script" not in svg and "<text" not in svg
    assert bars == bar_chart("各类设备故障数", ["存储", "服务器"], [2, 1])  # no date, fixed ids


def test_charts_drawn_from_several_threads_at_once_all_keep_the_chinese_font():
    from concurrent.futures import ThreadPoolExecutor

    from tasks.charts import bar_chart

    with ThreadPoolExecutor(max_workers=4) as pool:
        svgs = list(pool.map(lambda i: bar_chart(f"第{i}组", ["存储", "服务器"], [i, 1]), range(8)))
    assert all("NotoSansCJK" in svg for svg in svgs)
    assert len(set(svgs)) == 8


def _pdftotext(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "summary.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_the_monthly_summary_embeds_its_charts_and_prints_them(
    march: dict,  # noqa: F811
    session: Session,
    tmp_path: Path,
):
    from rules.calendar import DEFAULT_CALENDAR
    from tasks.pdf import print_in_process
    from tasks.summary import gather, issue_summary, render_summary

    row, _ = issue_summary(
        session,
        march["customer_id"],
        kind="monthly",
        period="2026-03",
        first=date(2026, 3, 1),
        last=date(2026, 3, 31),
        now=_at(2026, 4, 1, 2),
        calendar=DEFAULT_CALENDAR,
        notify=False,
    )
    html = row.content_html
    assert html.count('<figure class="chart">') >= 2
    assert "图1　平均修复时间趋势（小时）" in html and "各类设备故障数" in html
    assert "客户评分分布" not in html  # nothing rated yet: no empty chart
    # the image is an SVG data URI whose trend covers the six months up to March
    start = html.index("data:image/svg+xml;base64,") + len("data:image/svg+xml;base64,")
    svg = base64.b64decode(html[start : html.index('"', start)]).decode()
    assert svg.startswith("<svg") and "NotoSansCJK" in svg
    # the same figures give the same summary (its content hash holds)
    facts = gather(
        session,
        march["customer_id"],
        kind="monthly",
        period="2026-03",
        first=date(2026, 3, 1),
        last=date(2026, 3, 31),
    )
    assert [c.svg for c in facts.charts] == [
        c.svg
        for c in gather(
            session,
            march["customer_id"],
            kind="monthly",
            period="2026-03",
            first=date(2026, 3, 1),
            last=date(2026, 3, 31),
        ).charts
    ]
    assert render_summary(facts, issued_at=row.issued_at, due_by=row.due_by).count("<figure") == html.count(
        "<figure"
    )
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    text = _pdftotext(print_in_process(html), tmp_path)
    assert "阶段性服务总结" in text or "服务总结" in text
    assert "图1" in text and "平均修复时间趋势" in text and "各类设备故障数" in text


def test_the_quarterly_analysis_embeds_the_charts_of_its_quarter(march: dict, session: Session):  # noqa: F811
    from rules.calendar import DEFAULT_CALENDAR
    from tasks.summary import issue_summary

    row, _ = issue_summary(
        session,
        march["customer_id"],
        kind="quarterly",
        period="2026-Q1",
        first=date(2026, 1, 1),
        last=date(2026, 3, 31),
        now=_at(2026, 4, 1, 2),
        calendar=DEFAULT_CALENDAR,
        notify=False,
    )
    assert row.kind == "quarterly"
    assert "图1　平均修复时间趋势（小时）" in row.content_html and "各类设备故障数" in row.content_html
