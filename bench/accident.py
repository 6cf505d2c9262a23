"""Benchmark: the clock keeper's accident steps with many accidents open at once.

Opens N accidents (the real `open_accident` / `form_team` steps), half of them with vendor support
engaged, then ticks the three accident keeper steps (standby at half restore time, hourly progress
updates, vendor daily report) once per simulated hour for 26 hours. Measures the time of each tick
and how many updates / outbox rows it wrote, and checks that every accident got exactly one update
per hour (nothing lost, nothing twice).

    uv run python bench/accident.py            # 500 accidents, 26 hourly ticks
    uv run python bench/accident.py --quick    # 40 accidents (CI)

Prints the figures and writes bench/results/accident.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOURS = 26


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 40 accidents")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "accident.json"))
    args = parser.parse_args()
    n = 40 if args.quick else 500

    home = Path(tempfile.mkdtemp(prefix="aftercare-bench-accident-"))
    os.environ["AFTERCARE_HOME"] = str(home)
    os.environ["AFTERCARE_DATABASE_URL"] = f"sqlite:///{home / 'aftercare.db'}"
    os.environ.setdefault("AFTERCARE_SECRET_KEY", "bench-secret")

    import sqlalchemy as sa
    from sqlmodel import select

    import tasks.accident as A
    from deployments.seed import seed_demo
    from models import Event
    from models.db import migrate, session_scope
    from models.outbox import Notification
    from tests.conftest import T0

    migrate()
    with session_scope() as s:
        seed_demo(s, today=T0.date(), now=T0)

    t = time.perf_counter()
    for i in range(n):
        request = A.AccidentRequest(
            customer="BJYH",
            site="亦庄机房",
            reported_by="bench",
            severity=1,
            description=f"基准事故 {i}",
            reported_at=T0,
        )
        case_id = A.open_accident.fn(request, T0, f"bench-{i}")
        A.form_team.fn(case_id, T0)
        if i % 2:
            A.start_vendor_support.fn(case_id, 1, "bench", T0)
    open_s = time.perf_counter() - t

    def outbox_rows() -> int:
        with session_scope() as s:
            return int(s.exec(select(sa.func.count()).select_from(Notification)).one())

    tick_s: list[float] = []
    written: list[int] = []
    for hour in range(1, HOURS + 1):
        now = T0 + hour * timedelta(hours=1) + timedelta(seconds=1)
        before = outbox_rows()
        t = time.perf_counter()
        A.send_due_standby(now)
        A.send_progress_updates(now)
        A.send_vendor_daily_reports(now)
        tick_s.append(time.perf_counter() - t)
        written.append(outbox_rows() - before)

    with session_scope() as s:
        updates = int(
            s.exec(select(sa.func.count()).select_from(Event).where(Event.kind == "progress_update")).one()
        )
        daily = int(
            s.exec(
                select(sa.func.count()).select_from(Event).where(Event.kind == "vendor_daily_report")
            ).one()
        )
        standby = int(
            s.exec(
                select(sa.func.count()).select_from(Event).where(Event.kind == "standby_machine_requested")
            ).one()
        )
    figures = {
        "accidents": n,
        "hours": HOURS,
        "open_and_team_s_per_accident": round(open_s / n, 4),
        "tick_s_p50": round(percentile(tick_s, 50), 3),
        "tick_s_max": round(max(tick_s), 3),
        "tick_ms_per_accident_p50": round(1000 * percentile(tick_s, 50) / n, 3),
        "outbox_rows_per_tick_p50": percentile([float(w) for w in written], 50),
        "progress_updates": updates,
        "progress_updates_expected": n * HOURS,
        "vendor_daily_reports": daily,
        "vendor_daily_reports_expected": (n // 2) * (HOURS // 24),
        "standby_machines": standby,
        "exact": updates == n * HOURS and daily == (n // 2) * (HOURS // 24) and standby == n,
    }
    for key, value in figures.items():
        print(f"{key:32} {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
