"""Warm starts for flow runs: the runner forks each run from a process that has already imported
Prefect and every procedure, instead of starting a new interpreter per run.

Why: a flow that waits for a person exits (DESIGN.md §2), so every approval click starts the run
again. Prefect's runner starts a served run either with `python -m prefect.engine` (a cold
interpreter: importing Prefect, SQLAlchemy, Apprise and the procedures costs 5–7 s here) or, when
it holds the flow object for the deployment, with `multiprocessing`'s *spawn* context — cold too.
Two small changes make the second path warm:

1. `register_flows(runner, deployments)` gives the runner the flow object of every deployment it
   serves (Prefect's `serve()` only does that for `Runner.add_flow`, not for `add_deployment`).
2. `use_forkserver(preload)` makes Prefect's `run_flow_in_subprocess` use the standard library's
   *forkserver* context with the procedures preloaded: each run is a fork of a clean, single-
   threaded server process that has imported everything once (not a fork of the runner, whose
   event loop and threads must not be copied).

The flow object travels to the child by cloudpickle. A flow function is pickled by value (the
module attribute is the `Flow`, not the function), and only the globals its code names go with
it — string annotations (`from __future__ import annotations`) would then name classes the child
cannot see. `resolved(flow)` evaluates them first, so parameter models and forms stay whole.

`AFTERCARE_COLD_START=1` (or true/yes/on) turns all of this off (every run then starts `python -m prefect.engine`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import multiprocessing.context
import threading
import time
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from models.settings import Settings, get_settings

log = logging.getLogger("aftercare.serve")


def enabled(settings: Settings | None = None) -> bool:
    """Warm starts, unless `AFTERCARE_COLD_START` is on."""
    return not (settings or get_settings()).cold_start


def module_of(entrypoint: str) -> tuple[str, str] | None:
    """'flows/repair.py:repair' → ('flows.repair', 'repair'); 'flows.repair.repair' likewise."""
    if ":" in entrypoint:
        path, attr = entrypoint.rsplit(":", 1)
        p = Path(path)
        if p.suffix != ".py" or p.is_absolute() or ".." in p.parts:
            return None
        return ".".join(p.with_suffix("").parts), attr
    if "." in entrypoint:
        module, attr = entrypoint.rsplit(".", 1)
        return module, attr
    return None


def resolved(flow: Any) -> Any:
    """The flow with its function's annotations evaluated (see the module docstring)."""
    fn = flow.fn
    try:
        fn.__annotations__ = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # an annotation that cannot be resolved stays a string; say so
        log.warning("flow %s: annotations left unresolved (%s)", getattr(flow, "name", fn), exc)
    return flow


def flow_for(deployment: Any) -> Any | None:
    """The flow object a deployment runs, imported by module name; None when it cannot be found."""
    found = module_of(deployment.entrypoint or "")
    if found is None:
        return None
    module_name, attr = found
    try:
        flow = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        log.warning("deployment %s: cold starts (%s)", deployment.name, exc)
        return None
    return resolved(flow) if hasattr(flow, "fn") else None


def register_flows(runner: Any, pairs: Iterable[tuple[Any, Any]]) -> list[str]:
    """Give the runner the flow object of each (deployment_id, deployment); the names registered."""
    names = []
    for deployment_id, deployment in pairs:
        flow = flow_for(deployment)
        if flow is not None:
            runner._deployment_registry.register_flow(deployment_id, flow)
            names.append(deployment.name)
    return names


# Every run handed to the fork server, and the idle stop, take this lock: a stop never kills the
# server while a run is being started on it (multiprocessing hands a run over outside its own lock).
_LAUNCH = threading.Lock()
_last_start = time.monotonic()  # when a run was last handed to the fork server (or the runner started)


class _WarmProcess(multiprocessing.context.ForkServerProcess):
    """A flow run forked by the fork server; its start is what the idle stop counts as activity."""

    def start(self) -> None:
        global _last_start
        with _LAUNCH:
            _last_start = time.monotonic()
            super().start()
            _last_start = time.monotonic()  # a fork server started for this run is as fresh as it


class _WarmContext:
    """multiprocessing's forkserver context, its processes `_WarmProcess`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing.get_context("forkserver"), name)

    @staticmethod
    def Process(*args: Any, **kwargs: Any) -> _WarmProcess:  # noqa: N802 - multiprocessing's name
        return _WarmProcess(*args, **kwargs)


class _ForkserverMultiprocessing:
    """Stands in for the `multiprocessing` module inside `prefect.flow_engine`: every context is
    the forkserver one, with its starts counted (`_WarmProcess`)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)

    @staticmethod
    def get_context(method: str | None = None) -> Any:
        return _WarmContext()


# The procedures import their step modules at module top (no import cycle: tests/test_architecture.py),
# so preloading the procedures brings the steps in. `tasks.channels` (Apprise, for the address check
# on every write of a person) is named here as well, so a run is forked with it even if a procedure
# stops importing it. `deployments.flow_run_process` adjusts Prefect's engine in every forked run
# (`heartbeats_unjoined`); it is preloaded so that a fork server started afresh has it too.
LATE_IMPORTS = ("tasks.channels", "deployments.flow_run_process")


def heartbeats_unjoined() -> None:
    """A flow run's process ends as soon as its run is suspended or finished, instead of up to a
    second later: Prefect's synchronous engine joins its heartbeat thread on the way out, and that
    thread sleeps in whole seconds (`prefect.flow_engine._send_heartbeats`: `time.sleep(1)` between
    looks at its stop event). The runner submits a run again only once its previous process has
    exited (Prefect's ScheduledRunPoller skips a run id it is still submitting), so every resumed
    run waited for that second: measured with bench/repair.py, the poll leg Scheduled → Pending was
    0.96 s median at a 0.25 s poll, 0.7–0.8 s of it the suspended process joining its heartbeat
    thread. Prefect's own async engine opens the same heartbeats with `join_on_exit=False`; this
    makes the synchronous one do the same. The thread is a daemon and sends nothing after its stop
    event is set (it looks before each heartbeat), so not waiting for it loses no heartbeat.
    Prefect is pinned (pyproject.toml); tests/test_warm_start.py checks the function still takes
    `join_on_exit` and that leaving it returns at once."""
    import prefect.flow_engine

    original = prefect.flow_engine._send_heartbeats
    if getattr(original, "aftercare_unjoined", False):
        return

    @contextlib.contextmanager
    def unjoined(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
        with original(engine, join_on_exit=False):
            yield

    unjoined.aftercare_unjoined = True  # type: ignore[attr-defined]
    prefect.flow_engine._send_heartbeats = unjoined


def use_forkserver(preload: Iterable[str], *, fork_here: bool = False) -> None:
    """Run flow subprocesses as forks of a server that has imported `preload`, Prefect's engine and
    the steps' late imports; the server starts now, so the first run after start-up is warm too.

    `fork_here`: the server is a fork of this process (`fork_server_here`) instead of a new
    interpreter, when this process has only one thread yet."""
    import multiprocessing.forkserver

    import prefect.flow_engine

    modules = list(dict.fromkeys(["prefect.flow_engine", "prefect.task_engine", *preload, *LATE_IMPORTS]))
    multiprocessing.set_forkserver_preload(modules)
    prefect.flow_engine.multiprocessing = _ForkserverMultiprocessing()  # type: ignore[assignment]
    if fork_here and threading.active_count() == 1:
        fork_server_here(modules)
    else:
        multiprocessing.forkserver.ensure_running()


def fork_server_here(modules: list[str]) -> int:
    """Start multiprocessing's fork server as a fork of this process, which has imported `modules`
    (and will not run another thread before the fork): the server shares this process's pages
    instead of importing Prefect and the procedures a second time in an interpreter of its own.

    Measured (issue 26, bench/waiting.py): the fork server a new interpreter holds ~61 MB PSS; a fork
    of the runner shares the runner's copy of Prefect and the procedures (gc.freeze keeps the
    collector from writing to those pages and so unsharing them).

    It is multiprocessing's own `ForkServer.ensure_running` with `os.fork` in place of spawning an
    interpreter: the same listener socket, "alive" pipe and `forkserver.main` loop, so
    `multiprocessing.get_context("forkserver")` uses it unchanged, and starts a new (spawned)
    server the usual way if this one ever dies. Returns the server's pid."""
    import gc
    import importlib
    import os
    import socket
    from multiprocessing import connection, forkserver, resource_tracker, util

    for name in modules:
        importlib.import_module(name)
    server: Any = forkserver._forkserver  # multiprocessing's private state, as ensure_running keeps it
    with server._lock:
        resource_tracker.ensure_running()
        gc.collect()
        gc.freeze()  # objects alive now are never scanned again: their pages stay shared
        with socket.socket(socket.AF_UNIX) as listener:
            address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
            listener.bind(address)
            if not util.is_abstract_socket_namespace(address):
                os.chmod(address, 0o600)
            listener.listen()
            alive_r, alive_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the fork server: serve until the last process holding `alive_w` ends
                code = 0
                try:
                    os.close(alive_w)
                    forkserver.main(listener.fileno(), alive_r, [])
                except SystemExit:
                    pass
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            os.close(alive_r)
            server._forkserver_address = address
            server._forkserver_alive_fd = alive_w
            server._forkserver_pid = pid
    return pid


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    import os

    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    if int(fh.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def stop_if_idle(idle_seconds: float, now: float) -> bool:
    """Stop the fork server when no run has been handed to it for `idle_seconds` and none of its runs
    is still running; True when it was stopped.

    Idleness is counted from the last start of a run (`_WarmProcess`), not sampled from the server's
    children: a sample misses the runs between two looks, and sees no child in a server that has just
    been started and is still importing the procedures for its first run. Killing such a server —
    the next run after a stop was handed to a new server that the next look found "idle" — made its
    start fail ("Flow run could not start: … EOFError: unexpected EOF"; the crash of issue 26's
    2,000-case run, reproduced with a 4 s idle time). The stop holds `_LAUNCH`, so no run is being
    handed over meanwhile, and waits until the server is dead before letting the next start see it;
    it does not reap it: the next `ensure_running` does, and starts a new server with the same
    preload (a new interpreter: a few seconds)."""
    import os
    import signal
    from multiprocessing import forkserver

    server: Any = forkserver._forkserver
    with _LAUNCH, server._lock:
        if now - _last_start < idle_seconds:
            return False
        pid = server._forkserver_pid
        if pid is None or _state(pid) in (None, b"Z") or _children(pid):
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _state(pid) not in (None, b"Z") and time.monotonic() < deadline:
            time.sleep(0.02)
        log.info("warm-start fork server stopped after %.0f s without a flow run", now - _last_start)
        _stop_resource_tracker()
    _trim_heap()
    return True


def _state(pid: int) -> bytes | None:
    """The process's state letter (b"Z": dead, not reaped yet); None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _stop_resource_tracker(wait: float = 10.0) -> None:
    """Let multiprocessing's resource tracker (~6 MB) end with the fork server that started it: it
    ends when the last holder of its pipe closes it — this process, now that no flow run holds it.
    The next fork server starts a new one (`resource_tracker.ensure_running`)."""
    import os
    from multiprocessing import resource_tracker

    tracker: Any = resource_tracker._resource_tracker
    with tracker._lock:
        fd, pid = tracker._fd, tracker._pid
        if fd is None:
            return
        os.close(fd)
        tracker._fd = tracker._pid = None
    if pid is None:
        return
    deadline = time.monotonic() + wait
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(pid, os.WNOHANG)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)


def _trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc `malloc_trim`); elsewhere nothing."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def stop_when_idle(idle_seconds: float, check_seconds: float = 10.0) -> None:
    """Start a thread that stops the fork server after `idle_seconds` without a flow run (issue 26:
    at idle its memory is given back); 0: never."""
    if idle_seconds <= 0:
        return

    def watch() -> None:
        while True:
            time.sleep(min(check_seconds, idle_seconds))
            try:
                stop_if_idle(idle_seconds, time.monotonic())
            except Exception:
                log.exception("could not check whether the fork server is idle")

    threading.Thread(target=watch, name="forkserver-idle", daemon=True).start()
