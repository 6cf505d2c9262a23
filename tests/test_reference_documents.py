"""The printed documents of issue 22 (技术服务申请, 值班表, 重要通信保障报告): each rendered from its
template as HTML, in Chinese, printable (A4 page rules, the signature block where a customer signs),
its reference seed in docs/reference/ up to date; one printed to PDF and its text read back."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader

from tasks.reference import SAMPLES, render_sample, seed_path


@pytest.mark.parametrize(
    ("name", "title", "says"),
    [
        ("service_request", "技术服务申请", ["现场确认的故障", "需客户批准的操作", "重启控制器 A"]),
        (
            "duty_roster",
            "值班表",
            ["刘工程师", "13800000004", "2026-12-20 00:00", "未安排专人值班", "010-88886666"],
        ),
        (
            "assurance_plan",
            "重要通信保障方案",
            ["保障申请", "年终结算通信保障", "保障方案 v1（初始方案）", "双人驻场值守"],
        ),
        ("assurance_report", "重要通信保障报告", ["WX-000130", "3 → 2", "有偿服务", "XJ-000045"]),
    ],
)
def test_each_document_renders_in_chinese_printable_and_matches_its_reference_seed(
    name: str, title: str, says: list[str]
) -> None:
    html = render_sample(name)
    assert f"<h1>{title}</h1>" in html and 'lang="zh-CN"' in html
    assert "@page { size: A4" in html and "@media print" in html
    for text in says:
        assert text in html, text
    if name != "duty_roster":  # the roster is sent, not signed; the request and the report are signed
        assert "<!--customer-signature-->" in html
    seed = seed_path(name)
    assert seed.read_text(encoding="utf-8") == html, (
        f"{seed} is out of date: run `uv run python scripts/render_reference.py`"
    )


def test_every_reference_seed_has_its_sample() -> None:
    assert {p.name for p in seed_path("x").parent.glob("*.zh.html")} == {f"{n}.zh.html" for n in SAMPLES}


def test_the_duty_roster_prints_to_pdf_with_its_chinese_text() -> None:
    from tasks.pdf import html_to_pdf

    pdf = html_to_pdf(render_sample("duty_roster"))
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    for expected in ("值班表", "刘工程师", "13800000004", "年终结算通信保障"):
        assert expected in text, (expected, text[:400])


def test_a_case_a_procedure_opened_itself_shows_its_channel_in_chinese() -> None:
    """A drill's documents printed "报告人 / 渠道 王先生 / request": the code the drill records (the
    drill's own documents now have their own head; every document on the common head says it in Chinese)."""
    from tasks.reference import T, _case
    from tasks.render import render

    for code, said in {"request": "客户申请", "schedule": "按计划", "热线": "热线"}.items():
        html = render(
            "common/plan",
            case={**_case("YL-000001"), "channel": code},
            title="应急恢复方案",
            version=1,
            issued_at=T,
            issued_by="张技术",
            plan={"version": 1, "text": "恢复步骤", "author": "张技术", "reason": "initial", "note": ""},
            plan_reason="初始方案",
            parts="",
        )
        assert f"王先生 13900000000 / {said}</td>" in html
