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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# the benchmark's "now": its approvals must not have expired when the link page checks them (the
# web reads the wall clock), so the present hour, not a fixed date
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


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


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def read_lines(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def wait_ready(up: subprocess.Popen[bytes], out: Path, timeout: float) -> float:
    """Wait for `aftercare up`'s ready line; the start-up time it printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read_lines(out)
        found = re.search(r"ready in: +([\d.]+) s", text)
        if found:
            return float(found.group(1))
        if up.poll() is not None:
            raise SystemExit(f"aftercare up exited ({up.returncode}):\n{text[-3000:]}")
        time.sleep(0.2)
    raise SystemExit(f"aftercare up not ready in {timeout} s:\n{read_lines(out)[-3000:]}")


def fork_server_gone(home: Path, timeout: float) -> tuple[list[Any], float]:
    """Wait until the runner stopped its idle fork server (AFTERCARE_WARM_IDLE_SECONDS); the stack
    then and the seconds waited."""
    from bench import footprint

    t = time.monotonic()
    while time.monotonic() - t < timeout:
        procs = footprint.stack(home)
        if not any(p.role == "fork server" for p in procs):
            time.sleep(2)
            return footprint.stack(home), round(time.monotonic() - t, 1)
        time.sleep(1)
    raise SystemExit(f"the fork server was not stopped within {timeout} s of idleness")


def settle(home: Path, up_pid: int, timeout: float = 60) -> list[Any]:
    """Wait until no flow run is executing (a suspended run's process exits shortly after its state
    turns Suspended; the keeper is not a flow-run process of its own) and the stack's memory is
    steady; its processes."""
    from bench import footprint

    deadline = time.monotonic() + timeout
    while True:
        procs = footprint.stack(home)
        forked = [p for p in procs if p.role.startswith("flow run")]
        if len(forked) <= KEEPER_PROCESSES or time.monotonic() > deadline:
            time.sleep(3)
            return footprint.stack(home)
        time.sleep(0.5)


# The keeper's own flow-run process, when it runs as one (it does not: flows.clock_keeper runs in the
# runner's process — a process of its own is counted, and waited for, as one flow run)
KEEPER_PROCESSES = int(os.environ.get("AFTERCARE_BENCH_KEEPER_PROCESSES", "0"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size")
    parser.add_argument(
        "--idle",
        action="store_true",
        help="`aftercare up` with nothing to do: every process's memory, nothing waits",
    )
    parser.add_argument("--runs", type=int, default=None, help="waiting procedures in total")
    parser.add_argument("--real", type=int, default=None, help="of which really executed until suspended")
    parser.add_argument("--latency", type=int, default=None, help="approvals timed")
    parser.add_argument("--poll", type=float, default=0.25, help="AFTERCARE_RUNNER_POLL_SECONDS (s)")
    parser.add_argument(
        "--prefect-db",
        default=None,
        help="Prefect's own database, e.g. postgresql+asyncpg://user@host/db (default: SQLite)",
    )
    parser.add_argument(
        "--warm-idle",
        type=float,
        default=20.0,
        help="AFTERCARE_WARM_IDLE_SECONDS: the fork server stops after this long without a run",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    runs = 0 if args.idle else (args.runs or (30 if args.quick else 10_000))
    real = 0 if args.idle else min(runs, args.real or (1 if args.quick else 100))
    latency_n = min(args.latency or (1 if args.quick else 100), real)
    out = Path(
        args.out or ROOT / "bench" / "results" / ("waiting_idle.json" if args.idle else "waiting.json")
    )

    base = Path(tempfile.mkdtemp(prefix="aftercare-bench-waiting-"))
    home = base / "var"
    api_port, web_port = free_port(), free_port()
    credential = "aftercare:bench-" + os.urandom(8).hex()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AFTERCARE_"))}
    env.update(
        AFTERCARE_HOME=str(home),
        AFTERCARE_SECRET_KEY="bench-secret",
        AFTERCARE_PUBLIC_BASE_URL=f"http://127.0.0.1:{web_port}",
        AFTERCARE_RUNNER_POLL_SECONDS=str(args.poll),
        AFTERCARE_EXTRA_FLOW_MODULES="bench.waiting_flow",
        AFTERCARE_WARM_IDLE_SECONDS=str(args.warm_idle),
        PREFECT_RUNNER_PROCESS_LIMIT="8",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_API_AUTH_STRING=credential,
        PYTHONPATH=str(ROOT),
    )
    if args.prefect_db:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = args.prefect_db
    # this process talks to the same server (creating runs, reading states) and database
    os.environ.update({k: v for k, v in env.items() if k.startswith(("AFTERCARE_", "PREFECT_API_AUTH"))})
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{api_port}/api"
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    from bench import footprint
    from models.settings import Settings

    settings = Settings(
        home=home,
        secret_key="bench-secret",
        web_port=web_port,
        public_base_url=f"http://127.0.0.1:{web_port}",
    )
    figures: dict[str, Any] = {
        "size": "idle" if args.idle else ("quick" if args.quick else "full"),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "runs_waiting": runs,
        "runs_really_suspended": real,
        "approvals_timed": latency_n,
        "runner_poll_seconds": args.poll,
        "warm_idle_seconds": args.warm_idle,
        "prefect_database": "postgresql" if (args.prefect_db or "").startswith("postgresql") else "sqlite",
        "memory_figures": "PSS (proportional set size, /proc/<pid>/smaps_rollup: a page shared by n "
        "processes counts 1/n in each) and RSS (every resident page, shared ones in "
        "every sharer); totals and targets are PSS",
    }
    up: subprocess.Popen[bytes] | None = None
    try:
        from deployments.seed import seed_demo
        from models.db import migrate, session_scope

        migrate(settings.db_url)  # demo data of the benchmark's fixed date; `up --no-seed` keeps it
        with session_scope(settings.db_url) as s:
            seed_demo(s, today=START.date(), now=START)
        up_log = base / "up.log"
        t = time.monotonic()
        with up_log.open("ab") as log:
            up = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "deployments.cli",
                    "up",
                    "--no-seed",
                    "--prefect-port",
                    str(api_port),
                    "--web-port",
                    str(web_port),
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        figures["startup_seconds"] = wait_ready(up, up_log, 300)
        figures["startup_seconds_measured_here"] = round(time.monotonic() - t, 1)
        wait_keeper(home, 120)
        warm = settle(home, up.pid)
        figures["idle_fork_server_running"] = footprint.summary(warm)
        print("— idle, the fork server still running —\n" + footprint.table(warm), flush=True)
        idle, figures["idle_fork_server_stopped_after_s"] = fork_server_gone(home, args.warm_idle + 60)
        figures["idle"] = footprint.summary(idle)
        print("— idle —\n" + footprint.table(idle), flush=True)

        if runs:
            case_ids = make_cases(settings.db_url, runs)
            t = time.monotonic()
            real_runs = start_real(case_ids[:real])
            figures["real_suspend_seconds"] = round(time.monotonic() - t, 1)
            figures["real_suspensions_per_second"] = round(real / max(time.monotonic() - t, 1e-9), 2)
            t = time.monotonic()
            add_synthetic(settings.db_url, case_ids[real:])
            figures["synthetic_add_seconds"] = round(time.monotonic() - t, 1)
            t = time.monotonic()
            warm = settle(home, up.pid)
            figures["settle_seconds"] = round(time.monotonic() - t, 1)
            figures["waiting_fork_server_running"] = footprint.summary(warm)
            print(f"— {runs} waiting, the fork server running —\n" + footprint.table(warm), flush=True)
            waiting, _ = fork_server_gone(home, args.warm_idle + 60)
            figures["waiting"] = footprint.summary(waiting)
            print(f"— {runs} waiting —\n" + footprint.table(waiting), flush=True)
            figures["suspended_runs_in_prefect"] = count_suspended()
            figures["flow_run_processes_while_waiting"] = (
                sum(1 for p in waiting if p.role.startswith("flow run")) - KEEPER_PROCESSES
            )
            figures["runner_threads_while_waiting"] = sum(p.threads for p in waiting if p.role == "runner")
            added = figures["waiting"]["total_pss_mb"] - figures["idle"]["total_pss_mb"]
            figures["added_pss_kb_per_waiting_case"] = round(added * 1024 / runs, 2)
            figures["added_pss_kb_per_waiting_case_ours"] = round(
                (figures["waiting"]["ours_pss_mb"] - figures["idle"]["ours_pss_mb"]) * 1024 / runs, 2
            )
            figures["added_pss_kb_per_waiting_case_prefect"] = round(
                (figures["waiting"]["prefect_pss_mb"] - figures["idle"]["prefect_pss_mb"]) * 1024 / runs, 2
            )

            # the first click after the quiet spell starts the fork server again (a new interpreter)
            click_running, click_done = approve_and_time(
                settings.db_url, [f"http://127.0.0.1:{web_port}"], real_runs[:latency_n]
            )
            figures["first_click_after_quiet_to_running_s"] = round(click_running[0], 2)
            figures["first_click_after_quiet_to_completed_s"] = round(click_done[0], 2)
            if len(click_running) > 1:
                click_running, click_done = click_running[1:], click_done[1:]
            figures["click_to_running_p50_s"] = round(pct(click_running, 50), 2)
            figures["click_to_running_p95_s"] = round(pct(click_running, 95), 2)
            figures["click_to_completed_p50_s"] = round(pct(click_done, 50), 2)
            figures["click_to_completed_p95_s"] = round(pct(click_done, 95), 2)
            figures["click_to_running_mean_s"] = (
                round(statistics.fmean(click_running), 2) if click_running else None
            )
        figures["import_floors"] = footprint.import_floors(ROOT)
        figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        figures["targets"] = {
            "ours_pss_mb_idle": 250,
            "ours_pss_mb_waiting": 300,
            "added_pss_kb_per_waiting_case": 5,
            "click_p95_s": 2.0,
        }
    finally:
        if up is not None and up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=20)
            except subprocess.TimeoutExpired:
                up.kill()
        for proc in footprint.stack(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        if os.environ.get("AFTERCARE_BENCH_KEEP"):
            figures["home"] = str(base)
        else:
            import shutil

            shutil.rmtree(base, ignore_errors=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    for key, value in figures.items():
        if key not in ("idle", "waiting"):
            print(f"{key}: {value}")
    print(f"written: {out}")
    return 0


def wait_keeper(home: Path, timeout: float) -> None:
    """Wait until a clock keeper holds its lease (the stack at idle includes the keeper)."""
    from models.db import session_scope
    from models.leases import current
    from models.wallclock import now

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(f"sqlite:///{home / 'aftercare.db'}") as s:
            if current(s, "clock-keeper", now()) is not None:
                return
        time.sleep(0.5)
    raise SystemExit(f"no clock keeper took its lease in {timeout} s")


def make_cases(db_url: str, n: int) -> list[int]:
    """`n` repair cases of the first customer (the demo data's), in one statement; their ids (as the
    database gave them: SQLite's rowids or PostgreSQL's sequence)."""
    import sqlalchemy as sa

    from models import Case, Customer
    from models.db import session_scope

    with session_scope(db_url) as s:
        customer_id = s.execute(sa.select(sa.func.min(Customer.id))).scalar_one()
        made = s.execute(
            sa.insert(Case).returning(Case.id, sort_by_parameter_order=True),
            [
                dict(
                    kind="repair",
                    customer_id=customer_id,
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
        return list(made.scalars())


def start_real(
    case_ids: list[int],
    *,
    timeout: float = 1800,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[str, int]]:
    """Start one run per case and wait until every one is suspended (at most `timeout` s); returns
    (run id, case id). `progress(suspended, total)` is called whenever more are suspended."""
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
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while pending:
            before = len(pending)
            for rid in list(pending):
                state = client.read_flow_run(rid).state
                if state is not None and state.is_paused():
                    pending.discard(rid)
                elif state is not None and state.is_final():
                    raise SystemExit(f"run {rid} ended {state.name}: {state.message}")
            if progress is not None and len(pending) < before:
                progress(len(ids) - len(pending), len(ids))
            if pending and time.monotonic() > deadline:
                raise SystemExit(f"{len(pending)} of {len(ids)} runs not suspended after {timeout:.0f} s")
            time.sleep(0.5)
    return ids


def add_synthetic(db_url: str, case_ids: list[int]) -> None:
    """The rows a suspended waiting run leaves, added directly (see the module docstring)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Suspended

    from models.db import session_scope
    from tasks.approvals import ApprovalRequest, approval_key, open_approval

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
                    ApprovalRequest(
                        case_id=case_id,
                        step="bench-approval",
                        version=1,
                        subject="基准测试方案",
                        content="基准测试：更换电源模块，预计不中断业务。",
                        approver_role="technical_director",
                        expires_at=START + timedelta(days=7),
                        now=START,
                        flow_run_id=run_id,
                    ),
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
    db_url: str, webs: Sequence[str], runs: list[tuple[str, int]]
) -> tuple[list[float], list[float]]:
    """Approve each run through its link page, on the approval webs (base URLs) in turn; seconds from
    the click to Running and to Completed."""
    import httpx
    from prefect.client.orchestration import get_client
    from sqlmodel import select

    from models.approvals import Approval
    from models.db import session_scope
    from models.outbox import Notification

    to_running: list[float] = []
    to_done: list[float] = []
    clients = [httpx.Client(base_url=url, timeout=30) for url in webs]
    with get_client(sync_client=True) as client:
        for turn, (run_id, case_id) in enumerate(runs):
            web = clients[turn % len(clients)]
            with session_scope(db_url) as s:
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
    for web in clients:
        web.close()
    return to_running, to_done


if __name__ == "__main__":
    sys.exit(main())
