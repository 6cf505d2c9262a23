"""The two Prefect REST calls that wake a waiting run — read its state, resume it — over plain
httpx, without importing Prefect.

Why not Prefect's client: the approval web resumes a run on every decision, and importing Prefect's
client costs that process ~64 MB PSS (issue 26, bench/waiting.py's import floors) for two requests.
The calls are the client's own (`SyncPrefectClient.read_flow_run`, `.resume_flow_run`: GET
`/flow_runs/{id}`, POST `/flow_runs/{id}/resume` with `{"run_input": …}`), with the same
credentials: `PREFECT_API_AUTH_STRING` (basic auth, the one `aftercare up` gives every process) or
`PREFECT_API_KEY` (a bearer token). The client's own retries are not repeated here: a wake-up that
fails is tried again by the keeper (`tasks.approvals.reconcile`, `fire_due_timers`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from models.settings import get_settings

TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class RunNotFound(LookupError):
    """The API knows no flow run of that id (deleted, or another server's)."""


@dataclass(frozen=True)
class RunState:
    """What a wake-up needs of a flow run's state."""

    type: str | None  # Prefect's StateType value: "SCHEDULED", "PENDING", "RUNNING", "PAUSED", "COMPLETED" …
    pause_key: str | None

    @property
    def waiting(self) -> bool:
        """Not started yet or replaying: a run to leave alone (`None`: it has no state yet)."""
        return self.type in (None, "SCHEDULED", "PENDING", "RUNNING")

    @property
    def paused(self) -> bool:
        return self.type == "PAUSED"


def session() -> httpx.Client:
    """A client of the Prefect API with the credentials every aftercare process is given (use it
    as a context manager)."""
    headers: dict[str, str] = {}
    auth: httpx.BasicAuth | None = None
    credential = os.environ.get("PREFECT_API_AUTH_STRING", "").strip()
    if credential:
        user, _, password = credential.partition(":")
        auth = httpx.BasicAuth(user, password)
    elif key := os.environ.get("PREFECT_API_KEY", "").strip():
        headers["Authorization"] = f"Bearer {key}"
    base = os.environ.get("PREFECT_API_URL", "").strip() or get_settings().prefect_url
    return httpx.Client(base_url=base.rstrip("/") + "/", auth=auth, headers=headers, timeout=TIMEOUT)


def run_state(client: httpx.Client, flow_run_id: str) -> RunState:
    response = client.get(f"flow_runs/{flow_run_id}")
    if response.status_code == 404:
        raise RunNotFound(flow_run_id)
    response.raise_for_status()
    state: dict[str, Any] = response.json().get("state") or {}
    return RunState(
        type=state.get("type"),
        pause_key=(state.get("state_details") or {}).get("pause_key"),
    )


def resume(client: httpx.Client, flow_run_id: str, run_input: dict[str, Any] | None) -> tuple[str, str]:
    """Resume a paused run; (status, reason): status "ACCEPT" when the server took it."""
    response = client.post(f"flow_runs/{flow_run_id}/resume", json={"run_input": run_input})
    if response.status_code == 404:
        raise RunNotFound(flow_run_id)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return str(body.get("status")), str((body.get("details") or {}).get("reason") or "")
