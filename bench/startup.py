"""Benchmark: time to ready of `aftercare up` on a warm install (dependencies installed and compiled).

Each round starts `aftercare up` in a new home (its first start: migration, demo data, Prefect's own
database created), waits for the line that says it is ready — printed only once every deployment is
registered and polled by the runner —, stops it with SIGTERM, then starts it again on the same home
(a restart) and stops it again. Measured from the launch of the command: ready (the wall time, and
the figure `up` prints), the keeper run Running, and from SIGTERM to exit.

    uv run python bench/startup.py            # 3 rounds
    uv run python bench/startup.py --quick    # 1 round, first start only (CI)

Prints the figures and writes bench/results/startup.json. Target (issue 15): ready ≤ 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_start(home: Path) -> dict[str, float]:
    """Start `aftercare up` on `home`, wait until ready and the keeper runs, stop it; the timings."""
    import httpx

    prefect_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFTERCARE_", "PREFECT_"))}
    env["AFTERCARE_HOME"] = str(home)
    launched = time.monotonic()  # before the launch: `up` counts from its own process start
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deployments.cli",
            "up",
            "--prefect-port",
            str(prefect_port),
            "--web-port",
            str(web_port),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    seen: dict[str, float] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "就绪用时" in line:
                seen["ready"] = time.monotonic() - launched

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        while "ready" not in seen:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("aftercare up did not become ready:\n" + "".join(lines))
            time.sleep(0.05)
        printed = float(re.search(r"ready in: +([\d.]+) s", "".join(lines)).group(1))  # type: ignore[union-attr]
        user, _, password = (home / "prefect_auth").read_text().partition(":")
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{prefect_port}/api", auth=httpx.BasicAuth(user, password)
        )
        keeper = None
        while keeper is None and time.monotonic() < deadline:
            running = api.post(
                "/flow_runs/filter",
                json={
                    "flows": {"name": {"any_": ["clock-keeper"]}},
                    "flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}},
                },
            ).json()
            if running:
                keeper = time.monotonic() - launched
            time.sleep(0.1)
        api.close()
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        stopped = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    return {
        "ready_s": round(seen["ready"], 2),
        "ready_printed_s": printed,
        "keeper_running_s": round(keeper, 2) if keeper is not None else -1.0,
        "stop_s": round(stopped, 2),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "max": round(max(values), 2), "n": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size: one first start")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "startup.json"), help="JSON file")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    load_before = os.getloadavg()

    first: list[dict[str, float]] = []
    again: list[dict[str, float]] = []
    for n in range(rounds):
        home = Path(tempfile.mkdtemp(prefix="aftercare-bench-startup-")) / "var"
        first.append(one_start(home))
        print(f"round {n + 1}: first start {first[-1]}", flush=True)
        if not args.quick:
            again.append(one_start(home))
            print(f"round {n + 1}: restart     {again[-1]}", flush=True)

    figures: dict[str, Any] = {
        "size": "quick" if args.quick else "full",
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "target_ready_s": TARGET_SECONDS,
        "first_start": first,
        "restart": again,
        "first_start_ready_s": summary([r["ready_s"] for r in first]),
        "first_start_keeper_running_s": summary([r["keeper_running_s"] for r in first]),
        "stop_s": summary([r["stop_s"] for r in first + again]),
    }
    if again:
        figures["restart_ready_s"] = summary([r["ready_s"] for r in again])
    worst = max(r["ready_s"] for r in first + again)
    figures["target_met"] = worst <= TARGET_SECONDS
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    print(
        f"time to ready: first start p50 {figures['first_start_ready_s']['p50']} s"
        + (f", restart p50 {figures['restart_ready_s']['p50']} s" if again else "")
        + f"; worst {worst} s (target ≤ {TARGET_SECONDS:.0f} s: {'met' if figures['target_met'] else 'NOT met'});"
        f" stop p50 {figures['stop_s']['p50']} s; load average before {figures['load_average_before']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
