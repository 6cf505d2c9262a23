"""The escalation ladder (问题升级流程) and breach handling, pure [001 §3.1; 003 §8.5.5, §8.6.5].

Given a clock's state and `now`, `due_steps` lists what is overdue and not yet done, oldest first:
the breach (level 0, when `due_at` passes) and each ladder level whose time has come. The keeper
(`tasks.clocks.fire_due_clocks`) writes one `Escalation` row per (clock, level) for each step, so a
restart, a duplicate keeper or a keeper that was down for hours fires every step once, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

BREACH = 0  # the "level" of a breach row: the clock ran out

# Who is told at each level (PROCEDURES.md §1): (acts, informed, what happens), roles as in models.parties.Role.
LEVELS: dict[int, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    1: (("engineer",), ("dispatcher",), "专职服务工程师电话及远程处理"),
    2: (("senior_engineer",), (), "高级工程师指导现场工程师处理"),
    3: (("expert",), ("technical_lead",), "专家服务小组组成紧急抢修小组赴现场，通知总工程师/项目技术负责人"),
    4: (("technical_director",), ("vendor",), "技术总监赴现场，协调原厂最资深工程师，启用同档次备机替代"),
}

# Who is told when a clock without a ladder runs out (the owner of the step and the next manager).
BREACH_ROLES: dict[str, tuple[str, ...]] = {
    "first_contact": ("dispatcher", "technical_lead"),
    "remote_response": ("technical_lead", "dispatcher"),
    "workaround": ("technical_lead", "dispatcher"),
    "arrival": ("engineer", "dispatcher", "coordinator"),
    "spare_part": ("parts_keeper", "technical_lead"),
    "restore": ("technical_lead", "dispatcher"),
    "fault_report": ("technical_lead", "dispatcher"),
    "analysis_report": ("technical_lead", "technical_director"),
    "callback": ("dispatcher", "coordinator"),
    "written_account": ("engineer", "technical_director"),
    # a complaint's owner; the next manager up the customer's ladder is added (tasks.clocks)
    "complaint_answer": ("service_manager",),
    "complaint_close": ("service_manager",),
    # an inspection's problem not fed back in time: the centre feeds back, its manager is told
    "inspection_feedback": ("dispatcher", "department_manager"),
    # a 演练报告 not out within 2 working days: the drill lead writes it, the director is told
    "drill_report": ("technical_lead", "technical_director"),
}

LEVEL_LABELS_ZH = {0: "超时", 1: "一级", 2: "二级", 3: "三级", 4: "四级"}


@dataclass(frozen=True)
class Step:
    level: int  # 0 = breach, 1..4 = ladder level
    at: datetime  # when it became due

    @property
    def key(self) -> str:
        return "breach" if self.level == BREACH else f"L{self.level}"


def due_steps(
    *,
    due_at: datetime | None,
    ladder: Sequence[tuple[int, datetime]],
    done_levels: Iterable[int],
    now: datetime,
    running: bool,
) -> list[Step]:
    """Steps that are due by `now` and not done, oldest first (a breach before a level due at the same time)."""
    if not running:
        return []
    done = set(done_levels)
    steps = [Step(level, at) for level, at in ladder if at <= now and level not in done]
    if due_at is not None and due_at <= now and BREACH not in done:
        steps.append(Step(BREACH, due_at))
    return sorted(steps, key=lambda s: (s.at, s.level))


def next_check(
    *,
    due_at: datetime | None,
    ladder: Sequence[tuple[int, datetime]],
    done_levels: Iterable[int],
    running: bool,
) -> datetime | None:
    """The next moment the keeper must look at the clock; None when nothing is left to fire."""
    if not running:
        return None
    done = set(done_levels)
    pending = [at for level, at in ladder if level not in done]
    if due_at is not None and BREACH not in done:
        pending.append(due_at)
    return min(pending) if pending else None


def recipients_roles(clock: str, level: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(roles who act, roles informed) for a step of a clock."""
    if level == BREACH:
        return BREACH_ROLES.get(str(clock), ("dispatcher",)), ()
    acts, informed, _ = LEVELS[level]
    return acts, informed


def raised_severity(severity: int | None) -> int | None:
    """One level more severe (1 is the most severe); None stays None."""
    if severity is None:
        return None
    return max(1, int(severity) - 1)


def next_manager_level(current_level: int) -> int:
    """The ladder level a stale record escalates to: one above where the case stands."""
    return min(4, max(1, current_level) + 1)
