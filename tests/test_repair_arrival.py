"""Arrival on site (issue 22 item 4; 001 §2.2.5.2, §2.2.5.4) on the fast layer, every answer through
the real decide(): the engineer re-confirms the fault with the customer, who signs the 《技术服务申请》
on its report page; an operation with data risk listed on the on-site form ("需客户批准的操作") waits
for the customer's approval on a link before the repair — approved, or refused (recorded, and the
technical lead decides how the repair goes on)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from pypdf import PdfReader
from sqlmodel import select

from flows.repair import repair
from models.approvals import Approval
from models.reports import Report, Signature
from tasks.pdf import html_to_pdf
from tests.fixtures.fastflow import FastFlow, Say, say
from tests.test_repair_branches import MIN, after_service, hardware, on_site, repaired

LEAD, CUSTOMER = "张技术", "北京维护负责人"
RISKY = "重启存储控制器 A（业务中断约 5 分钟）\n重装 BMC 固件（配置可能丢失）"


def with_risky_operations(t: datetime) -> list[Say]:
    script = on_site(t)
    onsite = next(e for e in script if e.step == "onsite")
    assert isinstance(onsite.fields, dict)
    onsite.fields = {**onsite.fields, "fault_reconfirmed": "是", "risky_operations": RISKY}
    return script


def finish(t: datetime, *answers: Say) -> list[Say]:
    return [
        say("solution-plan-signature", decision="signed", at=t + 50 * MIN),
        *answers,
        repaired(t + 120 * MIN),
        say("service-report-signature", decision="signed", signer=CUSTOMER, report=True, at=t + 130 * MIN),
        *after_service(t + 130 * MIN),
    ]


def repair_content(fast: FastFlow, case_id: int) -> str:
    with fast.session() as s:
        return (
            s.exec(select(Approval).where(Approval.case_id == case_id, Approval.step == "repair-1"))
            .one()
            .content
        )


def test_the_customer_signs_the_service_request_on_arrival_and_it_prints(fast: FastFlow) -> None:
    t = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    outcome = fast.run(repair, hardware(t), at=t, script=[*on_site(t), *finish(t)])
    assert outcome.status == "archived", outcome
    case_id = fast.case_of_run()
    events = fast.events(case_id)
    # signed right on arrival, before the plan goes to the customer and before the repair
    assert events.index("arrived") < events.index("service_request_signed") < events.index("plan_signed")
    with fast.session() as s:
        request = s.exec(
            select(Report).where(Report.case_id == case_id, Report.kind == "service_request")
        ).one()
        [signature] = s.exec(select(Signature).where(Signature.report_id == request.id)).all()
        assert signature.is_valid_for(request) and signature.signer_name == CUSTOMER
        html = request.content
        approval = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "service-request-signature")
        ).one()
    assert approval.approver_role == "customer"
    assert "<h1>技术服务申请</h1>" in html and "已与客户再次确认故障现象" in html
    assert "<th>现场确认的故障</th><td>确认 PSU2 损坏</td>" in html
    assert "更换故障电源模块" in html  # the plan the service follows
    assert "需客户批准的操作（重启、重装或有数据风险）</h2>\n<p>无</p>" in html
    assert "（待客户" in html and "客户签字" in html
    pdf = html_to_pdf(html)  # the printable form (WeasyPrint, the fonts of tasks.pdf)
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "技术服务申请" in text and "现场确认的故障" in text
    # no risky operation listed: no approval asked
    assert "risky_operations_approved" not in events and "risky_operations_refused" not in events


def test_risky_operations_approved_by_the_customer_before_the_repair(fast: FastFlow) -> None:
    t = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    outcome = fast.run(
        repair,
        hardware(t),
        at=t,
        script=[
            *with_risky_operations(t),
            *finish(t, say("risky-operations", decision="approved", by=CUSTOMER, at=t + 55 * MIN)),
        ],
    )
    assert outcome.status == "archived", outcome
    case_id = fast.case_of_run()
    events = fast.events(case_id)
    assert events.index("plan_signed") < events.index("risky_operations_approved") < events.index("repaired")
    with fast.session() as s:
        asked = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "risky-operations")
        ).one()
        request = s.exec(
            select(Report).where(Report.case_id == case_id, Report.kind == "service_request")
        ).one()
    assert asked.approver_role == "customer" and asked.kind == "approval" and asked.content == RISKY
    assert "重启存储控制器 A" in request.content and "须客户另行在链接上批准" in request.content
    assert (CUSTOMER, "approval_request") in set(fast.notifications(case_id))
    assert "客户已批准的操作：\n" + RISKY in repair_content(fast, case_id)


def test_risky_operations_refused_are_recorded_and_the_lead_decides(fast: FastFlow) -> None:
    t = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    decision: dict[str, Any] = {"instruction": "不重启控制器：先在线备份配置，夜间窗口再申请重启"}
    outcome = fast.run(
        repair,
        hardware(t),
        at=t,
        script=[
            *with_risky_operations(t),
            *finish(
                t,
                say(
                    "risky-operations",
                    decision="rejected",
                    by=CUSTOMER,
                    comment="业务高峰，不允许重启",
                    at=t + 55 * MIN,
                ),
                # an empty decision is refused by decide(), the lead's next answer is taken
                say("risky-operations-refused", {"instruction": ""}, by=LEAD, at=t + 60 * MIN),
                say("risky-operations-refused", decision, by=LEAD, at=t + 62 * MIN),
            ),
        ],
    )
    assert outcome.status == "archived", outcome
    assert [step for step, _ in fast.refused] == ["risky-operations-refused"]
    assert "技术负责人处理意见" in fast.refused[0][1]
    case_id = fast.case_of_run()
    events = fast.events(case_id)
    assert (
        events.index("risky_operations_refused")
        < events.index("risky_operations_decided")
        < events.index("repaired")
    )
    content = repair_content(fast, case_id)
    assert "客户未批准的操作（不得实施）" in content and decision["instruction"] in content
    with fast.session() as s:
        from models import Event

        refused = s.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == "risky_operations_refused")
        ).one()
    assert refused.data["comment"] == "业务高峰，不允许重启" and refused.data["operations"] == RISKY
