"""Emergency drills (应急演练 / 灾难演练), pure rules: how often a contract drills, the drill's dates on
the working-day calendar, the step tables of the recovery and drill plans, and the drill's
evaluation against the recovery objectives (PROCEDURES.md §5).

No I/O here: tasks/drill.py reads contracts, plans and results and passes plain values in.

- How often: `Contract.sla_policy["drill"] = {"per_year": 2, "notice_working_days": 5}` (the
  defaults: twice a year, notice 5 working days ahead). A year is cut into `per_year` equal blocks
  of months; one drill per contract and block ("2026-H2", "2026-Q3", "2026", "2026-05/2M").
- Dates: the notice goes out N working days before the drill day, the re-confirmation 1 working day
  before. A drill may be held on a day off (drills often are, outside the business window), but
  only when whoever picks the day confirms it; a working day needs no confirmation.
- Step tables: one line per step, `操作 | 负责人 | 预计分钟`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from rules.calendar import add_working_days, is_working_day

DEFAULT_PER_YEAR = 2  # PROCEDURES.md §5 / issue 19: twice a year unless the contract says otherwise
NOTICE_WORKING_DAYS = 5  # both sides' participants are told 5 working days ahead
RECONFIRM_WORKING_DAYS = 1  # and the drill is re-confirmed 1 working day ahead
REPORT_WORKING_DAYS = 2  # the 演练报告 within 2 working days (the drill_report clock)
PER_YEAR_CHOICES = (0, 1, 2, 3, 4, 6, 12)  # blocks of whole months; 0 = the contract has no drills
MAX_STEPS = 50
MAX_MINUTES = 7 * 24 * 60  # a single step longer than a week is a typing error

DRILL_KINDS_ZH = {
    "failover": "主备切换演练",
    "restore": "数据恢复演练",
    "disaster": "灾备（异地）切换演练",
    "network": "网络中断演练",
    "power": "断电演练",
    "tabletop": "桌面推演",
}


class DrillRuleError(ValueError):
    """Bad drill input; the message says what, for a person (Chinese / English)."""


# ---- how often -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillSettings:
    per_year: int = DEFAULT_PER_YEAR
    notice_working_days: int = NOTICE_WORKING_DAYS


def drill_settings(sla_policy: dict[str, Any] | None) -> DrillSettings:
    """The contract's drill settings (its `sla_policy["drill"]`), checked; the defaults when absent."""
    raw = (sla_policy or {}).get("drill") or {}
    if not isinstance(raw, dict):
        raise DrillRuleError("合同的演练设置必须是字典 / sla_policy['drill'] must be a mapping")
    per_year = raw.get("per_year", DEFAULT_PER_YEAR)
    notice = raw.get("notice_working_days", NOTICE_WORKING_DAYS)
    if not isinstance(per_year, int) or per_year not in PER_YEAR_CHOICES:
        raise DrillRuleError(
            f"每年演练次数只能是 {'、'.join(map(str, PER_YEAR_CHOICES))} / per_year must be one of {PER_YEAR_CHOICES}"
        )
    if not isinstance(notice, int) or not 1 <= notice <= 30:
        raise DrillRuleError("演练通知提前工作日数须在 1–30 之间 / notice_working_days must be 1..30")
    return DrillSettings(per_year=per_year, notice_working_days=notice)


@dataclass(frozen=True)
class DrillPeriod:
    label: str
    start: date
    end: date  # inclusive


def _month_end(year: int, month: int) -> date:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return nxt - timedelta(days=1)


def drill_period(day: date, per_year: int) -> DrillPeriod:
    """The block of the year containing `day` (one drill per contract and block)."""
    if per_year not in PER_YEAR_CHOICES or per_year == 0:
        raise DrillRuleError(f"每年演练次数无效 / invalid per_year {per_year}")
    months = 12 // per_year
    k = (day.month - 1) // months
    first_month, last_month = k * months + 1, k * months + months
    start, end = date(day.year, first_month, 1), _month_end(day.year, last_month)
    if per_year == 1:
        label = f"{day.year}"
    elif per_year == 2:
        label = f"{day.year}-H{k + 1}"
    elif per_year == 4:
        label = f"{day.year}-Q{k + 1}"
    elif per_year == 12:
        label = f"{day.year}-{first_month:02d}"
    else:
        label = f"{day.year}-{first_month:02d}/{months}M"
    return DrillPeriod(label, start, end)


def due_drill_period(
    today: date, *, per_year: int, contract_start: date, contract_end: date
) -> DrillPeriod | None:
    """The period whose drill must exist on `today`: the block containing today while the contract
    covers today; None for a contract without drills or not in force."""
    if per_year == 0 or not contract_start <= today <= contract_end:
        return None
    return drill_period(today, per_year)


def proposed_drill_day(calendar: Any, today: date, period_end: date, notice_working_days: int) -> date:
    """The first working day that leaves room for the notice and an answer (notice + 2 working days),
    kept inside the period when it can be."""
    day = add_working_days(today, notice_working_days + 2, calendar)
    if day > period_end:
        day = add_working_days(today, notice_working_days + 1, calendar)
    return day


# ---- dates -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillDates:
    drill_day: date
    notice_day: date  # N working days before
    reconfirm_day: date  # 1 working day before


def drill_dates(
    calendar: Any, drill_day: date, *, notice_working_days: int = NOTICE_WORKING_DAYS
) -> DrillDates:
    return DrillDates(
        drill_day=drill_day,
        notice_day=add_working_days(drill_day, -notice_working_days, calendar),
        reconfirm_day=add_working_days(drill_day, -RECONFIRM_WORKING_DAYS, calendar),
    )


def check_drill_day(
    calendar: Any,
    drill_day: date,
    *,
    today: date,
    notice_working_days: int = NOTICE_WORKING_DAYS,
    day_off_confirmed: bool = False,
) -> None:
    """A drill day must leave room for the notice; a day off (weekend, holiday) needs confirming."""
    if drill_day <= today:
        raise DrillRuleError(f"{drill_day} 不是以后的日期 / the drill day must lie ahead")
    if drill_day > today + timedelta(days=366):
        raise DrillRuleError(f"{drill_day} 在一年以后 / more than a year ahead")
    if not is_working_day(drill_day, calendar) and not day_off_confirmed:
        raise DrillRuleError(
            f"{drill_day} 是节假日或休息日：如确需在该日演练，请勾选「确认在休息日演练」 / "
            "a day off: confirm it to drill on that day"
        )
    if add_working_days(drill_day, -notice_working_days, calendar) < today:
        raise DrillRuleError(
            f"{drill_day} 太近：须提前 {notice_working_days} 个工作日通知双方参演人员 / "
            f"too soon for the {notice_working_days}-working-day notice"
        )


def read_day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise DrillRuleError(f"「{text}」不是有效日期，请按 2026-12-05 的格式填写") from None


def read_clock(text: str) -> tuple[int, int]:
    import re

    m = re.fullmatch(r"([01]\d|2[0-3])[:：]([0-5]\d)", (text or "").strip())
    if m is None:
        raise DrillRuleError(f"「{text}」不是有效时间，请按 09:30 的格式填写")
    return int(m[1]), int(m[2])


# ---- step tables ------------------------------------------------------------------------------------


class StepLine(BaseModel):
    position: int = Field(ge=1)
    action: str
    owner: str = ""
    minutes: int = Field(ge=1)


def parse_steps(text: str, *, what: str = "步骤") -> list[StepLine]:
    """`操作 | 负责人 | 预计分钟` per line → the steps; refuses what cannot be read, naming the line."""
    found: list[StepLine] = []
    for n, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.strip().strip("-·•").strip()
        if not line:
            continue
        parts = [p.strip() for p in line.replace("｜", "|").split("|")]
        if len(parts) != 3 or not parts[0]:
            raise DrillRuleError(
                f"{what}第 {n} 行「{raw.strip()}」应写成：操作 | 负责人 | 预计分钟，如：切换到备库 | 张工 | 30"
            )
        action, owner, minutes = parts
        try:
            value = int(minutes.removesuffix("分钟").removesuffix("分").strip())
        except ValueError:
            raise DrillRuleError(f"{what}第 {n} 行的预计分钟「{minutes}」不是整数") from None
        if not 1 <= value <= MAX_MINUTES:
            raise DrillRuleError(f"{what}第 {n} 行的预计分钟须在 1–{MAX_MINUTES} 之间")
        found.append(StepLine(position=len(found) + 1, action=action[:200], owner=owner[:100], minutes=value))
    if not found:
        raise DrillRuleError(f"请至少填写一个{what}（操作 | 负责人 | 预计分钟）")
    if len(found) > MAX_STEPS:
        raise DrillRuleError(f"{what}最多 {MAX_STEPS} 个")
    return found


def steps_text(steps: list[StepLine] | list[dict[str, Any]]) -> str:
    """The step table back as the form's text (a plan to revise comes filled in with it)."""
    rows = [s if isinstance(s, StepLine) else StepLine.model_validate(s) for s in steps]
    return "\n".join(f"{s.action} | {s.owner} | {s.minutes}" for s in rows)


# ---- evaluation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepOutcome:
    position: int
    action: str
    expected_minutes: int
    actual_minutes: float | None  # None: not run (the drill was aborted before it)
    result: str  # 成功 / 失败 / 未执行
    over_minutes: float | None


def duration_minutes(started_at: datetime, ended_at: datetime) -> float:
    if ended_at < started_at:
        raise DrillRuleError("结束时间早于开始时间 / the step ends before it starts")
    return round((ended_at - started_at).total_seconds() / 60, 1)


def evaluate(
    planned: list[StepLine],
    results: list[dict[str, Any]],
    *,
    rto_minutes: int,
    rpo_minutes: int,
    data_loss_minutes: float | None,
) -> dict[str, Any]:
    """Each step's actual duration against its expected time, and the whole against the RTO/RPO.

    `results`: {"position", "started_at", "ended_at", "result"} per step that ran. The recovery
    time is from the first step's start to the last step's end; RTO met when it is ≤ the RTO and
    every step succeeded; RPO met when the data lost (entered by the lead) is ≤ the RPO."""
    by_pos = {int(r["position"]): r for r in results}
    outcomes: list[StepOutcome] = []
    for s in planned:
        r = by_pos.get(s.position)
        if r is None:
            outcomes.append(StepOutcome(s.position, s.action, s.minutes, None, "未执行", None))
            continue
        actual = duration_minutes(r["started_at"], r["ended_at"])
        outcomes.append(
            StepOutcome(s.position, s.action, s.minutes, actual, r["result"], round(actual - s.minutes, 1))
        )
    ran = [by_pos[s.position] for s in planned if s.position in by_pos]
    total = duration_minutes(ran[0]["started_at"], ran[-1]["ended_at"]) if ran else None
    all_ok = bool(ran) and len(ran) == len(planned) and all(r["result"] == "成功" for r in ran)
    rto_met = all_ok and total is not None and total <= rto_minutes
    rpo_met = data_loss_minutes is not None and data_loss_minutes <= rpo_minutes
    return {
        "steps": [o.__dict__ for o in outcomes],
        "expected_total": sum(s.minutes for s in planned),
        "actual_total": total,
        "rto_minutes": rto_minutes,
        "rpo_minutes": rpo_minutes,
        "data_loss_minutes": data_loss_minutes,
        "completed": all_ok,
        "rto_met": rto_met,
        "rpo_met": rpo_met,
    }


def split_lines(text: str) -> list[str]:
    return [line.strip(" -·•\t") for line in (text or "").splitlines() if line.strip(" -·•\t")]


def parse_training(text: str, *, today: date) -> list[tuple[str, date]]:
    """`培训内容 | 截止日期` per line → (topic, due day); a due day must lie ahead."""
    found = []
    for n, raw in enumerate(split_lines(text), start=1):
        parts = [p.strip() for p in raw.replace("｜", "|").split("|")]
        if len(parts) != 2 or not parts[0]:
            raise DrillRuleError(f"培训第 {n} 行应写成：培训内容 | 截止日期，如：备份恢复操作 | 2027-01-15")
        due = read_day(parts[1])
        if due <= today:
            raise DrillRuleError(f"培训第 {n} 行的截止日期 {due} 须在今天之后")
        found.append((parts[0][:200], due))
    return found
