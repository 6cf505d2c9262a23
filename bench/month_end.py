"""Benchmark: the month's inspections for 5,000 contracts and 1,000 monthly service summaries.

1. plan the month's inspections of every contract and queue their notices, one transaction per
   inspection as the flow's `send_notice` task does (target ≤ 60 s; the Prefect run start of each
   inspection is not timed here);
2. issue 1,000 monthly summaries (gather the figures, render, store, queue) (target ≤ 60 s).

Runs on a fresh SQLite file (WAL) in a temporary directory. `--quick` is the CI size.
Prints the figures and writes bench/results/month_end.json.
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


def _setup(url: str, contracts: int, now: datetime) -> None:
    import sqlalchemy as sa

    from deployments.seed import seed_demo
    from models import Case, Contact, Contract, Customer, Device, Site
    from models.db import get_engine, migrate, session_scope

    migrate(url)
    with session_scope(url) as s:
        seed_demo(s, today=date(2026, 1, 1), now=now)
    engine = get_engine(url)
    with engine.begin() as conn:
        base = 1000  # above the demo rows: customers, sites and contracts share the same ids here
        customers, sites, contacts, deals, devices = [], [], [], [], []
        for i in range(contracts):
            cid = base + 1 + i
            customers.append({"id": cid, "code": f"B{i:05d}", "name": f"基准客户{i:05d}", "created_at": now})
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
                    "notify_urls": [f"log://contact/B{i:05d}"],
                }
            )
            deals.append(
                {
                    "id": cid,
                    "code": f"HT-B{i:05d}",
                    "customer_id": cid,
                    "start_date": date(2025, 1, 1),
                    "end_date": date(2027, 12, 31),
                    "service_hours": "7x24",
                    "inspection_frequency": "monthly" if i % 4 else "quarterly",
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
                    "customer_id": cid,
                    "site_id": cid,
                    "contract_id": cid,
                    "device_class": "server",
                    "model": "服务器",
                    "serial": f"SNB{i:05d}",
                    "config": {},
                }
            )
        conn.execute(sa.insert(Customer.__table__), customers)
        conn.execute(sa.insert(Site.__table__), sites)
        conn.execute(sa.insert(Contact.__table__), contacts)
        conn.execute(sa.insert(Contract.__table__), deals)
        conn.execute(sa.insert(Device.__table__), devices)
        # February's faults for the summaries: two repairs for each of the first customers
        faults = []
        for i in range(contracts):
            cid = base + 1 + i
            for k in range(2):
                at = datetime(2026, 2, 3 + 7 * k, 2, tzinfo=UTC)
                faults.append(
                    {
                        "kind": "repair",
                        "customer_id": cid,
                        "contract_id": cid,
                        "site_id": cid,
                        "severity": 3,
                        "status": "closed",
                        "title": f"故障{k}",
                        "description": "告警",
                        "channel": "热线",
                        "reported_by": "客户",
                        "reported_at": at,
                        "out_of_contract": False,
                        "data": {"cause": "硬盘老化" if k else "电源故障"},
                        "created_at": at,
                        "updated_at": at,
                        "closed_at": at + timedelta(hours=5),
                    }
                )
        conn.execute(sa.insert(Case.__table__), faults)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI size (well under a minute)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "month_end.json"))
    args = parser.parse_args(argv)
    contracts = 300 if args.quick else 5000
    summaries = 100 if args.quick else 1000

    tmp = Path(tempfile.mkdtemp(prefix="aftercare-bench-month-end-"))
    url = f"sqlite:///{tmp / 'aftercare.db'}"
    os.environ["AFTERCARE_HOME"] = str(tmp)
    os.environ["AFTERCARE_DATABASE_URL"] = url
    os.environ.setdefault("AFTERCARE_SECRET_KEY", "bench-secret")
    from models.settings import get_settings

    get_settings.cache_clear()
    setup_now = datetime(2025, 12, 1, tzinfo=UTC)
    _setup(url, contracts, setup_now)

    from models.db import session_scope
    from tasks.inspection import calendar_for, plan_inspections, queue_notice
    from tasks.summary import customers_to_summarise, issue_summary

    # 1. the month's inspections (March 2026, the daily tick of March 1, 01:15 local) and their notices
    tick = datetime(2026, 2, 28, 17, 15, tzinfo=UTC)
    t0 = time.perf_counter()
    plan = plan_inspections(tick, url=url)
    t_plan = time.perf_counter() - t0
    # the notices as production queues them: each inspection's `send_notice` task, one transaction each
    t1 = time.perf_counter()
    notices = sum(queue_notice(case_id, at=tick, url=url) for case_id in plan.created)
    t_notice = time.perf_counter() - t1
    again = plan_inspections(tick, url=url)  # a duplicate tick: nothing new
    assert again.created == [] and again.already == len(plan.created)

    # 2. February's summaries for the first customers
    now = datetime(2026, 3, 2, 2, tzinfo=UTC)
    with session_scope(url) as s:
        cal = calendar_for(s)
        customers = customers_to_summarise(s, date(2026, 2, 1), date(2026, 2, 28))[:summaries]
    t2 = time.perf_counter()
    sizes = 0
    for cid in customers:
        with session_scope(url) as s:
            row, _ = issue_summary(
                s,
                cid,
                kind="monthly",
                period="2026-02",
                first=date(2026, 2, 1),
                last=date(2026, 2, 28),
                now=now,
                calendar=cal,
            )
            sizes += len(row.content_html)
    t_summary = time.perf_counter() - t2

    result = {
        "bench": "month_end",
        "quick": args.quick,
        "contracts": contracts,
        "inspections_created": len(plan.created),
        "what_is_timed": "planning (rows, unique per contract x period) and the notices, one transaction per "
        "inspection as its send_notice task does; not the Prefect run start of each inspection",
        "notices_queued": notices,
        "plan_seconds": round(t_plan, 2),
        "notice_seconds": round(t_notice, 2),
        "plan_and_notice_seconds": round(t_plan + t_notice, 2),
        "plan_target_seconds": 60,
        "summaries": len(customers),
        "summary_seconds": round(t_summary, 2),
        "summary_ms_each": round(1000 * t_summary / max(1, len(customers)), 1),
        "summary_avg_kb": round(sizes / max(1, len(customers)) / 1024, 1),
        "summary_target_seconds": 60,
        "database": "sqlite (WAL), fresh file",
        "machine_cpus": os.cpu_count(),
    }
    result["plan_within_target"] = result["plan_and_notice_seconds"] <= 60
    result["summary_within_target"] = result["summary_seconds"] <= 60
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2))
    for k, v in result.items():
        print(f"{k:28} {v}")
    return result


if __name__ == "__main__":
    main()
