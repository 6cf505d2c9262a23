"""The notification outbox (通知发件箱) and the settings of the notifier and its channels.

A `Notification` row is written in the same transaction as the event that causes it (DESIGN.md §4);
the notifier (`tasks.notify.send_due`) sends due rows through Apprise, retries with back-off and,
after the last try, opens an `Incident` on the case. Rows are never deleted: the outbox is also the
record of every notification sent.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

import sqlalchemy as sa
from pydantic import Field as PField
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlmodel import Field, SQLModel

from models.base import utc_field


class NotificationStatus(StrEnum):
    PENDING = "pending"  # waiting for its next try (or held by quiet hours)
    SENT = "sent"
    FAILED = "failed"  # every try failed: an incident is open on the case


STATUS_ZH = {
    NotificationStatus.PENDING: "待发送",
    NotificationStatus.SENT: "已发送",
    NotificationStatus.FAILED: "发送失败",
}


class Notification(SQLModel, table=True):
    """One message to one address of one person."""

    __table_args__ = (
        # The notifier's query: due rows first. Claims are checked on the same rows.
        sa.Index("ix_notification_due", "status", "next_try_at"),
    )
    if TYPE_CHECKING:
        # set by `table=True`; SQLModel's stubs leave it out (the notifier works on the table itself)
        __table__: ClassVar[sa.Table]

    id: int | None = Field(default=None, primary_key=True)
    # Idempotency: `key` (the caller's event key) + recipient + address, hashed. Unique, so the
    # same event never notifies the same address twice, even when two transactions race.
    idempotency_key: str = Field(max_length=64, unique=True)
    key: str = Field(max_length=200, index=True, description="the event's key, as the caller gave it")
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    recipient_kind: str = Field(max_length=8, description="staff | contact")
    recipient_id: int
    recipient_name: str = Field(default="", max_length=100)
    channel: str = Field(
        max_length=32, description="the URL scheme: mailto, dingtalk, wecombot, feishu, smsgw, json…"
    )
    address: str = Field(sa_type=sa.Text, description="the Apprise URL")
    template: str = Field(max_length=120)
    lang: str = Field(default="zh", max_length=8)
    subject: str = Field(max_length=300)
    body: str = Field(sa_type=sa.Text)
    urgent: bool = Field(default=False, description="severity 1–2 or an escalation: ignores quiet hours")
    status: str = Field(default=NotificationStatus.PENDING, max_length=16)
    attempts: int = Field(default=0)
    next_try_at: datetime = utc_field(nullable=False)
    held_until: datetime | None = utc_field(description="set when quiet hours delayed the message")
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    # A notifier claims rows before sending them: claim_token names one batch of one notifier,
    # claimed_until is the lease after which a crashed notifier's rows are taken over.
    claimed_by: str | None = Field(default=None, max_length=100)
    claim_token: str | None = Field(default=None, max_length=40, index=True)
    claimed_until: datetime | None = utc_field()
    created_at: datetime = utc_field(nullable=False)
    sent_at: datetime | None = utc_field()
    # who sent it: the claim's notifier ("notifier@<node>", "keeper@<host>:<pid>", "cli@…"), kept
    # when the claim is cleared, so a cluster's notifiers can be told apart (bench/cluster.py)
    sent_by: str | None = Field(default=None, max_length=100)
    incident_id: int | None = Field(default=None, foreign_key="incident.id")


class NotifySettings(BaseSettings):
    """The notifier's settings (environment `AFTERCARE_NOTIFY_*`)."""

    model_config = SettingsConfigDict(env_prefix="AFTERCARE_NOTIFY_", env_file=".env", extra="ignore")

    max_attempts: int = PField(default=6, ge=1, le=50, description="tries before an incident is opened")
    backoff_seconds: float = PField(
        default=60.0, gt=0, description="wait after the first failure; doubles each try"
    )
    backoff_max_seconds: float = PField(default=3600.0, gt=0)
    lease_seconds: float = PField(default=300.0, gt=0, description="a claimed row is taken over after this")
    timeout_seconds: float = PField(default=10.0, gt=0, description="HTTP timeout of one send")
    # Robot endpoints: the public ones by default; a private deployment (专属钉钉, an egress proxy)
    # or a test server replaces them. `{token}` is the robot's token/key from the contact's URL.
    dingtalk_api: str = "https://oapi.dingtalk.com/robot/send?access_token={token}"
    wecombot_api: str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={token}"
    feishu_api: str = "https://open.feishu.cn/open-apis/bot/v2/hook/{token}"
    lark_api: str = "https://open.larksuite.com/open-apis/bot/v2/hook/{token}"
    # The SMS gateway behind `smsgw://<mobile>` addresses: an HTTP endpoint of the operator's SMS
    # relay (阿里云/腾讯云短信 behind the company's own 短信平台) taking {"phone", "content", "sign"}.
    sms_gateway: str = PField(default="", description="URL of the SMS relay; empty: smsgw:// is refused")
    sms_sign: str = PField(default="", description="SMS signature 【…】 the relay prepends, if it needs one")
    sms_token: str = PField(default="", description="bearer token for the SMS relay, if it needs one")


@lru_cache
def get_notify_settings() -> NotifySettings:
    return NotifySettings()
