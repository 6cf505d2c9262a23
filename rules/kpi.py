"""Service figures (PROCEDURES.md §8) for the monthly summary and the quarterly analysis, pure.

Inputs are plain facts read from cases, their events and their SLA clocks (tasks/summary.py reads
them); nothing here touches the database, so a figure can be recomputed for any past period.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from statistics import mean

UNKNOWN_CAUSE = "原因待查"


@dataclass(frozen=True)
class FaultFact:
    case_id: int
    number: str
    kind: str  # repair / accident
    severity: int | None
    title: str
    device: str  # "华为 OceanStor 5310 (SN…)" or ""
    device_class: str
    reported_at: datetime
    restored_at: datetime | None
    closed_at: datetime | None
    status: str
    cause: str = ""
    analysis: str = ""  # major-fault analysis text (accidents, severity 1-2)
    solution: str = ""
    from_inspection: bool = False

    @property
    def major(self) -> bool:
        return self.kind == "accident" or (self.severity is not None and self.severity <= 2)


@dataclass(frozen=True)
class ClockFact:
    case_id: int
    kind: str  # first_contact / remote_response / arrival / restore / ...
    started_at: datetime
    stopped_at: datetime | None  # met or stopped late
    breached: bool
    paused_seconds: float = 0.0


@dataclass(frozen=True)
class ClockFigure:
    kind: str
    count: int
    met: int
    breached: int
    compliance: float | None  # met / concluded, None when nothing concluded
    mean_minutes: float | None
    max_minutes: float | None


@dataclass
class Figures:
    faults: int = 0
    major_faults: int = 0
    by_severity: dict[int, int] = field(default_factory=dict)
    by_cause: list[tuple[str, int]] = field(default_factory=list)
    by_device_class: list[tuple[str, int]] = field(default_factory=list)
    mttr_hours: float | None = None
    restored: int = 0
    clocks: list[ClockFigure] = field(default_factory=list)
    sla_compliance: float | None = None  # all clocks together
    trend: list[tuple[str, int]] = field(default_factory=list)  # (month, faults), oldest first
    trend_word: str = "持平"


CLOCK_ZH = {
    "first_contact": "首次联系",
    "remote_response": "电话/远程响应",
    "workaround": "临时方案",
    "arrival": "到场",
    "spare_part": "备件到场",
    "restore": "恢复服务",
    "fault_report": "故障处理报告",
    "analysis_report": "故障分析报告",
    "callback": "回访",
    "written_account": "书面总结",
    "complaint_answer": "投诉首次答复",
    "complaint_close": "投诉关闭",
}


def _minutes(c: ClockFact) -> float | None:
    if c.stopped_at is None:
        return None
    return max(0.0, (c.stopped_at - c.started_at).total_seconds() - c.paused_seconds) / 60.0


def clock_figures(clocks: list[ClockFact]) -> list[ClockFigure]:
    """Per clock kind: how many, met, breached, compliance, mean and max duration (minutes)."""
    out: list[ClockFigure] = []
    for kind in in_sla_order({c.kind for c in clocks}):
        these = [c for c in clocks if c.kind == kind]
        breached = sum(1 for c in these if c.breached)
        met = sum(1 for c in these if not c.breached and c.stopped_at is not None)
        durations = [m for m in (_minutes(c) for c in these) if m is not None]
        out.append(clock_figure(kind, len(these), met, breached, durations))
    return out


def in_sla_order(kinds: set[str]) -> list[str]:
    """Clock kinds in the SLA table's order (CLOCK_ZH), unknown ones last."""
    order = list(CLOCK_ZH)
    return sorted(kinds, key=lambda k: order.index(k) if k in order else 99)


def clock_figure(kind: str, count: int, met: int, breached: int, minutes: list[float]) -> ClockFigure:
    """One clock kind's line: compliance over the concluded clocks (met + breached), mean and max of
    the durations (minutes, one decimal)."""
    concluded = met + breached
    return ClockFigure(
        kind=kind,
        count=count,
        met=met,
        breached=breached,
        compliance=(met / concluded) if concluded else None,
        mean_minutes=round(mean(minutes), 1) if minutes else None,
        max_minutes=round(max(minutes), 1) if minutes else None,
    )


def mttr_hours(faults: list[FaultFact]) -> tuple[float | None, int]:
    """Mean time to restore (report → restored), hours, over the faults restored; and how many."""
    spans = [
        (f.restored_at - f.reported_at).total_seconds() / 3600 for f in faults if f.restored_at is not None
    ]
    return (round(mean(spans), 2) if spans else None), len(spans)


def trend_word(series: list[int]) -> str:
    """上升 / 下降 / 持平: the last month against the mean of the months before it."""
    if len(series) < 2:
        return "持平"
    before = mean(series[:-1])
    last = series[-1]
    if last > before * 1.2 and last - before >= 1:
        return "上升"
    if last < before * 0.8 and before - last >= 1:
        return "下降"
    return "持平"


def month_label(day: date | datetime) -> str:
    return f"{day.year}-{day.month:02d}"


def figures(
    faults: list[FaultFact],
    clocks: list[ClockFact],
    *,
    history: list[FaultFact] | None = None,
    months: list[str] | None = None,
    month_of: dict[int, str] | None = None,
) -> Figures:
    """All figures of one period; `history` + `months` (oldest first) give the frequency trend.

    `month_of` maps a case id to its local month label (the caller converts to the contract's time
    zone); without it the UTC month of the report is used.
    """
    f = Figures()
    f.faults = len(faults)
    f.major_faults = sum(1 for x in faults if x.major)
    f.by_severity = dict(sorted(Counter(x.severity for x in faults if x.severity is not None).items()))
    f.by_cause = Counter(x.cause.strip() or UNKNOWN_CAUSE for x in faults).most_common()
    f.by_device_class = Counter(x.device_class or "其他" for x in faults).most_common()
    f.mttr_hours, f.restored = mttr_hours(faults)
    f.clocks = clock_figures(clocks)
    met = sum(c.met for c in f.clocks)
    concluded = met + sum(c.breached for c in f.clocks)
    f.sla_compliance = (met / concluded) if concluded else None
    if months:
        where = month_of or {}
        counts = Counter(where.get(x.case_id, month_label(x.reported_at)) for x in (history or []))
        f.trend = [(m, counts.get(m, 0)) for m in months]
        f.trend_word = trend_word([n for _, n in f.trend])
    return f


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"
