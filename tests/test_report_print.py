"""What a customer sees on paper: the signed report's page and PDF show the drawn signature, who signed
(for which contact) and when; the PDF embeds a Chinese font that covers its text; `aftercare check`
says when Chinese would print as boxes."""

from __future__ import annotations

import base64
import io
import re
import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader

from models import Contact
from models.reports import Report
from tasks.cases import RepairRequest, open_case
from tasks.reports import issue_report

T = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def _png(width: int = 120, height: int = 40) -> str:
    """A real PNG (a dark diagonal stroke on white), as the signature pad sends it."""
    rows = b"".join(
        b"\x00" + bytes(0 if abs(x - 3 * y) < 4 else 255 for x in range(width)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _service_report(session) -> tuple[Report, Contact]:  # noqa: ANN001
    case = open_case(
        session, RepairRequest(customer="TYDX", reported_by="王", description="存储控制器告警"), now=T
    )
    contact = session.get(Contact, case.data["contact_id"])
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
        "diagnosis": "控制器缓存电池老化",
        "command_log": "$ 查看告警",
        "plan": None,
        "work_done": "更换缓存电池，告警消除",
        "parts_used": [],
        "maintenance": "",
        "further_problems": [],
        "engineer": "刘工程师",
        "corrections": [],
    }
    report = issue_report(
        session, case.id, "service_report", template="repair/service_report", context=ctx, now=T
    )
    session.commit()
    return report, contact


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def test_signed_report_page_and_pdf_show_the_drawn_signature_who_signed_and_when(demo: str, session) -> None:  # noqa: ANN001
    from tasks.links import report_url, sign_url
    from web.app import create_app
    from web.reports import page_now

    report, contact = _service_report(session)
    assert contact is not None and contact.name != "李先生"
    # before signing: the customer's cell waits for the contact; no image anywhere
    assert f"待客户 {contact.name} 签字" in report.content and "签字见签字页" not in report.content
    app = create_app()
    app.dependency_overrides[page_now] = lambda: T + timedelta(minutes=5)
    client = TestClient(app)
    sign = _path(sign_url(report.id, now=T, contact_id=contact.id))
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(sign).text)[1]
    done = client.post(
        sign,
        data={
            "csrf": csrf,
            "content_hash": report.content_hash,
            "signer_name": "李先生",
            "method": "drawn",
            "image": _png(),
        },
    )
    assert done.status_code == 200 and "签字成功" in done.text

    view = client.get(_path(report_url(report.id, now=T)))
    assert view.status_code == 200
    who = f"李先生（代表 {contact.name}）"
    assert f"客户已签字：{who}，2026-11-23 10:05" in view.text
    # the report itself (the iframe's document) carries the drawn image, the signer and the time
    assert "&lt;img class=&#34;signature&#34; src=&#34;data:image/png;base64," in view.text
    assert f"签字人：李先生（代表 {contact.name}）" in view.text and "签字时间：2026-11-23 10:05" in view.text

    pdf = client.get(_path(report_url(report.id, now=T)) + "/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(pdf.content))
    images = [image for page in reader.pages for image in page.images]
    assert len({i.name for i in images}) == 1 and images[0].image.size == (120, 40)  # the drawn signature
    text = "".join(page.extract_text() for page in reader.pages)
    assert f"签字人：{who}" in text and "签字时间：2026-11-23 10:05" in text and "手写签名" in text
    assert "签字见签字页" not in text
    session.expire_all()
    assert (
        session.get(Report, report.id).content == report.content
    )  # the issued content (its hash) is untouched
    from tasks.reports import report_bundle

    assert f"【维修服务报告 v1（客户已签字：{who}）】" in report_bundle.fn(
        [report.id]
    )  # what the director approves


def test_a_signature_edited_away_is_not_printed_and_a_forged_image_is_not_embedded(
    demo: str, session
) -> None:  # noqa: ANN001
    from tasks.reports import edit_report, sign_report, signed_content

    report, contact = _service_report(session)
    forged = "data:image/png;base64," + base64.b64encode(b"<svg onload=alert(1)>").decode()
    sign_report(
        session,
        report.id,
        signed_hash=report.content_hash,
        signer_name="李先生",
        method="drawn",
        image=forged,
        contact_id=contact.id,
        now=T,
    )
    shown = signed_content(session, report)
    assert "签字人：李先生" in shown and "<img" not in shown  # not a PNG: the name and time without an image
    edit_report(session, report.id, report.content.replace("告警消除", "告警已消除"), now=T, by="刘工程师")
    assert "签字人" not in signed_content(session, session.get(Report, report.id))


def test_already_signed_message_names_who_signed_for_whom() -> None:
    from models.approvals import Approval
    from tasks.approvals import _already_message

    row = Approval(
        case_id=1,
        step="service-report-signature",
        version=1,
        kind="signature",
        subject="维修服务报告",
        content="",
        content_hash="h",
        decision="signed",
        decided_by="北京维护负责人",
        decided_at=T,
        payload={"signer_name": "李先生"},
        channel="link",
        expires_at=T,
    )
    assert "已由 李先生（代表 北京维护负责人） 于 2026-11-23 10:00 签字确认" in _already_message(row)


def _pdf_fonts(pdf: bytes) -> dict[str, set[int]]:
    """Each embedded font of the PDF → the code points it draws with a real glyph of its embedded
    program (ToUnicode maps glyph → character; a box would be glyph 0 or a glyph with no outline)."""
    from fontTools.pens.boundsPen import BoundsPen
    from fontTools.ttLib import TTFont

    fonts: dict[str, set[int]] = {}
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for ref in page["/Resources"]["/Font"].values():
            font = ref.get_object()
            descendant = font["/DescendantFonts"][0].get_object()
            descriptor = descendant["/FontDescriptor"].get_object()
            if "/FontFile3" not in descriptor or "/ToUnicode" not in font:
                continue  # not embedded
            program = TTFont(io.BytesIO(descriptor["/FontFile3"].get_object().get_data()))
            glyphs = program.getGlyphSet()
            order = program.getGlyphOrder()
            cmap = font["/ToUnicode"].get_object().get_data().decode()
            drawn = set()
            for gid, code in re.findall(r"<([0-9a-f]{4})> <([0-9a-f]{4,8})>", cmap):
                index = int(gid, 16)
                if index == 0 or index >= len(order):
                    continue
                pen = BoundsPen(glyphs)
                glyphs[order[index]].draw(pen)
                if pen.bounds is not None:
                    drawn.add(int(code, 16))
            fonts[str(font["/BaseFont"])] = fonts.get(str(font["/BaseFont"]), set()) | drawn
    return fonts


def test_report_pdf_embeds_a_font_that_covers_the_chinese_text(demo: str, session) -> None:  # noqa: ANN001
    from tasks.pdf import cjk_font_problem, font_css, packaged_font
    from tasks.reports import report_pdf

    assert packaged_font() is not None and "@font-face" in font_css()  # the wheel, not a system font
    assert cjk_font_problem(use_system=False)[0] is None
    report, _ = _service_report(session)
    pdf = report_pdf(report)
    fonts = _pdf_fonts(pdf)
    title = "维修服务报告"
    covering = [name for name, points in fonts.items() if all(ord(ch) in points for ch in title + "客户签字")]
    assert covering and all("Noto-Sans-CJK" in name for name in covering), fonts.keys()
    assert title in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_check_fails_with_one_line_when_chinese_would_print_as_boxes(tmp_path: Path) -> None:
    from tasks.pdf import cjk_font_problem, packaged_font

    problem, _ = cjk_font_problem(tmp_path / "missing.otf", use_system=False)
    assert problem is not None and "方框" in problem and "\n" not in problem
    latin = (
        next(Path(p) for p in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",) if Path(p).is_file())
        if Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file()
        else None
    )
    if latin is not None:  # a real font without Chinese glyphs
        problem, _ = cjk_font_problem(latin, use_system=False)
        assert problem is not None and "缺少" in problem and "维" in problem
    ok, used = cjk_font_problem(packaged_font(), use_system=False)
    assert ok is None and "Noto Sans CJK SC" in used


@pytest.fixture(autouse=True)
def _stop_pdf_worker():  # noqa: ANN202
    yield
    from tasks.pdf import shutdown

    shutdown()


def test_aftercare_check_names_the_font_or_says_chinese_would_print_as_boxes(tmp_path: Path) -> None:
    """`aftercare check` with the font wheel: a ✔ line naming it. With the wheel's file gone (a package
    of the same name without the font ahead on the path) and no system CJK font (an `fc-list` that finds
    nothing): a ✘ line saying Chinese would print as boxes, and the exit status 1."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFTERCARE_", "PREFECT_"))}
    env.update(AFTERCARE_HOME=str(tmp_path / "var"), PREFECT_API_URL="http://127.0.0.1:9/api")
    run = [sys.executable, "-m", "deployments.cli", "check"]
    good = subprocess.run(run, env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert "✔ 中文字体 / CJK font: Noto Sans CJK SC" in good.stdout, good.stdout + good.stderr

    empty = tmp_path / "shadow" / "cvttf_NotoSansCJK_Regular"
    empty.mkdir(parents=True)
    (empty / "__init__.py").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fc-list").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "fc-list").chmod(0o755)
    env.update(PYTHONPATH=str(empty.parent), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    bad = subprocess.run(run, env=env, cwd=root, capture_output=True, text=True, timeout=120)
    line = next(line for line in bad.stdout.splitlines() if "中文字体" in line)
    assert line.startswith("✘") and "方框" in line and "uv sync" in line, bad.stdout
    assert bad.returncode == 1 and "Traceback" not in bad.stdout + bad.stderr


def test_the_pdf_worker_ends_when_the_web_process_is_killed(tmp_path: Path) -> None:
    """A web process stopped or killed leaves no PDF worker behind (it would hold its memory for ever)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    script = tmp_path / "web_like.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
        "if __name__ == '__main__':\n"
        "    from tasks import pdf\n"
        "    assert pdf.html_to_pdf('<html lang=\"zh-CN\"><body>维修服务报告</body></html>').startswith(b'%PDF')\n"
        "    print(*pdf.worker_pids(), flush=True)\n"
        "    time.sleep(600)\n"
    )
    web = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        [worker] = [int(pid) for pid in web.stdout.readline().split()]  # type: ignore[union-attr]
        assert psutil.pid_exists(worker)
        os.kill(web.pid, signal.SIGKILL)
        web.wait(10)
        deadline = time.monotonic() + 15
        while psutil.pid_exists(worker) and psutil.Process(worker).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the PDF worker outlived the process that started it"
            time.sleep(0.2)
    finally:
        web.kill()
