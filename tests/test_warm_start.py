"""Warm starts (deployments.warm_start): the flow object the runner forks with must arrive whole."""

from __future__ import annotations

import typing

import cloudpickle
import pytest

from deployments import warm_start
from deployments.registry import all_deployments


def test_entrypoints_map_to_importable_modules() -> None:
    assert warm_start.module_of("flows/repair.py:repair") == ("flows.repair", "repair")
    assert warm_start.module_of("flows.repair.repair") == ("flows.repair", "repair")
    assert warm_start.module_of("/abs/x.py:f") is None
    assert warm_start.module_of("../x.py:f") is None
    assert warm_start.module_of("nothing") is None


def test_a_pickled_flow_without_resolved_annotations_loses_its_parameter_model() -> None:
    """Why `resolved` exists: flows.accident postpones annotations, and cloudpickle sends the
    function by value with only the globals its code names."""
    import flows.accident

    raw = cloudpickle.loads(cloudpickle.dumps(flows.accident.accident))
    with pytest.raises(NameError):
        typing.get_type_hints(raw.fn)


@pytest.mark.parametrize("deployment", all_deployments(), ids=lambda d: d.name)
def test_every_served_flow_survives_the_trip_to_a_forked_run(deployment) -> None:
    flow = warm_start.flow_for(deployment)
    assert flow is not None, f"{deployment.name} would cold-start"
    copy = cloudpickle.loads(cloudpickle.dumps(flow))
    hints = typing.get_type_hints(copy.fn, include_extras=True)
    assert set(hints) - {"return"} == set(deployment._parameter_openapi_schema.properties)
    # the parameter model builds: a missing parameter is reported as missing, not as a broken model
    required = deployment._parameter_openapi_schema.required or []
    if required:
        with pytest.raises(Exception) as err:
            copy.validate_parameters({})
        assert "Field required" in str(err.value) and "not fully defined" not in str(err.value)
    else:
        copy.validate_parameters({})


@pytest.mark.parametrize(
    ("raw", "warm"),
    [
        ("1", False),
        ("true", False),
        ("YES", False),
        ("on", False),
        ("0", True),
        ("false", True),
        ("", True),
        (None, True),
    ],
)
def test_cold_start_switch(monkeypatch, aftercare_home, raw: str | None, warm: bool) -> None:
    from models.settings import get_settings

    if raw is None:
        monkeypatch.delenv("AFTERCARE_COLD_START", raising=False)
    else:
        monkeypatch.setenv("AFTERCARE_COLD_START", raw)
    get_settings.cache_clear()
    assert warm_start.enabled() is warm


def test_a_cold_start_switch_that_is_not_yes_or_no_is_a_bad_setting(monkeypatch) -> None:
    from pydantic import ValidationError

    from models.settings import Settings

    monkeypatch.setenv("AFTERCARE_COLD_START", "sometimes")
    with pytest.raises(ValidationError, match="cold_start"):
        Settings()


def _run_script(script: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr


def test_the_fork_server_is_a_fork_of_the_runner_stops_when_idle_and_starts_again_on_demand() -> None:
    """issue 26: a fork server forked from the (single-threaded) runner shares its imports; after
    `warm_idle_seconds` without a flow run it is stopped, and the next run starts a new one."""
    _run_script("""
import os, time
from deployments import warm_start
from multiprocessing import forkserver

ctx = warm_start._ForkserverMultiprocessing().get_context("spawn")  # as prefect.flow_engine asks
pid = warm_start.fork_server_here(["json"])
stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
assert int(stat[1]) == os.getpid(), "the fork server is this process's own fork"
child = ctx.Process(target=time.sleep, args=(1.5,))
child.start()
time.sleep(0.5)
assert warm_start._children(pid) == [child.pid], "a run is a child of the fork server"
assert not warm_start.stop_if_idle(60.0, time.monotonic()), "a run started 0.5 s ago: not idle"
assert not warm_start.stop_if_idle(0.1, time.monotonic() + 100), "a run is running: not idle"
child.join(10)
assert child.exitcode == 0
assert not warm_start.stop_if_idle(60.0, time.monotonic() + 10), "quiet for 10 s of 60: kept"
assert warm_start.stop_if_idle(60.0, time.monotonic() + 61), "quiet for 61 s: stopped"
assert warm_start._state(pid) == b"Z", "the idle fork server has ended (not reaped: multiprocessing does)"
again = ctx.Process(target=time.sleep, args=(0,))
again.start()
again.join(30)
assert again.exitcode == 0
assert forkserver._forkserver._forkserver_pid not in (None, pid), "a new fork server was started"
print("ok")
""")


def test_a_fork_server_started_for_a_run_is_not_stopped_before_the_run_has_started() -> None:
    """The crash of issue 26's 2,000-case run: after an idle stop, the next run is handed to a new
    fork server, which imports the procedures first; a look for idleness meanwhile saw a server
    without children and stopped it, and the run's start failed (EOFError: unexpected EOF)."""
    _run_script("""
import os, sys, tempfile, threading, time
from pathlib import Path
import multiprocessing
from deployments import warm_start

slow = Path(tempfile.mkdtemp())
(slow / "slow_preload.py").write_text("import time; time.sleep(2)")  # a server that imports for 2 s
sys.path.insert(0, str(slow))
os.environ["PYTHONPATH"] = os.pathsep.join([str(slow), os.getcwd()])  # the new server imports it
multiprocessing.set_forkserver_preload(["slow_preload"])
ctx = warm_start._ForkserverMultiprocessing().get_context("spawn")
run = ctx.Process(target=time.sleep, args=(2,))
failed = []
def start():
    try:
        run.start()
    except Exception as exc:  # was: EOFError('unexpected EOF'), the server killed under the start
        failed.append(repr(exc))
starting = threading.Thread(target=start)
starting.start()
time.sleep(0.5)  # the new server is importing its preload: no child yet
assert not warm_start.stop_if_idle(0.1, time.monotonic() + 1000)
starting.join(60)
assert not failed, failed
run.join(30)
assert run.exitcode == 0, run.exitcode
print("ok")
""")


class _Engine:
    """What `prefect.flow_engine._send_heartbeats` reads of a flow run engine; heartbeats recorded."""

    heartbeat_seconds = 30
    flow_run = None
    logger = __import__("logging").getLogger("test.heartbeats")

    def __init__(self) -> None:
        self.sent: list[float] = []

    def _build_heartbeat_event_template(self) -> tuple[None, None]:
        return None, None

    def _emit_flow_run_heartbeat(self, resource: object, related: object) -> None:
        self.sent.append(__import__("time").monotonic())


def test_a_flow_run_ends_without_waiting_for_its_heartbeat_thread_to_wake(monkeypatch) -> None:
    """The runner submits a resumed run only once its previous process has exited; Prefect's
    synchronous engine joined its heartbeat thread on the way out, which sleeps in whole seconds:
    every wake-up of a procedure waited up to a second for it (bench/repair.py's poll leg)."""
    import inspect
    import time

    import prefect.flow_engine

    assert "join_on_exit" in inspect.signature(prefect.flow_engine._send_heartbeats).parameters
    monkeypatch.setattr(prefect.flow_engine, "_send_heartbeats", prefect.flow_engine._send_heartbeats)
    warm_start.heartbeats_unjoined()
    engine = _Engine()
    heartbeats = prefect.flow_engine._send_heartbeats(engine)  # as FlowRunEngine.run_context opens it
    heartbeats.__enter__()
    deadline = time.monotonic() + 10
    while not engine.sent and time.monotonic() < deadline:  # the first heartbeat, sent at once
        time.sleep(0.01)
    assert len(engine.sent) == 1
    started = time.monotonic()
    heartbeats.__exit__(None, None, None)
    assert time.monotonic() - started < 0.5  # was the rest of the thread's 1 s sleep
    time.sleep(1.2)
    assert len(engine.sent) == 1, "the thread sends nothing once the run has ended"


def test_a_fork_server_started_afresh_forks_runs_with_the_engine_adjusted() -> None:
    """After an idle stop the next fork server is a new interpreter: its preload installs it too."""
    import subprocess
    import sys
    from pathlib import Path

    script = """
import multiprocessing
from deployments import warm_start
warm_start.use_forkserver([])
check = "import prefect.flow_engine as f, sys; sys.exit(0 if getattr(f._send_heartbeats, 'aftercare_unjoined', False) else 3)"
run = multiprocessing.get_context("forkserver").Process(target=exec, args=(check,))
run.start()
run.join(60)
print(run.exitcode)
"""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "0", done.stdout + done.stderr
