"""`aftercare cluster up`: Prefect's production architecture on one machine (README "production").

Prefect's guide "How to scale self-hosted Prefect": PostgreSQL for Prefect (and here for aftercare
too), Redis as Prefect's messaging broker, cache, causal ordering, lease storage and Docket
(`prefect-redis`), several API servers started `--no-services` behind a load balancer, one process
for Prefect's background services, and flow runs executed by the workers of a process work pool
(`aftercare deploy --pool`, deployments.pool) instead of `serve()`. This module starts, on one
machine, each of those pieces as a process of its own, supervised like `aftercare up`'s children
(deployments.supervisor: own process group, restarted with back-off when it dies):

    postgres     Debian's PostgreSQL (initdb once under AFTERCARE_HOME/cluster/pg), or an existing
                 server (`--postgres-url`): databases `prefect` and `aftercare`
    redis        Debian's redis-server (no persistence needed: Prefect's messages), or `--redis-url`
    api-1..N     `prefect server start --no-services` on ports base+1 … (Prefect's own server)
    balancer     HAProxy (Debian) on the base port: round robin over the API servers, health checks on
                 /api/health, a connection that fails is tried on the other server; every client
                 (workers, flow runs, webs, keepers, the CLI) uses this one URL
    services     `prefect server services start`: scheduler, late runs, event processing …
    worker-1..N  a process worker of the pool (deployments.worker: Prefect's, with warm starts)
    web-1..N     the approval web (uvicorn web.app:app) on ports base+51 …
    keeper-1..N  the clock keeper host loop (flows.clock_keeper.host): whoever holds the lease keeps
                 the clocks, the others wait for it to be free — exactly one keeps them; they leave
                 the outbox to the notifiers (AFTERCARE_KEEPER_SENDS=false)
    notifier-1..N  `aftercare notifier` (deployments.notifier), one per node: each claims its own
                 rows of the outbox, so all of them send and none sends a row twice

Why HAProxy: a maintained balancer from Debian that re-sends a refused connection to another server
and takes a dead one out within a second or two; without it a worker tied to one API server stops
when that server does. Why not a process manager's own file: the pieces depend on each other (the
databases before the servers, the servers before the deployments, the deployments before the
workers) and the supervisor `aftercare up` uses already restarts, logs and stops them as groups.

`Cluster` is used by the command, the tests (tests/fixtures/cluster.py) and bench/cluster.py.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployments import prefect_server
from deployments.supervisor import Child, Supervisor, signal_group

ROOT = Path(__file__).resolve().parents[1]
REDIS_SETTINGS = {
    # Prefect's guide, "Redis setup" (prefect-redis provides each of these modules)
    "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
    "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
}


class ClusterError(RuntimeError):
    """The cluster cannot start; the message says why and what to do."""


@dataclass
class Layout:
    """What runs where (on one machine: which port)."""

    home: Path
    base_port: int = 4300  # the balancer; API servers base+1 …, webs base+51 …
    api_servers: int = 2
    workers: int = 2
    webs: int = 2
    keepers: int = 2
    notifiers: int = 2  # one per node; 0: the keeper holding the lease sends, as under `aftercare up`
    pool: str = "aftercare"
    pg_port: int = 55500
    redis_port: int = 6390
    postgres_url: str = ""  # an existing server: postgresql://user:password@host:port (no database)
    redis_url: str = ""  # an existing server: redis://host:port
    host: str = "127.0.0.1"
    worker_poll_seconds: float = 1.0
    extra_env: dict[str, str] = field(default_factory=dict)
    pg_dir: Path | None = None  # default: under home, or Debian's postgres home when run as root

    @property
    def pg_data(self) -> Path:
        if self.pg_dir is not None:
            return self.pg_dir
        if os.geteuid() == 0:  # PostgreSQL runs as `postgres`, which cannot enter a home that is root's only
            return Path("/var/lib/postgresql") / f"aftercare-{self.pg_port}"
        return self.cluster_dir / "pg"

    @property
    def balancer_url(self) -> str:
        return f"http://{self.host}:{self.base_port}/api"

    def api_port(self, i: int) -> int:
        return self.base_port + i

    def web_port(self, i: int) -> int:
        return self.base_port + 50 + i

    @property
    def cluster_dir(self) -> Path:
        return self.home / "cluster"

    @property
    def pg_base(self) -> str:
        return self.postgres_url.rstrip("/") or f"postgresql://postgres@{self.host}:{self.pg_port}"

    def pg_url(self, database: str, driver: str) -> str:
        scheme, rest = self.pg_base.split("://", 1)
        return f"postgresql+{driver}://{rest}/{database}"

    @property
    def redis(self) -> tuple[str, int]:
        if self.redis_url:
            hostport = self.redis_url.split("://", 1)[-1].split("/", 1)[0]
            host, _, port = hostport.rpartition(":")
            return host or self.host, int(port or 6379)
        return self.host, self.redis_port


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    if not found:
        raise ClusterError(
            "未安装 PostgreSQL / PostgreSQL is not installed: apt-get install postgresql (or --postgres-url)"
        )
    return found[-1].parent


def need(program: str, package: str) -> str:
    path = shutil.which(program) or (
        f"/usr/sbin/{program}" if Path(f"/usr/sbin/{program}").exists() else None
    )
    if not path:
        raise ClusterError(f"未安装 {program} / {program} is not installed: apt-get install {package}")
    return path


def as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the `postgres` user then (Debian's package makes it)."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def haproxy_config(layout: Layout) -> str:
    servers = "\n".join(
        f"    server api-{i} {layout.host}:{layout.api_port(i)} check inter 1s fall 2 rise 1"
        for i in range(1, layout.api_servers + 1)
    )
    return f"""# written by aftercare cluster up (deployments.cluster); HAProxy in front of Prefect's API servers
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout tunnel 1h
    retries 3
    option redispatch
    retry-on conn-failure empty-response response-timeout

frontend prefect
    bind {layout.host}:{layout.base_port}
    default_backend prefect_api

backend prefect_api
    balance roundrobin
    option httpchk GET /api/health
{servers}
"""


@dataclass
class Piece:
    name: str
    where: str  # an address, or what it is


@dataclass
class Cluster:
    layout: Layout
    settings: Any  # models.settings.Settings of the cluster (database, home, ports)
    echo: Callable[[str], None] = print
    sup: Supervisor = field(init=False)
    pieces: list[Piece] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sup = Supervisor(self.echo, self.layout.home / "logs")

    # --- environment ----------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        from deployments.prefect_env import prefect_env

        layout = self.layout
        env = {**os.environ, **prefect_env(self.settings, api_url=layout.balancer_url)}
        host, port = layout.redis
        env.update(
            {
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": layout.pg_url("prefect", "asyncpg"),
                "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
                "PREFECT_REDIS_MESSAGING_HOST": host,
                "PREFECT_REDIS_MESSAGING_PORT": str(port),
                "PREFECT_REDIS_MESSAGING_DB": "0",
                "PREFECT_SERVER_DOCKET_URL": f"redis://{host}:{port}/1",
                "PREFECT_WORKER_QUERY_SECONDS": str(layout.worker_poll_seconds),
                "PREFECT_API_SERVICES_SCHEDULER_ENABLED": "true",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
                **REDIS_SETTINGS,
                **layout.extra_env,
            }
        )
        # the server side requires the credential (prefect_env adds it for a server it starts)
        if env.get("PREFECT_API_AUTH_STRING"):
            env["PREFECT_SERVER_API_AUTH_STRING"] = env["PREFECT_API_AUTH_STRING"]
        env.pop("PREFECT_PROFILES_PATH", None)
        return env

    # --- start ------------------------------------------------------------------------------------

    def start(self, *, seed: bool = True) -> None:
        """Start every piece in order, each once the pieces it needs answer."""
        layout = self.layout
        layout.cluster_dir.mkdir(parents=True, exist_ok=True)
        (layout.home / "logs").mkdir(parents=True, exist_ok=True)
        self.env = env = self.base_env()
        Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
        if not layout.postgres_url:
            self._start_postgres()
        self._create_databases()
        if not layout.redis_url:
            self._start_redis()
        self._wait(lambda: self._redis_ping(), "Redis", 30)
        self._run_once(
            "prefect-migrate", [*prefect_server.command(layout.host, 0)[:3], "database", "upgrade", "-y"], env
        )
        self._prepare_aftercare(seed=seed)
        for i in range(1, layout.api_servers + 1):
            argv = [*prefect_server.command(layout.host, layout.api_port(i)), "--no-services"]
            self.sup.add(f"api-{i}", argv, env)
            self.pieces.append(Piece(f"api-{i}", f"http://{layout.host}:{layout.api_port(i)}/api"))
            if i == 1:  # the first registers Prefect's block types; two at once collide on their unique keys
                first = f"http://{layout.host}:{layout.api_port(1)}/api"
                self._wait(functools.partial(self._healthy, first), "api-1", 180)
        self._start_balancer()
        self._wait(lambda: self._healthy(layout.balancer_url), "Prefect API", 180)
        self.sup.add("services", [*prefect_server.command(layout.host, 0)[:3], "services", "start"], env)
        self.pieces.append(Piece("services", "prefect server services start"))
        self._run_once(
            "deploy",
            [sys.executable, "-m", "deployments.cli", "deploy", "--pool", layout.pool],
            env,
            timeout=300,
        )
        for i in range(1, layout.workers + 1):
            # Prefect's process worker with warm starts (deployments.worker): `prefect worker start`
            # would start two interpreters for every cycle of every procedure
            argv = [
                sys.executable,
                "-m",
                "deployments.worker",
                "--pool",
                layout.pool,
                "--name",
                f"worker-{i}",
            ]
            # flow runs finish on their own when their worker dies (as a runner's do)
            self.sup.add(
                f"worker-{i}", argv, {**env, "AFTERCARE_NODE": f"worker-{i}"}, kill_group_on_exit=False
            )
            self.pieces.append(Piece(f"worker-{i}", f"pool {layout.pool}"))
        for i in range(1, layout.webs + 1):
            port = layout.web_port(i)
            argv = [
                sys.executable,
                "-m",
                "uvicorn",
                "web.app:app",
                "--host",
                layout.host,
                "--port",
                str(port),
            ]
            self.sup.add(f"web-{i}", [*argv, "--no-access-log"], {**env, "AFTERCARE_WEB_PORT": str(port)})
            self.pieces.append(Piece(f"web-{i}", f"http://{layout.host}:{port}"))
        sends = {"AFTERCARE_KEEPER_SENDS": "false"} if layout.notifiers else {}
        for i in range(1, layout.keepers + 1):
            argv = [sys.executable, "-m", "deployments.cluster", "keeper"]
            self.sup.add(f"keeper-{i}", argv, {**env, "AFTERCARE_NODE": f"keeper-{i}", **sends})
            self.pieces.append(Piece(f"keeper-{i}", "lease clock-keeper"))
        for i in range(1, layout.notifiers + 1):
            argv = [sys.executable, "-m", "deployments.cli", "notifier"]
            self.sup.add(f"notifier-{i}", argv, {**env, "AFTERCARE_NODE": f"notifier-{i}"})
            self.pieces.append(Piece(f"notifier-{i}", f"outbox as notifier@notifier-{i}"))
        for url in [f"http://{layout.host}:{layout.web_port(i)}/health" for i in range(1, layout.webs + 1)]:
            self._wait(functools.partial(self._ok, url), url, 120)
        self._wait(self._workers_online, "workers", 120)
        self.write_pieces()

    def write_pieces(self) -> None:
        """Where each piece is, for `aftercare check` (deployments.checks.cluster_checks)."""
        import json

        from deployments.checks import pieces_file

        path = pieces_file(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([{"name": p.name, "where": p.where} for p in self.pieces], indent=1))

    def _start_postgres(self) -> None:
        layout = self.layout
        data = layout.pg_data
        binaries = postgres_bin()
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True, mode=0o700)
            if os.geteuid() == 0:
                shutil.chown(data, "postgres", "postgres")
            self._run_once(
                "initdb",
                as_postgres(
                    [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
                    + ["--locale=C.UTF-8"]
                ),
                self.env,
            )
        argv = [
            str(binaries / "postgres"),
            "-D",
            str(data),
            "-p",
            str(layout.pg_port),
            "-k",
            str(data),
            "-c",
            f"listen_addresses={layout.host}",
            "-c",
            "max_connections=300",
        ]
        self.sup.add("postgres", as_postgres(argv), self.env)
        self.pieces.append(Piece("postgres", layout.pg_base))
        self._wait(lambda: self._pg_ready(), "PostgreSQL", 60)

    def _pg_ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.layout.pg_base + "/postgres", connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def _create_databases(self) -> None:
        import psycopg

        self._wait(self._pg_ready, "PostgreSQL", 60)
        with psycopg.connect(self.layout.pg_base + "/postgres", autocommit=True) as conn:
            have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in ("prefect", "aftercare"):
                if name not in have:
                    conn.execute(f'CREATE DATABASE "{name}"')

    def _start_redis(self) -> None:
        layout = self.layout
        data = layout.cluster_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        argv = [need("redis-server", "redis-server"), "--port", str(layout.redis_port), "--bind", layout.host]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(data)]
        self.sup.add("redis", argv, self.env)
        self.pieces.append(Piece("redis", f"redis://{layout.host}:{layout.redis_port}"))

    def _redis_ping(self) -> bool:
        import redis

        host, port = self.layout.redis
        try:
            return bool(redis.Redis(host=host, port=port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def _start_balancer(self) -> None:
        layout = self.layout
        config = layout.cluster_dir / "haproxy.cfg"
        config.write_text(haproxy_config(layout))
        self.sup.add("balancer", [need("haproxy", "haproxy"), "-db", "-f", str(config)], self.env)
        self.pieces.insert(0, Piece("balancer", layout.balancer_url))

    def _prepare_aftercare(self, *, seed: bool) -> None:
        from deployments.seed import is_empty, seed_demo
        from models.db import get_engine, migrate, session_scope
        from models.wallclock import now

        url = self.settings.db_url
        migrate(url)
        if seed:
            with session_scope(url) as session:
                if is_empty(session):
                    moment = now()
                    seed_demo(session, today=moment.date(), now=moment)
        get_engine(url).dispose()

    # --- waiting ------------------------------------------------------------------------------

    def _run_once(self, name: str, argv: list[str], env: dict[str, str], timeout: float = 180) -> None:
        log = self.layout.home / "logs" / f"{name}.log"
        with log.open("ab") as handle:
            done = subprocess.run(
                argv, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT
            )
        if done.returncode != 0:
            raise ClusterError(f"{name} 失败 / {name} failed ({done.returncode}):\n{_tail(log)}")

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for child in self.sup.poll():
                if child.failures >= 3:
                    raise ClusterError(f"{child.name} 未能启动 / did not start:\n{_tail(child.log)}")
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {c.name} ---\n{_tail(c.log, 8)}" for c in self.sup.children.values())
                raise ClusterError(f"{what} 未就绪 / not ready in {timeout:.0f} s\n{logs}")
            time.sleep(0.3)

    def _ok(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except (OSError, ValueError):
            return False

    def _healthy(self, api_url: str) -> bool:
        return self._ok(api_url + "/health")

    def api(self) -> Any:
        from deployments.supervise import PrefectAPI

        return PrefectAPI(self.layout.balancer_url, self.env.get("PREFECT_API_AUTH_STRING"))

    def _workers_online(self) -> bool:
        try:
            workers = self.api().call("POST", f"/work_pools/{self.layout.pool}/workers/filter", {"limit": 50})
        except (OSError, ValueError):
            return False
        online = {w["name"] for w in workers if w.get("status") == "ONLINE"}
        return all(f"worker-{i}" in online for i in range(1, self.layout.workers + 1))

    # --- running ------------------------------------------------------------------------------

    def where(self) -> list[str]:
        lines = [f"  {p.name:<10} {p.where}" for p in self.pieces]
        lines.append(f"  日志 / logs  {(self.layout.home / 'logs').resolve()}")
        return lines

    def child(self, name: str) -> Child:
        return self.sup.children[name]

    def kill(self, name: str, *, group: bool = False) -> int:
        """SIGKILL a piece's process (or its whole process group); the supervisor restarts it."""
        child = self.child(name)
        pid = child.pid
        assert pid is not None
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        from deployments.checks import pieces_file

        pieces_file(self.settings).unlink(missing_ok=True)  # `aftercare check` then checks no cluster
        self.sup.stop_all(grace=3.0)
        for child in self.sup.children.values():  # a flow run left by a killed worker
            for pgid in child.groups:
                signal_group(pgid, signal.SIGKILL)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def keeper() -> None:
    """A keeper node: the clock keeper's host loop in the main thread until SIGTERM."""
    from flows.clock_keeper import host

    host()


if __name__ == "__main__" and sys.argv[1:] == ["keeper"]:
    keeper()
