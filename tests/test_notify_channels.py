"""Channels through real Apprise against local imitations: a DingTalk/WeCom/Feishu robot server,
an SMS relay and an SMTP sink; URL validation where people are entered."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from sqlmodel import Session, select

from models.outbox import Notification
from models.parties import Contact, Customer, Staff
from tasks.channels import ChannelError, deliver, validate_person, validate_url
from tasks.notify import queue, send_due
from tests.conftest import T0


def test_dingtalk_errcode_310000_is_a_failure_though_apprise_alone_calls_it_sent(robot_server) -> None:
    from apprise.plugins.dingtalk import NotifyDingTalk

    robot_server.answer("tok310", errcode=310000, times=2)
    # Apprise 1.13.1's own plugin, aimed at the same server, reports success on this answer...
    plain = NotifyDingTalk(token="tok310")
    plain.notify_url = f"{robot_server.base}/robot/send?access_token={{token}}"
    assert plain.notify(body="告警", title="") is True
    # ...aftercare's checked dingtalk:// reads the body and reports the robot's reason.
    error = deliver("dingtalk://tok310", title="【WX-000001】告警", body="存储控制器故障")
    assert error == "DingTalk refused: errcode 310000: keywords not in content"
    assert deliver("dingtalk://tok310", title="【WX-000001】告警", body="存储控制器故障") is None
    assert len(robot_server.received) == 3
    assert robot_server.texts("tok310")[-1] == "【WX-000001】告警\r\n存储控制器故障"


def test_signed_dingtalk_robot_gets_timestamp_and_signature(robot_server) -> None:
    assert deliver("dingtalk://SECabc123@tok/13900000000", title="", body="测试") is None
    [call] = robot_server.received
    assert set(call.params) == {"access_token", "timestamp", "sign"}
    assert call.payload["at"] == {"atMobiles": ["13900000000"], "isAtAll": False}


@pytest.mark.parametrize(
    ("url", "token", "answer", "reason"),
    [
        ("wecombot://wkey", "wkey", {"errcode": 93000}, "WeCom robot refused: errcode 93000"),
        ("feishu://ftok", "ftok", {"errcode": 19021}, "Feishu robot refused: code 19021: sign match fail"),
        ("dingtalk://dtok", "dtok", {"errcode": None}, "DingTalk refused: HTTP 200 but not a robot answer"),
        ("dingtalk://dtok", "dtok", {"status": 502}, "DingTalk refused: HTTP 502"),
    ],
)
def test_robot_error_answers_fail(robot_server, url: str, token: str, answer: dict, reason: str) -> None:
    robot_server.answer(token, **answer)
    error = deliver(url, title="标题", body="正文")
    assert error is not None and error.startswith(reason)
    assert deliver(url, title="标题", body="正文") is None  # the next answer is a good one


def test_unreachable_robot_is_a_failure_with_the_reason(
    robot_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.outbox import get_notify_settings

    monkeypatch.setenv("AFTERCARE_NOTIFY_DINGTALK_API", "http://127.0.0.1:9/robot/send?access_token={token}")
    get_notify_settings.cache_clear()
    error = deliver("dingtalk://tok", title="", body="x")
    assert error is not None and error.startswith("DingTalk unreachable: ConnectionError")


def test_sms_gateway_posts_phone_and_text_and_checks_the_code(robot_server) -> None:
    assert deliver("smsgw://13900000001", title="【WX-000001】", body="工程师已出发") is None
    [call] = robot_server.received
    assert call.robot == "smsgw" and call.payload["phone"] == "13900000001"
    assert call.payload["content"] == "【WX-000001】\r\n工程师已出发"
    robot_server.answer("13900000001", errcode=4001)
    assert (
        deliver("smsgw://13900000001", title="", body="x")
        == "SMS gateway refused 13900000001: code 4001: quota exceeded"
    )


def test_email_reaches_the_smtp_sink_with_its_chinese_subject(smtp_sink) -> None:
    assert (
        deliver(
            smtp_sink.url("zhang@example.com"), title="【WX-000001】维修方案待审批", body="请审批：http://x/a"
        )
        is None
    )
    [mail] = smtp_sink.messages
    assert (mail.rcpt_tos, mail.subject) == (["zhang@example.com"], "【WX-000001】维修方案待审批")
    assert "请审批" in mail.body


def test_outbox_over_a_dingtalk_robot_that_refuses_three_times_then_accepts(
    session: Session, robot_server
) -> None:
    customer = Customer(code="KH", name="客户", created_at=T0)
    session.add(customer)
    session.flush()
    contact = Contact(customer_id=customer.id, name="张经理", notify_urls=["dingtalk://robot1"])
    session.add(contact)
    session.commit()
    queue(
        session,
        recipients=[contact],
        template="outbox/test",
        context={"now": T0},
        key="k",
        case_id=None,
        now=T0,
        urgent=True,
    )
    session.commit()
    robot_server.answer("robot1", errcode=310000, times=3)
    now = T0
    for _ in range(3):
        assert send_due(now, worker="w") == 0
        now = session.exec(select(Notification)).one().next_try_at
        session.expire_all()
    assert send_due(now, worker="w") == 1
    row = session.exec(select(Notification)).one()
    assert (row.status, row.attempts, row.sent_at) == ("sent", 4, T0 + timedelta(minutes=7))
    assert len(robot_server.received) == 4


def test_outbox_mail_through_the_smtp_sink(session: Session, smtp_sink) -> None:
    staff = Staff(name="吴总监", notify_urls=[smtp_sink.url("wu@example.com")])
    session.add(staff)
    session.commit()
    queue(
        session,
        recipients=[staff],
        template="outbox/test",
        context={"now": T0},
        key="k",
        case_id=None,
        now=T0,
    )
    session.commit()
    assert send_due(T0, worker="w") == 1
    assert [m.subject for m in smtp_sink.messages] == ["【测试】aftercare 通知渠道测试"]


# --- validation where addresses are entered -------------------------------------------------------


def test_a_bad_url_is_refused_with_the_reason() -> None:
    with pytest.raises(ChannelError, match="An invalid DingTalk API Token"):
        validate_url("dingtalk://!!bad!!")
    with pytest.raises(ChannelError, match="not a notification URL"):
        validate_url("13900000000")
    with pytest.raises(ChannelError, match="Unparseable URL"):
        validate_url("nosuch://x")


def test_sms_address_needs_a_mobile_number_and_a_configured_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.outbox import get_notify_settings

    monkeypatch.delenv("AFTERCARE_NOTIFY_SMS_GATEWAY", raising=False)
    get_notify_settings.cache_clear()
    with pytest.raises(ChannelError, match="AFTERCARE_NOTIFY_SMS_GATEWAY"):
        validate_url("smsgw://13900000000")
    monkeypatch.setenv("AFTERCARE_NOTIFY_SMS_GATEWAY", "https://sms.example.com/send")
    get_notify_settings.cache_clear()
    assert validate_url("smsgw://13900000000") == "smsgw://13900000000"
    with pytest.raises(ChannelError, match="not a mainland mobile number"):
        validate_url("smsgw://0105551234")
    get_notify_settings.cache_clear()


def test_validate_person_checks_every_address_and_the_quiet_hours() -> None:
    good = validate_person(
        Staff(
            name="王值班",
            notify_urls=[" json://127.0.0.1:8080/hook ", ""],
            quiet_start=time(22),
            quiet_end=time(7),
        )
    )
    assert good.notify_urls == ["json://127.0.0.1:8080/hook"]
    with pytest.raises(ChannelError) as bad:
        validate_person(Staff(name="李调度", notify_urls=["mailto://", "wecombot://ok", "dingtalk://%%"]))
    assert str(bad.value).startswith("李调度: ")
    assert str(bad.value).count("通知地址无效") == 2
    with pytest.raises(ChannelError, match="同时填写"):
        validate_person(Contact(customer_id=1, name="张", notify_urls=[], quiet_start=time(22)))
    with pytest.raises(ChannelError, match="相同"):
        validate_person(Contact(customer_id=1, name="张", quiet_start=time(22), quiet_end=time(22)))
