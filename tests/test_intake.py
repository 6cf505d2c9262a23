"""Intake refuses before anything is written or started (issue 14 item 3, DESIGN.md §7 row 14): a
report time in the future or more than 30 days back, an unknown customer, site, device or parent
case, an over-long text — from `aftercare repair new` with one line and an exit code ≠ 0, from
the case-opening step with an IntakeError and nothing written.

In process: the real command (typer's CliRunner), a real SQLite file; no Prefect is needed because
nothing gets as far as starting a run (the one that does is in tests/test_intake_flow.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
import pytest
from sqlmodel import select
from typer.testing import CliRunner

from models import Case, Event
from models.outbox import Notification
from models.wallclock import now as wall
from tasks.cases import IntakeError, RepairRequest, open_case
from tests.conftest import T0


def bj(moment: Any) -> str:
    return pendulum.instance(moment).in_timezone("Asia/Shanghai").strftime("%Y-%m-%d %H:%M")


def nothing_written(session: Any) -> bool:
    session.expire_all()
    return not (
        session.exec(select(Case)).all()
        or session.exec(select(Event)).all()
        or session.exec(select(Notification)).all()
    )


BASE = [
    "repair",
    "new",
    "--customer",
    "BJYH",
    "--site",
    "亦庄机房",
    "--description",
    "阵列告警",
    "--reported-by",
    "王先生 13900000000",
]


def repair_new(*extra: str) -> Any:
    from deployments.cli import app

    return CliRunner().invoke(app, [*BASE, *extra])


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (lambda: ["--reported-at", "2999-01-01 10:00"], "晚于当前时间"),
        (lambda: ["--reported-at", bj(wall() + timedelta(hours=2))], "晚于当前时间"),
        (lambda: ["--reported-at", bj(wall() - timedelta(days=31))], "早于 30 天以前"),
        (lambda: ["--reported-at", "明天下午三点"], "「报告时间」无法识别的时间"),
        (lambda: ["--reported-at", "2026-13-45 99:99"], "「报告时间」无法识别的时间"),
        (lambda: ["--parent", "-5"], "「关联工单」"),
        (lambda: ["--parent", "999999"], "关联工单 999999 不存在"),
        (lambda: ["--customer", "不存在的客户"], "未知客户"),
        (lambda: ["--site", "不存在的机房"], "未知站点"),
        (lambda: ["--device", "SN-NOPE"], "未知设备序列号"),
        (lambda: ["--reported-by", "王" * 100_000], "「报告人」不能超过 100 个字"),
        (lambda: ["--description", "长" * 4001], "「故障描述」不能超过 4000 个字"),
    ],
)
def test_repair_new_refuses_in_one_line_and_writes_nothing(
    demo: str, session: Any, extra: Any, says: str
) -> None:
    result = repair_new(*extra())
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], result.output
    assert len(lines[0]) < 400  # the refusal never echoes a 100,000-character value
    assert "已受理" not in result.output and "Traceback" not in result.output
    assert nothing_written(session)


def test_a_report_time_in_the_future_or_long_past_is_refused_when_the_case_is_opened(
    demo: str, session: Any
) -> None:
    request = {"customer": "BJYH", "site": "亦庄机房", "reported_by": "王先生", "description": "阵列告警"}
    with pytest.raises(IntakeError, match="晚于当前时间"):
        open_case(session, RepairRequest(**request, reported_at=T0 + timedelta(minutes=6)), now=T0)
    with pytest.raises(IntakeError, match="早于 30 天以前"):
        open_case(session, RepairRequest(**request, reported_at=T0 - timedelta(days=30, minutes=1)), now=T0)
    with pytest.raises(IntakeError, match="关联工单 999999 不存在"):
        open_case(session, RepairRequest(**request, parent_case_id=999999), now=T0)
    # a clock a few minutes fast, and a report from last week, are taken
    assert open_case(session, RepairRequest(**request, reported_at=T0 + timedelta(minutes=4)), now=T0).id
    assert open_case(
        session, RepairRequest(**request, reported_at=T0 - timedelta(days=7)), now=T0, entered_at=T0
    ).id


def test_the_request_form_takes_beijing_time_and_refuses_what_is_no_time() -> None:
    base = {"customer": "BJYH", "reported_by": "王先生", "description": "阵列告警"}
    assert RepairRequest(**base, reported_at="2026-11-23 10:00").reported_at == T0
    assert RepairRequest(**base, reported_at="2026-11-23T02:00:00Z").reported_at == T0
    for bad in ("明天下午三点", "2026-13-45 99:99", "2026-11-23"):
        with pytest.raises(ValueError):
            RepairRequest(**base, reported_at=bad)
    with pytest.raises(ValueError):
        RepairRequest(**base, parent_case_id=-5)
    with pytest.raises(ValueError):
        RepairRequest(**{**base, "reported_by": "王" * 101})


def test_accident_hand_over_from_an_unknown_repair_is_refused(demo: str, session: Any) -> None:
    from tasks.accident import AccidentRequest, open_accident

    with pytest.raises(IntakeError, match="维修单 999999 不存在"):
        open_accident.fn(AccidentRequest(parent_case_id=999999), T0, "run-x", entered_at=T0)
    with pytest.raises(IntakeError, match="晚于当前时间"):
        open_accident.fn(
            AccidentRequest(
                customer="BJYH",
                site="亦庄机房",
                reported_by="王先生",
                description="宕机",
                reported_at=T0 + timedelta(hours=1),
            ),
            T0 + timedelta(hours=1),
            "run-y",
            entered_at=T0,
        )
    with pytest.raises(ValueError):
        AccidentRequest(customer="BJYH", reported_by="王先生", description="宕机", team=["王" * 101])
    assert nothing_written(session)


def test_an_extra_inspection_request_is_refused_in_one_line_with_its_field_named(
    demo: str, session: Any
) -> None:
    from deployments.cli import app

    result = CliRunner().invoke(
        app, ["inspection", "extra", "--customer", "BJYH", "--reason", "升级前" * 200]
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and "「加做原因」不能超过 400 个字" in lines[0], (
        result.output
    )
    unknown = CliRunner().invoke(
        app, ["inspection", "extra", "--customer", "不存在的客户", "--reason", "核心系统升级前"]
    )
    assert unknown.exit_code != 0 and "未知客户" in unknown.output
    assert nothing_written(session)


def test_a_problem_found_in_another_case_may_be_reported_at_that_cases_last_recorded_moment(
    demo: str, session: Any
) -> None:
    """A repair opened by an inspection or a 5-minute talk reports at the moment the other case
    recorded it (checked when it was answered): taken even when that moment lies after the entry
    time, as it does when time is moved by passing values; a typed time later than both is not."""
    from models import append_event

    request = {"customer": "BJYH", "site": "亦庄机房", "reported_by": "王先生", "description": "阵列告警"}
    parent = open_case(session, RepairRequest(**request), now=T0)
    later = T0 + timedelta(days=10)
    append_event(session, parent.id, "five_minute_talk", at=later, data={}, key="talk")
    session.flush()
    found = open_case(
        session,
        RepairRequest(**request, reported_at=later, parent_case_id=parent.id),
        now=later,
        entered_at=T0,
    )
    assert found.parent_id == parent.id and found.reported_at == later
    with pytest.raises(IntakeError, match="晚于当前时间"):
        open_case(session, RepairRequest(**request, reported_at=later), now=later, entered_at=T0)
    with pytest.raises(IntakeError, match="晚于当前时间"):
        open_case(
            session,
            RepairRequest(**request, reported_at=later + timedelta(hours=1), parent_case_id=parent.id),
            now=later,
            entered_at=T0,
        )
