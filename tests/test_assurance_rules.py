"""The pure rules of major-event assurance (rules/assurance.py): the period in the business time
zone, the 3-week notice, the severity raise, the duty roster's lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rules import assurance as rules

TZ = "Asia/Shanghai"


def test_a_period_of_whole_days_runs_from_beijing_midnight_to_midnight_after_its_last_day() -> None:
    start, end = rules.period_bounds("2026-12-20", "2026-12-27", TZ)
    assert start == datetime(2026, 12, 19, 16, 0, tzinfo=UTC)
    assert end == datetime(2026, 12, 27, 16, 0, tzinfo=UTC)
    start, end = rules.period_bounds("2026-12-20 08:00", "2026-12-20 20:00", TZ)
    assert (start.hour, end.hour) == (0, 12)


@pytest.mark.parametrize(
    ("starts", "ends", "why"),
    [
        ("2026-12-27", "2026-12-20", "须晚于开始"),
        ("2026-12-20", "2027-06-20", "不能超过 92 天"),
        ("12月20日", "2026-12-27", "无法识别的时间"),
        ("", "2026-12-27", "请填写"),
    ],
)
def test_a_period_that_is_none_is_refused_with_the_reason(starts: str, ends: str, why: str) -> None:
    with pytest.raises(rules.AssuranceError, match=why):
        rules.period_bounds(starts, ends, TZ)


def test_three_weeks_ahead_is_enough_a_minute_less_is_flagged() -> None:
    start = datetime(2026, 12, 19, 16, 0, tzinfo=UTC)
    assert not rules.notice_short(start - timedelta(weeks=3), start)
    assert rules.notice_short(start - timedelta(weeks=3) + timedelta(minutes=1), start)


def test_the_period_covers_its_customer_and_site_half_open() -> None:
    start, end = rules.period_bounds("2026-12-20", "2026-12-27", TZ)
    whole = rules.Period("BZ-000001", 1, customer_id=7, site_id=None, start=start, end=end)
    one = rules.Period("BZ-000002", 2, customer_id=7, site_id=3, start=start, end=end)
    assert whole.covers(7, 99, start) and not whole.covers(7, 99, end)
    assert not whole.covers(7, 99, start - timedelta(seconds=1)) and whole.covers(
        7, 99, end - timedelta(seconds=1)
    )
    assert not whole.covers(8, 3, start)
    assert one.covers(7, 3, start) and not one.covers(7, 4, start)
    assert rules.covering([one, whole], 7, 4, start) is whole
    assert [rules.raised_severity(s) for s in (4, 3, 2, 1)] == [3, 2, 1, 1]


def test_a_roster_line_must_name_a_person_a_phone_and_a_shift() -> None:
    shifts = rules.parse_roster(
        "张技术 | 13800000003 | 2026-12-20 | 2026-12-20 12:00\n\n李工，010-88886666，2026-12-20 12:00，2026-12-21",
        TZ,
    )
    assert [(s.name, s.hours) for s in shifts] == [
        ("张技术", 12.0),
        ("李工", 36.0),
    ]  # a day alone ends at its 24:00
    for bad, why in [
        ("张技术 | 13800000003 | 2026-12-20", "第 1 行应为"),
        ("张技术 | 1234 | 2026-12-20 | 2026-12-21", "不是有效的手机或座机号码"),
        ("张技术 | 13800000003 | 2026-12-21 | 2026-12-20 08:00", "结束须晚于开始"),
        ("", "至少要有一个班次"),
    ]:
        with pytest.raises(rules.AssuranceError, match=why):
            rules.parse_roster(bad, TZ)


def test_the_roster_is_checked_against_the_period_and_the_staff_and_its_gaps_are_shown() -> None:
    start, end = rules.period_bounds("2026-12-20", "2026-12-21", TZ)
    shifts = rules.parse_roster(
        "张技术 | 13800000003 | 2026-12-20 08:00 | 2026-12-20 20:00\n"
        "王某 | 13800000009 | 2026-12-21 20:00 | 2026-12-22 08:00",
        TZ,
    )
    problems = rules.roster_problems(shifts, start, end, ["张技术"], TZ)
    assert len(problems) == 2 and "超出保障期" in problems[0] and "“王某”不是在职员工" in problems[1]
    gaps = rules.roster_gaps(shifts[:1], start, end)
    assert [(a.hour, b.hour) for a, b in gaps] == [(16, 0), (12, 16)]  # UTC: 00:00–08:00, 20:00–24:00 Beijing


def test_the_assurance_run_form_is_validated_and_its_values_are_taken(demo: str) -> None:
    from prefect.utilities.schema_tools import validate

    from tasks.assurance import AssuranceRequest, open_assurance_case
    from tests.test_run_forms import CUSTOMERS, form_of, schema_of

    form = form_of("assurance")
    assert form["properties"]["customer"]["enum"] == CUSTOMERS
    assert form["properties"]["starts"]["title"] == "保障开始"
    sent = {
        "customer": CUSTOMERS[0],
        "site": "",
        "event": "春节保障",
        "starts": "2027-02-05",
        "ends": "2027-02-12 18:00",
        "requested_by": "北京维护负责人",
        "requested_at": "",
        "onsite": False,
        "requirements": "",
    }
    assert validate({"request": sent}, schema_of("assurance"), raise_on_error=False) == []
    assert validate({"request": {**sent, "event": ""}}, schema_of("assurance"), raise_on_error=False)
    taken = AssuranceRequest.model_validate(sent)
    assert (taken.site, taken.requested_at, taken.onsite) == (None, None, False)
    opened = open_assurance_case(taken, now=datetime(2026, 11, 23, 2, 0, tzinfo=UTC))
    assert not opened["late"] and opened["number"].startswith("BZ-")
    assert opened["end"] == datetime(2027, 2, 12, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="无法识别的时间"):
        AssuranceRequest.model_validate({**sent, "requested_at": "昨天"})
