"""The recovery plans page (web/drill.py): every version of a customer's 应急恢复方案 shown to staff
after the login — the one in force marked, one awaiting the director marked, why each was made."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from tests.conftest import T0
from tests.staff_login import log_in, make_account


def shown(page: Any) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page.text).split())


@pytest.fixture
def client(demo: str) -> TestClient:
    from web.app import create_app
    from web.staff import staff_now

    app = create_app()
    app.dependency_overrides[staff_now] = lambda: T0 + timedelta(hours=3)
    return TestClient(app)


def test_every_version_of_a_recovery_plan_is_shown_to_staff_newest_first(client: TestClient) -> None:
    from models import Customer
    from models.db import session_scope
    from models.drill import RecoveryPlan

    with session_scope() as s:
        customer = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        for version, reason, approved, rto in (
            (1, "", "吴总监", 60),
            (2, "YL-000001 演练发现的差距：切换脚本需手工确认", "吴总监", 45),
            (3, "新增存储双活", None, 30),
        ):
            s.add(
                RecoveryPlan(
                    customer_id=customer.id,  # type: ignore[arg-type]
                    system="核心业务系统",
                    version=version,
                    scope="核心数据库故障",
                    devices="核心数据库主备两台",
                    rto_minutes=rto,
                    rpo_minutes=5,
                    steps=[{"position": 1, "action": "切换到备库", "owner": "刘工程师", "minutes": 30}],
                    contacts="张技术 13800000003",
                    reason=reason,
                    created_by="张技术",
                    created_at=T0,
                    approved_by=approved,
                    approved_at=T0 + timedelta(hours=1) if approved else None,
                )
            )
    path = "/drill/recovery-plans?customer=BJYH"
    assert client.get(path, follow_redirects=False).status_code == 303  # staff only: to the login
    make_account()
    assert log_in(client, next=path).status_code == 303
    page = client.get(path)
    assert page.status_code == 200, page.text[:500]
    text = shown(page)
    assert "核心业务系统：共 3 个版本（最新在前）" in text
    assert text.index("第 3 版") < text.index("第 2 版") < text.index("第 1 版")
    assert "第 3 版 待技术总监批准" in text and "第 2 版 现行" in text
    assert "RTO 60 分钟" in text and "RTO 45 分钟" in text and "RTO 30 分钟" in text
    assert "修订说明：YL-000001 演练发现的差距：切换脚本需手工确认" in text and "吴总监 于" in text
    listing = shown(client.get("/drill/recovery-plans"))
    assert "有应急恢复方案的客户" in listing and "BJYH" in listing
    unknown = client.get("/drill/recovery-plans?customer=NOPE")
    assert unknown.status_code == 404 and "未知客户" in unknown.text
