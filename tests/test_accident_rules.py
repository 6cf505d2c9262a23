"""The accident procedure's pure rules: plan parts, the tolerated window, the standby rule, cadence."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rules import accident as rules
from tests.conftest import T0

GOOD_PLAN = {
    "measures": "切换到备用存储控制器",
    "steps": [{"action": "隔离故障控制器", "minutes": 20}, {"action": "切换并校验业务", "minutes": 40}],
    "expected_effect": "业务在 1 小时内恢复",
    "fallback": "切回原控制器并启用备机",
    "executor": "孙专家",
    "tools": ["笔记本", "串口线"],
    "spare_parts": ["控制器模块"],
}


def test_a_complete_plan_is_accepted_with_its_total_time():
    plan = rules.parse_plan(GOOD_PLAN)
    assert plan.total_minutes == 60
    assert plan.needs_testing is False


def test_a_plan_without_fallback_or_steps_names_the_missing_parts_in_chinese():
    bad = {**GOOD_PLAN, "fallback": "  ", "steps": []}
    with pytest.raises(rules.PlanError) as err:
        rules.parse_plan(bad)
    assert "回退方案" in str(err.value) and "实施步骤与时间" in str(err.value)


def test_the_window_is_the_case_setting_else_the_contract_else_the_default():
    assert rules.tolerance_hours(2, 8) == 2
    assert rules.tolerance_hours(None, 8) == 8
    assert rules.tolerance_hours(None, None) == rules.DEFAULT_TOLERANCE_HOURS


def test_the_window_expires_exactly_at_its_end():
    assert not rules.window_expired(T0, 8, T0 + timedelta(hours=7, minutes=59))
    assert rules.window_expired(T0, 8, T0 + timedelta(hours=8))


def test_standby_goes_out_at_half_the_restore_time():
    due = T0 + timedelta(hours=4)
    assert rules.standby_due_at(T0, due) == T0 + timedelta(hours=2)
    assert not rules.standby_needed(T0, due, T0 + timedelta(hours=1, minutes=59))
    assert rules.standby_needed(T0, due, T0 + timedelta(hours=2))


def test_one_report_per_full_interval():
    assert rules.periods_due(T0, T0 + timedelta(minutes=59), rules.UPDATE_INTERVAL) == []
    assert rules.periods_due(T0, T0 + timedelta(hours=30), rules.UPDATE_INTERVAL) == list(range(1, 31))
    assert rules.periods_due(T0, T0 - timedelta(hours=1), rules.UPDATE_INTERVAL) == []
    assert rules.period_at(T0, 3, rules.VENDOR_REPORT_INTERVAL) == T0 + timedelta(days=3)
