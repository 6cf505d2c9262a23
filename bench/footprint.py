"""Every process of one `aftercare up` stack with its memory: PSS and RSS.

RSS counts every page a process maps, so pages shared between processes (a fork's copy-on-write
pages, the interpreter and its shared libraries) are counted once per process and the sum
overstates the stack. PSS (proportional set size, `Pss:` of /proc/<pid>/smaps_rollup) charges a
shared page to each of its n sharers by 1/n: the PSS of every process added up is the memory the
stack really holds. Both are reported; totals and targets use PSS.

A process belongs to the stack when its environment names the stack's AFTERCARE_HOME (what
`aftercare up` gives every child; the children's own children inherit it).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

KB = 1024

# (role, group) by what the command line says; the first match wins
ROLES = [
    ("deployments.prefect_server", "Prefect server", "prefect"),
    ("prefect server start", "Prefect server", "prefect"),
    ("deployments.supervise", "supervisor (aftercare up)", "ours"),
    ("deployments.cli up", "supervisor (aftercare up)", "ours"),
    ("deployments.prepare", "database preparation (one-shot)", "ours"),
    ("web.app:app", "approval web", "ours"),
    ("deployments.serve", "runner", "ours"),
    ("multiprocessing.resource_tracker", "resource tracker", "ours"),
    ("multiprocessing.forkserver", "fork server", "ours"),
    ("prefect.engine", "flow run (cold start)", "ours"),
]


@dataclass
class Proc:
    pid: int
    ppid: int
    role: str
    group: str
    pss_mb: float
    rss_mb: float
    threads: int
    cmdline: str


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def _environ_home(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(b"AFTERCARE_HOME="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return None


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS kB, RSS kB) of one process, from /proc/<pid>/smaps_rollup."""
    pss = rss = 0
    for line in _read(Path(f"/proc/{pid}/smaps_rollup")).splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
        elif line.startswith("Rss:"):
            rss = int(line.split()[1])
    return pss, rss


def stack(home: Path, *, exclude: int | None = None) -> list[Proc]:
    """Every process of the stack that runs with AFTERCARE_HOME `home`, classified."""
    wanted = {str(home), str(home.resolve())}
    found: dict[int, tuple[int, str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), exclude):
            continue
        pid = int(entry.name)
        if _environ_home(pid) not in wanted:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            ppid = int(_read(entry / "stat").rsplit(")", 1)[1].split()[1])
            threads = int(
                next(x for x in _read(entry / "status").splitlines() if x.startswith("Threads:")).split()[1]
            )
        except (OSError, StopIteration, ValueError):
            continue
        found[pid] = (ppid, cmd, threads)
    roles: dict[int, tuple[str, str]] = {}
    for pid, (_ppid, cmd, _) in found.items():
        roles[pid] = next(((role, group) for key, role, group in ROLES if key in cmd), ("other", "ours"))
    for pid, (ppid, _cmd, _) in found.items():
        # the warm-start fork server as a fork of the runner (deployments.warm_start.fork_server_here)
        if roles[pid][0] == "runner" and roles.get(ppid, ("", ""))[0] == "runner":
            roles[pid] = ("fork server", "ours")
    for pid, (ppid, cmd, _) in found.items():
        parent = roles.get(ppid, ("", ""))[0]
        if parent == "fork server" and roles[pid][0] != "resource tracker":
            roles[pid] = ("flow run (forked)", "ours")
        elif parent == "approval web" and "multiprocessing.spawn" in cmd:
            roles[pid] = ("PDF worker", "ours")
    procs = []
    for pid, (ppid, cmd, threads) in found.items():
        try:
            pss, rss = memory_kb(pid)
        except OSError:
            continue
        role, group = roles[pid]
        procs.append(Proc(pid, ppid, role, group, round(pss / KB, 1), round(rss / KB, 1), threads, cmd[:160]))
    return sorted(procs, key=lambda p: (p.group != "prefect", p.role, p.pid))


def summary(procs: list[Proc]) -> dict[str, object]:
    """The processes and the totals per group (Prefect, ours) and in all, in MB."""

    def total(group: str | None, key: str) -> float:
        return round(sum(getattr(p, key) for p in procs if group is None or p.group == group), 1)

    return {
        "processes": [asdict(p) for p in procs],
        "prefect_pss_mb": total("prefect", "pss_mb"),
        "ours_pss_mb": total("ours", "pss_mb"),
        "total_pss_mb": total(None, "pss_mb"),
        "prefect_rss_mb": total("prefect", "rss_mb"),
        "ours_rss_mb": total("ours", "rss_mb"),
        "total_rss_mb": total(None, "rss_mb"),
    }


def table(procs: list[Proc]) -> str:
    lines = [f"{'group':8} {'process':34} {'pid':>7} {'PSS MB':>8} {'RSS MB':>8} {'thr':>4}"]
    for p in procs:
        lines.append(f"{p.group:8} {p.role:34} {p.pid:>7} {p.pss_mb:>8.1f} {p.rss_mb:>8.1f} {p.threads:>4}")
    s = summary(procs)
    lines.append(f"{'':8} {'Prefect':34} {'':>7} {s['prefect_pss_mb']:>8} {s['prefect_rss_mb']:>8}")
    lines.append(f"{'':8} {'ours (aftercare)':34} {'':>7} {s['ours_pss_mb']:>8} {s['ours_rss_mb']:>8}")
    lines.append(f"{'':8} {'whole stack':34} {'':>7} {s['total_pss_mb']:>8} {s['total_rss_mb']:>8}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(table(stack(Path(sys.argv[1]))))


# What a fresh interpreter holds after importing only these (the floor under each of our processes)
FLOORS = {
    "bare interpreter": "",
    "Prefect's client (what the web imports of Prefect: prefect.input, its API client)": "import prefect.input, prefect.client.orchestration",
    "Prefect's runner and engines (what the runner needs of Prefect)": "import prefect.runner, prefect.flow_engine, prefect.task_engine",
    "the approval web's imports (web.app)": "import web.app",
    "the runner's imports (deployments.serve, the procedures, Prefect's engines, the keeper's steps)": "import deployments.serve, flows.repair, flows.accident, flows.inspection, flows.clock_keeper, "
    "prefect.runner, prefect.flow_engine, prefect.task_engine, tasks.timers, tasks.approvals, "
    "tasks.runs, tasks.clocks, tasks.accident, tasks.notify",
}


def import_floors(root: Path) -> dict[str, dict[str, float]]:
    """PSS and RSS (MB) of a fresh interpreter after each import line of FLOORS."""
    import subprocess
    import sys

    probe = (
        "{}\nfor line in open('/proc/self/smaps_rollup'):\n"
        "    if line.startswith(('Pss:', 'Rss:')): print(line.split()[0], line.split()[1])"
    )
    found: dict[str, dict[str, float]] = {}
    for name, imports in FLOORS.items():
        done = subprocess.run(
            [sys.executable, "-c", probe.format(imports)],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        values = dict(line.split() for line in done.stdout.splitlines())
        found[name] = {
            "pss_mb": round(int(values.get("Pss:", 0)) / KB, 1),
            "rss_mb": round(int(values.get("Rss:", 0)) / KB, 1),
        }
    return found
