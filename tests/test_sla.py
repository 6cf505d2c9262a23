"""SLA deadlines for every clock of the table, per contract policy, both severity schemes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from rules.calendar import build_calendar
from rules.sla import (
    DEFAULT_POLICY,
    ClockKind,
    PolicyError,
    deadline,
    ladder,
    merge_policy,
    policy_for,
    severity_choices,
    severity_label,
    stale_at,
)

SH = ZoneInfo("Asia/Shanghai")
MON_10 = datetime(2026, 11, 23, 10, 0, tzinfo=SH)
FRI_16 = datetime(2026, 11, 27, 16, 0, tzinfo=SH)
NEAR = SimpleNamespace(distance_km=5.0, same_city=True)
MID = SimpleNamespace(distance_km=120.0, same_city=False)
FAR = SimpleNamespace(distance_km=480.0, same_city=False)


def due(clock: str, sev: int, start: datetime = MON_10, policy=None, site=None) -> datetime:  # type: ignore[no-untyped-def]
    d = deadline(policy, clock, sev, start, site=site)
    assert d is not None
    return d.at.astimezone(SH)


def test_default_table_for_every_clock_7x24() -> None:
    assert set(DEFAULT_POLICY["clocks"]) == {k.value for k in ClockKind}
    assert due("first_contact", 3) - MON_10 == timedelta(minutes=30)
    assert [due("remote_response", s) - MON_10 for s in (1, 2, 3, 4)] == [
        timedelta(minutes=m) for m in (5, 5, 10, 60)
    ]
    assert due("workaround", 3) - MON_10 == timedelta(minutes=60)
    assert deadline(None, "workaround", 4, MON_10) is None  # "none" for severity 4
    assert due("arrival", 1, site=NEAR) - MON_10 == timedelta(minutes=30)
    assert due("arrival", 1, site=MID) - MON_10 == timedelta(hours=3)
    assert due("arrival", 1, site=FAR) - MON_10 == timedelta(hours=5)
    assert due("spare_part", 2) - MON_10 == timedelta(hours=4)
    assert [due("restore", s) - MON_10 for s in (1, 3)] == [timedelta(hours=4), timedelta(hours=24)]
    assert due("fault_report", 2) - MON_10 == timedelta(hours=24)
    assert due("callback", 2) - MON_10 == timedelta(days=2)
    assert due("written_account", 2) - MON_10 == timedelta(weeks=1)
    assert due("complaint_answer", 2) - MON_10 == timedelta(hours=2)
    assert due("complaint_close", 2) - MON_10 == timedelta(days=15)
    # the analysis report is due 1 working day after the restore, same time of day
    assert due("analysis_report", 2, start=FRI_16) == datetime(2026, 11, 30, 16, 0, tzinfo=SH)
    assert due("analysis_report", 2, start=datetime(2026, 9, 30, 15, 0, tzinfo=SH)) == datetime(
        2026, 10, 8, 15, 0, tzinfo=SH
    )


def test_5x8_contract_counts_working_hours_and_deadline_says_how() -> None:
    policy = merge_policy({}, service_hours="5x8")
    d = deadline(policy, "restore", 1, FRI_16)
    assert d is not None and d.at == datetime(2026, 11, 30, 11, 0, tzinfo=SH).astimezone(UTC)
    assert d.basis == "4 小时（5x8 工作时间）" and not d.provisional and d.warning is None
    # callback is 2 calendar days whatever the hours
    assert due("callback", 3, start=FRI_16, policy=policy) == FRI_16 + timedelta(days=2)


def test_contract_overrides_merge_over_defaults_and_003_arrival_variant() -> None:
    contract = SimpleNamespace(
        sla_policy={
            "clocks": {"arrival": {"hours": [2, 2, 4, 4]}, "restore": {"hours": 8}},
            "working_hours": {"lunch": ["12:00", "13:00"]},
        },
        service_hours="5x8",
    )
    policy = policy_for(contract)
    assert due("arrival", 1, policy=policy, site=FAR) - MON_10 == timedelta(hours=2)
    assert due("arrival", 3, policy=policy, site=NEAR) - MON_10 == timedelta(hours=5)  # 4 h + the lunch hour
    assert due("restore", 4, policy=policy) == datetime(2026, 11, 24, 10, 0, tzinfo=SH)  # 8 working hours
    assert due("first_contact", 1, policy=policy) - MON_10 == timedelta(minutes=30)  # untouched default


def test_2027_deadline_is_computed_provisionally_and_flagged() -> None:
    policy = merge_policy({}, service_hours="5x8")
    d = deadline(policy, "restore", 3, datetime(2027, 9, 30, 16, 0, tzinfo=SH))
    assert d is not None and d.provisional and "provisional" in (d.warning or "")
    # Oct 1-3 2027 are the statutory days off; Oct 4-5 estimated working days; 24 working hours → Oct 6 13:00
    assert d.at == datetime(2027, 10, 6, 13, 0, tzinfo=SH).astimezone(UTC)
    wd = deadline(None, "analysis_report", 3, datetime(2027, 9, 30, 16, 0, tzinfo=SH))
    assert (
        wd is not None and wd.provisional and wd.at == datetime(2027, 10, 4, 16, 0, tzinfo=SH).astimezone(UTC)
    )
    # a pure wall-clock deadline does not depend on the calendar: not provisional
    wall = deadline(None, "restore", 1, datetime(2027, 3, 3, 10, 0, tzinfo=SH))
    assert wall is not None and not wall.provisional
    # once the operator confirms 2027 (overrides entered), it is no longer provisional
    confirmed = build_calendar([], confirmed_years=[2027])
    assert not deadline(
        policy, "restore", 3, datetime(2027, 9, 30, 16, 0, tzinfo=SH), calendar=confirmed
    ).provisional  # type: ignore[union-attr]


def test_escalation_ladder_times_7x24_and_5x8() -> None:
    steps = ladder(merge_policy(), "restore", MON_10)
    assert [(lv, at.astimezone(SH)) for lv, at, _ in steps] == [
        (1, MON_10),
        (2, MON_10 + timedelta(hours=2)),
        (3, MON_10 + timedelta(hours=4)),
        (4, MON_10 + timedelta(days=1)),
    ]
    five = ladder(merge_policy({}, service_hours="5x8"), "restore", FRI_16)
    assert [at.astimezone(SH) for _, at, _ in five] == [
        FRI_16,
        datetime(2026, 11, 27, 18, 0, tzinfo=SH),
        datetime(2026, 11, 30, 11, 0, tzinfo=SH),
        datetime(2026, 11, 30, 16, 0, tzinfo=SH),
    ]
    assert ladder(merge_policy(), "callback", MON_10) == []


def test_5x8_working_days_after_a_weekend_start_end_at_the_close_of_business_after_l2_and_l3() -> None:
    policy = merge_policy({}, service_hours="5x8")
    sat_10 = datetime(2026, 11, 28, 10, 0, tzinfo=SH)
    steps = ladder(policy, "restore", sat_10)
    assert [(lv, at.astimezone(SH)) for lv, at, _ in steps] == [
        (1, sat_10),  # level 1 is entered at intake, whenever that is
        (2, datetime(2026, 11, 30, 11, 0, tzinfo=SH)),
        (3, datetime(2026, 11, 30, 13, 0, tzinfo=SH)),
        (
            4,
            datetime(2026, 11, 30, 18, 0, tzinfo=SH),
        ),  # 1 working day = Monday's 9 working hours, not Mon 10:00
    ]
    assert due("analysis_report", 2, start=sat_10, policy=policy) == datetime(2026, 11, 30, 18, 0, tzinfo=SH)


def test_5x8_working_days_after_hours_never_escalate_at_midnight() -> None:
    policy = merge_policy({}, service_hours="5x8")
    fri_2330 = datetime(2026, 11, 27, 23, 30, tzinfo=SH)
    times = [at.astimezone(SH) for _, at, _ in ladder(policy, "restore", fri_2330)]
    assert times[1:] == [
        datetime(2026, 11, 30, 11, 0, tzinfo=SH),
        datetime(2026, 11, 30, 13, 0, tzinfo=SH),
        datetime(2026, 11, 30, 18, 0, tzinfo=SH),
    ]  # was Monday 23:30
    assert times == sorted(times)
    assert due("analysis_report", 1, start=fri_2330, policy=policy) == datetime(
        2026, 11, 30, 18, 0, tzinfo=SH
    )
    # within working hours N working days still land at the same time of day (lunch not counted)
    lunch = merge_policy(
        {"working_hours": {"lunch": ["12:00", "13:00"]}, "clocks": {"analysis_report": {"working_days": 2}}},
        service_hours="5x8",
    )
    wed_10 = datetime(2026, 11, 25, 10, 0, tzinfo=SH)
    assert due("analysis_report", 1, start=wed_10, policy=lunch) == datetime(2026, 11, 27, 10, 0, tzinfo=SH)
    # across National Day 2026 (Oct 1–7 off, Saturday Oct 10 a make-up working day)
    assert due(
        "analysis_report", 1, start=datetime(2026, 9, 30, 20, 0, tzinfo=SH), policy=policy
    ) == datetime(2026, 10, 8, 18, 0, tzinfo=SH)


def test_ladder_levels_never_go_back_in_time_whatever_units_a_contract_mixes() -> None:
    policy = merge_policy(
        {
            "escalation": {
                "ladder": [
                    {"level": 1, "minutes": 0},
                    {"level": 2, "hours": 2},
                    {"level": 3, "hours": 30},
                    {"level": 4, "working_days": 1},
                ]
            }
        }
    )
    steps = ladder(policy, "restore", MON_10)
    assert [lv for lv, _, _ in steps] == [1, 2, 3, 4]
    assert [at.astimezone(SH) for _, at, _ in steps][2:] == [
        MON_10 + timedelta(hours=30)
    ] * 2  # L4 waits for L3
    for hours in ("5x8", "7x24"):
        for start in (
            MON_10,
            datetime(2026, 11, 28, 10, 0, tzinfo=SH),
            datetime(2026, 11, 27, 23, 30, tzinfo=SH),
        ):
            times = [at for _, at, _ in ladder(merge_policy({}, service_hours=hours), "restore", start)]
            assert times == sorted(times), (hours, start)


def test_stale_limit_is_working_time_on_5x8_and_wall_clock_on_7x24() -> None:
    fri_17 = datetime(2026, 11, 27, 17, 0, tzinfo=SH)
    # 24 working hours: Friday 1 h, Monday 9 h, Tuesday 9 h, Wednesday 5 h
    assert stale_at(merge_policy({}, service_hours="5x8"), fri_17).astimezone(SH) == datetime(
        2026, 12, 2, 14, 0, tzinfo=SH
    )
    assert stale_at(merge_policy(), fri_17).astimezone(SH) == fri_17 + timedelta(hours=24)
    # calendar days stay calendar days
    days = merge_policy({"escalation": {"stale_after": {"days": 2}}}, service_hours="5x8")
    assert stale_at(days, fri_17).astimezone(SH) == fri_17 + timedelta(days=2)


def test_severity_schemes_have_zh_labels() -> None:
    assert severity_label("outage", 1) == "特大故障"
    assert severity_label("business", 2) == "二级（严重）"
    assert [c[0] for c in severity_choices("business")] == [1, 2, 3, 4]
    with pytest.raises(PolicyError, match="unknown severity"):
        severity_label("outage", 5)
    with pytest.raises(PolicyError, match="scheme"):
        severity_choices("colours")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"service_hours": "24x7"}, "7x24 or 5x8"),
        ({"clocks": {"restore": {"hours": [4, 4]}}}, "one value or four"),
        ({"clocks": {"restore": {"hours": 4, "minutes": 3}}}, "exactly one"),
        ({"clocks": {"restore": {"hours": -1}}}, "non-negative"),
        ({"working_hours": {"start": "nine"}}, "HH:MM"),
    ],
)
def test_bad_policies_are_refused_with_a_reason(overrides: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(PolicyError, match=message):
        merge_policy(overrides)


def test_bad_calls_are_refused_with_a_reason() -> None:
    with pytest.raises(PolicyError, match="severity must be 1–4"):
        deadline(None, "restore", 0, MON_10)
    with pytest.raises(PolicyError, match="unknown clock"):
        deadline(None, "coffee", 1, MON_10)
    with pytest.raises(PolicyError, match="needs the site"):
        deadline(None, "arrival", 1, MON_10)
    with pytest.raises(PolicyError, match="beyond the farthest"):
        deadline(None, "arrival", 1, MON_10, site=SimpleNamespace(distance_km=900.0, same_city=False))
    with pytest.raises(PolicyError, match="aware"):
        deadline(None, "restore", 1, datetime(2026, 11, 23, 10, 0))
