"""Benchmark: the clock keeper with 10,000 live SLA clocks whose deadlines fall due one after another.

Measures, in real time, the latency from a clock's deadline to its breach notification rows being
committed (p50 / p99), and the keeper loop's CPU time and memory (RSS sampled every tick, to show it
stays flat). The keeper runs its real loop (`flows.clock_keeper.run_loop`) with the clock steps;
the notifier is not part of the measurement (it sends in its own step or deployment).

    uv run python bench/clocks.py            # 10,000 clocks due over 300 s (~33 breaches a second)
    uv run python bench/clocks.py --quick    # 500 clocks due over 10 s (CI)
    uv run python bench/clocks.py --spread 60  # the stress variant: ~167 breaches a second

Prints the figures and writes bench/results/clocks.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def seed(n: int, spread: float, lead: float) -> tuple[datetime, list[int]]:
    """N repair cases with a first-contact clock each (started by the real start_clock), then moved
    so that their deadlines fall due in real time, `lead` s from now and over `spread` s."""
    import sqlalchemy as sa

    from deployments.seed import seed_demo
    from models import Case
    from models.clocks import Clock
    from models.db import migrate, session_scope
    from models.wallclock import now
    from tasks.clocks import start_clock

    migrate()
    t0 = now()
    with session_scope() as s:
        seed_demo(s, today=t0.date(), now=t0)
    far = t0 + timedelta(days=30)
    ids: list[int] = []
    with session_scope() as s:
        for i in range(n):
            case = Case(
                kind="repair",
                customer_id=1,
                site_id=1,
                contract_id=1,
                severity=3,
                title=f"bench {i}",
                reported_at=far,
                created_at=far,
                updated_at=far + timedelta(days=30),
            )
            s.add(case)
            s.flush()
            ids.append(start_clock(s, case.id, "first_contact", started_at=far, severity=3).id)  # type: ignore[arg-type]
    base = now() + timedelta(seconds=lead)
    with session_scope() as s:
        rows = []
        for i, clock_id in enumerate(ids):
            due = base + timedelta(seconds=spread * i / n)
            rows.append(
                {
                    "id": clock_id,
                    "due_at": due,
                    "next_check_at": due,
                    "started_at": due - timedelta(minutes=30),
                }
            )
        s.execute(sa.update(Clock), rows)  # ORM bulk UPDATE by primary key
    return base, ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 500 clocks over 10 s")
    parser.add_argument("--clocks", type=int, default=None)
    parser.add_argument(
        "--spread", type=float, default=None, help="seconds over which the deadlines fall due"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "clocks.json"))
    args = parser.parse_args(argv)
    n = args.clocks or (500 if args.quick else 10_000)
    spread = args.spread or (10.0 if args.quick else 300.0)

    home = Path(tempfile.mkdtemp(prefix="aftercare-bench-clocks-"))
    os.environ["AFTERCARE_HOME"] = str(home)
    os.environ["AFTERCARE_DATABASE_URL"] = f"sqlite:///{home / 'aftercare.db'}"
    os.environ.setdefault("AFTERCARE_SECRET_KEY", "bench-secret")

    from sqlmodel import func, select

    from flows.clock_keeper import run_loop
    from models.clocks import Clock, Escalation
    from models.db import session_scope
    from models.outbox import Notification
    from models.wallclock import now
    from tasks.clocks import fire_due_clocks

    t_seed = time.monotonic()
    base, ids = seed(n, spread, lead=2.0)
    seed_s = time.monotonic() - t_seed
    print(f"seeded {n} clocks in {seed_s:.1f} s; deadlines from {base.isoformat()} over {spread:g} s")

    gc.collect()
    finished: dict[datetime, datetime] = {}  # tick's now -> wall time when its rows were committed
    rss: list[float] = []
    # run until every deadline has passed and been notified (or a generous limit for a keeper that lags)
    end_at = base + timedelta(seconds=spread + 1)
    give_up_at = base + timedelta(seconds=spread * 3 + 60)

    def all_done() -> bool:
        t = now()
        if t >= give_up_at:
            return True
        if t < end_at:
            return False
        with session_scope() as s:
            return (
                s.exec(select(func.count()).select_from(Clock).where(Clock.next_check_at.is_not(None))).one()
                == 0
            )  # type: ignore[union-attr]

    def on_tick(result: dict) -> None:  # type: ignore[type-arg]
        finished[result["now"]] = now()
        rss.append(rss_mb())
        if result["errors"]:
            raise SystemExit(f"keeper step failed: {result['errors']}")

    rss_start = rss_mb()
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    ticks = run_loop(steps=[fire_due_clocks], cap=1.0, on_tick=on_tick, should_stop=all_done)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0

    latencies: list[float] = []
    with session_scope() as s:
        for due_at, fired_at in s.exec(
            select(Escalation.due_at, Escalation.fired_at).where(Escalation.level == 0)
        ).all():
            latencies.append((finished[fired_at] - due_at).total_seconds())
        notified = s.exec(select(func.count(func.distinct(Notification.key)))).one()
        rows = s.exec(select(func.count()).select_from(Notification)).one()
        left = s.exec(select(func.count()).select_from(Clock).where(Clock.next_check_at.is_not(None))).one()  # type: ignore[union-attr]

    half = len(rss) // 2
    figures = {
        "bench": "clocks",
        "quick": args.quick,
        "clocks": n,
        "spread_s": spread,
        "breach_rate_per_s": round(n / spread, 1),
        "target_p99_s": 5.0,
        "seed_s": round(seed_s, 2),
        "ticks": ticks,
        "breaches_notified": int(notified),
        "notification_rows": int(rows),
        "clocks_left_due": int(left),
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p99_s": round(percentile(latencies, 99), 3),
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "cpu_share": round(cpu / wall, 3) if wall else None,
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_first_half_max": round(max(rss[:half] or rss), 1),
        "rss_mb_second_half_max": round(max(rss[half:] or rss), 1),
        "rss_mb_end": round(rss[-1] if rss else rss_mb(), 1),
        "rss_mb_peak_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "target_met": bool(latencies) and percentile(latencies, 99) <= 5.0,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    print(f"written {out}")
    return 0 if notified == n and left == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
