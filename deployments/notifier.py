"""`aftercare notifier`: a process that sends the outbox, one per node of a cluster.

The loop: one pass of the notifier (`tasks.notify.run_notifier`, as `notifier@<node>`: the node is
AFTERCARE_NODE, else the host name), then a sleep of `--every` seconds — none after a full batch,
there is more waiting. Any number of notifiers may run against one database: each pass claims its
rows (PostgreSQL `FOR UPDATE SKIP LOCKED`, a lease per row, renewed just before each send), so no
row is sent twice; a notifier that dies leaves its claimed rows to the others once their lease runs
out. The row's `sent_by` records which notifier sent it.

SIGTERM or SIGINT stops it after the row being sent: the rest of its batch is handed back unsent at
once (`hand_back`), and it exits 0. A database that is unreachable or busy for a while ends the
pass, not the loop: one line is printed and the next pass tries again. Under `aftercare up` the
clock keeper sends instead (AFTERCARE_KEEPER_SENDS, true by default); `aftercare cluster up` starts
a notifier per node and sets its keepers' AFTERCARE_KEEPER_SENDS=false.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from models.db import DatabaseError
from tasks.notify import SendReport, node_name, run_notifier

EVERY_RANGE = (0.1, 3600.0)
BATCH = 100  # rows a pass claims: a stop waits for at most one row, a full batch goes on at once

log = logging.getLogger("aftercare.notifier")


class NotifierError(ValueError):
    """A bad option of `aftercare notifier`; the message says why, in one line."""


def parse_every(value: str | float) -> float:
    """`--every` as seconds, or NotifierError with a one-line reason."""
    low, high = EVERY_RANGE
    try:
        seconds = float(str(value).strip())
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or not low <= seconds <= high:
        raise NotifierError(
            f"--every 应为 {low:g} 到 {high:g} 之间的秒数，收到「{value}」/ "
            f"--every must be a number of seconds from {low:g} to {high:g}, got {value!r}"
        )
    return seconds


def worker_label(node: str | None = None) -> str:
    return f"notifier@{node or node_name()}"


def summary(report: SendReport) -> str | None:
    """The progress line of a pass that sent or failed something (None for a quiet pass)."""
    if not (report.sent or report.retrying or report.failed or report.lost_claims or report.errors):
        return None
    parts = [f"发送 / sent {report.sent}"]
    if report.retrying:
        parts.append(f"重试 / retrying {report.retrying}")
    if report.failed:
        parts.append(f"失败 / failed {report.failed}")
    if report.lost_claims:
        parts.append(f"租约已失 / lease lost {report.lost_claims}")
    if report.released:
        parts.append(f"交回 / handed back {report.released}")
    line = ", ".join(parts)
    if report.errors:
        line += f" — {report.errors[0]}" + (f" (+{len(report.errors) - 1})" if len(report.errors) > 1 else "")
    return line


def loop(
    *,
    every: float,
    stop: threading.Event,
    echo: Callable[[str], None],
    clock: Callable[[], datetime],
    worker: str,
    batch: int = BATCH,
    url: str | None = None,
) -> int:
    """Pass, sleep, pass … until `stop` is set; returns how many rows this notifier sent."""
    sent = 0
    while not stop.is_set():
        report = SendReport()  # filled as the pass goes: what was sent counts even if the pass fails
        failed = True
        try:
            run_notifier(clock(), worker=worker, limit=batch, url=url, stop=stop.is_set, report=report)
            failed = False
        except (DatabaseError, sa.exc.SQLAlchemyError, OSError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            echo(
                f"{worker}: 数据库暂不可用，稍后重试 / database unavailable, next pass retries: "
                f"{type(exc).__name__}: {reason[0] if reason else ''}"[:300]
            )
        except Exception:  # a bug in one pass: said with its traceback; the next pass goes on
            log.exception("%s: the pass failed", worker)
            echo(f"{worker}: 本轮出错，见日志 / the pass failed (traceback in the log)")
        sent += report.sent
        if line := summary(report):
            echo(f"{worker}: {line}")
        if not failed and report.claimed >= batch and not report.released:
            continue  # a full batch: more rows are waiting
        stop.wait(every)
    return sent


def run(every: float, *, echo: Callable[[str], None] = print) -> int:
    """The `aftercare notifier` command's body: the loop until SIGTERM/SIGINT; returns rows sent."""
    from models.wallclock import now

    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()  # the row being sent finishes and is recorded; the loop then ends

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    worker = worker_label()
    echo(f"{worker}: 通知发送已启动，每 {every:g} 秒一轮 / notifier started, a pass every {every:g} s")
    try:
        sent = loop(every=every, stop=stop, echo=echo, clock=now, worker=worker)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    echo(f"{worker}: 已停止，本次共发送 {sent} 条 / stopped, {sent} sent")
    return sent
