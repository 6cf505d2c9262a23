"""Reports (维修服务报告, 故障处理报告, 客户回访表, 书面说明, solution plans) and customer signatures.

A report is rendered from a template and stored with the hash of its content when issued. A
signature binds to that hash: if the report is edited after signing, its hash changes and the
signature no longer matches (DESIGN.md §7 row 20) — a new signature is required.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import json_field, utc_field


class ReportKind(StrEnum):
    SOLUTION_PLAN = "solution_plan"  # 解决方案 (versioned)
    SERVICE_REPORT = "service_report"  # 维修服务报告 (customer signs)
    FAULT_REPORT = "fault_report"  # 故障处理报告 (within 24 h)
    CALLBACK_FORM = "callback_form"  # 客户回访表
    WRITTEN_ACCOUNT = "written_account"  # 工程师书面说明 (within 1 week)
    ACCIDENT_REPORT = "accident_report"  # 事故处理服务报告
    ACCIDENT_SUMMARY = "accident_summary"  # 事故总结
    ACCIDENT_REVIEW = "accident_review"  # 事故技术评审报告 (to the general manager)
    SERVICE_REQUEST = "service_request"  # 技术服务申请 (the customer signs on the engineer's arrival)
    RECOVERY_PLAN = "recovery_plan"  # 应急恢复方案 (versioned, per customer system)
    DRILL_PLAN = "drill_plan"  # 演练方案 (versioned; director approves, customer signs)
    DRILL_REPORT = "drill_report"  # 演练报告 (customer signs, director approves)
    ASSURANCE_PLAN = "assurance_plan"  # 重要通信保障方案 (versioned; director approves, customer signs)
    DUTY_ROSTER = "duty_roster"  # 值班表 (major-event assurance, sent before the period)
    ASSURANCE_REPORT = "assurance_report"  # 重要通信保障报告 (customer signs)
    COMPLAINT_REPLY = "complaint_reply"  # 投诉处理回复函 (the customer signs: satisfied, or objects)
    RENEWAL_NOTICE = "renewal_notice"  # 续约通知函 (to the customer, 60 days before the end)
    CHANGE_REQUEST = "change_request"  # 变更申请 (the customer confirms in writing)
    HANDOVER = "handover"  # 合同终止移交清单 (signed by both sides)


REPORT_TITLES_ZH: dict[str, str] = {
    ReportKind.SOLUTION_PLAN: "解决方案",
    ReportKind.SERVICE_REPORT: "维修服务报告",
    ReportKind.FAULT_REPORT: "故障处理报告",
    ReportKind.CALLBACK_FORM: "客户回访表",
    ReportKind.WRITTEN_ACCOUNT: "维修书面说明",
    ReportKind.ACCIDENT_REPORT: "事故处理服务报告",
    ReportKind.ACCIDENT_SUMMARY: "事故总结",
    ReportKind.ACCIDENT_REVIEW: "事故技术评审报告",
    ReportKind.SERVICE_REQUEST: "技术服务申请",
    ReportKind.RECOVERY_PLAN: "应急恢复方案",
    ReportKind.DRILL_PLAN: "演练方案",
    ReportKind.DRILL_REPORT: "演练报告",
    ReportKind.ASSURANCE_PLAN: "重要通信保障方案",
    ReportKind.DUTY_ROSTER: "值班表",
    ReportKind.ASSURANCE_REPORT: "重要通信保障报告",
    ReportKind.COMPLAINT_REPLY: "投诉处理回复函",
    ReportKind.RENEWAL_NOTICE: "续约通知函",
    ReportKind.CHANGE_REQUEST: "变更申请",
    ReportKind.HANDOVER: "合同终止移交清单",
}


def content_hash(content: str) -> str:
    """SHA-256 of the rendered content: what a signature binds to."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


class Report(SQLModel, table=True):
    """One issued document of a case; `version` counts revisions (plans: v1, v2, ...)."""

    __table_args__ = (sa.UniqueConstraint("case_id", "kind", "version", name="uq_report_version"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    kind: str = Field(max_length=32, index=True)
    version: int = Field(default=1, ge=1)
    title: str = Field(default="", max_length=200)
    content: str = Field(default="", sa_type=sa.Text, description="rendered HTML as issued")
    content_hash: str = Field(default="", max_length=64)
    # The facts the report was rendered from, so it can be re-rendered or checked.
    data: dict[str, Any] = json_field(default_factory=dict)
    status: str = Field(
        default="issued", max_length=16, description="issued / superseded / approved / archived"
    )
    issued_by: str = Field(default="", max_length=100)
    issued_at: datetime = utc_field(nullable=False)
    edited_at: datetime | None = utc_field()


class Signature(SQLModel, table=True):
    """A customer's (or staff member's) signature on one report, bound to the content hash signed."""

    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="report.id", index=True)
    content_hash: str = Field(max_length=64, description="hash of the report content at signing")
    signer_name: str = Field(max_length=100)
    signer_contact_id: int | None = Field(default=None, foreign_key="contact.id")
    signer_staff_id: int | None = Field(default=None, foreign_key="staff.id")
    method: str = Field(max_length=16, description="drawn / typed / statement")
    image: str = Field(default="", sa_type=sa.Text, description="drawn signature as a data: URL (PNG)")
    statement: str = Field(default="", max_length=400)
    channel: str = Field(default="web", max_length=16)
    signed_at: datetime = utc_field(nullable=False)

    def is_valid_for(self, report: Report) -> bool:
        """True while the report still has the content that was signed."""
        return self.report_id == report.id and self.content_hash == report.content_hash
