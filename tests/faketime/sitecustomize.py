"""Loaded by every Python process of a test run started with this directory on PYTHONPATH — the
"a year ahead" run of .ci/run (DESIGN.md §7 row 28):

    PYTHONPATH=tests/faketime FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f +365d uv run pytest ...

libfaketime (Debian's `faketime`, 0.9.10) moves the wall clock of every process, the Prefect
server's and the runner's included. Two of its limits meet Python 3.11:
- with the monotonic clock faked too, timed lock waits (`threading.Event.wait(t)`, which use
  `sem_clockwait(CLOCK_MONOTONIC)`, not intercepted) wait a year: hence FAKETIME_DONT_FAKE_MONOTONIC=1;
- with it real, `time.sleep` (`clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`) fails with EINVAL.
So `time.sleep` is replaced here by a `select()` wait, which takes a relative timeout and works.
Outside libfaketime this module does nothing.
"""

from __future__ import annotations

import os

if "faketime" in os.environ.get("LD_PRELOAD", "") and os.environ.get("FAKETIME"):
    import select
    import time

    def _sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            select.select([], [], [], left)  # an interrupted select returns early: wait the rest

    time.sleep = _sleep
