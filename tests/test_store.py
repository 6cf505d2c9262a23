"""The parts store page (/store) over HTTP as logged-in staff on the demo data in a real SQLite file:
receiving stock, a defective part to the vendor and back, who may act (the parts keeper), CSRF,
typed values refused in Chinese, the audit rows, and the parts keepers told when an issue to a case
leaves a part below its minimum (real outbox rows).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from tests.conftest import T0
from tests.staff_login import form_csrf, log_in, make_account


def shown(page: Any) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page.text).split())


@pytest.fixture
def client(demo: str) -> TestClient:
    from web.app import create_app
    from web.staff import staff_now

    app = create_app()
    app.dependency_overrides[staff_now] = lambda: T0
    make_account("keeper1", roles=("parts_keeper",), name="备件管理员甲")
    make_account("eng1", roles=("engineer",), name="工程师乙")
    return TestClient(app)


def on_hand(code: str) -> int:
    from models import SparePart, Stock
    from models.db import session_scope

    with session_scope() as s:
        part = s.exec(select(SparePart).where(SparePart.code == code)).one()
        return sum(x.quantity for x in s.exec(select(Stock).where(Stock.part_id == part.id)).all())


def test_the_keeper_receives_stock_and_sends_a_defective_part_to_the_vendor_and_back(
    client: TestClient,
) -> None:
    from models.accounts import AuditEntry
    from models.assets import VendorRepair
    from models.db import session_scope

    log_in(client, "keeper1")
    page = client.get("/store")
    assert page.status_code == 200 and "900W 电源模块" in shown(page)
    csrf = form_csrf(page)
    before = on_hand("PSU-900W")
    done = client.post(
        "/store/receive",
        data={
            "code": "PSU-900W",
            "quantity": "3",
            "location": "北京备件库",
            "note": "到货单 DH-01",
            "csrf": csrf,
        },
    )
    assert done.status_code == 200 and "已入库" in shown(done)
    assert on_hand("PSU-900W") == before + 3
    bad = client.post(
        "/store/receive", data={"code": "PSU-900W", "quantity": "三", "location": "x", "csrf": csrf}
    )
    assert bad.status_code == 400 and "数量应为整数" in shown(bad)
    unknown = client.post(
        "/store/receive", data={"code": "NOPE", "quantity": "1", "location": "x", "csrf": csrf}
    )
    assert unknown.status_code == 400 and "没有备件编码 &#39;NOPE&#39;" in shown(unknown)

    sent = client.post(
        "/store/vendor",
        data={"code": "FAN-8038", "serial": "FAN-SN-77", "vendor": "华为", "rma": "RMA-2026-9", "csrf": csrf},
    )
    assert sent.status_code == 200, shown(sent)[-600:]
    assert "RMA-2026-9" in shown(sent) and "在原厂返修" in shown(sent)
    with session_scope() as s:
        repair = s.exec(select(VendorRepair)).one()
        repair_id = repair.id
    fans = on_hand("FAN-8038")
    back = client.post(f"/store/vendor/{repair_id}/back", data={"location": "北京备件库", "csrf": csrf})
    assert back.status_code == 200 and "返修件已入库" in shown(back)
    assert on_hand("FAN-8038") == fans + 1
    twice = client.post(f"/store/vendor/{repair_id}/back", data={"location": "北京备件库", "csrf": csrf})
    assert twice.status_code == 400 and "已于" in shown(twice)
    with session_scope() as s:
        rows = s.exec(select(AuditEntry).where(AuditEntry.source == "store").order_by(AuditEntry.id)).all()
        assert [(r.action, r.actor) for r in rows] == [
            ("receive", "备件管理员甲"),
            ("send", "备件管理员甲"),
            ("return", "备件管理员甲"),
        ]


def test_only_the_parts_keeper_acts_and_every_form_needs_its_csrf_token(client: TestClient) -> None:
    log_in(client, "eng1")
    page = client.get("/store")
    assert (
        page.status_code == 200 and "最低库存" in shown(page) and 'action="/store/receive"' not in page.text
    )
    refused = client.post(
        "/store/receive", data={"code": "PSU-900W", "quantity": "1", "location": "x", "csrf": form_csrf(page)}
    )
    assert refused.status_code == 403 and "仅限备件管理员" in shown(refused)
    log_in(client, "keeper1")
    before = on_hand("PSU-900W")
    forged = client.post("/store/receive", data={"code": "PSU-900W", "quantity": "1", "location": "x"})
    assert forged.status_code == 403 and on_hand("PSU-900W") == before


def test_an_issue_that_leaves_a_part_below_its_minimum_tells_the_parts_keepers(demo: str) -> None:
    from models import SparePart
    from models.db import session_scope
    from models.outbox import Notification
    from tasks.cases import RepairRequest, open_case
    from tasks.parts import issue_parts

    with session_scope() as s:
        part = s.exec(select(SparePart).where(SparePart.code == "FAN-8038")).one()
        part.min_quantity = 5
        s.add(part)
    with session_scope() as s:
        case = open_case(
            s,
            RepairRequest(
                customer="BJYH",
                site="亦庄机房",
                reported_by="王先生",
                description="风扇故障",
                severity=3,
                reported_at=T0,
            ),
            now=T0,
        )
        case_id = case.id
    with session_scope() as s:
        assert case_id is not None
        issue_parts(s, case_id, [("FAN-8038", 1)], now=T0, key="parts#1")  # 6 -> 5: not below
        assert not s.exec(select(Notification).where(Notification.template == "store/low_stock")).all()
        issue_parts(s, case_id, [("FAN-8038", 1)], now=T0, key="parts#2")  # 5 -> 4: below
        issue_parts(s, case_id, [("FAN-8038", 1)], now=T0, key="parts#3")  # the same day: told once
        told = s.exec(select(Notification).where(Notification.template == "store/low_stock")).all()
    assert len(told) == 1, [n.body for n in told]
    assert (
        "服务器风扇（FAN-8038）库存 4，低于最低库存 5" in told[0].body
        and told[0].address == "log://staff/13800000012"
    )


def test_a_case_waiting_for_a_part_is_listed_with_its_4_hour_deadline_and_the_keeper_orders_urgently(
    client: TestClient,
) -> None:
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from models import Event
    from models.db import session_scope
    from tasks.accident import event_text
    from tasks.cases import RepairRequest, open_case
    from tasks.clocks import start_clock
    from tasks.parts import issue_parts

    with session_scope() as s:
        case = open_case(
            s,
            RepairRequest(
                customer="BJYH",
                site="亦庄机房",
                reported_by="王先生",
                description="光模块故障",
                severity=2,
                reported_at=T0,
            ),
            now=T0,
        )
        assert case.id is not None
        case_id, number = case.id, case.number
        start_clock(s, case_id, "spare_part", started_at=T0, severity=2)
    with session_scope() as s:
        issue_parts(s, case_id, [("SFP-10G", 2)], now=T0, key="parts#1")  # none in stock
    log_in(client, "keeper1")
    page = client.get("/store")
    text = shown(page)
    assert number in text and "缺 10G 多模光模块（SFP-10G）2 件" in text and "须于 2026-11-23" in text
    csrf = form_csrf(page)
    beijing = ZoneInfo("Asia/Shanghai")
    past = client.post(
        f"/store/urgent/{case_id}",
        data={"parts": "SFP-10G × 2", "vendor": "华为", "eta": "2020-01-01 10:00", "csrf": csrf},
    )
    assert past.status_code == 400 and "应晚于现在" in shown(past)
    garbled = client.post(
        f"/store/urgent/{case_id}", data={"parts": "x", "vendor": "华为", "eta": "明天", "csrf": csrf}
    )
    assert garbled.status_code == 400 and "格式应为" in shown(garbled)
    # the page's clock is the fixed T0 the client is given (web.staff.staff_now), not the wall clock:
    # an hour before T0 is in the past, five hours after it is after the 4-hour deadline
    before_t0 = (T0 - timedelta(hours=1)).astimezone(beijing).strftime("%Y-%m-%d %H:%M")
    early = client.post(
        f"/store/urgent/{case_id}",
        data={"parts": "SFP-10G × 2", "vendor": "华为", "eta": before_t0, "csrf": csrf},
    )
    assert early.status_code == 400 and "应晚于现在" in shown(early)
    eta = (T0 + timedelta(hours=5)).astimezone(beijing).strftime("%Y-%m-%d %H:%M")
    done = client.post(
        f"/store/urgent/{case_id}",
        data={"parts": "SFP-10G × 2", "vendor": "华为北京备件中心", "eta": eta, "csrf": csrf},
    )
    assert done.status_code == 200 and "已登记紧急采购" in shown(done)
    assert "紧急采购：SFP-10G × 2（华为北京备件中心）" in shown(done)
    with session_scope() as s:
        event = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "parts_procurement")).one()
        assert event.actor == "备件管理员甲"
        line = event_text(event.kind, event.data)
    assert (
        line.startswith("备件管理员紧急采购：SFP-10G × 2（华为北京备件中心），预计")
        and "晚于4小时时限" in line
    )
