"""Notification channels: Apprise URL validation, robots whose answers are checked, the SMS gateway,
and aftercare's own `log://` channel.

- `log://who` appends the message to `<home>/notifications.log`; the demo data uses it so that a
  first run sends nothing out of the machine.
- DingTalk, WeCom and Feishu/Lark robots answer HTTP 200 with an error code in the JSON body
  (DingTalk `errcode: 310000` when the keyword or signature does not match). Apprise 1.13.1 looks at
  the status only and reports such an answer as sent, so aftercare re-registers the `dingtalk://`,
  `wecombot://`, `feishu://` and `lark://` schemes with subclasses that read the body: a non-zero
  code is a failure, with the robot's own message as the reason. The URLs people enter stay the
  ordinary Apprise ones; parsing, token checks and DingTalk signing are Apprise's.
- SMS: Apprise has no mainland SMS plugin (no Aliyun/Tencent), and those APIs need signed,
  template-bound requests that a plain webhook cannot make. Companies put them behind their own
  短信平台 relay; `smsgw://<mobile>` posts `{"phone", "content", "sign"}` to that relay
  (`AFTERCARE_NOTIFY_SMS_GATEWAY`) and checks its `code` the same way. A contact's address then
  carries only the phone number; the gateway is configured once.

Every place that enters a person's addresses calls `validate_person` (or `validate_urls`): a bad
URL is refused with the reason when it is typed, not when the first message fails.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from datetime import time
from typing import Any

import apprise
import requests
from apprise.conversion import convert_between
from apprise.decorators import notify
from apprise.manager_plugins import NotificationManager
from apprise.plugins.base import NotifyBase
from apprise.plugins.dingtalk import NotifyDingTalk
from apprise.plugins.feishu import NotifyFeishu
from apprise.plugins.lark import NotifyLark
from apprise.plugins.wecombot import NotifyWeComBot
from apprise.utils.parse import parse_list, parse_phone_no

from models.outbox import get_notify_settings
from models.parties import register_person_check
from models.settings import get_settings, open_private, private_dir


def _log_channel(
    body: str, title: str, notify_type: str, meta: dict[str, Any], *args: Any, **kwargs: Any
) -> bool:
    # the log holds live signed links: 0600 in the 0700 home, like the database
    path = private_dir(get_settings().home) / "notifications.log"
    record = {"to": meta.get("url", ""), "title": title, "body": body, "type": str(notify_type)}
    with open_private(path, "a") as out:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return True


def register_log_channel() -> None:
    """Register `log://` (at import; again after a test shadowed it)."""
    from apprise.manager_plugins import NotificationManager

    if "log" not in NotificationManager():
        notify(on="log", name="aftercare log file")(_log_channel)


register_log_channel()


# --- robots whose answer is checked --------------------------------------------------------------


def robot_answer_error(response: requests.Response) -> str | None:
    """The error a robot reported in its answer, or None when it accepted the message.

    DingTalk and WeCom answer `{"errcode": 0, "errmsg": "ok"}`, Feishu/Lark `{"code": 0, "msg": …}`
    (older Feishu hooks `{"StatusCode": 0, …}`). An answer that is not JSON is not an acceptance.
    """
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    try:
        answer = response.json()
    except ValueError:
        return f"HTTP 200 but not a robot answer: {response.text[:200]!r}"
    if not isinstance(answer, dict):
        return f"HTTP 200 but not a robot answer: {answer!r:.200}"
    for code_key, msg_key in (("errcode", "errmsg"), ("code", "msg"), ("StatusCode", "StatusMessage")):
        if code_key in answer:
            if answer[code_key] in (0, "0"):
                return None
            return f"{code_key} {answer[code_key]}: {answer.get(msg_key, '')}"
    return f"HTTP 200 without an error code: {json.dumps(answer, ensure_ascii=False)[:200]}"


class _CheckedRobot:
    """Posts the robot's JSON itself and reads the answer (see the module docstring)."""

    robot_name = "robot"
    api_setting = ""  # the NotifySettings field holding the endpoint template
    last_error: str | None = None

    def _robot_token(self) -> str:
        raise NotImplementedError

    def _robot_payload(self, body: str, title: str) -> dict[str, Any]:
        raise NotImplementedError

    def _robot_params(self) -> dict[str, str] | None:
        return None

    def send(self, body: str, title: str = "", notify_type: Any = None, **kwargs: Any) -> bool:
        plugin: NotifyBase = self  # type: ignore[assignment]
        url = getattr(get_notify_settings(), self.api_setting).format(token=self._robot_token())
        plugin.throttle()
        try:
            response = requests.post(
                url,
                data=json.dumps(self._robot_payload(body, title), ensure_ascii=False).encode("utf-8"),
                params=self._robot_params(),
                headers={"User-Agent": plugin.app_id, "Content-Type": "application/json; charset=utf-8"},
                verify=plugin.verify_certificate,
                timeout=get_notify_settings().timeout_seconds,
                allow_redirects=plugin.redirects,
            )
        except requests.RequestException as exc:
            self.last_error = f"{self.robot_name} unreachable: {type(exc).__name__}: {exc}"
            plugin.logger.warning(self.last_error)
            return False
        error = robot_answer_error(response)
        if error is not None:
            self.last_error = f"{self.robot_name} refused: {error}"
            plugin.logger.warning(self.last_error)
            return False
        self.last_error = None
        return True


class CheckedDingTalk(_CheckedRobot, NotifyDingTalk):
    robot_name = "DingTalk"
    api_setting = "dingtalk_api"

    def _robot_token(self) -> str:
        return self.token

    def _robot_payload(self, body: str, title: str) -> dict[str, Any]:
        at = {"atMobiles": self.targets, "isAtAll": False}
        if self.notify_format == apprise.NotifyFormat.MARKDOWN:
            return {"msgtype": "markdown", "markdown": {"title": title or body[:20], "text": body}, "at": at}
        return {"msgtype": "text", "text": {"content": body}, "at": at}

    def _robot_params(self) -> dict[str, str] | None:
        if not self.secret:
            return None
        timestamp, signature = self.get_signature()  # Apprise's HMAC signing
        return {"timestamp": str(timestamp), "sign": signature}


class CheckedWeComBot(_CheckedRobot, NotifyWeComBot):
    robot_name = "WeCom robot"
    api_setting = "wecombot_api"

    def _robot_token(self) -> str:
        return self.key

    def _robot_payload(self, body: str, title: str) -> dict[str, Any]:
        return {"msgtype": "text", "text": {"content": body}}


class CheckedFeishu(_CheckedRobot, NotifyFeishu):
    robot_name = "Feishu robot"
    api_setting = "feishu_api"

    def _robot_token(self) -> str:
        return self.token

    def _robot_payload(self, body: str, title: str) -> dict[str, Any]:
        return {"msg_type": "text", "content": {"text": body}}


class CheckedLark(_CheckedRobot, NotifyLark):
    robot_name = "Lark robot"
    api_setting = "lark_api"

    def _robot_token(self) -> str:
        return self.token

    def _robot_payload(self, body: str, title: str) -> dict[str, Any]:
        return {"msg_type": "text", "content": {"text": f"{title}\n{body}" if title else body}}


# --- SMS through the company's relay -------------------------------------------------------------

MOBILE = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")


class NotifySMSGateway(_CheckedRobot, NotifyBase):
    """`smsgw://13900000000[/13900000001…]`: SMS through the relay named by AFTERCARE_NOTIFY_SMS_GATEWAY."""

    # Apprise declares these as None / () on its base class; plugins set them.
    service_name = "SMS gateway (短信平台)"  # type: ignore[assignment]
    secure_protocol = "smsgw"  # type: ignore[assignment]
    robot_name = "SMS gateway"
    title_maxlen = 0
    body_maxlen = 500
    templates = ("{schema}://{targets}",)  # type: ignore[assignment]

    def __init__(self, targets: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        phones = []
        for target in parse_phone_no(targets or []):
            match = MOBILE.match(re.sub(r"[\s-]", "", target))
            if not match:
                raise TypeError(f"not a mainland mobile number: {target!r} (11 digits, starting 13–19)")
            phones.append(match.group(1))
        if not phones:
            raise TypeError("no mobile number: write smsgw://13900000000")
        if not get_notify_settings().sms_gateway:
            raise TypeError(
                "no SMS gateway is configured: set AFTERCARE_NOTIFY_SMS_GATEWAY to the SMS relay's URL"
            )
        self.targets = phones

    def url(self, privacy: bool = False, *args: Any, **kwargs: Any) -> str:
        return f"{self.secure_protocol}://{'/'.join(self.targets)}"

    def __len__(self) -> int:
        return len(self.targets)

    def send(self, body: str, title: str = "", notify_type: Any = None, **kwargs: Any) -> bool:
        settings = get_notify_settings()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if settings.sms_token:
            headers["Authorization"] = f"Bearer {settings.sms_token}"
        ok = True
        for phone in self.targets:
            try:
                response = requests.post(
                    settings.sms_gateway,
                    data=json.dumps({"phone": phone, "content": body, "sign": settings.sms_sign}).encode(),
                    headers=headers,
                    timeout=settings.timeout_seconds,
                )
            except requests.RequestException as exc:
                self.last_error = f"SMS gateway unreachable: {type(exc).__name__}: {exc}"
                self.logger.warning(self.last_error)
                ok = False
                continue
            error = robot_answer_error(response)
            if error is not None:
                self.last_error = f"SMS gateway refused {phone}: {error}"
                self.logger.warning(self.last_error)
                ok = False
        return ok

    @staticmethod
    def parse_url(url: str) -> dict[str, Any] | None:  # type: ignore[override]
        results = NotifyBase.parse_url(url, verify_host=False)
        if not results:
            return results
        results["targets"] = [NotifyBase.unquote(results["host"] or "")] + NotifyBase.split_path(
            results["fullpath"]
        )
        return results


def install_checked_channels() -> None:
    """Put the checked robots and the SMS gateway in Apprise's place for their schemes."""
    manager = NotificationManager()
    for plugin in (CheckedDingTalk, CheckedWeComBot, CheckedFeishu, CheckedLark, NotifySMSGateway):
        for schema in parse_list(plugin.secure_protocol, plugin.protocol):
            if schema not in manager or manager[schema] is not plugin:  # idempotent on re-import
                manager.add(plugin, schemas=[schema], force=True)


install_checked_channels()


# --- sending one message -------------------------------------------------------------------------


class _ThreadLog(logging.Handler):
    """Collects Apprise's warnings of this thread only: notifiers send from several threads."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


def _as_plain_text(plugin: NotifyBase, *, title: str, body: str) -> dict[str, Any]:
    """Our messages are plain text (`*.txt.j2`, rendered unescaped so a chat message never shows
    "&lt;"). A channel that shows HTML (e-mail) gets them converted by Apprise's own text→HTML, which
    escapes them — what `Apprise.notify(body_format=TEXT)` does; `deliver` calls the plugin directly
    to read its failure reason, so the conversion is made here."""
    fmt = plugin.notify_format
    if fmt == apprise.NotifyFormat.TEXT:
        return {"title": title, "body": body}
    if fmt == apprise.NotifyFormat.MARKDOWN:
        # Apprise has no text→markdown conversion, and markdown joins lines that one newline separates
        # (a DingTalk robot with ?format=markdown showed "（SN…）报告人：…" on one line): every line
        # break becomes a hard one (two spaces before the newline), blank lines stay paragraph breaks
        return {
            "title": title,
            "body": "\n".join(line.rstrip() + "  " if line.strip() else "" for line in body.splitlines()),
            "body_format": fmt,
        }
    if title and plugin.title_maxlen <= 0:  # the title is put into the body: it is converted too
        title = convert_between(apprise.NotifyFormat.TEXT, fmt, title)
    return {"title": title, "body": convert_between(apprise.NotifyFormat.TEXT, fmt, body), "body_format": fmt}


def deliver(url: str, *, title: str, body: str) -> str | None:
    """Send one message to one Apprise URL; None when it went out, else the reason it did not."""
    handler = _ThreadLog()
    logger = logging.getLogger("apprise")
    logger.addHandler(handler)
    try:
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=False)
        if plugin is None:
            return "; ".join(handler.lines) or f"unknown channel {_mask(url)}"
        ok = plugin.notify(**_as_plain_text(plugin, title=title, body=body))
    except Exception as exc:  # a plugin's own bug must fail this row, not the notifier
        return f"{type(exc).__name__}: {exc}"
    finally:
        logger.removeHandler(handler)
    if ok:
        return None
    return getattr(plugin, "last_error", None) or "; ".join(handler.lines) or "the channel reported a failure"


# --- validation where addresses are entered ------------------------------------------------------


class ChannelError(ValueError):
    """A notification URL that Apprise cannot use; the message says why."""


def validate_url(url: str) -> str:
    """Return `url` if Apprise can send to it, else raise ChannelError with the reason."""
    url = url.strip()
    if "://" not in url:
        raise ChannelError(f"不是通知地址 / not a notification URL: {url!r} (e.g. mailto://, dingtalk://)")
    try:
        with apprise.LogCapture(level=apprise.logging.WARNING, fmt="%(message)s") as logs:
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=False)
    except TypeError as exc:
        raise ChannelError(f"通知地址无效 / invalid notification URL {_mask(url)}: {exc}") from exc
    if plugin is None:
        reason = logs.getvalue().strip().splitlines()[-1] if logs.getvalue().strip() else "unknown scheme"
        raise ChannelError(f"通知地址无效 / invalid notification URL {_mask(url)}: {reason}")
    return url


def validate_urls(urls: Iterable[str]) -> list[str]:
    """Check every address; raise one ChannelError naming each bad one."""
    good, bad = [], []
    for url in urls:
        if not url or not url.strip():
            continue
        try:
            good.append(validate_url(url))
        except ChannelError as exc:
            bad.append(str(exc))
    if bad:
        raise ChannelError("\n".join(bad))
    return good


@register_person_check
def validate_person(person: Any) -> Any:
    """The hook for every place that enters a Staff or Contact (seed, admin, import).

    Normalises and checks `notify_urls` and the quiet hours; raises ChannelError with the reasons.
    Returns the person for chaining: `session.add(validate_person(Contact(...)))`.
    """
    who = getattr(person, "name", "") or "?"
    try:
        person.notify_urls = validate_urls(person.notify_urls or [])
    except ChannelError as exc:
        raise ChannelError(f"{who}: {exc}") from exc
    start, end = getattr(person, "quiet_start", None), getattr(person, "quiet_end", None)
    if (start is None) != (end is None):
        raise ChannelError(
            f"{who}: 免打扰时段须同时填写开始和结束 / quiet hours need both a start and an end"
        )
    for value in (start, end):
        if value is not None and not isinstance(value, time):
            raise ChannelError(
                f"{who}: 免打扰时间格式应为 HH:MM / quiet hours must be times of day, got {value!r}"
            )
    if start is not None and start == end:
        raise ChannelError(f"{who}: 免打扰开始与结束相同 / quiet hours start and end are the same")
    return person


def _mask(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest[:4]}…" if len(rest) > 4 else url
