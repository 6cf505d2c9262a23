"""Benchmark and fault run on Prefect's production architecture (`aftercare cluster up`).

A cluster on this machine (deployments.cluster: PostgreSQL, Redis, API servers behind HAProxy,
Prefect's services, process workers, approval webs, keepers); N repairs (the solved-remotely path of
bench/repair.py) started at once and driven concurrently **through their links**: every pending
approval is answered by opening the link its notification carried on one of the approval webs (the
webs taken in turn) and posting the form, as a person does. The keepers of the cluster fire the
callback timers themselves (the requests are reported days ago, so every timer is due at once).

Recorded: which worker ran each cycle (the worker's "submitting flow run" log line in Prefect), the
cycles per second, and — with `--faults` — that after a `kill -9` of one worker mid-run and of one
API server every repair still completes, no step ran twice (each ledger key has one Prefect task
run), no message was queued twice and no outbox row was sent twice (the log channel's lines against
the rows sent), and one keeper held the lease.

With `--waiting N` (issue 25 item 4; after the repairs, on the same cluster): click → continue with
N procedures waiting for an approval in the cluster's PostgreSQL — bench/waiting.py's measurement,
its own functions, on the cluster instead of `aftercare up`. The bench-waiting flow
(bench/waiting_flow.py) is registered to the cluster's work pool with the others
(`AFTERCARE_EXTRA_FLOW_MODULES`); `--latency` of the N runs really execute until they are suspended
(run by the workers), the rest are added as the rows a suspension leaves (an Approval with its
outbox notification in aftercare's database, a Suspended flow run through Prefect's API); then the
real ones are approved one after another through their link pages on the approval webs in turn
(GET the page, POST 批准) and timed: click → Running (a worker started the run again) and click →
Completed, p50 / p95 / max, with the waiting runs counted in Prefect and the load average.

    uv run python bench/cluster.py --repairs 4 --workers 1 --workers 2 [--faults]
    uv run python bench/cluster.py --repairs 4 --workers 2 --waiting 1000 --latency 30
    uv run python bench/cluster.py --repairs 0 --workers 2 --waiting 50 --latency 5   # waiting only

Every tick also looks for a flow run started cold (a `python -m prefect.engine` or Prefect's workspace
supervisor anywhere on the machine): the pool's workers fork every run warm (deployments.worker), so
the count recorded should be 0.

Writes bench/results/cluster.json (one entry per worker count; the waiting figures under "waiting").
On 2 shared cores the ratio between 1 and 2 workers is not the point; what is measured is that
nothing breaks and what each piece costs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.repair import answers, timed  # noqa: E402  (the same answers as the repair benchmark)

PATH = "remote"
WAITING_FLOW_MODULE = "bench.waiting_flow"  # the bench-waiting flow: one approval, wait, finish
WAITING_MAX = 100_000
DECISION = {"approval": "approved", "signature": "signed", "form": "submitted"}


def free_port_block(size: int = 100, start: int = 4300, stop: int = 4399) -> int:
    """A base port whose block (balancer, API servers, webs) is free now."""
    for base in range(start, stop - 60, 7):
        ports = [base, base + 1, base + 2, base + 3, base + 51, base + 52, base + 53]
        if all(_free(p) for p in ports):
            return base
    raise RuntimeError("no free ports in 4300-4399")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(start: int, stop: int) -> int:
    for port in range(start, stop):
        if _free(port):
            return port
    raise RuntimeError(f"no free port in {start}-{stop}")


def make_cluster(
    home: Path,
    *,
    workers: int,
    api_servers: int = 2,
    webs: int = 2,
    keepers: int = 2,
    extra_env: dict[str, str] | None = None,
) -> Any:
    """A Cluster (not started) with its environment put into this process (before Prefect is imported)."""
    from deployments.cluster import Cluster, Layout
    from models.settings import Settings, get_settings

    layout = Layout(
        home=home,
        base_port=free_port_block(),
        api_servers=api_servers,
        workers=workers,
        webs=webs,
        keepers=keepers,
        pg_port=free_port(55500, 55600),
        redis_port=free_port(6390, 6399),
        pg_dir=None,
        # a run left Pending or Running by a killed worker is scheduled again after a minute
        extra_env={"AFTERCARE_STUCK_RUN_SECONDS": "60", **(extra_env or {})},
    )
    settings = Settings(
        home=home,
        database_url=layout.pg_url("aftercare", "psycopg"),
        prefect_port=layout.base_port,
        web_port=layout.web_port(1),
        secret_key="cluster-bench-secret-key-not-for-production",
        stuck_run_seconds=60,
    )
    cluster = Cluster(layout, settings)
    env = cluster.base_env()
    for key, value in env.items():
        if key.startswith(("PREFECT_", "AFTERCARE_")):
            os.environ[key] = value
    get_settings.cache_clear()
    return cluster


def request(n: int, reported_at: datetime) -> dict[str, Any]:
    return {
        "customer": "BJYH",
        "site": "亦庄机房",
        "reported_by": f"cluster {n}",
        "description": f"阵列告警 {n}",
        "severity": 3,
        "reported_at": reported_at.isoformat(),
    }


def start_repairs(count: int) -> list[str]:
    from tasks.cases import start_deployment_run

    # reported a minute apart, the last half an hour ago: a report time in the future is refused, and
    # the links a request's messages carry last 7 days
    first = datetime.now(UTC) - timedelta(minutes=30 + count)
    return [
        start_deployment_run("repair/repair", {"request": request(i, first + timedelta(minutes=i))})
        for i in range(count)
    ]


class LinkDriver:
    """Answers the pending approvals of some runs through their links, on the webs in turn."""

    def __init__(self, webs: list[str], run_ids: list[str]) -> None:
        import httpx

        self.webs = webs
        self.runs = set(run_ids)
        self.clients = [httpx.Client(base_url=w, timeout=60) for w in webs]
        self.turn = 0
        self.answered: Counter[str] = Counter()  # web → answers
        self.errors: list[str] = []

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def pending(self) -> list[Any]:
        from sqlmodel import col, select

        from models import Case
        from models.approvals import Approval, ApprovalStatus
        from models.db import session_scope

        with session_scope() as s:
            cases = {
                c.id: c.reported_at for c in s.exec(select(Case).where(col(Case.flow_run_id).in_(self.runs)))
            }
            rows = s.exec(
                select(Approval).where(
                    Approval.status == ApprovalStatus.PENDING, col(Approval.case_id).in_(set(cases))
                )
            ).all()
            return [(row, cases[row.case_id]) for row in rows]

    def link(self, row: Any) -> str | None:
        from sqlmodel import select

        from models.db import session_scope
        from models.outbox import Notification
        from tasks.links import verify_token

        with session_scope() as s:
            bodies = [n.body for n in s.exec(select(Notification).where(Notification.case_id == row.case_id))]
        for body in bodies:
            for url in re.findall(r"https?://\S+/a/[A-Za-z0-9_.\-]+", body):
                token = url.rsplit("/a/", 1)[1]
                try:
                    data = verify_token(token, "a", now=row.created_at)
                except Exception:  # noqa: BLE001 - another approval's link
                    continue
                if int(data["a"]) == row.id:
                    return "/a/" + token
        return None

    def answer(self, row: Any, reported_at: datetime) -> bool:
        path = self.link(row)
        if path is None:  # its notification is not written yet
            return False
        client = self.clients[self.turn % len(self.clients)]
        self.turn += 1
        page = client.get(path)
        if page.status_code != 200 or 'name="csrf"' not in page.text:
            return False
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
        data = {"csrf": csrf, "decision": DECISION[row.kind], "comment": ""}
        if row.kind == "form":
            data.update({f"f_{k}": v for k, v in timed(answers(PATH).get(row.step, {}), reported_at).items()})
        if row.kind == "signature":
            found = re.search(r'name="signer" value="([^"]*)"', page.text)
            data["signer"] = found[1] if found else "王先生"
        posted = client.post(path, data=data)
        if posted.status_code != 200:
            self.errors.append(f"{row.step}: HTTP {posted.status_code} {posted.text[:200]}")
            return False
        self.answered[str(client.base_url)] += 1
        return True


def states(run_ids: list[str]) -> dict[str, str]:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {r: (client.read_flow_run(UUID(r)).state_name or "?") for r in run_ids}


def drive(
    run_ids: list[str],
    webs: list[str],
    *,
    timeout: float,
    on_tick: Callable[[dict[str, str]], None] | None = None,
) -> dict[str, Any]:
    """Answer every pending approval of the runs through their links until every run is final."""
    from tasks.timers import fire_due_timers

    driver = LinkDriver(webs, run_ids)
    deadline = time.monotonic() + timeout
    try:
        while True:
            now_states = states(run_ids)
            if on_tick:
                on_tick(now_states)
            if all(s in {"Completed", "Failed", "Crashed", "Cancelled"} for s in now_states.values()):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"runs not done after {timeout:.0f} s: {Counter(now_states.values())}")
            waiting = driver.pending()
            for row, reported in waiting:
                driver.answer(row, reported)
            if not waiting and "Suspended" in now_states.values():
                # a run waits for its callback timer (due a working day after the service): the
                # calendar moves on — the cluster's keepers wake the runs whose timer fired
                fire_due_timers(datetime.now(UTC) + timedelta(days=5))
            time.sleep(0.5)
    finally:
        driver.close()
    return {"states": now_states, "answered_per_web": dict(driver.answered), "http_errors": driver.errors}


def cycles_by_worker(run_ids: list[str], logs: Path) -> dict[str, Counter[str]]:
    """Per run, how many times each worker started it (one start = one cycle: the first run or a
    wake-up), from each worker's own log: its "submitting flow run" lines less its "Aborted
    submission" ones (both workers may reach for the same run; the server gives it to one)."""
    found: dict[str, Counter[str]] = {run: Counter() for run in run_ids}
    for path in sorted(logs.glob("worker-*.log")):
        text = path.read_text(errors="replace")
        for run in run_ids:
            taken = text.count(f"submitting flow run '{run}'") - text.count(
                f"Aborted submission of flow run '{run}'"
            )
            if taken > 0:
                found[run][path.stem] += taken
    return found


def repeated_steps(run_ids: list[str]) -> dict[str, list[str]]:
    """Per run, the ledger keys that have more than one Prefect task run (a step that ran twice)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    found: dict[str, list[str]] = {}
    with get_client(sync_client=True) as client:
        for run in run_ids:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run)])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
            twice = [name for name, n in Counter(t.name for t in tasks).items() if n > 1]
            if twice:
                found[run] = twice
    return found


def outbox_twice(run_ids: list[str], home: Path) -> dict[str, Any]:
    """Messages queued twice for one case (same recipient, template and key), rows sent more than
    once (the log channel's lines against the rows marked sent, by recipient, title and body), and
    how many rows each notifier sent (the row's `sent_by`: `notifier@notifier-N` in the cluster)."""
    from sqlmodel import col, select

    from models import Case
    from models.db import session_scope
    from models.outbox import Notification

    with session_scope() as s:
        cases = [c.id for c in s.exec(select(Case).where(col(Case.flow_run_id).in_(run_ids)))]
        rows = list(s.exec(select(Notification).where(col(Notification.case_id).in_(cases))))
    queued = Counter((n.case_id, n.recipient_name, n.template, n.key) for n in rows)
    sent_rows = Counter((n.address, n.subject, n.body) for n in rows if n.sent_at is not None)
    lines: Counter[tuple[str, str, str]] = Counter()
    log = home / "notifications.log"
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            lines[(record["to"], record["title"], record["body"])] += 1
    return {
        "queued_twice": [list(k) for k, n in queued.items() if n > 1],
        "sent_more_than_once": sum(1 for k, n in sent_rows.items() if lines[k] > n),
        "rows": len(rows),
        "sent": sum(sent_rows.values()),
        "sent_by": dict(Counter(str(n.sent_by) for n in rows if n.sent_at is not None)),
    }


def keeper_runs_live() -> int:
    """Keeper flow runs Running now: one keeper keeps the clocks."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return len(
            client.read_flow_runs(
                limit=50,
                sort=FlowRunSort.START_TIME_DESC,
                flow_filter=FlowFilter(name=FlowFilterName(any_=["clock-keeper"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
                ),
            )
        )


def _children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _runs_a_flow(pid: int | None) -> bool:
    """True while the worker `pid` executes a flow run: a child of the worker has a child of its own
    (a warm run is a child of the worker's fork server; a cold one a child of Prefect's workspace
    supervisor). The fork server and multiprocessing's resource tracker alone are idle children."""
    if pid is None:
        return False
    return any(_children_of(child) for child in _children_of(pid))


COLD = (b"prefect.engine", b"prefect.runner._workspace_supervisor")


def cold_flow_processes() -> set[int]:
    """The processes on this machine that are a flow run started cold (a new interpreter running
    Prefect's engine or its workspace supervisor) instead of forked warm (deployments.worker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(arg in COLD for arg in argv):
                found.add(int(entry.name))
    return found


def run_once(cluster: Any, repairs: int, *, faults: bool, timeout: float) -> dict[str, Any]:
    """Start `repairs` repairs, drive them to the end (with the kills when `faults`), and check."""
    layout = cluster.layout
    webs = [f"http://{layout.host}:{layout.web_port(i)}" for i in range(1, layout.webs + 1)]
    began = time.monotonic()
    run_ids = start_repairs(repairs)
    killed: list[str] = []
    keepers_seen: list[int] = []
    cold: set[int] = set()
    killed_at: list[float] = []

    def on_tick(now_states: dict[str, str]) -> None:
        cluster.sup.poll()  # restart what was killed, as `aftercare cluster up` does
        if faults and not killed and _runs_a_flow(cluster.child("worker-1").pid):
            cluster.kill("worker-1")  # mid-run: the worker process only, its flow run finishes on its own
            killed.append("worker-1")
            killed_at.append(time.monotonic())
        elif faults and len(killed) == 1 and time.monotonic() - killed_at[0] > 15:
            cluster.kill(f"api-{layout.api_servers}")
            killed.append(f"api-{layout.api_servers}")
        if len(keepers_seen) < 200:
            keepers_seen.append(keeper_runs_live())
        cold.update(cold_flow_processes())

    result = drive(run_ids, webs, timeout=timeout, on_tick=on_tick)
    elapsed = time.monotonic() - began
    checked = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "check"],
        env=cluster.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    per_run = cycles_by_worker(run_ids, layout.home / "logs")
    cycles = sum(sum(c.values()) for c in per_run.values())
    by_worker: Counter[str] = Counter()
    for counter in per_run.values():
        by_worker.update(counter)
    return {
        "repairs": repairs,
        "workers": layout.workers,
        "api_servers": layout.api_servers,
        "faults": killed,
        "seconds": round(elapsed, 1),
        "cycles": cycles,
        "cycles_per_second": round(cycles / elapsed, 3) if elapsed else 0.0,
        "cycles_by_worker": dict(by_worker),
        "completed": sum(1 for s in result["states"].values() if s == "Completed"),
        "states": dict(Counter(result["states"].values())),
        "answered_per_web": result["answered_per_web"],
        "http_errors": result["http_errors"],
        "repeated_steps": repeated_steps(run_ids),
        "outbox": outbox_twice(run_ids, layout.home),
        "keeper_runs_running_max": max(keepers_seen or [0]),
        "cold_flow_starts_seen": len(cold),
        "check": [line for line in checked.stdout.splitlines() if line[:1] in {"✔", "✘"}],
        "load_average": os.getloadavg()[0],
        "run_ids": run_ids,
    }


def waiting_once(cluster: Any, waiting: int, latency: int, *, timeout: float) -> dict[str, Any]:
    """`waiting` procedures waiting for an approval on the cluster, `latency` of them really
    suspended by the workers; each of those approved through its link on the webs in turn and timed
    (bench/waiting.py's functions on the cluster's databases)."""
    from bench.waiting import add_synthetic, approve_and_time, count_suspended, make_cases, pct, start_real

    layout = cluster.layout
    db_url = cluster.settings.db_url
    webs = [f"http://{layout.host}:{layout.web_port(i)}" for i in range(1, layout.webs + 1)]
    load_at_start = os.getloadavg()
    began = time.monotonic()
    case_ids = make_cases(db_url, waiting)
    made_cases = time.monotonic() - began
    print(f"waiting: {waiting} cases made in {made_cases:.1f} s", flush=True)

    t = time.monotonic()

    def suspended(done: int, total: int) -> None:
        print(f"waiting: {done}/{total} real runs suspended ({time.monotonic() - t:.0f} s)", flush=True)

    real = start_real(case_ids[:latency], timeout=timeout, progress=suspended)
    real_seconds = time.monotonic() - t
    t = time.monotonic()
    rest = case_ids[latency:]
    step = 100
    for i in range(0, len(rest), step):
        add_synthetic(db_url, rest[i : i + step])
        done = latency + min(i + step, len(rest))
        print(f"waiting: {done}/{waiting} waiting ({time.monotonic() - t:.0f} s)", flush=True)
    synthetic_seconds = time.monotonic() - t
    waiting_runs = count_suspended()
    load_before_clicks = os.getloadavg()
    print(
        f"waiting: {waiting_runs} runs Suspended in Prefect; approving {latency} through the links",
        flush=True,
    )
    to_running, to_done = approve_and_time(db_url, webs, real)
    load_after_clicks = os.getloadavg()
    per_run = cycles_by_worker([run for run, _ in real], layout.home / "logs")
    # a worker that cannot import a deployment's flow says so and starts its runs cold (deployments.worker)
    cold_warnings = sum(
        path.read_text(errors="replace").count(": cold starts (")
        for path in (layout.home / "logs").glob("worker-*.log")
    )
    by_worker: Counter[str] = Counter()
    for counter in per_run.values():
        by_worker.update(counter)

    def spread(values: list[float]) -> dict[str, float]:
        return {
            "p50": round(pct(values, 50), 2),
            "p95": round(pct(values, 95), 2),
            "max": round(max(values), 2),
            "first": round(values[0], 2),
        }

    return {
        "waiting_cases": waiting,
        "really_suspended": latency,
        "waiting_runs_in_prefect": waiting_runs,
        "still_suspended_after_clicks": count_suspended(),
        "approvals_timed": len(to_running),
        "webs_clicked": len(webs),
        "click_to_running_s": spread(to_running),
        "click_to_completed_s": spread(to_done),
        "starts_by_worker": dict(by_worker),
        "worker_cold_start_warnings": cold_warnings,
        "make_cases_seconds": round(made_cases, 1),
        "real_suspend_seconds": round(real_seconds, 1),
        "real_suspensions_per_second": round(latency / real_seconds, 3) if real_seconds else 0.0,
        "synthetic_add_seconds": round(synthetic_seconds, 1),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_before_clicks": [round(x, 2) for x in load_before_clicks],
        "load_average_after_clicks": [round(x, 2) for x in load_after_clicks],
        "seconds": round(time.monotonic() - began, 1),
    }


def one_cluster(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """Start a cluster with `workers` workers, drive the repairs (and the waiting cases), stop it;
    the figures."""
    base = Path(tempfile.mkdtemp(prefix="aftercare-cluster-"))
    extra = {"AFTERCARE_EXTRA_FLOW_MODULES": WAITING_FLOW_MODULE} if args.waiting else None
    cluster = make_cluster(base / "var", workers=workers, extra_env=extra)
    try:
        t0 = time.monotonic()
        cluster.start()
        up = time.monotonic() - t0
        print(f"cluster with {workers} worker(s) up in {up:.1f} s", flush=True)
        for line in cluster.where():
            print(line, flush=True)
        if args.repairs:
            result = run_once(cluster, args.repairs, faults=args.faults, timeout=args.timeout)
        else:
            layout = cluster.layout
            result = {"repairs": 0, "workers": layout.workers, "api_servers": layout.api_servers}
        result["cluster_up_seconds"] = round(up, 1)
        if args.waiting:
            result["waiting"] = waited = waiting_once(
                cluster, args.waiting, args.latency, timeout=args.timeout
            )
            running, completed = waited["click_to_running_s"], waited["click_to_completed_s"]
            print(
                f"{workers} worker(s), {waited['waiting_runs_in_prefect']} waiting: click → Running p50 "
                f"{running['p50']} s, p95 {running['p95']} s, max {running['max']} s; click → Completed p50 "
                f"{completed['p50']} s, p95 {completed['p95']} s, max {completed['max']} s "
                f"({waited['approvals_timed']} clicks; load {waited['load_average_after_clicks']})",
                flush=True,
            )
        print(json.dumps({k: v for k, v in result.items() if k != "run_ids"}, ensure_ascii=False), flush=True)
        return result
    finally:
        cluster.stop()
        shutil.rmtree(cluster.layout.pg_data, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repairs", type=int, default=4, help="repairs driven at once (the issue's 50 on a big machine)"
    )
    parser.add_argument(
        "--workers", type=int, action="append", help="worker counts to measure (default 1 and 2)"
    )
    parser.add_argument("--faults", action="store_true", help="kill -9 one worker and one API server mid-run")
    parser.add_argument(
        "--waiting",
        type=int,
        nargs="?",
        const=1000,
        default=0,
        help="then click → continue with this many procedures waiting (bare: the issue's 1,000; default off)",
    )
    parser.add_argument(
        "--latency", type=int, default=30, help="of the waiting ones, really suspended and approved (timed)"
    )
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "cluster.json"))
    args = parser.parse_args()
    check_args(parser, args)
    counts = args.workers or [1, 2]
    if len(counts) > 1:
        # one process per cluster: Prefect reads its settings (the cluster's URL and credential) once
        results = []
        for workers in counts:
            part = Path(tempfile.mkdtemp(prefix="aftercare-cluster-out-")) / "part.json"
            argv = [sys.executable, __file__, "--repairs", str(args.repairs), "--workers", str(workers)]
            argv += ["--timeout", str(args.timeout), "--out", str(part)] + (
                ["--faults"] if args.faults else []
            )
            argv += ["--waiting", str(args.waiting), "--latency", str(args.latency)]
            subprocess.run(argv, check=True, cwd=ROOT)
            results.extend(json.loads(part.read_text())["runs"])
            shutil.rmtree(part.parent, ignore_errors=True)
    else:
        results = [one_cluster(counts[0], args)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"measured_at": datetime.now(UTC).isoformat(), "cpus": os.cpu_count(), "runs": results}, indent=2
        )
    )
    return 0


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse sizes that cannot be measured (argparse's one-line error, exit 2)."""
    if args.repairs < 0:
        parser.error("--repairs must be 0 or more")
    if any(n < 1 for n in args.workers or []):
        parser.error("--workers must be 1 or more")
    if not 0 <= args.waiting <= WAITING_MAX:
        parser.error(f"--waiting must be between 0 (off) and {WAITING_MAX}")
    if args.waiting and not 1 <= args.latency <= args.waiting:
        parser.error("--latency must be between 1 and --waiting (the timed approvals are of waiting runs)")
    if not args.repairs and not args.waiting:
        parser.error("nothing to measure: --repairs 0 without --waiting")
    if args.faults and not args.repairs:
        parser.error("--faults needs repairs to kill a worker under")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the cluster as Ctrl-C does (the `finally` in main)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    raise SystemExit(main())
