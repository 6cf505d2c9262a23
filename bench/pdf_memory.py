"""Benchmark: the memory a process keeps after printing reports to PDF.

A signed 维修服务报告 (the drawn signature embedded, the packaged Chinese font) is printed N times,
each copy slightly different, the way the approval web does it (`tasks.reports.report_pdf`: in the
recycled worker process of tasks.pdf). Measures the RSS of the printing process (the web's, here
this one) after 10 and after 100 PDFs — the target: within 50 MB of each other —, the worker's
RSS, and seconds per PDF. For comparison the same is measured with WeasyPrint inside the process
(as before tasks.pdf), which is what grew the approval web to 620 MB.

    uv run python bench/pdf_memory.py            # 10 and 100 PDFs, each way
    uv run python bench/pdf_memory.py --quick    # 5 and 20 (CI)

Prints the figures and writes bench/results/pdf_memory.json (--out to write elsewhere).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import json
import os
import struct
import sys
import tempfile
import time
import zlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
MB = 1024 * 1024
TARGET_MB = 50


def _signature_png(width: int = 600, height: int = 180) -> str:
    """A drawn signature as the signature pad sends it (a PNG data: URL of the pad's size)."""
    rows = b"".join(
        b"\x00"
        + bytes(0 if abs(x - 3 * y - 40) < 5 or abs(x + 2 * y - 420) < 4 else 255 for x in range(width))
        for y in range(height)
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


def _signed_report_html() -> str:
    """A 维修服务报告 issued and signed in a fresh demo database, as the report page prints it."""
    from deployments.seed import seed_demo
    from models.db import get_engine, migrate, session_scope
    from models.settings import get_settings
    from tasks.cases import RepairRequest, open_case
    from tasks.reports import issue_report, sign_report, signed_content

    url = get_settings().db_url
    migrate(url)
    with session_scope(url) as s:
        seed_demo(s, today=date(2026, 11, 23), now=T0)
    with session_scope(url) as s:
        case = open_case(
            s,
            RepairRequest(
                customer="BJYH",
                site="亦庄机房",
                reported_by="客户 李先生",
                description="存储控制器告警，业务读写变慢",
                severity=2,
                reported_at=T0,
            ),
            now=T0,
        )
        times = {
            "reported_at": T0,
            "contact_at": T0 + timedelta(minutes=5),
            "remote_at": T0 + timedelta(minutes=9),
            "arrived_at": T0 + timedelta(hours=1),
            "repaired_at": T0 + timedelta(hours=3),
            "restored_at": T0 + timedelta(hours=3),
        }
        context = {
            "times": times,
            "clocks": [],
            "solved_remotely": False,
            "diagnosis": "控制器缓存电池老化",
            "command_log": "",
            "plan": None,
            "work_done": "更换控制器缓存电池，告警消除，业务读写恢复正常。" * 6,
            "parts_used": [{"name": "缓存电池", "code": "BAT-01", "quantity": 1}],
            "maintenance": "清洁风扇滤网，检查固件版本",
            "further_problems": [],
            "engineer": "刘工程师",
            "corrections": [],
        }
        report = issue_report(
            s,
            case.id,
            "service_report",
            template="repair/service_report",
            context=context,  # type: ignore[arg-type]
            now=T0 + timedelta(hours=3),
        )
        signature = sign_report(
            s,
            report.id,
            signed_hash=report.content_hash,
            signer_name="李先生",  # type: ignore[arg-type]
            method="drawn",
            image=_signature_png(),
            contact_id=case.data["contact_id"],
            now=T0 + timedelta(hours=3, minutes=10),
        )
        html = signed_content(s, report, signature)
    get_engine(url).dispose()
    return html


def _rss() -> int:
    import psutil

    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _run(html: str, counts: tuple[int, int], print_pdf) -> dict[str, float]:  # noqa: ANN001
    """Print PDFs until each count is reached; RSS of this process at each count, seconds per PDF."""
    import psutil

    from tasks import pdf

    figures: dict[str, float] = {"rss_before_mb": round(_rss() / MB, 1)}
    worker_peak = 0
    started = time.perf_counter()
    done = 0
    for count in counts:
        while done < count:
            done += 1
            # each copy differs (another page of text), as different reports do
            out = print_pdf(html.replace("告警消除", f"告警消除（第 {done} 份）", 1))
            assert out.startswith(b"%PDF")
            for pid in pdf.worker_pids():
                with contextlib.suppress(psutil.NoSuchProcess):
                    worker_peak = max(worker_peak, psutil.Process(pid).memory_info().rss)
        figures[f"rss_after_{count}_mb"] = round(_rss() / MB, 1)
    figures["seconds_per_pdf"] = round((time.perf_counter() - started) / done, 3)
    figures["worker_rss_peak_mb"] = round(worker_peak / MB, 1)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size")
    parser.add_argument(
        "--out", default=str(ROOT / "bench" / "results" / "pdf_memory.json"), help="JSON file"
    )
    args = parser.parse_args()
    counts = (5, 20) if args.quick else (10, 100)

    tmp = tempfile.mkdtemp(prefix="aftercare-bench-pdf-")
    os.environ.setdefault("AFTERCARE_HOME", str(Path(tmp) / "var"))
    os.environ["AFTERCARE_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'bench.db'}"

    from tasks import pdf
    from tasks.reports import Report, report_pdf

    html = _signed_report_html()
    report = Report(case_id=0, kind="service_report", content=html, issued_at=T0)

    def worker(text: str) -> bytes:  # what the report page does
        return report_pdf(report, text)

    first, last = counts
    in_worker = _run(html, counts, worker)
    pdf.shutdown()
    in_process = _run(html, counts, pdf.print_in_process)  # WeasyPrint in this process: the old way

    growth = in_worker[f"rss_after_{last}_mb"] - in_worker[f"rss_after_{first}_mb"]
    result = {
        "benchmark": "pdf_memory",
        "size": "quick" if args.quick else "full",
        "pdfs": list(counts),
        "worker_tasks_before_restart": pdf.TASKS_PER_WORKER,
        "font": str(pdf.packaged_font() or "none"),
        "web_process": in_worker,
        "web_rss_growth_mb": round(growth, 1),
        "target_mb": TARGET_MB,
        "met": growth <= TARGET_MB,
        "in_process_for_comparison": in_process,
        "in_process_rss_growth_mb": round(
            in_process[f"rss_after_{last}_mb"] - in_process[f"rss_after_{first}_mb"], 1
        ),
        "cpu_count": os.cpu_count(),
    }
    for key, value in result.items():
        print(f"{key:28} {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
