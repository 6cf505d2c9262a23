"""The Prefect settings every aftercare process runs with.

Durable waits rely on them (DESIGN.md §2): task results are persisted so that a resumed run
replays finished steps from their results instead of running them again, and runners poll often
so that an approval click continues the run within about a second.

The Prefect server `aftercare up` starts requires basic auth (Prefect's own
`PREFECT_SERVER_API_AUTH_STRING`; its clients send `PREFECT_API_AUTH_STRING`): without it anyone who
reaches the API could resume a waiting run with any decision. The credential `user:password` is
generated once into `AFTERCARE_HOME/prefect_auth` (0600, beside `secret_key`); the Prefect UI asks
for it at login.
"""

from __future__ import annotations

import os
import secrets

import httpx

from models.settings import Settings, _create_private

AUTH_USER = "aftercare"


def auth_file(settings: Settings) -> os.PathLike[str]:
    return settings.prefect_auth_file


def auth_string(settings: Settings) -> str | None:
    """The `user:password` of the Prefect API: `PREFECT_API_AUTH_STRING` when the operator set it;
    else, for the server `aftercare up` runs itself, the one generated into home; else (a Prefect
    server of the operator's, PREFECT_API_URL) none."""
    given = os.environ.get("PREFECT_API_AUTH_STRING", "").strip()
    if given:
        return given
    if settings.prefect_api_url:
        return None
    path = settings.prefect_auth_file
    if not path.exists():
        _create_private(path, f"{AUTH_USER}:{secrets.token_urlsafe(24)}")
    return path.read_text().strip()


def api_auth(settings: Settings) -> httpx.BasicAuth | None:
    """The same credential for a plain HTTP client (httpx) that talks to the Prefect API."""
    found = auth_string(settings)
    if not found:
        return None
    user, _, password = found.partition(":")
    return httpx.BasicAuth(user, password)


def prefect_env(settings: Settings, *, api_url: str | None = None) -> dict[str, str]:
    home = (settings.home / "prefect").resolve()
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url or settings.prefect_url,
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY", "1"),
        "PREFECT_RUNNER_PROCESS_LIMIT": os.environ.get("PREFECT_RUNNER_PROCESS_LIMIT", "20"),
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
        # every flow-run process says it is alive; the keeper reschedules runs that fall silent
        # (tasks.runs — a runner killed mid-run leaves its runs Running for ever otherwise)
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": os.environ.get(
            "PREFECT_SERVER_DATABASE_CONNECTION_URL",
            f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        ),
        "PREFECT_UI_URL": (api_url or settings.prefect_url).removesuffix("/api"),
        # aftercare's own settings travel to the runner and web processes unchanged
        "AFTERCARE_HOME": str(settings.home.resolve()),
        "AFTERCARE_DATABASE_URL": settings.db_url,
        "AFTERCARE_SECRET_KEY": settings.signing_key(),
        "AFTERCARE_PUBLIC_BASE_URL": settings.web_base_url,
        "AFTERCARE_WEB_HOST": settings.web_host,
        "AFTERCARE_WEB_PORT": str(settings.web_port),
        "AFTERCARE_STUCK_RUN_SECONDS": str(settings.stuck_run_seconds),
        "AFTERCARE_RUNNER_POLL_SECONDS": str(settings.runner_poll_seconds),
        "AFTERCARE_BUSY_RETRY_SECONDS": str(settings.busy_retry_seconds),
        "AFTERCARE_BUSY_RETRY_STEP_SECONDS": str(settings.busy_retry_step_seconds),
        "AFTERCARE_COLD_START": "true" if settings.cold_start else "false",
        "AFTERCARE_WARM_IDLE_SECONDS": str(settings.warm_idle_seconds),
        "AFTERCARE_INTAKE_MAX_AGE_DAYS": str(settings.intake_max_age_days),
    }
    credential = auth_string(settings)
    if credential:
        env["PREFECT_API_AUTH_STRING"] = credential  # every client: runner, flow runs, web, CLI
        if not settings.prefect_api_url:
            # the server aftercare starts (deployments.prefect_server) requires it
            env["PREFECT_SERVER_API_AUTH_STRING"] = credential
    return env
