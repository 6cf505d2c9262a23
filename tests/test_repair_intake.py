"""Repair intake, the parts store and plan versions, against a real database (no Prefect)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import select

from models import Case, Stock, StockMove
from rules.plans import PlanError, first_plan, revise
from tasks.cases import IntakeError, RepairRequest, open_case, resolve_request
from tasks.parts import PartsError, issue_parts, parse_parts

T = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def req(**kw: object) -> RepairRequest:
    base = {
        "customer": "BJYH",
        "site": "亦庄机房",
        "reported_by": "王先生",
        "description": "阵列告警",
        "severity": 3,
    }
    return RepairRequest(**{**base, **kw})  # type: ignore[arg-type]


def test_intake_opens_a_case_with_its_team_and_the_contract_wording(demo: str, session) -> None:  # noqa: ANN001
    case = open_case(session, req(severity=1), now=T)
    session.commit()
    assert case.number.startswith("WX-") and case.contract_id and not case.out_of_contract
    assert case.data["severity_label"] == "特大"  # outage scheme of this contract
    assert set(case.data["team"]) >= {"dispatcher", "technical_lead", "engineer", "technical_director"}
    business = open_case(session, req(customer="SJZY", site=None, severity=1), now=T)
    assert business.data["severity_label"] == "一级（紧急）"  # the hospital's contract uses the other scheme


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"customer": "不存在的客户"}, "未知客户"),
        ({"site": "门诊楼机房"}, "不属于客户"),
        ({"site": None}, "请指定站点"),
        ({"device": "SNXXXX"}, "未知设备序列号"),
        ({"device": "SNSJZY0SE01", "site": None}, "不属于客户"),
    ],
)
def test_bad_intake_answers_with_a_clear_message(demo: str, session, fields: dict, message: str) -> None:  # noqa: ANN001
    with pytest.raises(IntakeError, match=message):
        resolve_request(session, req(**fields), today=T)
    assert session.exec(select(Case)).first() is None


def test_form_refuses_bad_severity_and_empty_text() -> None:
    with pytest.raises(ValueError):
        req(severity=5)
    with pytest.raises(ValueError):
        req(description="   ")


def test_lapsed_contract_is_taken_and_marked_paid_service(demo: str, session) -> None:  # noqa: ANN001
    case = open_case(session, req(customer="TYDX", site=None), now=T)
    assert case.out_of_contract and "到期" in case.data["paid_service_reason"]


def test_parts_are_issued_once_and_a_shortage_is_reported(demo: str, session) -> None:  # noqa: ANN001
    case = open_case(session, req(), now=T)
    assert parse_parts("psu-900w x2, HDD-1.2T") == [("PSU-900W", 2), ("HDD-1.2T", 1)]
    first = issue_parts(session, case.id, [("PSU-900W", 2), ("SFP-10G", 1)], now=T, key="parts")
    again = issue_parts(session, case.id, [("PSU-900W", 2), ("SFP-10G", 1)], now=T, key="parts")
    assert first.issued[0]["quantity"] == 2 and first.short == [
        {"code": "SFP-10G", "name": "10G 多模光模块", "wanted": 1, "available": 0}
    ]
    assert again.issued == first.issued  # a replay takes nothing more
    stock = session.exec(select(Stock).join_from(Stock, StockMove, Stock.id == StockMove.stock_id)).first()
    assert stock.quantity == 2  # 4 − 2
    with pytest.raises(PartsError):
        parse_parts("PSU x0")


def test_plan_versions_must_change_and_say_why() -> None:
    v1 = first_plan("更换电源模块并检查告警", author="张技术")
    v2 = revise(v1, "更换电源模块前先备份配置", reason="customer", note="先备份")
    assert (v2.version, v2.reason_zh) == (2, "客户提出异议后修订")
    with pytest.raises(PlanError):
        revise(v2, v2.text, reason="director")
    with pytest.raises(PlanError):
        first_plan("短")
