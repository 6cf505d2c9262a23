"""A revision of the 应急恢复方案 between drills on the real Prefect server and the real web app:
started from the Prefect-UI form `recovery-plan` (schema enforced), the lead's link page shows the
version in force filled in, the lead and the director answer through their links. The branches (send
back, reject, bad input) run on the fast layer: tests/test_recovery_revision.py."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models import Case
from tests.repair_driver import RepairDriver
from tests.test_drill_branches import RECOVERY

pytestmark = pytest.mark.timeout(300)

# a system of its own: the real layer's database is shared, and the drill's real test writes the
# recovery plan of 核心业务系统 for the same customer
SYSTEM = "网上银行系统"


@pytest.fixture
def drive(harness: Any) -> RepairDriver:
    from web.app import create_app

    return RepairDriver(harness, TestClient(create_app()))


def test_a_revision_from_the_run_form_is_approved_through_the_links(drive: RepairDriver) -> None:
    from sqlmodel import col, select

    from models import Customer
    from models.drill import RecoveryPlan
    from models.wallclock import now as wall

    t0 = wall()
    with drive.session() as s:  # version 1, approved before: in force
        customer = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        s.add(
            RecoveryPlan(
                customer_id=customer.id,  # type: ignore[arg-type]
                system=SYSTEM,
                version=1,
                scope=RECOVERY["scope"],
                devices=RECOVERY["devices"],
                rto_minutes=60,
                rpo_minutes=5,
                steps=[{"position": 1, "action": "切换到备库", "owner": "刘工程师", "minutes": 30}],
                contacts=RECOVERY["contacts"],
                created_by="张技术",
                created_at=t0,
                approved_by="吴总监",
                approved_at=t0,
            )
        )
        s.commit()
    form = {
        "customer": "北京某银行数据中心（BJYH）",  # a choice of the form (read when the runner started)
        "system": SYSTEM,
        "reason": "新增存储双活",
        "requested_by": "",
    }
    run_id = drive.h.run("recovery-plan/recovery-plan", {"request": form}, as_form=True)
    case_id = drive.case_of_run(run_id)
    row = drive.pending(case_id, "recovery-plan-v2", run_id)
    page = drive.client.get("/a/" + drive.link_for(row).rsplit("/a/", 1)[1])
    assert page.status_code == 200
    # the link page shows the version in force filled in, for the lead to change what changes
    assert re.search(r'name="f_rto_minutes"[^>]*>60</textarea>', page.text)
    assert re.search(r'name="f_steps"[^>]*>切换到备库 \| 刘工程师 \| 30</textarea>', page.text)
    t = t0 + timedelta(minutes=1)
    drive.act(
        case_id, "recovery-plan-v2", "submitted", t, run_id=run_id, fields={**RECOVERY, "rto_minutes": "30"}
    )
    drive.act(case_id, "recovery-plan-approval", "approved", t + timedelta(minutes=1), run_id=run_id)
    done = drive.finish(run_id)
    assert done.state.result() == "approved"
    with drive.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "closed" and case.number.startswith("HF-")
        plans = s.exec(
            select(RecoveryPlan).where(RecoveryPlan.system == SYSTEM).order_by(col(RecoveryPlan.version))
        ).all()
        assert [(p.version, p.rto_minutes, p.approved_at is not None) for p in plans] == [
            (1, 60, True),
            (2, 30, True),
        ]
        assert plans[1].reason == f"{case.number} 修订：新增存储双活"
