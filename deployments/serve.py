"""The runner process: serves every deployment with its schedule (started by `aftercare up`).

`AFTERCARE_EXTRA_FLOW_MODULES` (deployments.registry.extra_modules) adds deployments that are not
part of the product — the tests' own flows and the benchmarks' waiting flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

from deployments import warm_start
from deployments.registry import PROCEDURE_MODULES, all_deployments, extra_deployments, extra_modules
from models.settings import Settings, get_settings

MIN_POLL_SECONDS = 0.1  # below this the runner's polls load the Prefect server for no gain
SERVED_FILE = "served.json"  # in PREFECT_HOME: what this runner registered, read by `aftercare up`


def served_file() -> Path:
    return Path(os.environ.get("PREFECT_HOME", ".")) / SERVED_FILE


def wait_for_server(timeout: float = 180.0) -> None:
    """Wait until the Prefect API answers: `aftercare up` starts the runner together with the
    server, so that importing the procedures overlaps the server's own start."""
    import httpx

    url = os.environ.get("PREFECT_API_URL", "").rstrip("/") + "/health"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"aftercare runner: the Prefect API at {url} did not answer in {timeout:.0f} s")
        time.sleep(0.2)


def write_served(names: list[str], started: float) -> None:
    """Say which deployments this runner registered and since when it polls (for `aftercare up`)."""
    path = served_file()
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    draft.write_text(json.dumps({"pid": os.getpid(), "since": started, "deployments": names}))
    draft.replace(path)


def poll_seconds(settings: Settings | None = None) -> float:
    """How often the runner asks for runs to start — the floor of approval-click latency.
    `AFTERCARE_RUNNER_POLL_SECONDS` (default 0.25, at least 0.1; Prefect's own setting takes whole
    seconds only)."""
    return max(MIN_POLL_SECONDS, (settings or get_settings()).runner_poll_seconds)


def main() -> None:
    """`prefect.serve` with warm starts (deployments.warm_start): the same deployments and limit."""
    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    settings = get_settings()  # `aftercare up` validated the same environment before starting us
    host_keeper()
    limit = int(os.environ.get("PREFECT_RUNNER_PROCESS_LIMIT", "20"))
    deployments = [*all_deployments(), *extra_deployments()]
    warm = warm_start.enabled(settings)
    if warm:
        # before any thread starts (the API calls below start Prefect's event-loop thread): the
        # fork server is then a fork of this process and shares its imports (warm_start.fork_server_here)
        warm_start.use_forkserver([*PROCEDURE_MODULES, *extra_modules()], fork_here=True)
    wait_for_server()

    class AftercareRunner(Runner):
        def handle_sigterm(self, *args: object, **kwargs: object) -> None:
            # Prefect's own handler first pauses every deployment through the API; when `aftercare
            # up` stops, or dies, that server is going away too, and the runner hung retrying. End
            # this runner and its flow runs now instead (the next runner registers them again).
            release_keeper()
            end_own_group()
            os._exit(0)

    runner = AftercareRunner(limit=limit, query_seconds=poll_seconds(settings))
    started = time.time()
    ids = [runner.add_deployment(d) for d in deployments]
    write_served([d.name for d in deployments], started)
    if warm:
        registered = warm_start.register_flows(runner, zip(ids, deployments, strict=True))
        print(
            f"aftercare runner: {len(deployments)} deployments, warm starts for {len(registered)}", flush=True
        )
        warm_start.stop_when_idle(settings.warm_idle_seconds)
    try:
        with contextlib.suppress(KeyboardInterrupt, TerminationSignal):
            asyncio.run(runner.start())
    finally:
        release_keeper()
        end_own_group()


_keeper: list[threading.Thread] = []  # the hosted keeper's thread, if this runner hosts it


def host_keeper() -> None:
    """Under `aftercare up` (AFTERCARE_RUNNER_HOSTS_KEEPER), the clock keeper runs in this process,
    on a thread (flows.clock_keeper.host): no interpreter of its own. The tests' runners host none.

    It starts on SIGUSR1, which `aftercare up` sends once this runner serves every deployment
    (deployments.supervise.KeeperWatch): as before, the keeper's work does not slow start-up.
    SIGHUP (`aftercare up` starts the runner afresh after a Prefect server restart) ends the runner
    as before — its flow runs carry on — but releases the keeper's lease first, so the next
    runner's keeper starts at once instead of after the lease ran out."""
    if os.environ.get("AFTERCARE_RUNNER_HOSTS_KEEPER", "").lower() not in {"1", "true", "yes", "on"}:
        return

    def start(_signum: int, _frame: object) -> None:
        from flows.clock_keeper import host_in_thread

        if not _keeper:
            _keeper.append(host_in_thread())

    def recycled(_signum: int, _frame: object) -> None:
        release_keeper()
        os._exit(0)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGHUP, recycled)


def release_keeper() -> None:
    """Stop the hosted keeper (if any) and release its lease; the process ends right after."""
    if _keeper:
        from flows.clock_keeper import stop_hosting

        _keeper.clear()
        stop_hosting()


def end_own_group(grace: float = 3.0) -> None:
    """Stopped (Ctrl-C, SIGTERM — also the one the kernel sends when `aftercare up` dies): end the
    flow-run processes too, which share this runner's process group — SIGTERM, then SIGKILL for
    what is still there after `grace` (a flow run whose server is gone retries its last report for
    a minute). A runner that is killed outright runs no code, and its flow runs finish on their own."""
    group = os.getpgrp()
    if group != os.getpid():  # not the leader of its own group (started by hand): leave it
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_heeds_sigterm(p) for p in _others_in_group(group)):
        time.sleep(0.1)
    if _others_in_group(group):  # multiprocessing's resource tracker ignores SIGTERM: no use waiting
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)  # this runner too: it was leaving anyway


def _others_in_group(group: int) -> list[Path]:
    """The live processes of `group` other than this one (Linux: /proc)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry.name)) == group and not _zombie(entry):
                    found.append(entry)
    return found


def _heeds_sigterm(proc: Path) -> bool:
    try:
        status = (proc / "status").read_text()
        ignored = int(status.split("SigIgn:", 1)[1].split()[0], 16)
    except (OSError, IndexError, ValueError):
        return False
    return not ignored & (1 << (signal.SIGTERM - 1))


def _zombie(proc: Path) -> bool:
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


if __name__ == "__main__":
    main()
