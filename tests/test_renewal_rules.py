"""The renewal's dates (rules/renewal.py) on the business calendar: the opening 60 days before the
end, the outreach, the 60 days' notice and the next term — across National Day 2026, Spring Festival
2027 (provisional: the 2027 notice is not in the packaged calendar), month ends, a leap day and a
contract ending on a weekend. Pure: no database, no clock (in the faketime list of .ci/run)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from rules import renewal as rules
from rules.calendar import Calendar, is_working_day


@pytest.mark.parametrize(
    ("end", "opens", "why"),
    [
        (date(2027, 1, 22), date(2026, 11, 23), "a Monday, 60 days before"),
        (
            date(2026, 12, 1),
            date(2026, 9, 30),
            "60 days before is 2 Oct (National Day): the last working day before",
        ),
        (date(2026, 12, 9), date(2026, 10, 10), "10 Oct 2026 is a Saturday worked in lieu (调休上班): kept"),
        (date(2026, 12, 6), date(2026, 9, 30), "7 Oct, the holiday's last day: back to 30 Sep"),
        (
            date(2027, 4, 8),
            date(2027, 2, 4),
            "7 Feb 2027, Spring Festival (provisional): back to Thursday 4 Feb",
        ),
        (date(2027, 4, 30), date(2027, 3, 1), "a month end: 60 calendar days, not two months"),
        (date(2027, 3, 1), date(2026, 12, 31), "the day after a February end of month: the year before"),
        (date(2028, 4, 29), date(2028, 2, 29), "a leap day, a Tuesday: kept"),
        (date(2027, 1, 31), date(2026, 12, 2), "a contract ending on a Sunday counts from its own end date"),
        (date(2027, 2, 28), date(2026, 12, 30), "60 days before a Sunday end falls on a Wednesday"),
    ],
)
def test_the_renewal_opens_60_days_before_the_end_never_later(end: date, opens: date, why: str) -> None:
    assert rules.open_day(end) == opens, why
    assert is_working_day(opens)
    assert (end - opens).days >= 60


def test_due_from_the_opening_day_to_the_end_and_never_for_a_past_term() -> None:
    start, end = date(2026, 1, 1), date(2026, 12, 1)
    assert not rules.due_to_open(date(2026, 9, 29), start, end)
    assert rules.due_to_open(date(2026, 9, 30), start, end)
    assert rules.due_to_open(date(2026, 10, 3), start, end)  # a planner down over the holiday catches up
    assert rules.due_to_open(end, start, end)
    assert not rules.due_to_open(date(2026, 12, 2), start, end)
    # a term shorter than 60 days opens on its first day, not before it exists
    assert not rules.due_to_open(date(2026, 10, 31), date(2026, 11, 1), date(2026, 12, 15))
    assert rules.due_to_open(date(2026, 11, 1), date(2026, 11, 1), date(2026, 12, 15))


def test_an_end_before_the_start_is_refused_with_a_clear_message() -> None:
    with pytest.raises(rules.RenewalDateError, match="早于开始日期"):
        rules.check_term(date(2027, 1, 1), date(2026, 12, 31))


def test_outreach_follows_up_weekly_on_working_days_escalates_and_reminds_before_the_end() -> None:
    # notice 2026-09-30 for a contract ending 2026-12-01: the first follow-up would fall on 7 Oct
    # (National Day) and goes out on the 8th; the escalation on 31 Oct (Sat) moves earlier, 16 Nov is a Monday
    plan = rules.outreach(date(2026, 9, 30), date(2026, 12, 1))
    by_key = {d.key: d for d in plan}
    assert by_key["follow-up-1"].day == date(2026, 10, 8)
    assert by_key["follow-up-2"].day == date(2026, 10, 14)
    assert by_key["escalate-30"].day == date(2026, 10, 30)
    assert by_key["escalate-15"].day == date(2026, 11, 16)
    assert by_key["remind-7"].day == date(2026, 11, 24)
    assert all(is_working_day(d.day) for d in plan if d.kind != rules.Outreach.LAPSE)
    assert all(d.day < date(2026, 12, 1) for d in plan if d.kind != rules.Outreach.LAPSE)
    # at 10:00 Beijing time (quiet hours are the notifier's; these are working hours anyway)
    assert by_key["follow-up-1"].at == datetime(2026, 10, 8, 2, 0, tzinfo=UTC)
    # the lapse is the first moment after the end: midnight of the next local day
    assert plan[-1].key == "lapse" and plan[-1].at == datetime(2026, 12, 1, 16, 0, tzinfo=UTC)
    assert [d.at for d in plan] == sorted(d.at for d in plan)


def test_outreach_across_spring_festival_2027_is_marked_provisional() -> None:
    plan = rules.outreach(date(2027, 1, 25), date(2027, 3, 26))
    by_key = {d.key: d for d in plan}
    # 1 Feb + 7 = 8 Feb 2027, a Spring Festival day (statutory, provisional): the next working day
    assert by_key["follow-up-2"].day == date(2027, 2, 9)
    assert by_key["follow-up-2"].provisional
    assert by_key["escalate-30"].day == date(2027, 2, 24)


def test_an_operator_override_moves_the_dates() -> None:
    # the operator enters 2027-02-09 as a day off (the notice may extend the festival)
    cal = Calendar(overrides={date(2027, 2, 9): False})
    plan = {d.key: d for d in rules.outreach(date(2027, 1, 25), date(2027, 3, 26), cal)}
    assert plan["follow-up-2"].day == date(2027, 2, 10)
    # 60 days before 10 Apr 2027 is 9 Feb: a working day by the statutory days, a day off by the override
    assert rules.open_day(date(2027, 4, 10)) == date(2027, 2, 9)
    assert rules.open_day(date(2027, 4, 10), cal) == date(2027, 2, 4)


def test_written_notice_to_end_is_in_time_up_to_60_days_before() -> None:
    end = date(2027, 1, 22)
    assert rules.notice_deadline(end) == date(2026, 11, 23)
    assert rules.notice_in_time(date(2026, 11, 23), end)
    assert not rules.notice_in_time(date(2026, 11, 24), end)


@pytest.mark.parametrize(
    ("previous_end", "months", "term"),
    [
        (date(2026, 12, 31), 12, (date(2027, 1, 1), date(2027, 12, 31))),
        (date(2027, 1, 22), 12, (date(2027, 1, 23), date(2028, 1, 22))),
        (date(2028, 2, 28), 12, (date(2028, 2, 29), date(2029, 2, 28))),  # from a leap day
        (date(2027, 1, 30), 1, (date(2027, 1, 31), date(2027, 2, 28))),  # from the 31st
        (date(2027, 2, 28), 24, (date(2027, 3, 1), date(2029, 2, 28))),
    ],
)
def test_the_next_term_follows_the_previous_end(
    previous_end: date, months: int, term: tuple[date, date]
) -> None:
    assert rules.next_term(previous_end, months) == term


def test_a_term_of_no_months_is_refused() -> None:
    with pytest.raises(rules.RenewalDateError, match="1–120"):
        rules.next_term(date(2026, 12, 31), 0)


@pytest.mark.parametrize(
    ("moment", "ok", "why"),
    [
        (datetime(2026, 11, 30, 2, tzinfo=UTC), True, "Monday 10:00 Beijing"),
        (datetime(2026, 11, 30, 12, tzinfo=UTC), False, "Monday 20:00 Beijing: after hours"),
        (datetime(2026, 11, 30, 18, tzinfo=UTC), False, "Tuesday 02:00 Beijing: the night"),
        (datetime(2026, 11, 30, 0, 59, tzinfo=UTC), False, "Monday 08:59 Beijing: before hours"),
        (datetime(2026, 12, 5, 2, tzinfo=UTC), False, "a Saturday morning"),
        (datetime(2026, 10, 2, 2, tzinfo=UTC), False, "National Day 2026"),
        (datetime(2026, 10, 10, 2, tzinfo=UTC), True, "Saturday 10 Oct 2026 worked in lieu"),
    ],
)
def test_outreach_goes_out_only_in_working_hours_of_a_working_day(
    moment: datetime, ok: bool, why: str
) -> None:
    assert rules.sendable_at(moment) is ok, why


def test_every_follow_up_of_a_renewal_falls_in_working_hours_across_national_day_and_spring_festival() -> (
    None
):
    for notice_day, end in ((date(2026, 9, 4), date(2026, 11, 3)), (date(2026, 12, 30), date(2027, 2, 28))):
        for due in rules.outreach(notice_day, end):
            if due.kind != rules.Outreach.LAPSE:
                assert rules.sendable_at(due.at), due
