"""Benchmark: the notification outbox on SQLite — queueing rows in callers' transactions, then one
notifier and two racing notifiers sending them through real Apprise to a recording plugin.

Measures rows queued per second (one transaction per event, 2 recipients each), rows sent per
second by one notifier (claim + send + one commit per row), the same with two notifiers racing on
one database file (threads), and checks that every row went out exactly once.

    uv run python bench/outbox.py            # 20,000 rows
    uv run python bench/outbox.py --quick    # 400 rows (CI)

Prints the figures and writes bench/results/outbox.json. Set AFTERCARE_DATABASE_URL to a
PostgreSQL URL to measure there instead (the database must be empty or disposable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "outbox.json"), help="JSON file")
    args = parser.parse_args()
    rows = 400 if args.quick else 20_000
    events = rows // 2

    tmp = tempfile.mkdtemp(prefix="aftercare-bench-outbox-")
    os.environ.setdefault("AFTERCARE_HOME", str(Path(tmp) / "var"))
    from apprise.decorators import notify

    from models.db import get_engine, migrate, session_scope
    from models.parties import Staff
    from models.settings import get_settings
    from tasks.notify import queue, run_notifier

    url = get_settings().db_url
    migrate(url)

    sent: Counter[str] = Counter()
    lock = threading.Lock()

    @notify(on="record", name="bench recorder")
    def _record(body: str, title: str, notify_type: str, meta: dict, *a: object, **k: object) -> bool:
        with lock:
            sent[f"{meta.get('url')}|{body}"] += 1
        return True

    def fill(tag: str) -> float:
        with session_scope(url) as s:
            people = [Staff(name=f"{tag}-{i}", notify_urls=[f"record://{tag}/{i}"]) for i in range(2)]
            s.add_all(people)
        start = time.perf_counter()
        for i in range(events):
            with session_scope(url) as s:  # one transaction per event, as a task would
                queue(
                    s,
                    recipients=people,
                    template="outbox/test",
                    context={"now": T0},
                    key=f"{tag}-{i}",
                    case_id=None,
                    now=T0,
                )
        return time.perf_counter() - start

    def drain(workers: int) -> float:
        start = time.perf_counter()

        def loop(name: str) -> None:
            while run_notifier(T0, worker=name, limit=100).claimed:
                pass

        threads = [threading.Thread(target=loop, args=(f"w{n}",)) for n in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    queue_s = fill("one")
    one_s = drain(1)
    fill("two")
    two_s = drain(2)
    total = sum(sent.values())
    import sqlalchemy as sa

    from models.outbox import Notification

    with session_scope(url) as s:
        sent_once = s.execute(
            sa.select(sa.func.count()).where(Notification.status == "sent", Notification.attempts == 1)
        ).scalar_one()
    get_engine(url).dispose()

    result = {
        "benchmark": "outbox",
        "size": "quick" if args.quick else "full",
        "database": url.split(":", 1)[0],
        "rows_per_round": rows,
        "queue_rows_per_s": round(rows / queue_s, 1),
        "send_rows_per_s_one_notifier": round(rows / one_s, 1),
        "send_rows_per_s_two_notifiers": round(rows / two_s, 1),
        "messages_sent": total,
        "expected_messages": 2 * rows,
        "rows_sent_exactly_once": sent_once,
        "cpu_count": os.cpu_count(),
    }
    for key, value in result.items():
        print(f"{key:32} {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if total == sent_once == 2 * rows else 1


if __name__ == "__main__":
    sys.exit(main())
