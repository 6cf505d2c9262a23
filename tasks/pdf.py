"""Reports printed to PDF: WeasyPrint in a short-lived worker process, with a packaged Chinese font.

Font. The report CSS asks for "Noto Sans CJK SC"; at print time an @font-face rule gives that
family the Noto Sans CJK file of the `cvttf-notosanscjk-regular` wheel (SIL Open Font License 1.1,
in the font's own name table), so a machine without any Chinese font prints Chinese, not boxes,
after `uv sync`. Why that wheel: it is the only PyPI package with a *static* Noto Sans CJK; the
other one (`manimgx-fonts-cjk`) is a variable CFF2 collection, which WeasyPrint 70 instantiates on
every PDF (10–14 s each here) and embeds as CFF2, which Adobe Reader does not display. The file is
the TC-region font; it holds all 65,535 glyphs, and `<html lang="zh-CN">` (every report) selects
the simplified-Chinese glyph forms through the font's `locl` feature. Regular weight only: bold
text is emboldened from it.

Worker. WeasyPrint keeps fonts, images and layout caches for the life of its process (the approval
web grew to 620 MB after a few PDFs). Printing happens in one spawned worker process that is
replaced after `TASKS_PER_WORKER` PDFs (`concurrent.futures.ProcessPoolExecutor` with
`max_tasks_per_child`), so the web process never imports WeasyPrint and its memory stays flat
(bench/pdf_memory.py measures it). Spawned workers import the parent's main module again, as
multiprocessing's spawn always does: a script that prints PDFs needs the `if __name__ == "__main__":`
guard (uvicorn, pytest and the benches have it).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import shutil
import subprocess
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import cache
from pathlib import Path
from typing import Any

# text that must not print as boxes (the title of the most common report and its signature line)
SAMPLE_ZH = "维修服务报告客户签字确认"
FONT_FAMILY = "Noto Sans CJK SC"  # the first family of the report CSS (templates/common/report_base)
TASKS_PER_WORKER = 25
TIMEOUT_SECONDS = 120.0


class PdfError(RuntimeError):
    """The report could not be printed; the message says why."""


# --- the font ---------------------------------------------------------------------------------------


def packaged_font() -> Path | None:
    """The Noto Sans CJK file of the font wheel, or None when the wheel is not installed."""
    try:
        import cvttf_NotoSansCJK_Regular as package
    except ImportError:
        return None
    path = Path(package.__file__).resolve().parent / "NotoSansCJKtc-Regular.otf"
    return path if path.is_file() else None


def font_covers(path: Path, text: str = SAMPLE_ZH) -> list[str]:
    """The characters of `text` that the font file has no glyph for ([] when it covers them all)."""
    from fontTools.ttLib import TTFont, TTLibError  # fontTools comes with WeasyPrint

    try:
        font = TTFont(str(path), lazy=True, fontNumber=0)
        cmap = font.getBestCmap() or {}
    except (OSError, TTLibError) as exc:
        raise PdfError(f"字体文件无法读取 / cannot read the font {path}: {exc}") from exc
    return sorted({ch for ch in text if not ch.isspace() and ord(ch) not in cmap})


def system_font_covering(text: str = SAMPLE_ZH) -> str | None:
    """A font installed on the system (fontconfig) with a glyph for every character of `text`, or None."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    charset = " ".join(f"{ord(ch):x}" for ch in sorted(set(text)) if not ch.isspace())
    try:
        out = subprocess.run(
            [fc_list, f":charset={charset}", "file"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    files = [line.strip().rstrip(":") for line in out.splitlines() if line.strip()]
    return files[0] if files else None


def cjk_font_problem(font: Path | None = None, *, use_system: bool = True) -> tuple[str | None, str]:
    """(problem, what is used): problem is None when Chinese prints with a real font, else one line
    saying that it would print as boxes and how to fix it. `font` defaults to the packaged one."""
    font = packaged_font() if font is None else font
    if font is not None and font.is_file():
        missing = font_covers(font)
        if not missing:
            return None, f"{FONT_FAMILY}（{font}）"
        why = f"字体 {font.name} 缺少 {''.join(missing)}"
    else:
        why = "未安装字体包 cvttf-notosanscjk-regular"
    if use_system:
        system = system_font_covering()
        if system:
            return None, f"系统字体 {system}（{why}）"
    return (
        f"{why}，PDF 中的中文将显示为方框 / Chinese would print as boxes: run `uv sync` (it installs the "
        "font wheel) or install a CJK font (Debian: apt-get install fonts-noto-cjk)"
    ), ""


@cache
def font_css() -> str:
    """The @font-face rule that gives the report CSS's family the packaged file (empty without it)."""
    font = packaged_font()
    if font is None:
        return ""
    return f'@font-face {{ font-family: "{FONT_FAMILY}"; src: url("{font.as_uri()}"); }}'


# --- printing ----------------------------------------------------------------------------------------


def _print(html: str) -> bytes:
    """In the worker: HTML → PDF bytes. One FontConfiguration per worker (the font file is loaded once)."""
    from weasyprint import CSS, HTML

    config = _font_config()
    stylesheets = [CSS(string=font_css(), font_config=config)] if font_css() else []
    return HTML(string=html).write_pdf(stylesheets=stylesheets, font_config=config)


@cache
def _font_config() -> Any:
    from weasyprint.text.fonts import FontConfiguration

    return FontConfiguration()


def print_in_process(html: str) -> bytes:
    """HTML → PDF in this process (the worker's entry, and for tools that run once and exit)."""
    return _print(html)


def _exit_with_parent() -> None:
    """Worker initializer: end the worker when the process that started it ends (stopped, killed):
    the worker holds both ends of its task queue, so it would otherwise wait on it for ever."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # spawn: the web serves requests from threads, and forking a threaded process is unsafe
            _pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=TASKS_PER_WORKER,
                initializer=_exit_with_parent,
            )
        return _pool


def _discard(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _pool_lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


def html_to_pdf(html: str, *, timeout: float = TIMEOUT_SECONDS) -> bytes:
    """Print HTML to PDF in the worker process; a worker that died is replaced and the PDF tried once more."""
    for attempt in (1, 2):
        pool = _executor()
        try:
            return pool.submit(print_in_process, html).result(timeout=timeout)
        except BrokenProcessPool as exc:
            _discard(pool)
            if attempt == 2:
                raise PdfError(f"PDF 打印进程异常退出 / the PDF worker died: {exc}") from exc
        except TimeoutError as exc:
            _discard(pool)
            raise PdfError(f"PDF 打印超时（{timeout:g} 秒）/ printing the PDF timed out") from exc
    raise AssertionError("unreachable")


def worker_pids() -> list[int]:
    """The worker process ids (for the memory bench)."""
    pool = _pool
    processes = getattr(pool, "_processes", None) or {}
    return [p.pid for p in processes.values() if p.pid is not None]


def shutdown() -> None:
    """Stop the worker (tests, benches, the web's shutdown)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
