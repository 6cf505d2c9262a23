"""Start the clock keeper's flow run once its deployment is served (a step of `aftercare up`)."""

from __future__ import annotations

from flows.clock_keeper import ensure_keeper_running

if __name__ == "__main__":
    ensure_keeper_running()
