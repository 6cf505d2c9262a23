"""All of aftercare's settings, in one object (environment variables `AFTERCARE_*`)."""

from __future__ import annotations

import contextlib
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AFTERCARE_", env_file=".env", extra="ignore")

    home: Path = Field(
        default=Path("var"), description="where the SQLite file, secret key and Prefect home live"
    )
    database_url: str = Field(default="", description="SQLAlchemy URL; default: SQLite file under home")
    prefect_api_url: str = Field(
        default="",
        validation_alias=AliasChoices("PREFECT_API_URL", "AFTERCARE_PREFECT_API_URL"),
        description="an existing Prefect server; empty: `aftercare up` starts one",
    )
    prefect_host: str = "127.0.0.1"
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8300, ge=1, le=65535)
    public_base_url: str = Field(default="", description="base of the links sent in notifications")
    secret_key: str = Field(default="", description="signs approval links; generated into home if unset")
    language: Literal["zh", "en"] = "zh"
    # the business time zone: the one place it is written (a contract's own zone is data on the contract)
    timezone: str = "Asia/Shanghai"
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)
    stuck_run_seconds: float = Field(
        default=300,
        gt=0,
        description="a Running flow run silent this long is scheduled again (tasks.runs; at least two heartbeats)",
    )
    runner_poll_seconds: float = Field(
        # 0.25 s: with 10,000 runs waiting, click → running p95 1.46 s (1.99 s at 0.5 s), for 2 %
        # more of one core at idle (bench/waiting.py, README "Benchmarks")
        default=0.25,
        gt=0,
        description="how often the runner asks for runs to start (deployments.serve; at least 0.1)",
    )
    busy_retry_seconds: float = Field(
        # ≥ 60 s by the fault matrix (DESIGN.md §7 row 10): a click during a long write by another
        # process waits and is recorded; only a lock held longer answers "系统繁忙" (HTTP 503)
        default=90,
        gt=0,
        description="how long a web request (or a command) re-runs its work while the database is busy",
    )
    busy_retry_step_seconds: float = Field(
        default=900,
        gt=0,
        description="how long a flow step re-runs its work while the database is busy (the run waits)",
    )
    intake_max_age_days: int = Field(
        default=30,
        ge=1,
        description="how far back a report time may lie when a request is taken (older: a typing error, refused)",
    )
    cold_start: bool = Field(
        default=False,
        description="start every flow run in a new interpreter, not a warm fork (deployments.warm_start)",
    )
    warm_idle_seconds: float = Field(
        # issue 26: the warm-start fork server holds ~80-115 MB PSS; with nothing to run for this long
        # it is stopped, and the next run after such a quiet spell starts it again (a few seconds
        # more). The crash that kept it off (a run handed to a restarted server the stop then killed)
        # is fixed: deployments.warm_start.stop_if_idle counts from the last start, under its lock
        default=300,
        ge=0,
        description="stop the warm-start fork server after this many seconds without a flow run (0: never)",
    )

    keeper_sends: bool = Field(
        default=True,
        description="the clock keeper sends the outbox; false where `aftercare notifier` processes send it (the cluster)",
    )

    @field_validator(
        "stuck_run_seconds",
        "runner_poll_seconds",
        "busy_retry_seconds",
        "busy_retry_step_seconds",
        "cold_start",
        "warm_idle_seconds",
        "keeper_sends",
        mode="before",
    )
    @classmethod
    def _empty_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        # `AFTERCARE_COLD_START=` (set, but empty) has always meant "off", and likewise the default
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[info.field_name or ""].default
        return value

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                f"unsupported database URL {value!r}: use sqlite:///path.db or postgresql+psycopg://user@host/db"
            )
        return value

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'aftercare.db').resolve()}"

    @property
    def web_base_url(self) -> str:
        return (self.public_base_url or f"http://{self.web_host}:{self.web_port}").rstrip("/")

    @property
    def prefect_auth_file(self) -> Path:
        """Where `aftercare up` generates the Prefect API's `user:password` (read by the board too)."""
        return self.home / "prefect_auth"

    @property
    def prefect_url(self) -> str:
        return self.prefect_api_url or f"http://{self.prefect_host}:{self.prefect_port}/api"

    def signing_key(self) -> str:
        """The secret that signs links: the setting, else a key generated once into home."""
        if self.secret_key:
            return self.secret_key
        path = private_dir(self.home) / "secret_key"
        if not path.exists():
            _create_private(path, secrets.token_urlsafe(48))
        return path.read_text().strip()


# AFTERCARE_HOME holds the database, the secret key, the logs and notifications.log — and those hold
# customers' names, signatures and live signed links: the directory is its owner's only (0700), and
# each of those files is 0600 from the moment it is created (never created wider, then narrowed).
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner may enter (0700): created so, or narrowed if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR:
        with contextlib.suppress(PermissionError):  # not ours (a shared directory named on purpose)
            path.chmod(PRIVATE_DIR)
    return path


def open_private(path: Path, mode: str = "a", encoding: str | None = "utf-8") -> Any:
    """Open `path` for appending (created 0600 if new; an existing file is narrowed to 0600)."""
    binary = "b" in mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    with contextlib.suppress(
        PermissionError
    ):  # whatever the umask; narrows a file an older version made 0644
        os.fchmod(fd, PRIVATE_FILE)
    return os.fdopen(fd, "ab" if binary else "a", encoding=None if binary else encoding)


def private_file(path: Path) -> Path:
    """Make sure `path` exists and is readable by its owner only (an empty file if new)."""
    open_private(path, "ab").close()
    return path


def _create_private(path: Path, text: str) -> None:
    """Write `text` to a new file readable by its owner only (0600 from the first byte). The file
    appears whole or not at all; when another process created it first, its content stays."""
    private_dir(path.parent)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    try:
        os.link(draft, path)  # fails if the file exists: the first key written is the key
    except FileExistsError:
        pass
    finally:
        draft.unlink()


def business_timezone() -> str:
    """The time zone aftercare shows and counts business time in when no contract says otherwise."""
    return get_settings().timezone


@lru_cache
def get_settings() -> Settings:
    return Settings()
