"""Prefect's production architecture: deployments on a work pool (`aftercare deploy --pool`) and the
cluster of `aftercare cluster up` (deployments.cluster) — PostgreSQL, Redis, two API servers behind
HAProxy, Prefect's services, process workers, two approval webs, two keepers.

The fast tests check what a person types and the balancer's configuration. The real one starts a
small cluster and drives repairs through their links on both webs while one worker and one API
server are killed with SIGKILL (bench/cluster.py does the same at a chosen size).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deployments.cli import app
from deployments.cluster import Layout, haproxy_config
from deployments.pool import PoolError, check_pool_name


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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from bench.cluster import make_cluster
    from deployments.cluster import ClusterError, postgres_bin

    missing = [p for p in NEEDED if not shutil.which(p) and not Path(f"/usr/sbin/{p}").exists()]
    try:
        postgres_bin()
    except ClusterError:
        missing.append("postgresql")
    if missing:
        pytest.skip(f"needs Debian's {', '.join(missing)} (.ci/run installs them)")
    home = tmp_path_factory.mktemp("cluster") / "var"
    made = make_cluster(home, workers=2, api_servers=2, webs=2, keepers=2)
    try:
        made.start()
        yield made
    finally:
        made.stop()
        shutil.rmtree(made.layout.pg_data, ignore_errors=True)
        from models.settings import get_settings

        get_settings.cache_clear()


@pytest.mark.real
def test_workers_of_the_pool_run_repairs_to_completion_through_a_worker_and_an_api_server_killed(
    cluster: Any,
) -> None:
    """Two repairs started at once and answered through their links on both webs: the pool's workers
    run every cycle (each cycle recorded with its worker); worker-1 and api-2 are killed with SIGKILL
    mid-run (the cluster restarts them): both repairs complete, no step ran twice, no message was
    queued or sent twice, and one keeper held the lease at any time."""
    from bench.cluster import run_once

    result = run_once(cluster, 2, faults=True, timeout=900)
    assert result["faults"] == ["worker-1", "api-2"], result
    assert result["completed"] == 2, result
    assert result["http_errors"] == []
    assert set(result["answered_per_web"]) == {
        f"http://127.0.0.1:{cluster.layout.web_port(i)}" for i in (1, 2)
    }  # both webs took answers
    assert sum(result["cycles_by_worker"].values()) >= 2 * 7  # start + 6 wake-ups each, all by workers
    assert set(result["cycles_by_worker"]) <= {"worker-1", "worker-2"}
    assert result["repeated_steps"] == {}
    assert result["outbox"]["queued_twice"] == [] and result["outbox"]["sent_more_than_once"] == 0
    assert result["outbox"]["sent"] > 0
    assert result["keeper_runs_running_max"] == 1
