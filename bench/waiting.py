"""Benchmark: thousands of procedures waiting for an approval hold no process and little memory;
an approval click continues its run within seconds.

It starts what `aftercare up` starts — a Prefect server on SQLite, the runner
(`deployments.serve`, with `bench.waiting_flow` added) and the approval web (uvicorn) — in a
temporary home, then:

1. starts `--real` runs of `bench-waiting` that really execute `request_approval` and suspend
   (their processes exit); the time this takes is reported as suspensions per second;
2. adds the rest of the `--runs` waiting procedures directly as rows: an Approval (with its
   outbox notification) in aftercare's database and a flow run in the *Suspended* state in
   Prefect's — the same rows a real suspension leaves (executing 10,000 flow processes on a
   2-core machine would take hours, and a waiting run is only rows by design);
3. measures the RSS of the server, runner and web processes, the runner's threads and child
   processes, while all of them wait;
4. approves `--latency` of the real runs one after another through the link page (GET the page,
   POST 批准, like a phone) and measures click → run continues (the runner has started it
   again: state Running) and click → run completed.

    uv run python bench/waiting.py            # 10,000 waiting, 100 real, 100 approvals
    uv run python bench/waiting.py --quick    # 30 waiting, 1 real, 1 approval (CI)
    uv run python bench/waiting.py --runs 2000 --real 30 --latency 30   # what fits ~10 min here

Prints the figures and writes bench/results/waiting.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout} s")


def group_rss_mb(pgid: int) -> tuple[float, int, int]:
    """(RSS MB, processes, threads) of every process in a process group."""
    rss = 0
    procs = threads = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # field 5 of stat: pgrp
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        procs += 1
        rss += int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) if "VmRSS" in status else 0
        threads += int(re.search(r"Threads:\s+(\d+)", status).group(1))
    return rss / 1024, procs, threads


def group_cmdlines(pgid: int) -> list[str]:
    """Command lines of a process group's members, the leader first."""
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append((0 if int(entry.name) == pgid else int(entry.name), cmd[:200]))
    return [cmd for _, cmd in sorted(found)]


HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def flow_processes(pgid: int) -> list[str]:
    """The runner's flow-run processes (its fixed multiprocessing helpers left out)."""
    return [c for c in group_cmdlines(pgid)[1:] if not any(h in c for h in HELPERS)]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size")
    parser.add_argument("--runs", type=int, default=None, help="waiting procedures in total")
    parser.add_argument("--real", type=int, default=None, help="of which really executed until suspended")
    parser.add_argument("--latency", type=int, default=None, help="approvals timed")
    parser.add_argument("--poll", type=float, default=0.25, help="AFTERCARE_RUNNER_POLL_SECONDS (s)")
    parser.add_argument("--prefect-db", default=None,
                        help="Prefect's own database, e.g. postgresql+asyncpg://user@host/db (default: SQLite)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "waiting.json"))
    args = parser.parse_args()
    runs = args.runs or (30 if args.quick else 10_000)
    real = args.real or (1 if args.quick else 100)
    latency_n = min(args.latency or (1 if args.quick else 100), real)

    base = Path(tempfile.mkdtemp(prefix="aftercare-bench-waiting-"))
    os.environ["AFTERCARE_RUNNER_POLL_SECONDS"] = str(args.poll)
    os.environ["PREFECT_RUNNER_PROCESS_LIMIT"] = "8"
    from deployments import prefect_server
    from deployments.prefect_env import prefect_env
    from models.settings import Settings

    api_port, web_port = free_port(), free_port()
    settings = Settings(
        home=base / "var",
        secret_key="bench-secret",
        web_port=web_port,
        public_base_url=f"http://127.0.0.1:{web_port}",
    )
    env = prefect_env(settings, api_url=f"http://127.0.0.1:{api_port}/api")
    if args.prefect_db:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = args.prefect_db
    env.update(
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        AFTERCARE_EXTRA_FLOW_MODULES="bench.waiting_flow",
    )
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)  # before prefect is imported below
    full_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (base / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            env=full_env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        children[name] = proc
        return proc

    figures: dict[str, Any] = {
        "size": "quick" if args.quick else "full",
        "runs_waiting": runs,
        "runs_really_suspended": real,
        "approvals_timed": latency_n,
        "runner_poll_seconds": args.poll,
        "prefect_database": "postgresql" if (args.prefect_db or "").startswith("postgresql") else "sqlite",
    }
    try:
        t = time.monotonic()
        start(
            "server",
            prefect_server.command("127.0.0.1", api_port),
        )
        from models.db import migrate, session_scope

        migrate(settings.db_url)
        from deployments.seed import seed_demo

        with session_scope(settings.db_url) as s:
            seed_demo(s, today=START.date(), now=START)
        wait_http(f"http://127.0.0.1:{api_port}/api/health", 120)
        start("runner", [sys.executable, "-m", "deployments.serve"])
        start(
            "web",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "web.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(web_port),
                "--no-access-log",
            ],
        )
        wait_http(f"http://127.0.0.1:{web_port}/health", 60)
        figures["startup_seconds"] = round(time.monotonic() - t, 1)

        case_ids = make_cases(settings.db_url, runs)
        t = time.monotonic()
        real_runs = start_real(case_ids[:real])
        figures["real_suspend_seconds"] = round(time.monotonic() - t, 1)
        figures["real_suspensions_per_second"] = round(real / max(time.monotonic() - t, 1e-9), 2)
        t = time.monotonic()
        add_synthetic(settings.db_url, case_ids[real:])
        figures["synthetic_add_seconds"] = round(time.monotonic() - t, 1)

        # a suspended run's process exits shortly after its state turns Suspended: wait for that
        # (the runner's forkserver and multiprocessing resource tracker are fixed helpers, one each)
        t = time.monotonic()
        while flow_processes(children["runner"].pid) and time.monotonic() - t < 60:
            time.sleep(0.5)
        figures["runner_settle_seconds"] = round(time.monotonic() - t, 1)
        figures["runner_helper_processes"] = [
            c.split(" import ")[0][-60:]
            for c in group_cmdlines(children["runner"].pid)[1:]
            if c not in flow_processes(children["runner"].pid)
        ]
        memory: dict[str, Any] = {}
        total = 0.0
        for name, proc in children.items():
            mb, procs, threads = group_rss_mb(proc.pid)
            memory[name] = {"rss_mb": round(mb, 1), "processes": procs, "threads": threads}
            total += mb
        figures["memory_while_waiting"] = memory
        figures["total_rss_mb"] = round(total, 1)
        figures["suspended_runs_in_prefect"] = count_suspended()
        figures["runner_child_processes_while_waiting"] = len(flow_processes(children["runner"].pid))

        click_running, click_done = approve_and_time(settings, web_port, real_runs[:latency_n])
        figures["click_to_running_p50_s"] = round(pct(click_running, 50), 2)
        figures["click_to_running_p95_s"] = round(pct(click_running, 95), 2)
        figures["click_to_completed_p50_s"] = round(pct(click_done, 50), 2)
        figures["click_to_completed_p95_s"] = round(pct(click_done, 95), 2)
        figures["click_to_running_mean_s"] = (
            round(statistics.fmean(click_running), 2) if click_running else None
        )
        figures["targets"] = {"total_rss_mb": 300, "click_p95_s": 2.0}
    finally:
        for proc in children.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in children.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if os.environ.get("AFTERCARE_BENCH_KEEP"):
            figures["home"] = str(base)
        else:
            import shutil

            shutil.rmtree(base, ignore_errors=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(f"written: {out}")
    return 0


def make_cases(db_url: str, n: int) -> list[int]:
    import sqlalchemy as sa

    from models import Case
    from models.db import session_scope

    with session_scope(db_url) as s:
        first = (s.execute(sa.select(sa.func.max(Case.id))).scalar() or 0) + 1
        s.execute(
            sa.insert(Case),
            [
                dict(
                    kind="repair",
                    customer_id=1,
                    title=f"基准 {i}",
                    reported_at=START,
                    created_at=START,
                    updated_at=START,
                    status="open",
                    data={},
                    channel="",
                    reported_by="",
                    description="",
                    out_of_contract=False,
                )
                for i in range(n)
            ],
        )
    return list(range(first, first + n))


def start_real(case_ids: list[int]) -> list[tuple[str, int]]:
    """Start one run per case and wait until every one is suspended; returns (run id, case id)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    deadline = time.monotonic() + 120
    while True:  # the runner registers the deployment a few seconds after it starts
        try:
            ids = [
                (
                    str(
                        run_deployment(
                            "bench-waiting/bench-waiting",
                            parameters={"case_id": c, "start": START},
                            timeout=0,
                            as_subflow=False,
                        ).id
                    ),
                    c,
                )
                for c in case_ids
            ]
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    pending = {rid for rid, _ in ids}
    with get_client(sync_client=True) as client:
        while pending:
            for rid in list(pending):
                state = client.read_flow_run(rid).state
                if state is not None and state.is_paused():
                    pending.discard(rid)
                elif state is not None and state.is_final():
                    raise SystemExit(f"run {rid} ended {state.name}: {state.message}")
            time.sleep(0.5)
    return ids


def add_synthetic(db_url: str, case_ids: list[int]) -> None:
    """The rows a suspended waiting run leaves, added directly (see the module docstring)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Suspended

    from models.db import session_scope
    from tasks.approvals import approval_key, open_approval

    async def create(chunk: list[int]) -> list[str]:
        async with get_client() as client:
            dep = await client.read_deployment_by_name("bench-waiting/bench-waiting")

            async def one(case_id: int) -> str:
                # created directly in the Suspended state: one API call per waiting run
                run = await client.create_flow_run_from_deployment(
                    dep.id,
                    parameters={"case_id": case_id, "start": START.isoformat()},
                    state=Suspended(pause_key=approval_key("bench-approval", 1)),
                )
                return str(run.id)

            made: list[str] = []
            for j in range(0, len(chunk), 20):  # 20 requests in flight
                made += await asyncio.gather(*(one(c) for c in chunk[j : j + 20]))
            return made

    for i in range(0, len(case_ids), 500):
        chunk = case_ids[i : i + 500]
        run_ids: list[str] = []
        run_ids = asyncio.run(create(chunk))
        with session_scope(db_url) as s:
            for case_id, run_id in zip(chunk, run_ids, strict=True):
                open_approval(
                    s,
                    case_id,
                    "bench-approval",
                    1,
                    "基准测试方案",
                    "基准测试：更换电源模块，预计不中断业务。",
                    approver_role="technical_director",
                    expires_at=START + timedelta(days=7),
                    now=START,
                    flow_run_id=run_id,
                )


def count_suspended() -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    async def count() -> int:
        async with get_client() as client:
            return await client.count_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )

    return asyncio.run(count())


def approve_and_time(
    settings: Any, web_port: int, runs: list[tuple[str, int]]
) -> tuple[list[float], list[float]]:
    """Approve each run through its link page; seconds from the click to Running and to Completed."""
    import httpx
    from prefect.client.orchestration import get_client
    from sqlmodel import select

    from models.approvals import Approval
    from models.db import session_scope
    from models.outbox import Notification

    to_running: list[float] = []
    to_done: list[float] = []
    web = httpx.Client(base_url=f"http://127.0.0.1:{web_port}", timeout=30)
    with get_client(sync_client=True) as client:
        for run_id, case_id in runs:
            with session_scope(settings.db_url) as s:
                row = s.exec(select(Approval).where(Approval.case_id == case_id)).one()
                body = s.exec(
                    select(Notification.body).where(Notification.key.like(f"approval:{row.id}:request:%"))
                ).first()
            token = re.search(r"/a/([A-Za-z0-9_.\-]+)", body).group(1)
            page = web.get(f"/a/{token}")
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
            clicked = time.monotonic()
            answer = web.post(f"/a/{token}", data={"csrf": csrf, "decision": "approved", "comment": "同意"})
            if answer.status_code != 200:
                raise SystemExit(f"approval refused ({answer.status_code}): {answer.text[:300]}")
            running = None
            while True:
                state = client.read_flow_run(run_id).state
                if running is None and state is not None and (state.is_running() or state.is_final()):
                    running = time.monotonic() - clicked
                if state is not None and state.is_final():
                    if not state.is_completed():
                        raise SystemExit(f"run {run_id} ended {state.name}: {state.message}")
                    break
                time.sleep(0.05)
            to_running.append(running or 0.0)
            to_done.append(time.monotonic() - clicked)
    return to_running, to_done


if __name__ == "__main__":
    sys.exit(main())
