"""Service KPIs (PROCEDURES.md §8) computed from the event log, pure.

Every figure here is folded from facts read once from the case rows and their append-only events
(tasks/kpi.py reads them): nothing is a stored counter, so any period can be recomputed at any time
and two runs over the same log give the same figures.

Definitions (the ones people ask about):
- A *fault* is a repair or accident case. A repair handed over to the accident flow
  (`handed_over_to_accident`) is one fault with its accident: the outage starts at the repair's
  report and ends at the accident's restoration; the fault is counted once, under the accident.
- *MTTR*: report → `restored`/`service_restored` event, wall-clock hours, over the faults restored;
  its distribution in the buckets of MTTR_BUCKETS, with median and 90th percentile.
- *SLA compliance per clock*: a clock's fate folded from its `clock.*` events: met, breached (stopped
  late, closed after its deadline, or the keeper fired its breach), or neither (closed with its case
  before its deadline, or still running). Compliance = met / (met + breached). Elapsed time counts
  the clock's own hours with pauses left out (rules.sla.figure_from_events).
- *First-time fix*: a restored fault with no repeat visit (a second `arrived`), no `repair_anomaly`,
  not handed over, and no other fault on the same device reported within 30 days of its restoration.
- *Uptime*: 1 − outage / service time over the window, where the outage is the union of the spans
  report → restoration (else the case's closing, else still down) of the faults that interrupt service (`FaultLog.outage`), and both are
  measured in the service hours given (7x24: wall-clock; 5x8: the contracted working hours of
  rules.calendar).
- *Complaint rate*: complaints per 100 service cases (faults and inspections) opened in the window.
- *Scores*: 优/良/中/差 as 4/3/2/1; per item the counts of each grade and the mean.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from statistics import mean, median
from typing import Any
from zoneinfo import ZoneInfo

from rules.calendar import DEFAULT_CALENDAR, Calendar, working_time_between
from rules.kpi import CLOCK_ZH, ClockFigure, clock_figure, in_sla_order
from rules.sla import figure_from_events

FAULT_KINDS = ("repair", "accident")
RESTORED_EVENTS = ("restored", "service_restored")
HANDED_OVER_EVENT = "handed_over_to_accident"
REPEAT_VISIT_EVENTS = ("repair_anomaly",)
REOPEN_WINDOW = timedelta(days=30)

SCORE_VALUES: dict[str, int] = {"优": 4, "良": 3, "中": 2, "差": 1}
GRADES = tuple(SCORE_VALUES)

# MTTR distribution: (label, upper bound in hours, exclusive of the next); the last has no bound.
MTTR_BUCKETS: tuple[tuple[str, float], ...] = (
    ("≤1小时", 1.0),
    ("1–4小时", 4.0),
    ("4–8小时", 8.0),
    ("8–24小时", 24.0),
    (">24小时", math.inf),
)

BY_CHOICES = ("customer", "site", "device", "device_class", "engineer", "month")
BY_ZH = {
    "customer": "客户",
    "site": "站点",
    "device": "设备",
    "device_class": "设备类别",
    "engineer": "工程师",
    "month": "月份",
}


class KpiError(ValueError):
    """A question the figures cannot answer (a bad period or grouping); the message says why."""


@dataclass(frozen=True)
class EventFact:
    kind: str
    at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    actor: str = "system"


@dataclass(frozen=True)
class CaseLog:
    """One case and its event log, as the KPIs see it."""

    case_id: int
    number: str
    kind: str  # repair / accident / inspection / complaint / drill / renewal
    customer: str
    reported_at: datetime
    events: tuple[EventFact, ...] = ()
    site: str = ""
    device: str = ""  # the device's label ("" when the case names none)
    device_class: str = ""
    engineer: str = ""
    severity: int | None = None
    outage: bool = False  # the fault interrupts service (counts against uptime)
    parent_id: int | None = None
    closed_at: datetime | None = None  # when the case closed (an outage without a restoration ends there)


@dataclass(frozen=True)
class DueFact:
    """A planned piece of work (an inspection period, a drill) and when it was done, if it was."""

    kind: str  # inspection / drill
    customer: str
    label: str  # the period
    due: date
    done_on: date | None = None
    cancelled: bool = False
    site: str = ""
    engineer: str = ""
    # a drill's evaluation: RTO and RPO met and every step done (None: not evaluated yet)
    objectives_met: bool | None = None


@dataclass(frozen=True)
class ScoreFact:
    """One scorecard: a callback form, a summary rating or a survey answer."""

    source: str  # callback / summary / survey
    customer: str
    at: datetime
    scores: Mapping[str, str]  # item → 优/良/中/差
    engineer: str = ""
    site: str = ""
    device: str = ""
    device_class: str = ""


@dataclass(frozen=True)
class RenewalFact:
    customer: str
    contract: str
    due: date
    outcome: str  # renewed / changed / ended / lapsed / pending (from the renewal's events, tasks/kpi.py)
    decided_days: int | None = None  # how many days before the end the customer answered (issue 20)


@dataclass(frozen=True)
class Fault:
    """A fault episode: one case, or a repair and the accident it was handed over to."""

    case_id: int
    number: str
    kind: str
    customer: str
    site: str
    device: str
    device_class: str
    engineer: str
    reported_at: datetime
    restored_at: datetime | None
    closed_at: datetime | None
    outage: bool
    handed_over: bool
    repeat_visit: bool
    case_ids: tuple[int, ...]

    @property
    def hours(self) -> float | None:
        if self.restored_at is None:
            return None
        return max(0.0, (self.restored_at - self.reported_at).total_seconds() / 3600)


@dataclass(frozen=True)
class ClockFate:
    case_id: int
    kind: str
    verdict: str  # met / breached / open (running, paused, or closed before its deadline)
    elapsed_minutes: float | None


@dataclass
class Kpis:
    """The KPI set of one group over one window."""

    faults: int = 0
    restored: int = 0
    mttr_hours: float | None = None
    mttr_median: float | None = None
    mttr_p90: float | None = None
    mttr_max: float | None = None
    mttr_buckets: list[tuple[str, int]] = field(default_factory=list)
    clocks: list[ClockFigure] = field(default_factory=list)
    sla_compliance: float | None = None
    ftf_eligible: int = 0
    ftf: int = 0
    ftf_rate: float | None = None
    uptime: float | None = None
    outage_hours: float | None = None
    complaints: int = 0
    complaint_rate: float | None = None  # per 100 service cases
    complaint_clocks: list[ClockFigure] = field(default_factory=list)
    # satisfaction after closure: a complaint closes only with the customer satisfied (signed, or said
    # so on the manager's call); how many closed, by call, and satisfied at the first reply
    complaints_closed: int = 0
    complaints_closed_by_call: int = 0
    complaints_first_reply_satisfied: int = 0
    scores: dict[str, dict[str, int]] = field(default_factory=dict)  # item → grade → count
    score_means: dict[str, float] = field(default_factory=dict)
    score_mean: float | None = None
    inspections_due: int = 0
    inspections_done: int = 0
    inspections_on_time: int = 0
    drills_due: int = 0
    drills_done: int = 0
    drills_evaluated: int = 0
    drills_objectives_met: int = 0
    renewals: dict[str, int] = field(default_factory=dict)
    # the contracts that went on (renewed as quoted or changed) / renewals that came out (renewed,
    # changed, ended, lapsed); `renewals` counts renewed and changed apart
    renewal_rate: float | None = None
    renewal_lead_days: float | None = None  # mean days before the end the customers decided


@dataclass(frozen=True)
class KpiRow:
    group: str  # the group's label ("" for the whole window)
    kpis: Kpis


# ---- small helpers -----------------------------------------------------------------------------


def local_month(moment: datetime, tz: str) -> str:
    local = moment.astimezone(ZoneInfo(tz))
    return f"{local.year}-{local.month:02d}"


def month_windows(start: datetime, end: datetime, tz: str) -> list[tuple[str, datetime, datetime]]:
    """The local months [start, end) touches, each clipped to the window: (label, from, to)."""
    zone = ZoneInfo(tz)
    local = start.astimezone(zone)
    y, m = local.year, local.month
    out = []
    while True:
        first = datetime(y, m, 1, tzinfo=zone).astimezone(UTC)
        y2, m2 = (y, m + 1) if m < 12 else (y + 1, 1)
        nxt = datetime(y2, m2, 1, tzinfo=zone).astimezone(UTC)
        if first >= end:
            break
        out.append((f"{y}-{m:02d}", max(first, start), min(nxt, end)))
        y, m = y2, m2
    return out


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (statistics.quantiles needs two points; one is one)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _first(events: Iterable[EventFact], kinds: Sequence[str]) -> datetime | None:
    return min((e.at for e in events if e.kind in kinds), default=None)


# ---- faults ----------------------------------------------------------------------------------------


def faults_of(logs: Iterable[CaseLog]) -> list[Fault]:
    """The fault episodes of the logs: a repair handed over joins its accident (one fault)."""
    logs = [c for c in logs if c.kind in FAULT_KINDS]
    by_id = {c.case_id: c for c in logs}
    handed: dict[int, int] = {}  # repair id → accident id
    for c in logs:
        for e in c.events:
            if e.kind == HANDED_OVER_EVENT and e.data.get("accident_id") is not None:
                handed[c.case_id] = int(e.data["accident_id"])
    absorbed = {rid for rid, aid in handed.items() if aid in by_id}
    parents: dict[int, list[CaseLog]] = defaultdict(list)
    for rid, aid in handed.items():
        if aid in by_id:
            parents[aid].append(by_id[rid])
    out = []
    for c in logs:
        if c.case_id in absorbed:
            continue
        chain = [*parents.get(c.case_id, []), c]
        restored_at = _first(c.events, RESTORED_EVENTS)
        events = [e for x in chain for e in x.events]
        first = min(chain, key=lambda x: x.reported_at)
        out.append(
            Fault(
                case_id=c.case_id,
                number=c.number,
                kind=c.kind,
                customer=c.customer,
                site=c.site or first.site,
                device=c.device or first.device,
                device_class=c.device_class or first.device_class,
                engineer=c.engineer or first.engineer,
                reported_at=first.reported_at,
                restored_at=restored_at,
                closed_at=c.closed_at,
                outage=any(x.outage for x in chain),
                handed_over=len(chain) > 1 or c.case_id in handed,
                repeat_visit=sum(1 for e in events if e.kind == "arrived") > 1
                or any(e.kind in REPEAT_VISIT_EVENTS for e in events),
                case_ids=tuple(x.case_id for x in chain),
            )
        )
    return out


def mttr(faults: Sequence[Fault]) -> dict[str, Any]:
    """Mean, median, 90th percentile and max time to restore (hours) and the bucket counts."""
    hours = [h for h in (f.hours for f in faults) if h is not None]
    buckets: Counter[str] = Counter()
    for h in hours:
        for label, bound in MTTR_BUCKETS:
            if h <= bound:
                buckets[label] += 1
                break
    return {
        "restored": len(hours),
        "mean": round(mean(hours), 2) if hours else None,
        "median": round(median(hours), 2) if hours else None,
        "p90": round(_percentile(hours, 0.9), 2) if hours else None,
        "max": round(max(hours), 2) if hours else None,
        "buckets": [(label, buckets.get(label, 0)) for label, _ in MTTR_BUCKETS],
    }


@dataclass(frozen=True)
class FaultIndex:
    """The fault episodes of a log, looked up by case and by device (built once per table)."""

    faults: list[Fault]
    by_case: dict[int, Fault]
    by_device: dict[tuple[str, str], list[Fault]]

    @classmethod
    def of(cls, faults: list[Fault]) -> FaultIndex:
        by_case = {i: f for f in faults for i in f.case_ids}
        by_device: dict[tuple[str, str], list[Fault]] = defaultdict(list)
        for f in faults:
            if f.device:
                by_device[(f.customer, f.device)].append(f)
        return cls(faults, by_case, dict(by_device))

    def of_logs(self, logs: Iterable[CaseLog]) -> list[Fault]:
        """The episodes the logs' cases belong to, each once, in the index's order."""
        found = {
            self.by_case[c.case_id].case_id: self.by_case[c.case_id]
            for c in logs
            if c.case_id in self.by_case
        }
        return sorted(found.values(), key=lambda f: (f.reported_at, f.case_id))


def first_time_fix(
    faults: Sequence[Fault], later: Sequence[Fault] | FaultIndex | None = None
) -> tuple[int, int]:
    """(fixed the first time, restored faults considered). `later`: every fault known (the window's and
    after it), where a repeat on the same device within REOPEN_WINDOW of a restoration is looked for."""
    index = (
        later
        if isinstance(later, FaultIndex)
        else FaultIndex.of(list(later if later is not None else faults))
    )
    eligible = [f for f in faults if f.restored_at is not None]
    fixed = 0
    for f in eligible:
        assert f.restored_at is not None
        reopened = bool(f.device) and any(
            g.case_id != f.case_id and f.restored_at <= g.reported_at <= f.restored_at + REOPEN_WINDOW
            for g in index.by_device.get((f.customer, f.device), ())
        )
        if not (f.handed_over or f.repeat_visit or reopened):
            fixed += 1
    return fixed, len(eligible)


def _union(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def uptime(
    faults: Sequence[Fault], start: datetime, end: datetime, calendar: Calendar | None = None
) -> tuple[float | None, float]:
    """(uptime share, outage hours) over [start, end) in the calendar's service hours (7x24 by
    default). A fault is down until its restoration; one closed without a recorded restoration (an
    older record) until it closed; one still open until `end`. None when the window has no service time."""
    cal = calendar or DEFAULT_CALENDAR.with_hours(round_the_clock=True)
    spans = []
    for f in faults:
        up = f.restored_at or f.closed_at
        if f.outage and f.reported_at < end and (up is None or up > start):
            spans.append((max(f.reported_at, start), min(up or end, end)))
    down = sum(
        (working_time_between(a, b, cal) for a, b in _union(spans) if b > a), timedelta()
    ).total_seconds()
    total = working_time_between(start, end, cal).total_seconds()
    if total <= 0:
        return None, round(down / 3600, 2)
    return max(0.0, 1 - down / total), round(down / 3600, 2)


# ---- clocks ----------------------------------------------------------------------------------------


def default_calendar_for(terms: Mapping[str, Any]) -> Calendar:
    """The calendar a clock counted in, from the terms of its clock.started event (the default
    calendar's days; tasks/kpi.py passes the database's calendars instead)."""
    key = tuple(
        sorted((k, str(v)) for k, v in terms.items() if k in ("service_hours", "start", "end", "lunch"))
    )
    if key not in _CALENDARS:
        _CALENDARS[key] = _calendar_of(terms)
    return _CALENDARS[key]


_CALENDARS: dict[tuple[tuple[str, str], ...], Calendar] = {}


def _calendar_of(terms: Mapping[str, Any]) -> Calendar:
    from datetime import time

    def hm(value: str) -> time:
        hh, mm = value.split(":")
        return time(int(hh), int(mm))

    lunch = terms.get("lunch")
    return DEFAULT_CALENDAR.with_hours(
        round_the_clock=terms.get("service_hours", "7x24") == "7x24",
        day_start=hm(terms.get("start", "09:00")),
        day_end=hm(terms.get("end", "18:00")),
        lunch=(hm(lunch[0]), hm(lunch[1])) if lunch else None,
    )


def clock_fates(
    logs: Iterable[CaseLog],
    *,
    as_of: datetime | None = None,
    calendar_for: Callable[[Mapping[str, Any]], Calendar] = default_calendar_for,
) -> list[ClockFate]:
    """Each SLA clock of the cases, judged from its `clock.*` events alone."""
    out = []
    for c in logs:
        per: dict[str, list[EventFact]] = defaultdict(list)
        for e in sorted(c.events, key=lambda e: e.at):
            if e.kind.startswith("clock.") and e.data.get("clock"):
                per[str(e.data["clock"])].append(e)
        for kind, events in per.items():
            started = next((e for e in events if e.kind == "clock.started"), None)
            if started is None:
                continue
            cal = calendar_for(started.data.get("terms") or {})
            closed = next((e for e in events if e.kind == "clock.closed"), None)
            stream = [(e.kind, e.at, e.data) for e in events if e.kind != "clock.closed"]
            if closed is not None:  # closed with its case: the clock stops there
                stream.append(("clock.stopped", closed.at, closed.data))
            fig = figure_from_events(stream, cal, as_of=closed.at if closed else as_of)
            met = any(e.kind == "clock.met" for e in events)
            breached = (
                any(e.kind in ("clock.breached", "clock.breach") for e in events)
                or bool(closed is not None and closed.data.get("breached"))
            ) and not met
            relaid = [e for e in events if e.kind == "clock.relaid" and e.data.get("verdict")]
            if relaid:  # the official calendar came in after the stop: its verdict stands
                verdict = str(relaid[-1].data["verdict"])
                met, breached = verdict == "met", verdict == "breached"
            elapsed = fig["elapsed"]
            out.append(
                ClockFate(
                    case_id=c.case_id,
                    kind=kind,
                    verdict="met" if met else "breached" if breached else "open",
                    elapsed_minutes=round(elapsed.total_seconds() / 60, 1) if elapsed is not None else None,
                )
            )
    return out


def clock_table(fates: Sequence[ClockFate]) -> list[ClockFigure]:
    """Per clock kind (in the SLA table's order): count, met, breached, compliance, mean and max minutes."""
    out = []
    for kind in in_sla_order({f.kind for f in fates}):
        these = [f for f in fates if f.kind == kind]
        met = sum(1 for f in these if f.verdict == "met")
        breached = sum(1 for f in these if f.verdict == "breached")
        minutes = [f.elapsed_minutes for f in these if f.elapsed_minutes is not None and f.verdict != "open"]
        out.append(clock_figure(kind, len(these), met, breached, minutes))
    return out


# ---- scores ----------------------------------------------------------------------------------------


def callback_scores(logs: Iterable[CaseLog]) -> list[ScoreFact]:
    """The callback forms' scores (`callback_done` events) as scorecards."""
    out = []
    for c in logs:
        for e in c.events:
            if e.kind == "callback_done" and isinstance(e.data.get("scores"), Mapping):
                out.append(
                    ScoreFact(
                        source="callback",
                        customer=c.customer,
                        at=e.at,
                        scores={k: str(v) for k, v in e.data["scores"].items()},
                        engineer=c.engineer,
                        site=c.site,
                        device=c.device,
                        device_class=c.device_class,
                    )
                )
    return out


def score_table(
    cards: Iterable[ScoreFact],
) -> tuple[dict[str, dict[str, int]], dict[str, float], float | None]:
    """(item → grade → count, item → mean 1–4, mean of every grade given); unknown grades are skipped."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for card in cards:
        for item, grade in card.scores.items():
            if grade in SCORE_VALUES:
                counts[item][grade] += 1
    table = {item: {g: c.get(g, 0) for g in GRADES} for item, c in counts.items()}
    means = {
        item: round(sum(SCORE_VALUES[g] * n for g, n in row.items()) / sum(row.values()), 2)
        for item, row in table.items()
    }
    every = [SCORE_VALUES[g] for row in table.values() for g, n in row.items() for _ in range(n)]
    return table, means, (round(mean(every), 2) if every else None)


def grade_distribution(scores: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """How many of each grade, over every item."""
    return {g: sum(row.get(g, 0) for row in scores.values()) for g in GRADES}


# ---- the KPI set and the groupings --------------------------------------------------------------


def compute(
    logs: Sequence[CaseLog],
    *,
    start: datetime,
    end: datetime,
    all_logs: Sequence[CaseLog] | None = None,
    due: Sequence[DueFact] = (),
    cards: Sequence[ScoreFact] = (),
    renewals: Sequence[RenewalFact] = (),
    calendar: Calendar | None = None,
    uptime_scope: bool = True,
    tz: str = "Asia/Shanghai",
    calendar_for: Callable[[Mapping[str, Any]], Calendar] = default_calendar_for,
    index: FaultIndex | None = None,
) -> Kpis:
    """The KPIs of `logs` over [start, end): faults, clocks and complaints of the cases opened in the
    window; uptime over the window from every fault of `all_logs` (default `logs`) that overlaps it;
    the callback forms of `logs` and the scorecards given (`cards`: summary ratings, surveys) filled
    in the window; work due and renewals due in the window. `index`: the faults of `all_logs`,
    indexed once by the caller of many groups."""
    if end <= start:
        raise KpiError("结束时间须晚于开始时间 / the window's end must be after its start")
    k = Kpis()
    if index is None:
        index = FaultIndex.of(faults_of(all_logs if all_logs is not None else logs))
    mine = index.of_logs(logs)
    faults = [f for f in mine if start <= f.reported_at < end]
    k.faults = len(faults)
    m = mttr(faults)
    k.restored, k.mttr_hours, k.mttr_median, k.mttr_p90, k.mttr_max = (
        m["restored"],
        m["mean"],
        m["median"],
        m["p90"],
        m["max"],
    )
    k.mttr_buckets = m["buckets"]
    opened = [c for c in logs if start <= c.reported_at < end]
    fates = clock_fates([c for c in opened if c.kind in FAULT_KINDS], as_of=end, calendar_for=calendar_for)
    k.clocks = clock_table(fates)
    met = sum(c.met for c in k.clocks)
    concluded = met + sum(c.breached for c in k.clocks)
    k.sla_compliance = met / concluded if concluded else None
    k.ftf, k.ftf_eligible = first_time_fix(faults, index)
    k.ftf_rate = k.ftf / k.ftf_eligible if k.ftf_eligible else None
    if uptime_scope:
        k.uptime, k.outage_hours = uptime(mine, start, end, calendar)
    complaints = [c for c in opened if c.kind == "complaint"]
    k.complaints = len(complaints)
    closed = [c for c in complaints if any(e.kind == "complaint_closed" for e in c.events)]
    k.complaints_closed = len(closed)
    k.complaints_closed_by_call = sum(
        1 for c in closed if any(e.kind == "complaint_closed" and e.data.get("by_call") for e in c.events)
    )
    k.complaints_first_reply_satisfied = sum(
        1 for c in closed if not any(e.kind == "complaint_not_satisfied" for e in c.events)
    )
    day_first, day_last = _local_day(start, tz), _local_day(end - timedelta(microseconds=1), tz)
    due_here = [d for d in due if day_first <= d.due <= day_last and not d.cancelled]
    inspections = [d for d in due_here if d.kind == "inspection"]
    service_cases = k.faults + len(inspections)
    k.complaint_rate = 100 * k.complaints / service_cases if service_cases else None
    k.complaint_clocks = clock_table(clock_fates(complaints, as_of=end, calendar_for=calendar_for))
    k.inspections_due = len(inspections)
    k.inspections_done = sum(1 for d in inspections if d.done_on is not None)
    k.inspections_on_time = sum(1 for d in inspections if d.done_on is not None and d.done_on <= d.due)
    drills = [d for d in due_here if d.kind == "drill"]
    k.drills_due, k.drills_done = len(drills), sum(1 for d in drills if d.done_on is not None)
    k.drills_evaluated = sum(1 for d in drills if d.objectives_met is not None)
    k.drills_objectives_met = sum(1 for d in drills if d.objectives_met)
    every_card = [*callback_scores(logs), *cards]
    k.scores, k.score_means, k.score_mean = score_table(c for c in every_card if start <= c.at < end)
    renewals_here = [r for r in renewals if day_first <= r.due <= day_last]
    k.renewals = dict(Counter(r.outcome for r in renewals_here))
    out = [r for r in renewals_here if r.outcome in ("renewed", "changed", "ended", "lapsed")]
    k.renewal_rate = sum(r.outcome in ("renewed", "changed") for r in out) / len(out) if out else None
    leads = [r.decided_days for r in renewals_here if r.decided_days is not None]
    k.renewal_lead_days = round(sum(leads) / len(leads), 1) if leads else None
    return k


def _local_day(moment: datetime, tz: str) -> date:
    return moment.astimezone(ZoneInfo(tz)).date()


def _key(obj: Any, by: str, tz: str) -> str:
    if by == "month":
        moment = getattr(obj, "reported_at", None) or getattr(obj, "at", None)
        if moment is None:
            day = obj.due
            return f"{day.year}-{day.month:02d}"
        return local_month(moment, tz)
    value = getattr(obj, by, "")
    return str(value or "（未注明）")


def table(
    logs: Sequence[CaseLog],
    *,
    start: datetime,
    end: datetime,
    by: str | None = None,
    due: Sequence[DueFact] = (),
    cards: Sequence[ScoreFact] = (),
    renewals: Sequence[RenewalFact] = (),
    calendar: Calendar | None = None,
    tz: str = "Asia/Shanghai",
    calendar_for: Callable[[Mapping[str, Any]], Calendar] = default_calendar_for,
    calendars: Mapping[str, Calendar] | None = None,
) -> list[KpiRow]:
    """The KPIs over [start, end), whole (`by` None) or one row per customer, site, device, device
    class, engineer or local month. A month row's window is that month (clipped to [start, end)), so a
    fault that spans a month end is down in both months; uptime is left out per engineer (an engineer
    is not a system). `calendars`: per customer, the service hours its uptime counts in (by customer)."""
    if by is not None and by not in BY_CHOICES:
        raise KpiError(f"未知的分组 / unknown grouping {by!r}: use one of {', '.join(BY_CHOICES)}")
    index = FaultIndex.of(faults_of(logs))  # once: every group looks its faults up in it
    common = {"calendar": calendar, "tz": tz, "calendar_for": calendar_for, "index": index}
    if by is None:
        return [
            KpiRow(
                "",
                compute(logs, start=start, end=end, due=due, cards=cards, renewals=renewals, **common),  # type: ignore[arg-type]
            )
        ]
    if by == "month":
        rows = []
        for label, a, b in month_windows(start, end, tz):
            rows.append(
                KpiRow(
                    label,
                    compute(logs, start=a, end=b, due=due, cards=cards, renewals=renewals, **common),  # type: ignore[arg-type]
                )
            )
        return rows
    groups: dict[str, list[CaseLog]] = defaultdict(list)
    by_id = {c.case_id: c for c in logs}
    for f in index.faults:  # a fault's cases go to its episode's group: a handed-over repair
        for case_id in f.case_ids:  # counts with its accident, once
            groups[_key(f, by, tz)].append(by_id[case_id])
    for c in logs:
        if c.kind not in FAULT_KINDS:
            groups[_key(c, by, tz)].append(c)
    # the work due, the scorecards and the renewals, each put with its group once
    dues: dict[str, list[DueFact]] = defaultdict(list)
    if by in ("customer", "site", "engineer"):
        for d in due:
            dues[_key(d, by, tz)].append(d)
    card_groups: dict[str, list[ScoreFact]] = defaultdict(list)
    for card in cards:
        card_groups[_key(card, by, tz)].append(card)
    renewal_groups: dict[str, list[RenewalFact]] = defaultdict(list)
    if by == "customer":
        for r in renewals:
            renewal_groups[r.customer].append(r)
    keys = set(groups) | set(card_groups) | set(dues) | set(renewal_groups)
    rows = []
    for key in sorted(keys):
        if by == "customer" and calendars and key in calendars:
            common["calendar"] = calendars[key]
        else:
            common["calendar"] = calendar
        row = KpiRow(
            key,
            compute(
                groups.get(key, []),
                start=start,
                end=end,
                due=dues.get(key, []),
                cards=card_groups.get(key, []),
                renewals=renewal_groups.get(key, []),
                uptime_scope=by != "engineer",
                **common,  # type: ignore[arg-type]
            ),
        )
        if active(row.kpis):
            rows.append(row)
    return rows


def active(k: Kpis) -> bool:
    """Whether anything happened in the group over the window (a group of cases from around it only
    — read for the uptime and the 30-day repeat — is left out)."""
    return bool(
        k.faults
        or k.complaints
        or k.clocks
        or k.scores
        or k.inspections_due
        or k.drills_due
        or k.renewals
        or k.outage_hours
    )


# ---- one row as columns (the CLI's table / CSV / JSON, the page) ----------------------------------

COLUMNS_ZH: dict[str, str] = {
    "faults": "故障数",
    "restored": "已恢复",
    "mttr_hours": "平均修复时间(小时)",
    "mttr_median": "修复时间中位数(小时)",
    "mttr_p90": "修复时间P90(小时)",
    "mttr_max": "最长修复时间(小时)",
    "sla_compliance": "SLA达标率",
    "ftf_rate": "一次修复率",
    "uptime": "可用率",
    "outage_hours": "中断时长(小时)",
    "complaints": "投诉数",
    "complaint_rate": "投诉率(每百单)",
    "complaints_closed": "投诉结案(客户满意)",
    "complaints_closed_by_call": "其中电话确认结案",
    "complaint_first_reply_satisfied": "一次答复即满意率",
    "score_mean": "满意度均分(4分制)",
    "inspections": "巡检完成/应做",
    "inspections_on_time": "巡检按期完成",
    "drills": "演练完成/应做",
    "drills_objectives_met": "演练目标达成/已评估",
    "renewals": "续约结果",
    "renewal_rate": "续约率",
    "renewal_lead_days": "续约答复距到期(天)",
}
RATIOS = ("sla_compliance", "ftf_rate", "uptime", "renewal_rate", "complaint_first_reply_satisfied")
RENEWAL_ZH = {
    "renewed": "已续约",
    "changed": "变更后续约",
    "ended": "终止合作",
    "lapsed": "到期未答复",
    "pending": "进行中",
}


def columns(rows: Sequence[KpiRow]) -> list[tuple[str, str]]:
    """(key, zh label) of every column the rows fill: the fixed ones, a compliance column per clock
    kind met or breached in any row, and a count per grade."""
    kinds = {
        c.kind for r in rows for c in [*r.kpis.clocks, *r.kpis.complaint_clocks] if c.compliance is not None
    }
    order = list(CLOCK_ZH)
    clocks = [
        (f"clock:{k}", f"达标率·{CLOCK_ZH.get(k, k)}")
        for k in sorted(kinds, key=lambda k: order.index(k) if k in order else 99)
    ]
    grades = [(f"grade:{g}", f"评分·{g}") for g in GRADES]
    return [*COLUMNS_ZH.items(), *clocks, *grades]


def flat(k: Kpis) -> dict[str, Any]:
    """The KPI set as plain values keyed like `columns` (ratios as fractions, None where nothing counts)."""
    out: dict[str, Any] = {key: getattr(k, key, None) for key in COLUMNS_ZH}
    out["inspections"] = f"{k.inspections_done}/{k.inspections_due}"
    out["drills"] = f"{k.drills_done}/{k.drills_due}"
    out["drills_objectives_met"] = (
        f"{k.drills_objectives_met}/{k.drills_evaluated}" if k.drills_evaluated else None
    )
    out["complaint_rate"] = round(k.complaint_rate, 2) if k.complaint_rate is not None else None
    out["complaint_first_reply_satisfied"] = (
        k.complaints_first_reply_satisfied / k.complaints_closed if k.complaints_closed else None
    )
    out["renewals"] = "、".join(f"{RENEWAL_ZH.get(o, o)} {n}" for o, n in sorted(k.renewals.items()))
    for c in [*k.clocks, *k.complaint_clocks]:
        out[f"clock:{c.kind}"] = c.compliance
    out.update({f"grade:{g}": n for g, n in grade_distribution(k.scores).items()})
    return out


def shown(key: str, value: Any) -> str:
    """A value as a person reads it: ratios in per cent, None as —."""
    if value is None or value == "":
        return "—"
    if key == "uptime":
        return f"{value * 100:.2f}%"
    if key in RATIOS or key.startswith("clock:"):
        return f"{value * 100:.1f}%"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.0f}"
    return str(value)
