"""SLA policies and deadlines (服务级别), pure: the SLA table of PROCEDURES.md §1 as data.

A policy is the default table merged with the contract's overrides (`Contract.sla_policy`): a clock
named in the overrides replaces that clock's rule as a whole; top-level settings (service hours,
working hours, escalation ladder) are merged key by key. A clock rule has exactly one unit —
`minutes`, `hours`, `days` (calendar days), `working_days` — with one value for every severity or a
list of four (severity 1..4); `null` means "no such deadline" for that severity. The arrival clock
may instead give distance `bands`.

Minutes and hours count working time on a 5x8 contract (wall-clock time on 7x24); days count
calendar days. Working days follow the contract's calendar: on 7x24 they keep the time of day; on
5x8, N working days are N x the day's working hours of working time, counted from the next working
moment — a Saturday-morning or after-hours start runs out at the close of business, never at night.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from rules.calendar import (
    DEFAULT_CALENDAR,
    Calendar,
    CalendarError,
    add_working_days,
    add_working_time,
    provisional_between,
    working_time_between,
)


class PolicyError(ValueError):
    """An SLA policy (or a call's input) that cannot be used; the message says why, for a person."""


class ClockKind(StrEnum):
    """The rows of the SLA table (PROCEDURES.md §1)."""

    FIRST_CONTACT = "first_contact"
    REMOTE_RESPONSE = "remote_response"
    WORKAROUND = "workaround"
    ARRIVAL = "arrival"
    SPARE_PART = "spare_part"
    RESTORE = "restore"
    FAULT_REPORT = "fault_report"
    ANALYSIS_REPORT = "analysis_report"
    CALLBACK = "callback"
    WRITTEN_ACCOUNT = "written_account"
    COMPLAINT_ANSWER = "complaint_answer"
    COMPLAINT_CLOSE = "complaint_close"
    INSPECTION_FEEDBACK = "inspection_feedback"
    DRILL_REPORT = "drill_report"


CLOCK_LABELS_ZH: dict[str, str] = {
    ClockKind.FIRST_CONTACT: "首次联系客户",
    ClockKind.REMOTE_RESPONSE: "电话/远程响应",
    ClockKind.WORKAROUND: "临时解决方案",
    ClockKind.ARRIVAL: "工程师到场",
    ClockKind.SPARE_PART: "备件到场",
    ClockKind.RESTORE: "恢复服务",
    ClockKind.FAULT_REPORT: "故障处理报告",
    ClockKind.ANALYSIS_REPORT: "故障分析报告",
    ClockKind.CALLBACK: "客户回访",
    ClockKind.WRITTEN_ACCOUNT: "书面维修报告",
    ClockKind.COMPLAINT_ANSWER: "投诉首次答复",
    ClockKind.COMPLAINT_CLOSE: "投诉处理完毕",
    ClockKind.INSPECTION_FEEDBACK: "巡检问题反馈",
    ClockKind.DRILL_REPORT: "演练报告",
}

# The two severity schemes (Contract.severity_scheme): level -> (label, definition), for the intake form.
SEVERITY_LEVELS_ZH: dict[str, dict[int, tuple[str, str]]] = {
    "outage": {  # [001 §2.2.2]
        1: ("特大故障", "业务中断超过 24 小时，影响 30% 以上用户"),
        2: ("重大故障", "业务中断超过 4 小时，影响 30% 以上用户"),
        3: ("严重故障", "业务中断达到 2 小时"),
        4: ("一般故障", "业务未中断，性能下降或出现告警"),
    },
    "business": {  # [003 §8.5.1]
        1: ("一级（紧急）", "业务停止运行，数据丢失"),
        2: ("二级（严重）", "部件故障、性能下降，业务仍在运行"),
        3: ("三级", "系统正常运行，但出现错误或隐患"),
        4: ("四级", "咨询、配置或计划内请求"),
    },
}


def severity_label(scheme: str, level: int) -> str:
    """The zh label of a severity level in a scheme ("outage" or "business")."""
    try:
        return SEVERITY_LEVELS_ZH[str(scheme)][int(level)][0]
    except (KeyError, ValueError) as exc:
        raise PolicyError(
            f"未知的故障级别 / unknown severity {level!r} in scheme {scheme!r}: use 1–4"
        ) from exc


def severity_text(scheme: str | None, level: int | None) -> str:
    """A severity as messages and reports show it, its level said once: "1 级（特大故障）" in the
    outage scheme, "三级" in the business scheme (whose labels carry the level)."""
    if level is None:
        return "未定级"
    levels = SEVERITY_LEVELS_ZH.get(str(scheme or "outage"), SEVERITY_LEVELS_ZH["outage"])
    if int(level) not in levels:
        return f"{level} 级"
    label = levels[int(level)][0]
    return label if "级" in label else f"{level} 级（{label}）"


def severity_choices(scheme: str) -> list[tuple[int, str, str]]:
    """(level, label, definition) for each level of a scheme: the choices of the repair intake form."""
    if str(scheme) not in SEVERITY_LEVELS_ZH:
        raise PolicyError(f"未知的故障分级方案 / unknown severity scheme {scheme!r}: use outage or business")
    return [(level, label, text) for level, (label, text) in SEVERITY_LEVELS_ZH[str(scheme)].items()]


# The default table of PROCEDURES.md §1 (every number configurable per contract).
DEFAULT_POLICY: dict[str, Any] = {
    "service_hours": "7x24",
    "working_hours": {"start": "09:00", "end": "18:00", "lunch": None},
    "clocks": {
        "first_contact": {"minutes": 30},
        "remote_response": {"minutes": [5, 5, 10, 60]},
        "workaround": {"minutes": [30, 30, 60, None]},
        # [001 §2.2.5.8]; the [003 §8.5.2] variant is {"hours": [2, 2, 4, 4]}.
        "arrival": {
            "bands": [
                {"same_city": True, "hours": 0.5},
                {"max_km": 100, "hours": 1},
                {"max_km": 300, "hours": 3},
                {"max_km": 500, "hours": 5},
            ]
        },
        "spare_part": {"hours": 4},
        "restore": {"hours": [4, 4, 24, 24]},
        "fault_report": {"hours": 24},
        "analysis_report": {"working_days": 1},
        "callback": {"days": 2},
        "written_account": {"days": 7},
        "complaint_answer": {"hours": 2},
        "complaint_close": {"days": 15},
        # every problem an inspection finds is fed back to the customer, with its repair's number,
        # within 2 working days [PROCEDURES.md §4.5]; its breach escalates like every clock's
        "inspection_feedback": {"working_days": 2},
        # the 演练报告 within 2 working days after the drill [PROCEDURES.md §5.5, issue 19]
        "drill_report": {"working_days": 2},
    },
    # The escalation ladder [001 §3.1; 003 §8.5.5]: level -> offset from the clock's start, counted
    # like the clock (working time on 5x8). Level 1 is entered at intake.
    "escalation": {
        "clocks": ["restore"],
        "ladder": [
            {"level": 1, "minutes": 0},
            {"level": 2, "hours": 2},
            {"level": 3, "hours": 4},
            {"level": 4, "working_days": 1},
        ],
        # a breached restore clock raises the case's severity by one level [003 §8.5.1]
        "raise_severity_on": ["restore"],
        # a case without any update for this long is escalated to the next manager [001 §2.2.1.2-3]
        "stale_after": {"hours": 24},
    },
}

UNITS = ("minutes", "hours", "days", "working_days")


@dataclass(frozen=True)
class SlaPolicy:
    """The merged SLA table of one contract."""

    data: Mapping[str, Any]

    @property
    def service_hours(self) -> str:
        return str(self.data.get("service_hours", "7x24"))

    def clock_rule(self, clock: str) -> Mapping[str, Any]:
        try:
            return self.data["clocks"][str(clock)]
        except KeyError as exc:
            known = ", ".join(self.data["clocks"])
            raise PolicyError(f"未知的时钟 / unknown clock {clock!r}: known clocks are {known}") from exc

    @property
    def escalation(self) -> Mapping[str, Any]:
        return self.data.get("escalation", {})

    def calendar(self, base: Calendar | None = None) -> Calendar:
        """`base` (days and overrides) with this policy's service hours."""
        wh = self.data.get("working_hours", {})
        lunch = wh.get("lunch")
        return (base or DEFAULT_CALENDAR).with_hours(
            round_the_clock=self.service_hours == "7x24",
            day_start=_parse_time(wh.get("start", "09:00")),
            day_end=_parse_time(wh.get("end", "18:00")),
            lunch=(_parse_time(lunch[0]), _parse_time(lunch[1])) if lunch else None,
        )


def _parse_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    try:
        hh, mm = str(value).split(":")
        return time(int(hh), int(mm))
    except ValueError as exc:
        raise PolicyError(f"时间格式应为 HH:MM / time must be HH:MM, got {value!r}") from exc


def merge_policy(
    overrides: Mapping[str, Any] | None = None,
    *,
    service_hours: str | None = None,
) -> SlaPolicy:
    """The default table with a contract's overrides merged over it, checked."""
    data = copy.deepcopy(DEFAULT_POLICY)
    for key, value in (overrides or {}).items():
        if key in ("clocks",):
            if not isinstance(value, Mapping):
                raise PolicyError(
                    "SLA 策略的 clocks 必须是字典 / 'clocks' must be a mapping of clock -> rule"
                )
            for clock, rule in value.items():
                data["clocks"][clock] = copy.deepcopy(rule)  # a clock's rule is replaced as a whole
        elif isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key].update(copy.deepcopy(dict(value)))
        else:
            data[key] = copy.deepcopy(value)
    if service_hours is not None:
        data["service_hours"] = str(service_hours)
    policy = SlaPolicy(data)
    validate_policy(policy)
    return policy


def policy_for(contract: Any | None) -> SlaPolicy:
    """The policy of a contract (its `sla_policy` overrides and `service_hours`); defaults without one."""
    if contract is None:
        return merge_policy()
    return merge_policy(contract.sla_policy or {}, service_hours=str(contract.service_hours))


def validate_policy(policy: SlaPolicy) -> None:
    if policy.service_hours not in ("7x24", "5x8"):
        raise PolicyError(
            f"服务时间只能是 7x24 或 5x8 / service hours must be 7x24 or 5x8, got {policy.service_hours!r}"
        )
    policy.calendar()  # checks working hours
    for clock, rule in policy.data["clocks"].items():
        if not isinstance(rule, Mapping):
            raise PolicyError(
                f"时钟 {clock} 的规则必须是字典 / the rule of clock {clock!r} must be a mapping"
            )
        if "bands" in rule:
            for band in rule["bands"]:
                if "hours" not in band or not ("same_city" in band or "max_km" in band):
                    raise PolicyError(
                        f"到场距离档位缺少 hours/max_km / arrival band {band!r} needs hours and max_km or same_city"
                    )
            continue
        units = [u for u in UNITS if u in rule]
        if len(units) != 1:
            raise PolicyError(
                f"时钟 {clock} 必须且只能有一个单位 / clock {clock!r} needs exactly one of {', '.join(UNITS)}"
            )
        value = rule[units[0]]
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) != 4:
            raise PolicyError(
                f"时钟 {clock} 需要 4 个级别的值 / clock {clock!r}: give one value or four (severity 1–4)"
            )
        for v in values:
            if v is not None and (not isinstance(v, int | float) or v < 0):
                raise PolicyError(
                    f"时钟 {clock} 的时长无效 / clock {clock!r}: {v!r} is not a non-negative number"
                )
    for step in policy.escalation.get("ladder", []):
        if "level" not in step or not any(u in step for u in UNITS):
            raise PolicyError(
                f"升级梯级无效 / escalation step {step!r} needs a level and one of {', '.join(UNITS)}"
            )


# ---------------------------------------------------------------- deadlines


@dataclass(frozen=True)
class Deadline:
    """A computed deadline; `provisional` when it rests on a calendar year without official data."""

    at: datetime  # aware, UTC
    clock: str
    severity: int
    provisional: bool
    basis: str  # how it was computed, in Chinese, e.g. "4 小时（5x8 工作时间）"
    # whether the working-day calendar entered the computation (a later pause or a confirmed year
    # can change `provisional` only then); pure wall-clock spans do not depend on it
    uses_calendar: bool = False

    @property
    def warning(self) -> str | None:
        if not self.provisional:
            return None
        return "暂定：该年度官方节假日安排未发布，按法定节假日推算 / provisional: the official holiday notice for this year is not in the calendar"


@dataclass(frozen=True)
class Span:
    """An amount of time in one unit, before it is laid on the calendar."""

    unit: str
    amount: float

    def describe(self, service_hours: str) -> str:
        n = f"{self.amount:g}"
        if self.unit == "minutes":
            return f"{n} 分钟" + ("（5x8 工作时间）" if service_hours == "5x8" else "")
        if self.unit == "hours":
            return f"{n} 小时" + ("（5x8 工作时间）" if service_hours == "5x8" else "")
        if self.unit == "days":
            return f"{n} 天"
        return f"{n} 个工作日"


def _check_severity(severity: int) -> int:
    if not isinstance(severity, int) or isinstance(severity, bool) or not 1 <= severity <= 4:
        raise PolicyError(f"故障级别必须是 1–4 / severity must be 1–4, got {severity!r}")
    return severity


def span_for(policy: SlaPolicy, clock: str, severity: int, *, site: Any | None = None) -> Span | None:
    """The clock's budget for a severity (and site, for arrival); None when the policy sets none."""
    rule = policy.clock_rule(clock)
    _check_severity(severity)
    if "bands" in rule:
        if site is None:
            raise PolicyError(
                "到场时限按机房距离计算，需要机房信息 / the arrival clock needs the site (its distance)"
            )
        for band in rule["bands"]:
            if band.get("same_city") and getattr(site, "same_city", False):
                return Span("hours", float(band["hours"]))
            if "max_km" in band and float(getattr(site, "distance_km", 0.0)) <= float(band["max_km"]):
                return Span("hours", float(band["hours"]))
        if "beyond_hours" in rule:
            return Span("hours", float(rule["beyond_hours"]))
        raise PolicyError(
            f"机房距离 {getattr(site, 'distance_km', '?')} km 超出合同约定的到场档位 / "
            "the site is beyond the farthest arrival band: add a band or beyond_hours to the contract's SLA policy"
        )
    unit = next(u for u in UNITS if u in rule)
    value = rule[unit]
    if isinstance(value, list):
        value = value[severity - 1]
    if value is None:
        return None
    return Span(unit, float(value))


def lay_span(start: datetime, span: Span, calendar: Calendar) -> datetime:
    """`start` + `span` on the calendar (working time for minutes/hours on 5x8), aware UTC."""
    if span.unit == "minutes":
        return add_working_time(start, timedelta(minutes=span.amount), calendar)
    if span.unit == "hours":
        return add_working_time(start, timedelta(hours=span.amount), calendar)
    if span.unit == "days":
        return (start + timedelta(days=span.amount)).astimezone(UTC)
    if not calendar.round_the_clock:
        # "Same time on the Nth working day" would put a Saturday 10:00 start's deadline at Monday
        # 10:00 (before a 2-hour step laid in working time) and a Friday 23:30 start's at Monday
        # 23:30: count whole working days of working time instead.
        return add_working_time(start, calendar.hours_per_day() * span.amount, calendar)
    local = start.astimezone(calendar.zone)
    day = add_working_days(local.date(), int(span.amount), calendar)
    return datetime.combine(day, local.timetz().replace(tzinfo=None), tzinfo=calendar.zone).astimezone(UTC)


def deadline(
    policy: SlaPolicy | Mapping[str, Any] | None,
    clock: str,
    severity: int,
    started_at: datetime,
    *,
    site: Any | None = None,
    calendar: Calendar | None = None,
) -> Deadline | None:
    """When `clock` started at `started_at` runs out; None when the policy sets no deadline.

    `policy` is an SlaPolicy, a contract's overrides dict, or None (defaults). `calendar` gives the
    days (official calendar + overrides); the policy gives the service hours.
    """
    if not isinstance(started_at, datetime) or started_at.tzinfo is None:
        raise PolicyError(f"开始时间需要带时区 / started_at must be an aware datetime, got {started_at!r}")
    pol = policy if isinstance(policy, SlaPolicy) else merge_policy(policy)
    span = span_for(pol, clock, severity, site=site)
    if span is None:
        return None
    cal = pol.calendar(calendar)
    try:
        at = lay_span(started_at, span, cal)
    except CalendarError as exc:
        raise PolicyError(str(exc)) from exc
    # Pure wall-clock spans (7x24 minutes/hours, calendar days) do not depend on the calendar.
    uses_calendar = span.unit == "working_days" or (
        span.unit in ("minutes", "hours") and not cal.round_the_clock
    )
    provisional = uses_calendar and provisional_between(started_at, at, cal)
    return Deadline(
        at=at,
        clock=str(clock),
        severity=severity,
        provisional=provisional,
        basis=span.describe(pol.service_hours),
        uses_calendar=uses_calendar,
    )


@dataclass(frozen=True)
class LadderStep:
    """One level of a clock's escalation ladder, laid on the calendar."""

    level: int
    at: datetime  # aware, UTC
    provisional: bool
    uses_calendar: bool  # as Deadline.uses_calendar


def ladder_steps(
    policy: SlaPolicy, clock: str, started_at: datetime, calendar: Calendar | None = None
) -> list[LadderStep]:
    """The escalation ladder of a clock, levels in ascending order and never earlier than a lower
    level; empty for clocks without one."""
    esc = policy.escalation
    if str(clock) not in esc.get("clocks", []):
        return []
    cal = policy.calendar(calendar)
    laid: list[tuple[int, datetime, bool]] = []
    for step in esc.get("ladder", []):
        unit = next(u for u in UNITS if u in step)
        at = lay_span(started_at, Span(unit, float(step[unit])), cal)
        uses_calendar = unit == "working_days" or (unit in ("minutes", "hours") and not cal.round_the_clock)
        laid.append((int(step["level"]), at, uses_calendar))
    # A higher level never comes before a lower one, whatever units a contract mixes (e.g. 30 hours
    # for level 3 and 1 working day for level 4): a step due earlier waits for the level below it.
    steps: list[LadderStep] = []
    for level, at, uses_calendar in sorted(laid, key=lambda s: s[0]):
        if steps and at < steps[-1].at:
            at, uses_calendar = steps[-1].at, steps[-1].uses_calendar
        provisional = uses_calendar and provisional_between(started_at, at, cal)
        steps.append(LadderStep(level, at, provisional, uses_calendar))
    return steps


def ladder(
    policy: SlaPolicy, clock: str, started_at: datetime, calendar: Calendar | None = None
) -> list[tuple[int, datetime, bool]]:
    """The escalation ladder of a clock: (level, when, provisional) per level (see `ladder_steps`)."""
    return [(s.level, s.at, s.provisional) for s in ladder_steps(policy, clock, started_at, calendar)]


def _stale_rule(policy: SlaPolicy) -> Span:
    rule = policy.escalation.get("stale_after", {"hours": 24})
    unit = next((u for u in ("minutes", "hours", "days") if u in rule), "hours")
    return Span(unit, float(rule.get(unit, 24)))


def stale_in_working_time(policy: SlaPolicy) -> bool:
    """Whether `stale_at` counts the limit in working hours (minutes/hours on a contract not 7x24)."""
    return policy.service_hours != "7x24" and _stale_rule(policy).unit != "days"


def stale_span(policy: SlaPolicy) -> timedelta:
    """How long a case may go without an update (`escalation.stale_after`), as a length of time.

    Never more than the wall-clock time `stale_at` gives (working time runs no faster than the
    wall clock), so it bounds a query for candidates from below."""
    span = _stale_rule(policy)
    return timedelta(**{span.unit: span.amount})


def stale_at(policy: SlaPolicy, updated_at: datetime, calendar: Calendar | None = None) -> datetime:
    """When a case last updated at `updated_at` becomes stale, counted like a clock: minutes and
    hours of working time on a 5x8 contract (a Friday-evening update is not stale on Saturday),
    wall-clock time on 7x24; days are calendar days."""
    try:
        return lay_span(updated_at, _stale_rule(policy), policy.calendar(calendar))
    except CalendarError as exc:
        raise PolicyError(str(exc)) from exc


def shift_after_pause(
    times: Sequence[datetime], paused_at: datetime, resumed_at: datetime, calendar: Calendar
) -> list[datetime]:
    """Move each time still ahead at the pause by the pause, measured in the clock's own time
    (working time on 5x8): what was left at `paused_at` is left again at `resumed_at`."""
    out = []
    for t in times:
        if t <= paused_at:
            out.append(t)
        else:
            out.append(add_working_time(resumed_at, working_time_between(paused_at, t, calendar), calendar))
    return out


def figure_from_events(
    events: Sequence[tuple[str, datetime, Mapping[str, Any]]],
    calendar: Calendar,
    *,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    """A clock's figure from its events alone (kind, at, data), oldest first: what a report shows.

    `elapsed` is the time the clock ran (in its own hours: working time on 5x8), pauses excluded,
    up to its stop — or up to `as_of` for a clock still running.
    """
    started_at: datetime | None = None
    due_at: datetime | None = None
    stopped_at: datetime | None = None
    paused_from: datetime | None = None
    pauses: list[tuple[datetime, datetime]] = []
    breached = False
    for kind, at, data in events:
        if kind == "clock.started":
            started_at = at
            due_at = datetime.fromisoformat(data["due_at"]) if data.get("due_at") else None
        elif kind == "clock.paused":
            paused_from = at
        elif kind == "clock.resumed":
            if paused_from is not None:
                pauses.append((paused_from, at))
            paused_from = None
            due_at = datetime.fromisoformat(data["due_at"]) if data.get("due_at") else None
        elif kind in ("clock.met", "clock.breached"):
            stopped_at = at
            breached = breached or kind == "clock.breached"
        elif kind == "clock.breach":
            breached = True
    if started_at is None:
        raise PolicyError("事件记录中没有时钟开始 / the events hold no clock.started")
    end = stopped_at or paused_from or as_of
    elapsed = None
    if end is not None:
        elapsed = working_time_between(started_at, end, calendar) - sum(
            (working_time_between(a, min(b, end), calendar) for a, b in pauses if a < end), timedelta()
        )
    return {
        "started_at": started_at,
        "due_at": due_at,
        "stopped_at": stopped_at,
        "paused": paused_from is not None,
        "pauses": pauses,
        "elapsed": elapsed,
        "met": None if stopped_at is None else not breached,
        "breached": breached,
    }
