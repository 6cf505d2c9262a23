"""The process supervisor of `aftercare up`: starts each child in its own process group, restarts a
child that died with exponential back-off, stops every process it started when told to.

- A child that exits is started again after 1, 2, 4 … s (at most `cap`); a child that stayed up
  `stable_after` seconds counts as healthy again and its next restart waits 1 s. Each restart is
  one line on the console and in `logs/supervisor.log`.
- Each child is the leader of its own process group (`start_new_session`), so stopping it stops
  what it started (the runner's flow-run processes, the Prefect server's workers). A child is also
  told by the kernel (`PR_SET_PDEATHSIG`, Linux) when the supervisor itself dies, so a `kill -9`
  of `aftercare up` leaves no child running.
- SIGINT/SIGTERM raise `Stop` in the main thread wherever it is (a wait, an HTTP call, a sleep):
  no wait outlives a Ctrl-C. Signals are held back only for the few instructions that start a
  child and record it (`held_signals`), so no child is ever started and left unrecorded.

This module runs in the process that only supervises (deployments.supervise): it imports the
standard library only — no Prefect, SQLModel or pydantic (issue 26: that process holds ~20 MB
instead of ~90).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop(BaseException):
    """Ctrl-C or SIGTERM: stop everything. A BaseException, so no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the block; one that arrived meanwhile is handled right after it."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _child_setup(parent: int) -> Callable[[], None]:
    """A preexec function: the child starts with SIGINT/SIGTERM unblocked (the mask of
    `held_signals` is inherited across exec) and, on Linux, gets SIGTERM when the supervisor dies."""
    libc = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if libc is not None:
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the supervisor died before prctl: do not outlive it
                os._exit(1)

    return preexec


@dataclass
class Child:
    """One supervised process and its restart state."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    restart: bool = True  # False: a one-shot task whose successful exit is final
    kill_group_on_exit: bool = True  # False: the group's other processes finish on their own
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    failures: int = 0  # consecutive quick deaths: the back-off exponent
    restart_due: float | None = None
    groups: list[int] = field(default_factory=list)  # every process group this child ever led
    done: bool = False
    dependents: list[str] = field(default_factory=list)  # children to start afresh when this one dies
    recycled: bool = False  # asked to exit and start afresh (not a failure)
    recycled_reason: str = ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def private_dir(path: Path) -> Path:
    """The logs directory, its owner's only (0700) — the rule of models.settings.private_dir, which
    this process does not import (models.settings loads pydantic)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o777 != 0o700:
        with contextlib.suppress(PermissionError):
            path.chmod(0o700)
    return path


def open_log(path: Path, mode: str = "a") -> Any:
    """A log file opened for appending, its owner's only (0600) whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with contextlib.suppress(PermissionError):
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab" if "b" in mode else "a", encoding=None if "b" in mode else "utf-8")


def _clock() -> str:
    return datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Supervisor:
    echo: Callable[[str], None]
    logs: Path
    base_delay: float = 1.0
    cap: float = 30.0
    stable_after: float = 60.0
    children: dict[str, Child] = field(default_factory=dict)
    stopping: bool = False
    _raised: bool = False
    _old_handlers: dict[int, object] = field(default_factory=dict)

    # --- signals ------------------------------------------------------------------------------

    def install_signals(self) -> None:
        for sig in STOP_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping or self._raised:  # asked again while stopping: no more grace
            for child in self.children.values():
                for pgid in child.groups:
                    signal_group(pgid, signal.SIGKILL)
            return
        self._raised = True
        raise Stop(signum)

    # --- children -----------------------------------------------------------------------------

    def note(self, line: str) -> None:
        """One line on the console and in logs/supervisor.log."""
        self.echo(line)
        with contextlib.suppress(OSError), open_log(private_dir(self.logs) / "supervisor.log") as fh:
            fh.write(f"{_clock()} {line}\n")

    def add(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        restart: bool = True,
        kill_group_on_exit: bool = True,
        dependents: list[str] | None = None,
    ) -> Child:
        child = Child(
            name,
            argv,
            env,
            self.logs / f"{name}.log",
            restart=restart,
            kill_group_on_exit=kill_group_on_exit,
            dependents=list(dependents or []),
        )
        self.children[name] = child
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        private_dir(self.logs)
        with open_log(child.log, "ab") as handle, held_signals():
            child.proc = subprocess.Popen(
                child.argv,
                env=child.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopping it stops its children too
                preexec_fn=_child_setup(os.getpid()),
            )
            child.groups.append(child.proc.pid)
            child.started_at = time.monotonic()
            child.starts += 1
            child.restart_due = None

    def poll(self, now: float | None = None) -> list[Child]:
        """Notice children that exited and restart those that are due. Returns the children that
        exited since the last call."""
        now = time.monotonic() if now is None else now
        exited: list[Child] = []
        for child in self.children.values():
            if child.done or self.stopping:
                continue
            if child.restart_due is not None:
                if now >= child.restart_due:
                    self._spawn(child)
                continue
            if child.proc is None or child.proc.poll() is None:
                continue
            exited.append(child)
            code = child.proc.returncode
            lived = now - child.started_at
            if child.kill_group_on_exit:
                signal_group(child.proc.pid, signal.SIGKILL)  # what it left behind would hold its port
            if not child.restart and code == 0:
                child.done = True
                continue
            if child.recycled:  # asked to start afresh: not a failure
                child.recycled, child.failures, delay = False, 0, self.base_delay
                self.note(f"↻ 重启 / restarting {child.name}: {child.recycled_reason}; in {delay:g} s")
            else:
                child.failures = 1 if lived >= self.stable_after else child.failures + 1
                delay = min(self.cap, self.base_delay * 2 ** (child.failures - 1))
                self.note(
                    f"↻ 重启 / restarting {child.name}: exited {_exit_text(code)} after {lived:.0f} s; "
                    f"restart {child.starts} in {delay:g} s (log: {child.log})"
                )
            child.restart_due = now + delay
            for name in child.dependents:
                self.recycle(name, f"{child.name} exited")
        return exited

    def recycle(self, name: str, reason: str) -> None:
        """Ask a child to exit and start afresh: SIGHUP to its leader only, whose default action ends
        it without clean-up — a runner's flow runs carry on, as when a runner dies. Used for the
        runner when the Prefect server was restarted: its cancellation and suspension observers
        gave up while the server was away (Prefect logs "flow run cancellation will fail")."""
        child = self.children.get(name)
        if child is None or not child.alive or child.recycled:
            return
        child.recycled, child.recycled_reason = True, reason
        assert child.proc is not None
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGHUP)

    def stop_all(self, grace: float = 3.0) -> None:
        """SIGTERM every process group started, SIGKILL what is left after `grace` seconds."""
        self.stopping = True
        groups = [pgid for child in self.children.values() for pgid in child.groups]
        for pgid in groups:
            signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children.values():
            if child.proc is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=max(0.01, deadline - time.monotonic()))
        while time.monotonic() < deadline and any(group_alive(g) for g in groups):
            time.sleep(0.05)
        for pgid in groups:  # a group may outlive its leader (a flow run started by the runner)
            signal_group(pgid, signal.SIGKILL)
        for child in self.children.values():
            if child.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=2)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"by {signal.Signals(-code).name}"
    return f"with code {code}"
