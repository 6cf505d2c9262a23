"""Solution plans (解决方案): what a plan must contain, and how versions follow each other. Pure.

A plan is text written by the technical lead; every revision (director's change request, on-site
re-analysis, customer objection) is a new version v+1 that records why it was made. Customer and
provider must sign the *same* version (PROCEDURES.md §2 step 7), so a decision always names the
version it was about.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

MIN_PLAN_CHARS = 10
MAX_PLAN_CHARS = 20_000

# Why a new version was made; shown on the plan page and in the report.
REVISION_REASONS_ZH = {
    "initial": "初始方案",
    "director": "技术总监要求修改",
    "rejected": "技术总监驳回后重新制定",
    "onsite": "现场再分析后修订",
    "customer": "客户提出异议后修订",
}


class PlanError(ValueError):
    """A plan that cannot be accepted; the message says why, in Chinese and English."""


class Plan(BaseModel):
    version: int = Field(ge=1)
    text: str
    reason: str = "initial"
    author: str = ""
    note: str = Field(default="", description="the objection / comment that led to this version")

    @property
    def reason_zh(self) -> str:
        return REVISION_REASONS_ZH.get(self.reason, self.reason)


def validate_plan_text(text: str) -> str:
    """The plan text, stripped; raises PlanError when it is empty, too short or too long."""
    cleaned = (text or "").strip()
    if not cleaned:
        raise PlanError("方案内容为空 / the plan is empty")
    if len(cleaned) < MIN_PLAN_CHARS:
        raise PlanError(
            f"方案过短（至少 {MIN_PLAN_CHARS} 个字） / the plan is too short (at least {MIN_PLAN_CHARS} characters)"
        )
    if len(cleaned) > MAX_PLAN_CHARS:
        raise PlanError(f"方案过长（最多 {MAX_PLAN_CHARS} 个字） / the plan is too long")
    return cleaned


def first_plan(text: str, *, author: str = "") -> Plan:
    return Plan(version=1, text=validate_plan_text(text), reason="initial", author=author)


def revise(plan: Plan, text: str, *, reason: str, author: str = "", note: str = "") -> Plan:
    """The next version of `plan`. A revision must change the text: an unchanged "revision" would
    let a customer's objection loop forever without anything being done about it."""
    if reason not in REVISION_REASONS_ZH:
        raise PlanError(f"未知的修订原因 / unknown revision reason: {reason!r}")
    cleaned = validate_plan_text(text)
    if cleaned == plan.text:
        raise PlanError(f"修订版与 v{plan.version} 相同 / the revision is identical to v{plan.version}")
    return Plan(version=plan.version + 1, text=cleaned, reason=reason, author=author, note=note)


def agreed(customer_signed_version: int | None, provider_confirmed_version: int | None) -> bool:
    """Both sides have signed the same version."""
    return customer_signed_version is not None and customer_signed_version == provider_confirmed_version
