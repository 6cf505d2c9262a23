"""The device page (设备档案) over HTTP on the demo data in a real SQLite file: a repair opened through
the real intake on a device, parts issued to it through the parts store, an inspection finding and
a drill of its machine room — shown newest first; to staff after the login, and to the engineer from
the diagnosis form's page through a signed link.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from tests.conftest import T0
from tests.staff_login import log_in, make_account

SERIAL = "SNBJYH0SE00"  # the demo's server in 亦庄机房


def shown(page: Any) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page.text).split())


@pytest.fixture
def client(demo: str) -> TestClient:
    from web.app import create_app
    from web.approvals import clock
    from web.devices import device_now
    from web.staff import staff_now

    app = create_app()
    now = {"at": T0 + timedelta(hours=3)}
    for dependency in (staff_now, device_now, clock):
        app.dependency_overrides[dependency] = lambda: now["at"]
    c = TestClient(app)
    c.now = now  # type: ignore[attr-defined]
    return c


def history_of_the_device() -> dict[str, Any]:
    """A repair on the device with a diagnosis form, two parts issued to it, an abnormal inspection
    finding and a drill of its machine room, each at its own moment."""
    from models import Case, Device
    from models.cases import CaseStatus
    from models.db import session_scope
    from models.inspection import ChecklistResult
    from tasks.approvals import ApprovalRequest, Approver, approval_link, open_approval
    from tasks.cases import RepairRequest, assignees, open_case
    from tasks.parts import issue_parts

    with session_scope() as s:
        device = s.exec(select(Device).where(Device.serial == SERIAL)).one()
        inspection = Case(
            kind="inspection",
            customer_id=device.customer_id,
            site_id=device.site_id,
            contract_id=device.contract_id,
            period="2026-10",
            title="2026年10月巡检",
            status=CaseStatus.CLOSED,
            reported_at=T0 - timedelta(days=30),
            created_at=T0 - timedelta(days=30),
            updated_at=T0 - timedelta(days=30),
        )
        drill = Case(
            kind="drill",
            customer_id=device.customer_id,
            site_id=device.site_id,
            title="核心系统切换演练",
            reported_at=T0 - timedelta(days=60),
            created_at=T0 - timedelta(days=60),
            updated_at=T0 - timedelta(days=60),
        )
        s.add(inspection)
        s.add(drill)
        s.flush()
        assert inspection.id is not None
        s.add(
            ChecklistResult(
                case_id=inspection.id,
                target=f"device:{device.id}",
                device_id=device.id,
                device_class="server",
                item_code="fan",
                item_label="风扇运转",
                result="abnormal",
                note="2 号风扇噪音大 <b>",
                recorded_at=T0 - timedelta(days=29),
            )
        )
        device_id = device.id
    request = RepairRequest(
        customer="BJYH",
        device=SERIAL,
        reported_by="王先生 13900000000",
        description="服务器电源告警 <script>alert(1)</script>",
        severity=2,
        reported_at=T0,
    )
    with session_scope() as s:
        case = open_case(s, request, now=T0)
        assert case.id is not None and case.device_id == device_id
        case_id = case.id
    with session_scope() as s:
        issue_parts(s, case_id, [("PSU-900W", 1)], now=T0 + timedelta(hours=2), key="parts#1", actor="何备件")
    with session_scope() as s:
        row = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="diagnosis",
                version=1,
                subject="请联系客户并远程诊断",
                content="服务器电源告警",
                kind="form",
                form_name="diagnosis",
                approver_staff_ids=assignees.fn(case_id, "technical_lead"),
                approver_role="technical_lead",
                expires_at=T0 + timedelta(days=3),
                now=T0,
            ),
        )
        link = approval_link(row, Approver("staff", row.approver_staff_ids[0]))
    return {"device_id": device_id, "case_id": case_id, "diagnosis": link}


def test_the_device_page_lists_cases_findings_parts_and_drills_newest_first(client: TestClient) -> None:
    made = history_of_the_device()
    page = client.get(f"/devices/{made['device_id']}", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == f"/login?next=/devices/{made['device_id']}"
    make_account("eng1", roles=("engineer",))
    log_in(client, "eng1")
    page = client.get(f"/devices/{made['device_id']}")
    assert page.status_code == 200
    text = shown(page)
    assert SERIAL in text and "北京某银行数据中心" in text and "亦庄机房" in text and "openEuler" in text
    number = f"WX-{made['case_id']:06d}"
    order = [
        text.index("备件更换"),  # T0 + 2 h: the part issued to the repair
        text.index(number),  # T0: the repair
        text.index("巡检发现"),  # T0 - 29 days
        text.index("应急演练"),  # T0 - 60 days
    ]
    assert order == sorted(order), text
    assert "领用 PSU-900W 900W 电源模块 × 1" in text and "风扇运转：异常（2 号风扇噪音大 &lt;b&gt;）" in text
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;" in page.text
    assert client.get("/devices/999999").status_code == 404


def test_the_engineer_opens_the_device_page_from_the_diagnosis_form_without_a_login(
    client: TestClient,
) -> None:
    made = history_of_the_device()
    form = client.get("/" + made["diagnosis"].split("/", 3)[3])
    assert form.status_code == 200, form.text[:500]
    link = re.search(r'href="([^"]*/devices/link/[^"]+)"', form.text)
    assert link, form.text
    path = "/" + link[1].split("/", 3)[3]
    device = client.get(path)
    assert device.status_code == 200 and SERIAL in device.text and "备件更换" in shown(device)
    assert "退出登录" not in device.text  # not a login session: no staff header
    assert client.get(path[:-4] + "abcd").status_code == 403
    client.now["at"] = T0 + timedelta(days=30)  # type: ignore[attr-defined]
    assert client.get(path).status_code == 410
