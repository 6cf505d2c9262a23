"""SLA clock rows: start from the case's contract, pause while waiting for the customer, resume with
the deadline moved on, stop met or breached — and the same figure recomputed from the event log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from models import Case, Event
from models.clocks import Clock, ClockStatus, Escalation
from models.db import session_scope
from tasks.clocks import (
    ClockError,
    fire_due_clocks,
    pause_clock,
    recompute_clock,
    resume_clock,
    start_clock,
    stop_clock,
)

SH = ZoneInfo("Asia/Shanghai")


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH).astimezone(UTC)  # type: ignore[misc]


def new_case(session: Session, customer_id: int, severity: int, at: datetime) -> int:
    """A repair case of a demo customer (1: 7x24 contract, 2: 5x8 contract), as the intake writes it."""
    case = Case(
        kind="repair",
        customer_id=customer_id,
        site_id=customer_id if customer_id == 1 else 3,
        contract_id=customer_id,
        severity=severity,
        title="存储控制器故障",
        reported_at=at,
        created_at=at,
        updated_at=at,
    )
    session.add(case)
    session.commit()
    assert case.id is not None
    return case.id


def test_5x8_clock_starts_from_the_case_contract_and_is_idempotent(demo: str) -> None:
    start = sh(2026, 11, 27, 16, 0)  # Friday
    with session_scope() as s:
        case_id = new_case(s, 2, 1, start)
        clock = start_clock(s, case_id, "restore", started_at=start, severity=1)
        again = start_clock(s, case_id, "restore", started_at=start + timedelta(hours=1), severity=1)
        assert again.id == clock.id
        assert clock.due_at == sh(2026, 11, 30, 11, 0)  # stops 18:00 Friday, restarts Monday 09:00
        assert clock.basis == "4 小时（5x8 工作时间）"
        assert clock.next_check_at == start  # level 1 of the ladder is entered at intake
        events = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "clock.started")).all()
        assert len(events) == 1 and events[0].data["due_at"] == clock.due_at.isoformat()  # type: ignore[union-attr]


def test_paused_clock_neither_breaches_nor_escalates_and_resumes_with_deadline_moved(demo: str) -> None:
    t0 = sh(2026, 11, 23, 10, 0)  # Monday, 7x24 contract: restore due 14:00
    with session_scope() as s:
        case_id = new_case(s, 1, 1, t0)
        start_clock(s, case_id, "restore", started_at=t0, severity=1)
    assert fire_due_clocks(t0 + timedelta(minutes=1)) == 1  # level 1
    with session_scope() as s:
        pause_clock(s, case_id, "restore", at=t0 + timedelta(hours=1), reason="等待客户提供停机窗口")
    # long past the original deadline and level 2: nothing fires while paused
    assert fire_due_clocks(t0 + timedelta(hours=5)) == 0
    with session_scope() as s:
        clock = resume_clock(s, case_id, "restore", at=t0 + timedelta(hours=3), reason="客户已确认窗口")
        assert clock.due_at == t0 + timedelta(hours=6)  # 3 h were left at the pause
        assert [lv for lv, _ in clock.ladder] == [1, 2, 3, 4]
        assert clock.ladder[1][1] == (t0 + timedelta(hours=4)).isoformat()  # level 2: 1 h left at the pause
    assert fire_due_clocks(t0 + timedelta(hours=4, minutes=30)) == 1  # level 2 only
    with session_scope() as s:
        stopped = stop_clock(s, case_id, "restore", at=t0 + timedelta(hours=5, minutes=45))
        assert stopped is not None and stopped.met_at is not None and stopped.breached_at is None
        figure = recompute_clock(s, case_id, "restore")
        assert figure["met"] is True and figure["breached"] is False
        assert figure["elapsed"] == timedelta(hours=3, minutes=45)  # 5 h 45 min minus the 2 h pause
        assert figure["due_at"] == stopped.due_at
        levels = s.exec(
            select(Escalation.level).where(Escalation.case_id == case_id).order_by(Escalation.id)
        ).all()
        assert levels == [1, 2]
    assert fire_due_clocks(t0 + timedelta(days=3)) == 0  # stopped in time: nothing more, ever


def test_5x8_pause_is_measured_in_working_time(demo: str) -> None:
    start = sh(2026, 11, 27, 15, 0)  # Friday 15:00, due Monday 10:00 (3 h Friday + 1 h Monday)
    with session_scope() as s:
        case_id = new_case(s, 2, 2, start)
        clock = start_clock(s, case_id, "restore", started_at=start, severity=2)
        assert clock.due_at == sh(2026, 11, 30, 10, 0)
        pause_clock(
            s, case_id, "restore", at=sh(2026, 11, 27, 17, 0), reason="等待客户"
        )  # 2 working hours left
        clock = resume_clock(s, case_id, "restore", at=sh(2026, 11, 30, 17, 0))  # Monday 17:00
        assert clock.due_at == sh(2026, 12, 1, 10, 0)  # 1 h Monday + 1 h Tuesday
        stopped = stop_clock(s, case_id, "restore", at=sh(2026, 12, 1, 9, 30))
        assert stopped is not None and stopped.met_at is not None
        figure = recompute_clock(s, case_id, "restore")
        assert figure["elapsed"] == timedelta(hours=3, minutes=30)  # 2 h Friday + 1 h Monday + 0.5 h Tuesday


def test_late_stop_is_breached_and_keeper_still_fires_the_breach_once(demo: str) -> None:
    t0 = sh(2026, 11, 23, 10, 0)
    with session_scope() as s:
        case_id = new_case(s, 1, 3, t0)
        start_clock(s, case_id, "first_contact", started_at=t0, severity=3)  # due 10:30
        stopped = stop_clock(s, case_id, "first_contact", at=t0 + timedelta(minutes=45))
        assert (
            stopped is not None
            and stopped.breached_at == t0 + timedelta(minutes=30)
            and stopped.met_at is None
        )
        assert stopped.status == ClockStatus.STOPPED
        assert recompute_clock(s, case_id, "first_contact")["met"] is False
        assert stop_clock(s, case_id, "callback", at=t0) is None  # never started
    assert fire_due_clocks(t0 + timedelta(hours=1)) == 1
    assert fire_due_clocks(t0 + timedelta(hours=2)) == 0
    with session_scope() as s:
        clock = s.exec(select(Clock).where(Clock.case_id == case_id)).one()
        assert clock.next_check_at is None


def test_clock_errors_are_clear(demo: str) -> None:
    t0 = sh(2026, 11, 23, 10, 0)
    with session_scope() as s:
        case_id = new_case(s, 1, 3, t0)
        with pytest.raises(ClockError, match="unknown clock"):
            start_clock(s, case_id, "lunch", started_at=t0, severity=3)
        with pytest.raises(ClockError, match="not running"):
            pause_clock(s, case_id, "restore", at=t0, reason="x")
        start_clock(s, case_id, "restore", started_at=t0, severity=3)
        with pytest.raises(ClockError, match="not paused"):
            resume_clock(s, case_id, "callback", at=t0)
        pause_clock(s, case_id, "restore", at=t0 + timedelta(hours=1), reason="等待客户")
        with pytest.raises(ClockError, match="before the pause"):
            resume_clock(s, case_id, "restore", at=t0)
        with pytest.raises(ClockError, match="no case"):
            start_clock(s, 99999, "restore", started_at=t0, severity=3)


def test_pause_that_moves_a_deadline_into_an_unofficial_year_flags_it_and_the_report_says_so(
    demo: str,
) -> None:
    from tasks.render import render
    from tasks.reports import clock_summary, timeline

    start = sh(2026, 12, 28, 10, 0)  # Monday, 5x8: restore due 14:00, level 4 Tuesday 10:00 — all in 2026
    with session_scope() as s:
        case_id = new_case(s, 2, 1, start)
        clock = start_clock(s, case_id, "restore", started_at=start, severity=1)
        assert clock.due_at == sh(2026, 12, 28, 14, 0) and not clock.provisional
        pause_clock(s, case_id, "restore", at=sh(2026, 12, 28, 11, 0), reason="等待客户")  # 3 h left
        clock = resume_clock(s, case_id, "restore", at=sh(2026, 12, 31, 17, 0))
        # 1 h on Dec 31, then 2027 (no official calendar yet): Jan 1 a statutory holiday, Monday Jan 4
        assert clock.due_at == sh(2027, 1, 4, 11, 0) and clock.provisional
        resumed = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "clock.resumed")).one()
        assert resumed.data["provisional"] is True and resumed.data["warning"]
        rows = clock_summary(s, case_id)
        assert rows[0]["provisional"] is True
        html = render("common/_times", times=timeline(s, case_id), clocks=rows)
        assert "（暂定：该年节假日安排未正式公布）" in html


def test_pause_within_official_data_keeps_a_clock_firm_and_the_report_unmarked(demo: str) -> None:
    from tasks.render import render
    from tasks.reports import clock_summary, timeline

    start = sh(2026, 12, 28, 10, 0)
    with session_scope() as s:
        case_id = new_case(s, 1, 1, start)  # 7x24
        start_clock(s, case_id, "restore", started_at=start, severity=1)
        pause_clock(s, case_id, "restore", at=sh(2026, 12, 28, 11, 0), reason="等待客户")
        clock = resume_clock(s, case_id, "restore", at=sh(2026, 12, 30, 10, 0))
        # due and level 4 (1 working day, moved by the pause to Dec 31 10:00) stay within 2026's official data
        assert clock.due_at == sh(2026, 12, 30, 13, 0) and not clock.provisional
        html = render("common/_times", times=timeline(s, case_id), clocks=clock_summary(s, case_id))
        assert "暂定" not in html


def test_confirming_a_year_lays_running_deadlines_again_on_the_official_days(demo: str) -> None:
    """A deadline laid on 2027's estimate moves when the State Council's notice makes its day a
    holiday; a level already reached stays reached; the case history says why."""
    from datetime import date

    from models import Event
    from tasks.clocks import confirm_year, set_calendar_day

    start = sh(2027, 3, 5, 16, 0)  # Friday 16:00, 5x8: 2 working hours that day, the rest on Monday
    with session_scope() as s:
        case_id = new_case(s, 2, 1, start)
        clock = start_clock(s, case_id, "restore", started_at=start, severity=1)
        before = clock.due_at
        assert clock.provisional and before is not None and before.astimezone(SH).date() == date(2027, 3, 8)
        # the notice (hypothetical here) gives Monday 8 March off: the deadline moves to Tuesday, same hour
        set_calendar_day(s, date(2027, 3, 8), False, note="国务院通知：放假", now=start)
        confirm_year(s, 2027, note="国办发明电〔2026〕号", now=sh(2027, 3, 6, 9, 0))
        s.refresh(clock)
        assert clock.due_at == before + timedelta(days=1) and not clock.provisional
        [relaid] = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "clock.relaid")).all()
        assert relaid.data["due_at_before"] == before.isoformat() and "国务院" in relaid.data["reason"]
        assert clock.next_check_at is not None and clock.next_check_at <= clock.due_at


def test_confirming_a_year_judges_stopped_clocks_again_on_the_official_days(demo: str) -> None:
    """A repair restored on Monday 12:00 missed a deadline laid on the estimate (Monday 11:00); the
    notice makes that Monday a holiday, the deadline becomes Tuesday 11:00: it was met after all. A
    clock closed with its case at the same moment is no longer breached, and still not met."""
    from datetime import date

    from models import Event
    from tasks.clocks import close_clocks, confirm_year, set_calendar_day, stop_clock

    start = sh(2027, 3, 5, 16, 0)  # Friday 16:00, 5x8
    with session_scope() as s:
        restored, handed_over = new_case(s, 2, 1, start), new_case(s, 2, 1, start)
        for case_id in (restored, handed_over):
            estimate = start_clock(s, case_id, "restore", started_at=start, severity=1).due_at
        assert estimate is not None
        late = estimate + timedelta(hours=1)
        done = stop_clock(s, restored, "restore", at=late)
        close_clocks(s, handed_over, at=late, reason="handed_over")
        closed = s.exec(select(Clock).where(Clock.case_id == handed_over)).one()
        assert done is not None and done.breached_at == estimate and done.met_at is None
        assert closed.breached_at == estimate and closed.met_at is None

        set_calendar_day(s, estimate.astimezone(SH).date(), False, note="国务院通知：放假", now=late)
        assert estimate.astimezone(SH).date() == date(2027, 3, 8)
        confirm_year(s, 2027, note="国办发明电〔2026〕号", now=sh(2027, 3, 9, 9, 0))
        s.refresh(done)
        s.refresh(closed)
        assert done.due_at == estimate + timedelta(days=1)
        assert done.met_at == late and done.breached_at is None and not done.provisional
        assert closed.met_at is None and closed.breached_at is None
        verdicts = {
            e.case_id: (e.data["verdict_before"], e.data["verdict"])
            for e in s.exec(select(Event).where(Event.kind == "clock.relaid"))
        }
        assert verdicts == {restored: ("breached", "met"), handed_over: ("breached", "stopped")}
        from tasks.accident import event_text

        relaid = s.exec(select(Event).where(Event.kind == "clock.relaid", Event.case_id == restored)).one()
        assert event_text(relaid.kind, relaid.data).endswith("判定改为按时完成")
        # the keeper still owes only the ladder steps that fell before the stop — not the old breach
        assert done.next_check_at is not None and done.next_check_at < late


def test_confirming_a_year_clears_the_provisional_flag_of_its_clocks(demo: str) -> None:
    from datetime import date

    from tasks.clocks import confirm_year, set_calendar_day

    start = sh(2027, 3, 1, 10, 0)  # Monday 2027, 5x8: computed from statutory holidays only
    with session_scope() as s:
        case_id = new_case(s, 2, 1, start)
        clock = start_clock(s, case_id, "restore", started_at=start, severity=1)
        other = new_case(s, 2, 1, start)
        analysis = start_clock(s, other, "analysis_report", started_at=sh(2027, 12, 31, 10, 0), severity=1)
        assert clock.provisional and analysis.provisional  # the latter runs into 2028
        set_calendar_day(s, date(2027, 2, 20), True, note="国务院通知：春节调休上班", now=start)
        confirm_year(s, 2027, note="国办发明电〔2026〕号", now=start)
        s.refresh(clock)
        s.refresh(analysis)
        assert not clock.provisional
        assert analysis.provisional  # still rests on 2028, which nobody confirmed


def test_workaround_and_fault_analysis_clocks_on_both_calendars(demo: str) -> None:
    """Issue 22 items 1–2: the workaround clock (30/30/60 min, none for level 4) counts working time
    on 5x8; the fault-analysis clock (1 working day from the restore) keeps the time of day on 7x24
    and runs to the close of the next working day after hours on 5x8."""
    from tasks.cases import clock as case_clock

    fri_1745, fri_20 = sh(2026, 11, 27, 17, 45), sh(2026, 11, 27, 20, 0)
    with session_scope() as s:
        round_the_clock, office = new_case(s, 1, 1, fri_1745), new_case(s, 2, 1, fri_1745)
        assert start_clock(s, round_the_clock, "workaround", started_at=fri_1745, severity=1).due_at == sh(
            2026, 11, 27, 18, 15
        )
        # 15 min before the close on Friday, 15 min after the opening on Monday
        assert start_clock(s, office, "workaround", started_at=fri_1745, severity=1).due_at == sh(
            2026, 11, 30, 9, 15
        )
        assert start_clock(s, round_the_clock, "analysis_report", started_at=fri_20, severity=1).due_at == sh(
            2026, 11, 30, 20, 0
        )
        assert start_clock(s, office, "analysis_report", started_at=fri_20, severity=1).due_at == sh(
            2026, 11, 30, 18, 0
        )
        late = stop_clock(s, round_the_clock, "workaround", at=sh(2026, 11, 27, 18, 30))
        in_time = stop_clock(s, office, "workaround", at=sh(2026, 11, 30, 9, 10))
        assert late is not None and late.breached_at == sh(2026, 11, 27, 18, 15)
        assert in_time is not None and in_time.met_at is not None
        level4 = new_case(s, 1, 4, fri_1745)
    # level 4: 不适用 — the repair's start of the clock starts nothing (and its stop finds nothing)
    assert case_clock(level4, "workaround", "start", fri_1745) == "none"
    assert case_clock(level4, "workaround", "stop", fri_1745 + timedelta(hours=3)) == "none"
    assert case_clock(level4, "analysis_report", "start", fri_20) == "running"
    with session_scope() as s:
        kinds = s.exec(select(Clock.kind).where(Clock.case_id == level4)).all()
    assert kinds == ["analysis_report"]


def test_inspection_feedback_clock_on_both_calendars(demo: str) -> None:
    """Issue 22 item 7: the feedback on an inspection's problems (2 working days, PROCEDURES.md §4.5)
    keeps the time of day on 7x24 and runs to the close of the second working day on 5x8; a late
    feedback is a breach."""
    fri_20 = sh(2026, 11, 27, 20, 0)
    with session_scope() as s:
        round_the_clock, office = new_case(s, 1, 3, fri_20), new_case(s, 2, 3, fri_20)
        assert start_clock(
            s, round_the_clock, "inspection_feedback", started_at=fri_20, severity=3
        ).due_at == sh(2026, 12, 1, 20, 0)
        assert start_clock(s, office, "inspection_feedback", started_at=fri_20, severity=3).due_at == sh(
            2026, 12, 1, 18, 0
        )
        late = stop_clock(s, round_the_clock, "inspection_feedback", at=sh(2026, 12, 2, 9, 0))
        in_time = stop_clock(s, office, "inspection_feedback", at=sh(2026, 12, 1, 17, 0))
        assert late is not None and late.breached_at == sh(2026, 12, 1, 20, 0)
        assert in_time is not None and in_time.met_at is not None
