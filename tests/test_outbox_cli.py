"""`aftercare notify-test URL` and `aftercare outbox`: clear answers, never a traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from deployments.cli import app


def test_notify_test_sends_one_message_and_refuses_a_bad_url(db_url: str, notifications) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["notify-test", "record://staff/me"])
    assert ok.exit_code == 0 and "已发送" in ok.output
    assert notifications.titles("record://staff/me") == ["【测试】aftercare 通知渠道测试"]

    bad = runner.invoke(app, ["notify-test", "dingtalk://!!"])
    assert (
        bad.exit_code == 2 and "An invalid DingTalk API Token" in bad.output and "Traceback" not in bad.output
    )

    notifications.down("record://staff/down")
    down = runner.invoke(app, ["notify-test", "record://staff/down"])
    assert down.exit_code == 1 and "发送失败" in down.output


def test_outbox_reports_counts_incidents_and_the_incidents_link(demo: str, notifications) -> None:
    from sqlmodel import select

    from models.db import session_scope
    from models.parties import Staff
    from models.wallclock import now
    from tasks.notify import queue

    with session_scope(demo) as s:
        engineer = s.exec(select(Staff).where(Staff.name == "刘工程师")).one()
        engineer.notify_urls = []  # an address nobody entered: an incident at once
        queue(
            s,
            recipients=[engineer],
            template="outbox/test",
            context={"now": now()},
            key="k",
            case_id=None,
            now=now(),  # the CLI sends at wall-clock time
        )
    result = CliRunner().invoke(app, ["outbox", "--send"])
    assert result.exit_code == 0, result.output
    assert "发送 / sent 2" in result.output  # the two dispatchers' alerts (demo data: log:// addresses)
    assert "failed 1" in result.output and "sent 2" in result.output
    assert "待处理事件 / open incidents: 1" in result.output and "刘工程师" in result.output
    assert "/incidents/" in result.output
    assert [s.title[:6] for s in notifications.to("log://staff/")] == ["【通知失败】"] * 2
