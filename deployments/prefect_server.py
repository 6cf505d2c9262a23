"""The Prefect server that `aftercare up` (and the tests and benchmarks) start: Prefect's own
`prefect server start`, with write transactions on SQLite begun IMMEDIATE.

Why: on SQLite, Prefect opens most write transactions DEFERRED. Such a transaction reads first and
takes the write lock only at its first write; if another connection commits in between, SQLite
refuses the upgrade at once with "database is locked" (the busy timeout does not apply: waiting
could not help a reader whose snapshot is stale). The server answers 503 and the client retries
after about two seconds. Resuming a suspended run (`POST /flow_runs/{id}/resume`: read the run,
read its input schema, then write the new state) loses that race against the runner's 0.5 s polls
and the event writers nearly every time — measured, every approval click waited ~2 s for the retry.
`BEGIN IMMEDIATE` takes the write lock up front, so a writer waits its turn under the busy timeout
instead of failing. Prefect itself does this where it knows the race (its `with_for_update`
transactions); this makes every write transaction of the server do it. PostgreSQL is untouched.

    python -m deployments.prefect_server start --host 127.0.0.1 --port 4200
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any


def immediate_sqlite_writes() -> None:
    """Make the SQLite configuration begin every write transaction IMMEDIATE."""
    from prefect.server.database import configurations

    sqlite = configurations.AioSqliteConfiguration
    if getattr(sqlite.begin_transaction, "aftercare_immediate", False):
        return
    deferred = sqlite.begin_transaction

    @asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncGenerator[Any, None]:
        async with deferred(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_transaction.aftercare_immediate = True  # type: ignore[attr-defined]
    begin_transaction.prefect_begin_transaction = deferred  # type: ignore[attr-defined]
    sqlite.begin_transaction = begin_transaction  # type: ignore[method-assign]


def command(host: str, port: int) -> list[str]:
    """The command line that starts this server (for `aftercare up`, the tests and the benchmarks)."""
    return [sys.executable, "-m", "deployments.prefect_server", "start", "--host", host, "--port", str(port)]


def main(argv: list[str] | None = None) -> None:
    """`prefect server <argv>` (default `start`) in this process, with the fix above (a Prefect
    whose internals moved starts unchanged, and says so, rather than not at all)."""
    try:
        immediate_sqlite_writes()
    except (ImportError, AttributeError) as exc:
        print(f"aftercare: SQLite writes of the Prefect server left DEFERRED ({exc})", file=sys.stderr)
    from prefect.cli import app

    sys.argv = ["prefect", "server", *(argv if argv is not None else sys.argv[1:] or ["start"])]
    app()


if __name__ == "__main__":
    main()
