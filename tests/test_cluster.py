"""Prefect's production architecture: deployments on a work pool (`aftercare deploy --pool`) and the
cluster of `aftercare cluster up` (deployments.cluster) — PostgreSQL, Redis, two API servers behind
HAProxy, Prefect's services, process workers, two approval webs, two keepers.

The fast tests check what a person types and the balancer's configuration. The real one starts a
small cluster and drives repairs through their links on both webs while one worker and one API
server are killed with SIGKILL (bench/cluster.py does the same at a chosen size).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deployments.cli import app
from deployments.cluster import Layout, haproxy_config
from deployments.pool import PoolError, check_pool_name

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("bad", ["", "Aftercare", "pool name", "池", "-x", "a" * 64])
def test_a_pool_name_is_checked_before_anything_is_registered(bad: str) -> None:
    with pytest.raises(PoolError, match="工作池名称"):
        check_pool_name(bad)
    assert check_pool_name(" aftercare-1 ") == "aftercare-1"


def test_deploy_refuses_a_bad_pool_name_in_one_line(aftercare_home: Path) -> None:
    answer = CliRunner().invoke(app, ["deploy", "--pool", "Bad Pool"])
    assert answer.exit_code == 2
    assert "工作池名称" in answer.output and "Traceback" not in answer.output


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [("--postgres-url", "mysql://db", "postgresql://"), ("--redis-url", "http://r", "redis://")],
)
def test_cluster_up_refuses_a_bad_url_in_one_line(
    aftercare_home: Path, option: str, value: str, said: str
) -> None:
    answer = CliRunner().invoke(app, ["cluster", "up", option, value])
    assert answer.exit_code == 2
    assert said in answer.output and "Traceback" not in answer.output


def test_the_balancer_spreads_over_every_api_server_and_retries_a_refused_connection(tmp_path: Path) -> None:
    layout = Layout(home=tmp_path, base_port=4320, api_servers=3)
    config = haproxy_config(layout)
    assert "bind 127.0.0.1:4320" in config
    for port in (4321, 4322, 4323):
        assert f"127.0.0.1:{port} check" in config
    assert "option httpchk GET /api/health" in config
    assert "option redispatch" in config and "retry-on conn-failure" in config
    assert layout.balancer_url == "http://127.0.0.1:4320/api"
    assert layout.web_port(2) == 4372
    assert layout.pg_url("prefect", "asyncpg").startswith("postgresql+asyncpg://postgres@127.0.0.1:")


# --- the real cluster ----------------------------------------------------------------------------

NEEDED = ("redis-server", "haproxy")
REPAIRS = 50  # the size: driven at once through their links


@pytest.mark.real
@pytest.mark.timeout(1800)  # 50 repairs: ~5 min on a quiet machine, three times that on a busy one
def test_workers_of_the_pool_run_repairs_to_completion_through_a_worker_and_an_api_server_killed(
    tmp_path: Path,
) -> None:
    """bench/cluster.py in a process of its own (its Prefect settings are the cluster's): 50 repairs
    started at once and answered through their links on both webs; the pool's workers run every
    cycle (each recorded with its worker); worker-1 is killed with SIGKILL while it runs a flow, then
    api-2 (the cluster restarts both): every repair completes, no step ran twice, no message was
    queued or sent twice, and one keeper run was Running at any time."""
    from deployments.cluster import ClusterError, postgres_bin

    missing = [p for p in NEEDED if not shutil.which(p) and not Path(f"/usr/sbin/{p}").exists()]
    try:
        postgres_bin()
    except ClusterError:
        missing.append("postgresql")
    if missing:
        pytest.skip(f"needs Debian's {', '.join(missing)} (.ci/run installs them)")
    out = tmp_path / "cluster.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AFTERCARE_"))}
    bench = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "cluster.py"),
            "--repairs",
            str(REPAIRS),
            "--workers",
            "2",
            "--faults",
        ]
        + ["--timeout", "1500", "--out", str(out)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = bench.communicate(timeout=1700)
    finally:
        if bench.poll() is None:  # timed out or interrupted: SIGTERM lets the bench stop its cluster
            bench.terminate()
            try:
                bench.wait(90)
            except subprocess.TimeoutExpired:
                bench.kill()
    assert bench.returncode == 0, output[-6000:]
    (result,) = json.loads(out.read_text())["runs"]
    assert result["faults"] == ["worker-1", "api-2"], result
    assert result["completed"] == REPAIRS, result
    assert result["cold_flow_starts_seen"] == 0, result  # every cycle forked warm (deployments.worker)
    assert result["http_errors"] == []
    assert len(result["answered_per_web"]) == 2, result  # both webs took answers
    # every cycle (the start and each wake-up: 6–7 a repair on this path — two answers given while the
    # run is still running are read by one wake-up) was run by a worker
    assert sum(result["cycles_by_worker"].values()) >= REPAIRS * 6, result
    assert set(result["cycles_by_worker"]) == {"worker-1", "worker-2"}, result  # spread over both
    assert result["repeated_steps"] == {}
    assert result["outbox"]["queued_twice"] == [] and result["outbox"]["sent_more_than_once"] == 0
    assert result["outbox"]["sent"] > 0
    # the keepers leave the outbox to the notifiers: every row was sent by one of them, none twice
    sent_by = result["outbox"]["sent_by"]
    assert sent_by and all(re.fullmatch(r"notifier@notifier-\d+", who) for who in sent_by), sent_by
    assert result["keeper_runs_running_max"] == 1
    # `aftercare check` pointed at the cluster checks its pieces too
    check = "\n".join(result["check"])
    assert "✔ Prefect:" in check and "✔ Redis:" in check, check
    assert "✔ 工作池 / work pool aftercare:" in check and "2 workers online" in check, check
    assert "✔ 发件箱 / outbox: nothing overdue; sent in the last hour by: notifier@notifier-" in check, check
    for piece in ("api-1", "api-2", "web-1", "web-2"):
        assert f"✔ 集群 / cluster {piece}:" in check, check
    assert "✔ 时钟守护 / clock keeper: lease held by" in check, check


def test_a_run_left_pending_by_a_worker_that_died_counts_as_stuck() -> None:
    """A worker killed between taking a run (Pending, "Submitting") and its flow process starting
    leaves the run Pending for ever: the keeper's sweep (tasks.runs) schedules it again like a silent
    Running one. Prefect's API is the edge here: a stand-in answers the two reads the sweep makes."""
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace
    from uuid import uuid4

    from prefect.client.schemas.objects import StateType

    from tasks.runs import stuck_runs

    now = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)

    def run(kind: StateType, age: timedelta) -> SimpleNamespace:
        return SimpleNamespace(id=uuid4(), state=SimpleNamespace(type=kind, timestamp=now - age))

    left = run(StateType.PENDING, timedelta(minutes=10))
    starting = run(StateType.PENDING, timedelta(seconds=5))
    silent = run(StateType.RUNNING, timedelta(minutes=10))

    class Prefect:
        def read_flow_runs(self, *, flow_run_filter: Any, sort: Any, limit: int) -> list[Any]:
            kinds = set(flow_run_filter.state.type.any_)
            return [r for r in (left, starting, silent) if r.state.type in kinds]

        def read_events(self, *_args: Any, **_kwargs: Any) -> Any:
            return SimpleNamespace(events=[], next_page=None)  # no heartbeat from any of them

    found = [r.id for r, _last in stuck_runs(Prefect(), now, timedelta(minutes=5))]
    assert sorted(map(str, found)) == sorted([str(left.id), str(silent.id)])


def test_check_pointed_at_a_cluster_checks_each_api_server_web_and_the_keeper(db_url: str) -> None:
    """`aftercare check` reads the pieces file `cluster up` writes: each API server and web is asked
    for its health (one answering, one whose port is closed), and the keeper lease is looked at
    before and after a keeper takes it."""
    import http.server
    import socket
    import threading
    from datetime import UTC, datetime, timedelta

    from deployments.checks import cluster_checks, pieces_file
    from flows.clock_keeper import KEEPER_LEASE
    from models.db import session_scope
    from models.leases import take
    from models.settings import get_settings

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200 if self.path.endswith("/health") else 404)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    live = f"http://127.0.0.1:{server.server_address[1]}"
    settings = get_settings()
    now = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    try:
        assert cluster_checks(settings, now) == []  # no cluster: nothing to say
        path = pieces_file(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                [
                    {"name": "api-1", "where": f"{live}/api"},
                    {"name": "api-2", "where": f"http://127.0.0.1:{closed}/api"},
                    {"name": "web-1", "where": live},
                    {"name": "keeper-1", "where": "lease clock-keeper"},
                ]
            )
        )
        checks = {label: (good, detail) for good, label, detail in cluster_checks(settings, now)}
        assert checks["集群 / cluster api-1"][0] and checks["集群 / cluster web-1"][0], checks
        good, detail = checks["集群 / cluster api-2"]
        assert not good and "not reachable" in detail
        assert checks["时钟守护 / clock keeper"] == (False, "no keeper holds the lease: no clock is kept")
        with session_scope(db_url) as session:
            take(session, KEEPER_LEASE, "keeper-run-1", now, timedelta(seconds=60))
        checks = {label: (good, detail) for good, label, detail in cluster_checks(settings, now)}
        assert checks["时钟守护 / clock keeper"] == (True, "lease held by keeper-run-1, 60 s left")
        path.write_text("not json")
        ((good, label, detail),) = cluster_checks(settings, now)
        assert not good and "cannot be read" in detail
    finally:
        server.shutdown()
