"""Pure rules of the accident-handling procedure (事故处理, PROCEDURES.md §3): the accident plan's
parts, the customer's tolerated window, the half-restore-time standby rule and the hourly / daily
report cadence. No I/O: tasks call these with values, tests call them directly.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, field_validator

# Without a contract value the window is the default restore time of severity 1-2 (PROCEDURES.md §1).
DEFAULT_TOLERANCE_HOURS = 4.0
UPDATE_INTERVAL = timedelta(hours=1)  # [003 §8.5.5.2] the record is updated hourly
VENDOR_REPORT_INTERVAL = timedelta(days=1)  # progress reported to the vendor daily


class PlanStep(BaseModel):
    """One step of an accident plan with its timing."""

    action: str = Field(min_length=1, max_length=400, title="步骤", description="做什么")
    minutes: int = Field(ge=1, le=7 * 24 * 60, title="预计用时（分钟）")


class AccidentPlan(BaseModel):
    """事故处理方案: the parts PROCEDURES.md §3 step 2 asks for, as a form."""

    measures: str = Field(min_length=1, max_length=2000, title="处理措施", description="采取哪些措施恢复业务")
    steps: list[PlanStep] = Field(min_length=1, title="实施步骤与时间", description="逐步写明操作和预计用时")
    expected_effect: str = Field(min_length=1, max_length=1000, title="预期效果")
    fallback: str = Field(min_length=1, max_length=1000, title="回退方案", description="方案失败时如何回退")
    executor: str = Field(min_length=1, max_length=200, title="实施人")
    tools: list[str] = Field(default_factory=list, title="所需工具")
    spare_parts: list[str] = Field(default_factory=list, title="所需备件")
    needs_testing: bool = Field(
        default=False, title="是否需要测试", description="方案需先测试时由技术总监安排"
    )

    @field_validator("measures", "expected_effect", "fallback", "executor")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("不能为空 / must not be blank")
        return value.strip()

    @property
    def total_minutes(self) -> int:
        return sum(s.minutes for s in self.steps)


class TeamMember(BaseModel):
    """A member of the emergency accident team (紧急抢修小组) with the role held in it."""

    staff_id: int
    name: str
    role: str = Field(title="小组职责")


ExecutionResult = Literal["restored", "partial", "failed"]
EXECUTION_RESULT_ZH: dict[str, str] = {"restored": "已恢复", "partial": "部分恢复", "failed": "失败"}


class PlanError(ValueError):
    """An accident plan that is missing a part; the message names it, in Chinese."""


def parse_plan(data: dict) -> AccidentPlan:
    """Validate a submitted plan form; raise PlanError with a readable list of what is missing."""
    from pydantic import ValidationError

    try:
        return AccidentPlan.model_validate(data)
    except ValidationError as exc:
        labels = {name: (f.title or name) for name, f in AccidentPlan.model_fields.items()}
        parts = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            parts.append(f"{labels.get(field, field)}: {err['msg']}")
        raise PlanError("事故处理方案不完整 / accident plan incomplete: " + "；".join(parts)) from None


def tolerance_hours(case_hours: float | None, contract_hours: float | None) -> float:
    """The customer's tolerated window: the per-case setting, else the contract's, else the default."""
    for value in (case_hours, contract_hours):
        if value is not None and value > 0:
            return float(value)
    return DEFAULT_TOLERANCE_HOURS


def window_closes_at(started_at: datetime, hours: float) -> datetime:
    return started_at + timedelta(hours=hours)


def window_expired(started_at: datetime, hours: float, at: datetime) -> bool:
    """True when no working plan exists and the tolerated window is over at `at` (→ vendor support)."""
    return at >= window_closes_at(started_at, hours)


def standby_due_at(started_at: datetime, restore_due_at: datetime) -> datetime:
    """A standby machine goes out once half of the contracted restore time has passed [003 §8.6.5.1]."""
    return started_at + (restore_due_at - started_at) / 2


def standby_needed(started_at: datetime, restore_due_at: datetime, at: datetime) -> bool:
    return at >= standby_due_at(started_at, restore_due_at)


def periods_due(started_at: datetime, until: datetime, interval: timedelta) -> list[int]:
    """Numbers 1..n of the reports due between `started_at` and `until` (one per full interval)."""
    if until <= started_at:
        return []
    return list(range(1, int((until - started_at) / interval) + 1))


def period_at(started_at: datetime, n: int, interval: timedelta) -> datetime:
    return started_at + n * interval


def _split_list(text: str) -> list[str]:
    for sep in ("，", "、", ";", "；"):
        text = text.replace(sep, ",")
    return [part.strip() for part in text.split(",") if part.strip()]


def plan_from_form(data: dict) -> AccidentPlan:
    """The flat plan form → the structured plan (raises PlanError naming what is wrong)."""
    if not isinstance(data.get("steps"), str):
        return parse_plan(data)
    steps = []
    for n, line in enumerate(data["steps"].splitlines(), start=1):
        if not line.strip():
            continue
        action, _, minutes = line.rpartition("|") if "|" in line else (line, "", "")
        try:
            steps.append({"action": action.strip(), "minutes": int(minutes.strip())})
        except ValueError:
            raise PlanError(
                f"实施步骤第 {n} 行须写成“操作 | 分钟数” / step {n}: 'action | minutes'"
            ) from None
    tools = data.get("tools", "")
    parts = data.get("spare_parts", "")
    return parse_plan(
        {
            **data,
            "steps": steps,
            "tools": _split_list(tools) if isinstance(tools, str) else tools,
            "spare_parts": _split_list(parts) if isinstance(parts, str) else parts,
        }
    )
