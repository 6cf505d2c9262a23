"""KPIs from the event log (rules/performance.py) on a hand-computed log.

The log (times UTC; local = Asia/Shanghai, UTC+8), window 2026-10-01 → 2026-12-01 local:

  WX-1  repair, D1 存储, 张三, reported 10-05 02:00, restore clock paused 03:00–04:00, restored and
        met 06:00 (4 h outage; the clock ran 3 h); arrival met 02:40; callback 优/良.
  WX-2  repair, D2 服务器, 李四, reported 10-31 14:00 (22:00 local, Oct 31), restored 18:00
        (02:00 local, Nov 1): the outage spans the month end, 2 h in each month; restore breached.
  WX-3  repair, D1, 张三, reported 11-10 00:00, handed over 02:00 to SG-4 (its restore clock closed
        before its deadline: neither met nor breached).
  SG-4  accident, D1, 王五, restored 11-10 08:00: one fault with WX-3, 8 h from WX-3's report.
  WX-5  repair, D2, 李四, reported 11-20 00:00, a repair anomaly, restored 01:00; severity 4, no outage.
        WX-2's device again 19 days after its restoration: WX-2 was not fixed the first time.
  TS-6  complaint, answered in 1 h (complaint_answer met).

MTTR: 4, 4, 8, 1 h → mean 4.25, median 4, p90 6.8, max 8.
Uptime (7x24): 1464 h in the window, 16 h down (4 + 4 + 8). October 744 h, 6 h down; November
720 h, 10 h down. First-time fix: WX-1 only, of 4 restored faults.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from rules.calendar import DEFAULT_CALENDAR
from rules.performance import (
    CaseLog,
    DueFact,
    EventFact,
    KpiError,
    RenewalFact,
    ScoreFact,
    clock_fates,
    faults_of,
    flat,
    grade_distribution,
    month_windows,
    table,
    uptime,
)

TZ = "Asia/Shanghai"
START = datetime(2026, 9, 30, 16, 0, tzinfo=UTC)  # 10-01 00:00 local
END = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # 12-01 00:00 local
TERMS = {"service_hours": "7x24"}


def at(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def started(kind: str, moment: datetime, due: datetime) -> EventFact:
    return EventFact("clock.started", moment, {"clock": kind, "due_at": due.isoformat(), "terms": TERMS})


def ev(kind: str, moment: datetime, **data: object) -> EventFact:
    return EventFact(kind, moment, data)


WX1 = CaseLog(
    1,
    "WX-000001",
    "repair",
    "甲银行",
    at(10, 5, 2),
    site="总行机房",
    device="D1",
    device_class="存储",
    engineer="张三",
    severity=2,
    outage=True,
    events=(
        started("restore", at(10, 5, 2), at(10, 5, 6)),
        started("arrival", at(10, 5, 2), at(10, 5, 3)),
        ev("arrived", at(10, 5, 2, 40)),
        ev("clock.met", at(10, 5, 2, 40), clock="arrival"),
        ev("clock.paused", at(10, 5, 3), clock="restore", reason="等客户"),
        ev("clock.resumed", at(10, 5, 4), clock="restore", due_at=at(10, 5, 7).isoformat()),
        ev("restored", at(10, 5, 6)),
        ev("clock.met", at(10, 5, 6), clock="restore"),
        ev("callback_done", at(10, 7, 2), scores={"response": "优", "overall": "良"}),
    ),
)
WX2 = CaseLog(
    2,
    "WX-000002",
    "repair",
    "甲银行",
    at(10, 31, 14),
    site="总行机房",
    device="D2",
    device_class="服务器",
    engineer="李四",
    severity=2,
    outage=True,
    events=(
        started("restore", at(10, 31, 14), at(10, 31, 16)),
        ev("clock.breach", at(10, 31, 16), clock="restore"),
        ev("restored", at(10, 31, 18)),
        ev("clock.breached", at(10, 31, 18), clock="restore"),
        ev("callback_done", at(11, 2, 2), scores={"response": "中", "overall": "优"}),
    ),
)
WX3 = CaseLog(
    3,
    "WX-000003",
    "repair",
    "甲银行",
    at(11, 10, 0),
    site="总行机房",
    device="D1",
    device_class="存储",
    engineer="张三",
    severity=1,
    outage=True,
    events=(
        started("restore", at(11, 10, 0), at(11, 10, 4)),
        ev("handed_over_to_accident", at(11, 10, 2), accident_id=4, accident="SG-000004"),
        ev("clock.closed", at(11, 10, 2), clock="restore", breached=False),
    ),
)
SG4 = CaseLog(
    4,
    "SG-000004",
    "accident",
    "甲银行",
    at(11, 10, 2),
    site="总行机房",
    device="D1",
    device_class="存储",
    engineer="王五",
    severity=1,
    outage=True,
    parent_id=3,
    events=(
        ev("handed_over_from_repair", at(11, 10, 2), repair_id=3),
        started("restore", at(11, 10, 2), at(11, 10, 10)),
        ev("service_restored", at(11, 10, 8)),
        ev("clock.met", at(11, 10, 8), clock="restore"),
    ),
)
WX5 = CaseLog(
    5,
    "WX-000005",
    "repair",
    "甲银行",
    at(11, 20, 0),
    site="总行机房",
    device="D2",
    device_class="服务器",
    engineer="李四",
    severity=4,
    outage=False,
    events=(ev("repair_anomaly", at(11, 20, 0, 30), attempt=1), ev("restored", at(11, 20, 1))),
)
TS6 = CaseLog(
    6,
    "TS-000006",
    "complaint",
    "甲银行",
    at(11, 12, 1),
    engineer="李四",
    events=(
        started("complaint_answer", at(11, 12, 1), at(11, 12, 3)),
        ev("clock.met", at(11, 12, 2), clock="complaint_answer"),
    ),
)
LOGS = [WX1, WX2, WX3, SG4, WX5, TS6]
DUE = [
    DueFact(
        "inspection", "甲银行", "2026-10", date(2026, 10, 20), done_on=date(2026, 10, 18), site="总行机房"
    ),
    DueFact("inspection", "甲银行", "2026-11", date(2026, 11, 20), site="总行机房"),
    DueFact("drill", "甲银行", "2026-H2", date(2026, 11, 25), done_on=date(2026, 11, 24)),
]
SUMMARY_CARD = ScoreFact("summary", "甲银行", at(11, 3, 2), {"repair": "良", "overall": "差"})
RENEWALS = [RenewalFact("甲银行", "HT-1", date(2026, 11, 30), "renewed")]


def whole():
    [row] = table(LOGS, start=START, end=END, due=DUE, cards=[SUMMARY_CARD], renewals=RENEWALS, tz=TZ)
    assert row.group == ""
    return row.kpis


def test_mttr_and_its_distribution_count_a_handed_over_repair_once_from_its_report():
    k = whole()
    assert k.faults == 4  # WX-3 and SG-4 are one fault
    assert k.restored == 4
    assert (k.mttr_hours, k.mttr_median, k.mttr_p90, k.mttr_max) == (4.25, 4.0, 6.8, 8.0)
    assert k.mttr_buckets == [("≤1小时", 1), ("1–4小时", 2), ("4–8小时", 1), ("8–24小时", 0), (">24小时", 0)]
    [episode] = [f for f in faults_of(LOGS) if f.case_id == 4]
    assert episode.case_ids == (3, 4) and episode.reported_at == at(11, 10, 0) and episode.handed_over


def test_clock_compliance_per_clock_with_a_pause_a_breach_and_a_clock_closed_by_a_hand_over():
    k = whole()
    by_kind = {c.kind: c for c in k.clocks}
    restore = by_kind["restore"]
    # WX-1 met, WX-2 breached, WX-3 closed before its deadline (neither), SG-4 met
    assert (restore.count, restore.met, restore.breached) == (4, 2, 1)
    assert restore.compliance == pytest.approx(2 / 3)
    # elapsed minutes of the concluded ones: WX-1 240 − 60 paused = 180, WX-2 240, SG-4 360
    assert restore.mean_minutes == pytest.approx((180 + 240 + 360) / 3, abs=0.1)
    assert restore.max_minutes == 360
    assert (by_kind["arrival"].met, by_kind["arrival"].compliance) == (1, 1.0)
    assert k.sla_compliance == pytest.approx(3 / 4)
    fates = {(f.case_id, f.kind): f for f in clock_fates(LOGS)}
    assert fates[(1, "restore")].elapsed_minutes == 180
    assert fates[(3, "restore")].verdict == "open"


def test_first_time_fix_excludes_hand_overs_anomalies_and_a_repeat_on_the_same_device_within_30_days():
    k = whole()
    assert (k.ftf, k.ftf_eligible, k.ftf_rate) == (1, 4, 0.25)


def test_uptime_7x24_over_the_window_and_per_month_splits_the_fault_across_the_month_end():
    k = whole()
    assert k.outage_hours == 16
    assert k.uptime == pytest.approx(1 - 16 / 1464)
    months = {r.group: r.kpis for r in table(LOGS, start=START, end=END, by="month", tz=TZ)}
    assert list(months) == ["2026-10", "2026-11"]
    assert months["2026-10"].outage_hours == 6 and months["2026-11"].outage_hours == 10
    assert months["2026-10"].uptime == pytest.approx(1 - 6 / 744)
    assert months["2026-11"].uptime == pytest.approx(1 - 10 / 720)
    # the fault is counted in the month it was reported (local time: Oct 31, 22:00)
    assert months["2026-10"].faults == 2 and months["2026-11"].faults == 2
    assert months["2026-10"].mttr_hours == 4.0 and months["2026-11"].mttr_hours == 4.5


def test_uptime_in_contracted_hours_counts_only_the_working_hours_of_an_outage():
    office = DEFAULT_CALENDAR.with_hours(
        round_the_clock=False, day_start=time(9), day_end=time(18), lunch=None
    )
    # Friday 2026-11-20 17:00 local → Monday 11-23 10:00 local: 1 h Friday + 1 h Monday
    weekend = CaseLog(
        9, "WX-9", "repair", "乙厂", at(11, 20, 9), outage=True, events=(ev("restored", at(11, 23, 2)),)
    )
    two_weeks = (datetime(2026, 11, 15, 16, tzinfo=UTC), datetime(2026, 11, 29, 16, tzinfo=UTC))
    share, hours = uptime(faults_of([weekend]), *two_weeks, office)
    assert hours == 2 and share == pytest.approx(1 - 2 / 90)  # 10 working days of 9 h
    share_24, hours_24 = uptime(faults_of([weekend]), *two_weeks)
    assert hours_24 == 65 and share_24 == pytest.approx(1 - 65 / 336)


def test_an_outage_without_a_recorded_restoration_ends_when_its_case_closed_or_runs_on():
    window = (datetime(2026, 11, 15, 16, tzinfo=UTC), datetime(2026, 11, 29, 16, tzinfo=UTC))
    closed = CaseLog(10, "WX-10", "repair", "乙厂", at(11, 16, 0), outage=True, closed_at=at(11, 16, 6))
    assert uptime(faults_of([closed]), *window)[1] == 6
    still_open = CaseLog(11, "WX-11", "repair", "乙厂", at(11, 28, 16), outage=True)
    assert uptime(faults_of([still_open]), *window)[1] == 24  # down until the window's end
    [fault] = faults_of([closed])
    assert fault.hours is None  # not restored: no time to restore, only an outage


def test_complaints_scores_inspections_drills_and_renewals():
    k = whole()
    assert k.complaints == 1
    # per 100 service cases: 4 faults + 2 inspections due
    assert k.complaint_rate == pytest.approx(100 / 6)
    assert [(c.kind, c.met, c.compliance) for c in k.complaint_clocks] == [("complaint_answer", 1, 1.0)]
    assert k.scores["response"] == {"优": 1, "良": 0, "中": 1, "差": 0}
    assert k.scores["overall"] == {"优": 1, "良": 1, "中": 0, "差": 1}
    assert k.score_means == {"response": 3.0, "overall": pytest.approx(8 / 3, abs=0.01), "repair": 3.0}
    assert k.score_mean == pytest.approx((4 + 2 + 3 + 4 + 3 + 1) / 6, abs=0.01)
    assert grade_distribution(k.scores) == {"优": 2, "良": 2, "中": 1, "差": 1}
    assert (k.inspections_due, k.inspections_done, k.inspections_on_time) == (2, 1, 1)
    assert (k.drills_due, k.drills_done) == (1, 1)
    assert k.renewals == {"renewed": 1}


def test_per_engineer_the_handed_over_repair_counts_with_the_accident_and_uptime_is_left_out():
    rows = {r.group: r.kpis for r in table(LOGS, start=START, end=END, by="engineer", tz=TZ)}
    assert set(rows) == {"张三", "李四", "王五"}
    assert rows["张三"].faults == 1 and rows["张三"].mttr_hours == 4.0
    assert rows["王五"].faults == 1 and rows["王五"].mttr_hours == 8.0
    assert rows["李四"].faults == 2 and rows["李四"].complaints == 1
    assert rows["李四"].ftf == 0 and rows["李四"].ftf_eligible == 2
    assert all(k.uptime is None for k in rows.values())


def test_per_device_and_device_class():
    rows = {r.group: r.kpis for r in table(LOGS, start=START, end=END, by="device", tz=TZ)}
    assert rows["D1"].outage_hours == 12 and rows["D1"].uptime == pytest.approx(1 - 12 / 1464)
    assert rows["D2"].outage_hours == 4  # WX-5 did not interrupt service
    classes = {r.group: r.kpis.faults for r in table(LOGS, start=START, end=END, by="device_class", tz=TZ)}
    assert classes == {"存储": 2, "服务器": 2, "（未注明）": 0}


def test_month_windows_and_bad_questions():
    assert [m for m, _, _ in month_windows(START, END, TZ)] == ["2026-10", "2026-11"]
    with pytest.raises(KpiError, match="未知的分组"):
        table(LOGS, start=START, end=END, by="weather")
    with pytest.raises(KpiError, match="结束时间"):
        table(LOGS, start=END, end=START)


def test_a_renewal_changed_by_a_signed_change_request_is_counted_apart_from_one_renewed_as_quoted():
    renewals = [
        RenewalFact("甲银行", "HT-1", date(2026, 11, 30), "renewed"),
        RenewalFact("甲银行", "HT-2", date(2026, 11, 20), "changed"),
        RenewalFact("甲银行", "HT-3", date(2026, 11, 10), "ended"),
    ]
    [row] = table(LOGS, start=START, end=END, due=DUE, renewals=renewals, tz=TZ)
    assert row.kpis.renewals == {"renewed": 1, "changed": 1, "ended": 1}
    assert row.kpis.renewal_rate == pytest.approx(2 / 3)  # both contracts went on; the third ended
    assert flat(row.kpis)["renewals"] == "变更后续约 1、终止合作 1、已续约 1"


def test_satisfaction_after_closure_of_the_complaints_opened_in_the_window():
    """TS-a signed at the first reply; TS-b not satisfied once, then satisfied on the manager's call;
    TS-c not satisfied and still open; TS-d opened after the window."""

    def complaint(number: str, reported: datetime, *events: EventFact) -> CaseLog:
        return CaseLog(0, number, "complaint", "甲银行", reported, events=events)

    logs = [
        complaint("TS-a", at(10, 2, 2), ev("complaint_closed", at(10, 3, 2), satisfied=True, by_call=False)),
        complaint(
            "TS-b",
            at(10, 9, 2),
            ev("complaint_not_satisfied", at(10, 12, 2)),
            ev("complaint_closed", at(10, 20, 2), satisfied=True, by_call=True),
        ),
        complaint("TS-c", at(11, 2, 2), ev("complaint_not_satisfied", at(11, 5, 2))),
        complaint("TS-d", at(12, 2, 2), ev("complaint_closed", at(12, 3, 2), satisfied=True, by_call=False)),
    ]
    [row] = table(logs, start=START, end=END, tz=TZ)
    k = row.kpis
    assert k.complaints == 3
    assert (k.complaints_closed, k.complaints_closed_by_call, k.complaints_first_reply_satisfied) == (2, 1, 1)
    assert flat(k)["complaint_first_reply_satisfied"] == pytest.approx(0.5)
