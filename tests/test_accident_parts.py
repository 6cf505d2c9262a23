"""The accident plan's spare parts through the parts store and the maintenance after the accident
(issue 22 items 5–6, PROCEDURES.md §3 steps 2 and 7) on the fast layer: the lead's plan and forms,
the director's approval, every answer through the real decide(); stock, events, outbox and the
signed 事故处理服务报告 read back."""

from __future__ import annotations

from sqlmodel import select

from flows.accident import accident
from models import SparePart, Stock
from models.clocks import Clock
from models.reports import Report
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, say
from tests.test_accident_branches import (
    DIRECTOR,
    LEAD,
    MAINTENANCE,
    MIN,
    PLAN,
    SIGN,
    events,
    finish_after_restore,
    plan_to_execution,
    request,
    sent,
)
from tests.test_repair_branches import bj

KEEPER = "何备件"


def stock(fast: FastFlow, code: str) -> int:
    with fast.session() as s:
        part = s.exec(select(SparePart).where(SparePart.code == code)).one()
        return sum(row.quantity for row in s.exec(select(Stock).where(Stock.part_id == part.id)))


def test_plan_parts_are_issued_and_the_maintenance_is_in_the_report(fast: FastFlow) -> None:
    before = stock(fast, "HDD-1.2T"), stock(fast, "PSU-900W")
    plan, at = plan_to_execution(1, T0 + 30 * MIN, plan={**PLAN, "spare_parts": "HDD-1.2T x2、PSU-900W x1"})
    approved, restored = T0 + 40 * MIN, at + 40 * MIN
    tail = finish_after_restore(restored)
    fast.run(
        accident,
        request(),
        at=T0,
        script=[
            *plan,
            say(
                "plan-execution",
                {"result": "restored", "note": "已恢复", "parts_arrived_at": bj(T0 + 90 * MIN)},
                by=LEAD,
                at=restored,
            ),
            # an empty device list and a completion time in the future are refused by decide()
            say("maintenance", {"devices": "", "maintenance": "升级固件"}, by=LEAD, at=restored + 5 * MIN),
            say(
                "maintenance",
                {**MAINTENANCE, "done_at": bj(restored + 60 * MIN)},
                by=LEAD,
                at=restored + 5 * MIN,
            ),
            say(
                "maintenance",
                {**MAINTENANCE, "done_at": bj(restored + 3 * MIN)},
                by=LEAD,
                at=restored + 5 * MIN,
            ),
            *[entry for entry in tail if entry.step != "maintenance"],
        ],
    )
    assert [why for step, why in fast.refused] == [
        "未记录，请更正：「维护的设备」必填",
        f"未记录，请更正：「维护完成时间」不能晚于当前时间（现在是 {bj(restored + 5 * MIN)}）",
    ]
    case_id = fast.case_of_run()
    # issued from the store once, on the director's approval; the keeper told
    assert (stock(fast, "HDD-1.2T"), stock(fast, "PSU-900W")) == (before[0] - 2, before[1] - 1)
    [issued] = events(fast, case_id, "parts_issued")
    assert issued.at == approved and issued.data["complete"] is True
    assert sent(fast, case_id, "repair/parts_issued") == {("repair/parts_issued", KEEPER): 1}
    with fast.session() as s:
        spare = s.exec(select(Clock).where(Clock.case_id == case_id, Clock.kind == "spare_part")).one()
    # 4 h from the approval; stopped when the parts reached the site, as the lead typed it
    assert spare.started_at == approved and spare.due_at == approved + 240 * MIN
    assert spare.stopped_at == T0 + 90 * MIN and spare.met_at is not None
    [upkeep] = events(fast, case_id, "preventive_maintenance")
    assert upkeep.at == restored + 3 * MIN and upkeep.actor == LEAD
    assert (
        upkeep.data["devices"] == MAINTENANCE["devices"]
        and upkeep.data["maintenance"] == MAINTENANCE["maintenance"]
    )
    with fast.session() as s:
        report = s.exec(
            select(Report).where(Report.case_id == case_id, Report.kind == "accident_report")
        ).one()
    html = report.content
    assert (
        "<h2>更换备件</h2>" in html
        and "1.2TB SAS 硬盘（HDD-1.2T）× 2" in html
        and "900W 电源模块（PSU-900W）× 1" in html
    )
    assert "<h2>预防性维护</h2>" in html
    assert f"<tr><th>维护的设备</th><td>{MAINTENANCE['devices']}</td></tr>" in html
    assert f"<tr><th>维护内容</th><td>{MAINTENANCE['maintenance']}</td></tr>" in html
    assert f"<tr><th>完成时间</th><td>{bj(restored + 3 * MIN)}（{LEAD}）</td></tr>" in html


def test_an_unknown_part_goes_back_to_the_lead_and_a_shortage_is_escalated(fast: FastFlow) -> None:
    plan, _ = plan_to_execution(1, T0 + 30 * MIN, plan={**PLAN, "spare_parts": "SFP-10G x2、XYZ-1 x1"})
    waiting = fast.run(
        accident,
        request(),
        at=T0,
        until=SIGN,
        script=[
            *[entry for entry in plan if entry.step != SIGN],
            # the store does not stock XYZ-1: nothing issued, the lead corrects the list on the parts form
            say("accident-parts-v1-1", {"parts": "SFP-10G x2"}, by=LEAD, at=T0 + 45 * MIN),
        ],
    )
    assert waiting.step == SIGN
    case_id = fast.case_of_run()
    assert stock(fast, "SFP-10G") == 0  # none in stock: nothing taken
    [short] = events(fast, case_id, "parts_shortage")
    assert short.at == T0 + 45 * MIN and short.data["short"][0]["code"] == "SFP-10G"
    assert not events(fast, case_id, "parts_issued")
    assert sent(fast, case_id, "repair/parts_shortage") == {
        ("repair/parts_shortage", KEEPER): 1,
        ("repair/parts_shortage", DIRECTOR): 1,
    }
    with fast.session() as s:
        from models.approvals import Approval

        correction = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "accident-parts-v1-1")
        ).one()
        assert "XYZ-1" in correction.content and correction.form_name == "parts"
        spare = s.exec(select(Clock).where(Clock.case_id == case_id, Clock.kind == "spare_part")).one()
    assert (
        spare.started_at == T0 + 40 * MIN and spare.stopped_at is None
    )  # running until the parts are on site
