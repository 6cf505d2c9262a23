"""Benchmark: the KPIs of every customer for a year, from the event log (issue 24: ≤ 10 s for 5,000
contracts and a year of events).

Generates, on a fresh SQLite file (WAL) in a temporary directory: 5,000 customers, each with a site,
a device and a 7x24 contract with monthly inspections; over the year 2025-12 … 2026-11 two repairs per
customer (restore and first-contact clocks started and stopped, one paused; arrival, restoration and
the callback's scores as events; every tenth a second visit), the twelve monthly inspections with
their registration event (one in twelve never returned), and a complaint for one customer in twenty.
Then times `tasks.kpi.all_customers` — read the cases and events, fold every KPI, one row per
customer — and checks a few figures against what was generated. `--quick` is the CI size (500).
Prints the figures and writes bench/results/kpi.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 10.0
YEAR_START = date(2025, 12, 1)
YEAR_END = date(2026, 11, 30)
TERMS = {"service_hours": "7x24", "calendar": "cn", "tz": "Asia/Shanghai"}


def _setup(url: str, contracts: int, now: datetime) -> dict[str, int]:
    import sqlalchemy as sa

    from models import Case, Contact, Contract, Customer, Device, Event, Site
    from models.db import get_engine, migrate

    migrate(url)
    customers, sites, contacts, deals, devices, cases, events = [], [], [], [], [], [], []
    case_id = 0

    def case(kind: str, cid: int, at: datetime, **kw: object) -> int:
        nonlocal case_id
        case_id += 1
        cases.append(
            {
                "id": case_id,
                "kind": kind,
                "customer_id": cid,
                "contract_id": cid,
                "site_id": cid,
                "status": "closed",
                "title": kind,
                "description": "",
                "channel": "热线",
                "reported_by": "客户",
                "reported_at": at,
                "out_of_contract": False,
                "data": {},
                "created_at": at,
                "updated_at": at,
                "device_id": None,
                "severity": None,
                "period": None,
                "closed_at": None,
                **kw,
            }
        )
        return case_id

    def event(cid: int, kind: str, at: datetime, key: str, **data: object) -> None:
        events.append({"case_id": cid, "at": at, "actor": "system", "kind": kind, "key": key, "data": data})

    for i in range(contracts):
        cid = i + 1
        customers.append({"id": cid, "code": f"K{i:05d}", "name": f"指标客户{i:05d}", "created_at": now})
        sites.append(
            {
                "id": cid,
                "customer_id": cid,
                "name": "主机房",
                "address": "",
                "service_point": "北京服务站",
                "distance_km": 10.0,
                "same_city": True,
                "room_rules": "",
            }
        )
        contacts.append(
            {
                "customer_id": cid,
                "name": f"联系人{i:05d}",
                "title": "",
                "phone": "",
                "email": "",
                "is_primary": True,
                "notify_urls": [],
            }
        )
        deals.append(
            {
                "id": cid,
                "code": f"HT-K{i:05d}",
                "customer_id": cid,
                "start_date": date(2025, 1, 1),
                "end_date": date(2027, 12, 31),
                "service_hours": "7x24",
                "inspection_frequency": "monthly",
                "inspection_every_months": 1,
                "severity_scheme": "outage",
                "sla_policy": {},
                "calendar": "cn",
                "timezone": "Asia/Shanghai",
                "fee": 100000,
                "created_at": now,
            }
        )
        devices.append(
            {
                "id": cid,
                "customer_id": cid,
                "site_id": cid,
                "contract_id": cid,
                "device_class": "storage" if i % 2 else "server",
                "model": "存储" if i % 2 else "服务器",
                "serial": f"SNK{i:05d}",
                "config": {},
            }
        )
        for k in range(2):  # two repairs in the year, spread over the months
            at = datetime(2025, 12, 3, 2, tzinfo=UTC) + timedelta(days=(i * 7 + k * 170) % 360, hours=i % 9)
            hours = 1 + (i + k) % 9
            restored = at + timedelta(hours=hours)
            r = case("repair", cid, at, severity=2 + k, device_id=cid, closed_at=restored + timedelta(days=3))
            for clock, due in (("restore", timedelta(hours=4)), ("first_contact", timedelta(minutes=30))):
                event(
                    r,
                    "clock.started",
                    at,
                    f"clock:{clock}:started",
                    clock=clock,
                    due_at=(at + due).isoformat(),
                    terms=TERMS,
                )
            event(
                r,
                "clock.met",
                at + timedelta(minutes=10),
                "clock:first_contact:stopped",
                clock="first_contact",
            )
            if i % 5 == 0:
                event(
                    r, "clock.paused", at + timedelta(minutes=30), "clock:restore:paused:0", clock="restore"
                )
                event(
                    r,
                    "clock.resumed",
                    at + timedelta(minutes=60),
                    "clock:restore:resumed:0",
                    clock="restore",
                    due_at=(at + timedelta(hours=4.5)).isoformat(),
                )
            event(r, "arrived", at + timedelta(minutes=50), "arrived")
            if i % 10 == 0:
                event(r, "repair_anomaly", at + timedelta(minutes=70), "anomaly:1", attempt=1)
            event(r, "restored", restored, "restored")
            stop = "clock.met" if hours <= 4 else "clock.breached"
            event(r, stop, restored, "clock:restore:stopped", clock="restore")
            grade = ("优", "良", "中", "差")[(i + k) % 4]
            event(
                r,
                "callback_done",
                restored + timedelta(days=1),
                "callback",
                scores={"overall": grade, "response": "优"},
            )
        for m in range(12):  # the monthly inspections, registered (one in twelve never returned)
            y, mo = (2025, 12) if m == 0 else (2026, m)
            visit = datetime(y, mo, 10, 2, tzinfo=UTC)
            done = (i + m) % 12 != 0
            insp = case(
                "inspection",
                cid,
                visit - timedelta(days=9),
                period=f"{y}-{mo:02d}",
                status="registered" if done else "scheduled",
                closed_at=None,
            )
            if done:
                event(insp, "report_registered", visit + timedelta(days=2), "registered")
        if i % 20 == 0:
            at = datetime(2026, 6, 1, 2, tzinfo=UTC) + timedelta(hours=i % 24)
            t = case("complaint", cid, at, severity=4)
            event(
                t,
                "clock.started",
                at,
                "clock:complaint_answer:started",
                clock="complaint_answer",
                due_at=(at + timedelta(hours=2)).isoformat(),
                terms=TERMS,
            )
            event(
                t,
                "clock.met",
                at + timedelta(hours=1),
                "clock:complaint_answer:stopped",
                clock="complaint_answer",
            )
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.insert(Customer.__table__), customers)
        conn.execute(sa.insert(Site.__table__), sites)
        conn.execute(sa.insert(Contact.__table__), contacts)
        conn.execute(sa.insert(Contract.__table__), deals)
        conn.execute(sa.insert(Device.__table__), devices)
        conn.execute(sa.insert(Case.__table__), cases)
        conn.execute(sa.insert(Event.__table__), events)
    return {"cases": len(cases), "events": len(events)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI size: 500 contracts")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "kpi.json"))
    args = parser.parse_args(argv)
    contracts = 500 if args.quick else 5000

    tmp = Path(tempfile.mkdtemp(prefix="aftercare-bench-kpi-"))
    url = f"sqlite:///{tmp / 'aftercare.db'}"
    os.environ["AFTERCARE_HOME"] = str(tmp)
    os.environ["AFTERCARE_DATABASE_URL"] = url
    os.environ.setdefault("AFTERCARE_SECRET_KEY", "bench-secret")
    from models.settings import get_settings

    get_settings.cache_clear()
    t0 = time.perf_counter()
    made = _setup(url, contracts, datetime(2025, 11, 1, tzinfo=UTC))
    t_setup = time.perf_counter() - t0

    from models.db import session_scope
    from tasks.kpi import all_customers

    t1 = time.perf_counter()
    c1 = time.process_time()
    with session_scope(url) as session:
        rows = all_customers(session, first=YEAR_START, last=YEAR_END)
    seconds = time.perf_counter() - t1
    cpu = time.process_time() - c1

    # what was generated, counted back
    faults = sum(r.kpis.faults for r in rows)
    due = sum(r.kpis.inspections_due for r in rows)
    done = sum(r.kpis.inspections_done for r in rows)
    complaints = sum(r.kpis.complaints for r in rows)
    assert len(rows) == contracts, (len(rows), contracts)
    assert faults == 2 * contracts, faults
    assert due == 12 * contracts and done == sum(
        1 for i in range(contracts) for m in range(12) if (i + m) % 12
    ), (due, done)
    assert complaints == len(range(0, contracts, 20)), complaints
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    result = {
        "bench": "kpi",
        "quick": args.quick,
        "contracts": contracts,
        "cases": made["cases"],
        "events": made["events"],
        "period": f"{YEAR_START} .. {YEAR_END}",
        "what_is_timed": "tasks.kpi.all_customers: read every case and event of the year, fold every KPI "
        "(MTTR, clocks, first-time fix, uptime, complaints, scores, inspections), one row per customer",
        "setup_seconds": round(t_setup, 2),
        "kpi_seconds": round(seconds, 2),
        "kpi_cpu_seconds": round(cpu, 2),
        "target_seconds": TARGET_SECONDS,
        "within_target": seconds <= TARGET_SECONDS,
        "rows": len(rows),
        "database": "sqlite (WAL), fresh file",
        "machine_cpus": os.cpu_count(),
        "load_average_1m": load,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:28} {value}")
    return result


if __name__ == "__main__":
    main()
