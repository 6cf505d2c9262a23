"""Accident keeper steps on a real database: hourly updates re-arm until the restore, the vendor's
daily report runs while vendor support is engaged, a standby machine goes out at half the restore
time. Time moves by passing later `now` values."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from sqlmodel import select

import tasks.accident as A
from models import Case, Event
from models.db import session_scope
from models.outbox import Notification
from tests.conftest import T0

H = timedelta(hours=1)


def _open(**extra) -> int:
    request = A.AccidentRequest(customer="BJYH", site="亦庄机房", reported_by="客户 李四",
                                description="核心存储宕机，网银业务中断", reported_at=T0, **extra)
    case_id = A.open_accident.fn(request, T0, f"run-{extra}")
    A.form_team.fn(case_id, T0)
    return case_id


def _sent(case_id: int, template: str) -> Counter:
    with session_scope() as s:
        rows = s.exec(select(Notification).where(Notification.case_id == case_id,
                                                 Notification.template == template)).all()
        return Counter(r.recipient_name for r in rows)


def _events(case_id: int, kind: str) -> list[Event]:
    with session_scope() as s:
        return list(s.exec(select(Event).where(Event.case_id == case_id, Event.kind == kind).order_by(Event.at)))


def test_hourly_updates_rearm_each_hour_then_stop_at_the_restore(demo):
    case_id = _open()
    assert A.send_progress_updates(T0 + 59 * timedelta(minutes=1)) == 0
    for hour in range(1, 6):  # the keeper ticks every hour
        assert A.send_progress_updates(T0 + hour * H) == 1
    assert A.send_progress_updates(T0 + 5 * H) == 0  # a second tick in the same hour sends nothing
    # the keeper was down for 3 hours: each missed update goes out once
    assert A.send_progress_updates(T0 + 8 * H + timedelta(minutes=5)) == 3
    A.record_execution.fn(case_id, 1, "restored", "业务恢复", "张技术", T0 + 9 * H + timedelta(minutes=30))
    assert A.send_progress_updates(T0 + 30 * H) == 0
    assert [e.data["n"] for e in _events(case_id, "progress_update")] == list(range(1, 10))
    assert _sent(case_id, "accident_progress") == {"郑协调": 9, "北京维护负责人": 9}
    with session_scope() as s:
        assert s.get(Case, case_id).status == "restored"


def test_a_standby_machine_goes_out_once_at_half_the_restore_time(demo):
    case_id = _open()
    assert A.send_due_standby(T0 + 2 * H - timedelta(seconds=1)) == 0  # severity 1: restore in 4 h
    assert A.send_due_standby(T0 + 2 * H) == 1
    assert A.send_due_standby(T0 + 3 * H) == 0
    assert A.request_standby_machine.fn(case_id, "技术总监决定", T0 + 4 * H) is False
    [event] = _events(case_id, "standby_machine_requested")
    assert event.at == T0 + 2 * H and event.actor == "system"
    assert _sent(case_id, "accident_standby") == {"原厂支持": 1, "何备件": 1, "郑协调": 1}


def test_vendor_gets_a_daily_report_only_while_support_is_engaged(demo):
    case_id = _open(tolerance_hours=2)
    assert A.send_vendor_daily_reports(T0 + 48 * H) == 0  # no vendor support yet
    assert A.window_expired.fn(case_id, T0 + 2 * H) is True
    # the flow asks at 3 h (a failed test); the support dates from the window's close at 2 h
    A.start_vendor_support.fn(case_id, 1, "方案测试失败且超出客户可容忍时间", T0 + 3 * H)
    [started] = _events(case_id, "vendor_support_started")
    assert started.at == T0 + 2 * H
    assert A.send_vendor_daily_reports(T0 + 26 * H - timedelta(seconds=1)) == 0
    assert A.send_vendor_daily_reports(T0 + 26 * H) == 1
    assert A.send_vendor_daily_reports(T0 + 74 * H) == 2
    A.record_execution.fn(case_id, 3, "restored", "", "张技术", T0 + 76 * H)
    assert A.send_vendor_daily_reports(T0 + 200 * H) == 0
    assert _sent(case_id, "accident_vendor_support") == {"原厂支持": 1, "吴总监": 1}
    assert _sent(case_id, "accident_vendor_daily") == {"原厂支持": 3}


def test_a_window_that_closes_without_a_plan_brings_in_the_vendor_by_itself(demo):
    waiting = _open(tolerance_hours=2)
    restored = _open(tolerance_hours=2, team=["张技术"])
    A.record_execution.fn(restored, 1, "restored", "", "张技术", T0 + H)
    assert A.send_due_vendor_support(T0 + 2 * H - timedelta(seconds=1)) == 0
    # the keeper was down for an hour: the support still dates from the window's close
    assert A.send_due_vendor_support(T0 + 3 * H) == 1
    assert A.send_due_vendor_support(T0 + 4 * H) == 0  # once
    [started] = _events(waiting, "vendor_support_started")
    assert started.at == T0 + 2 * H and started.actor == "吴总监" and started.data["attempt"] == 1
    assert "可容忍时间" in started.data["reason"]
    assert _events(restored, "vendor_support_started") == []
    assert _sent(waiting, "accident_vendor_support") == {"原厂支持": 1, "吴总监": 1}
    # a plan that fails later is the flow's second call, not a repeat of the first
    assert A.start_vendor_support.fn(waiting, 1, "第 1 版方案测试失败", T0 + 5 * H) is False
    assert A.start_vendor_support.fn(waiting, 2, "第 2 版方案部分恢复", T0 + 6 * H) is True
    assert [e.data["attempt"] for e in _events(waiting, "vendor_support_started")] == [1, 2]
