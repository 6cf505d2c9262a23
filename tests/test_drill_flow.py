"""The emergency drill (应急演练, PROCEDURES.md §5) end to end against the real Prefect server and the
real web app: started from the Prefect-UI form `drill` (schema enforced), every step answered by
opening the link a notification carried, the report signed on its page with a drawn signature, time
moved by ticking the clock keeper. The branches run on the fast layer: tests/test_drill_branches.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models import Case
from tests.repair_driver import RepairDriver
from tests.test_drill_branches import PLAN, RECOVERY, _at, _bj, _local
from tests.test_inspection_e2e import _until

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def drive(harness: Any) -> RepairDriver:
    from web.app import create_app

    return RepairDriver(harness, TestClient(create_app()))


def test_a_drill_from_the_run_form_to_the_archived_report_through_the_links(drive: RepairDriver) -> None:
    from sqlmodel import select

    from models.drill import DrillStepResult, RecoveryPlan
    from models.reports import Report
    from models.wallclock import now as wall
    from rules.calendar import add_working_days

    t0 = wall()  # the flow reads the wall clock once when it starts: act after it
    today = _local(t0)
    wished = add_working_days(today, 8)
    with drive.session() as s:  # the system's recovery plan v1, approved before: in force
        from models import Customer

        customer = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        s.add(
            RecoveryPlan(
                customer_id=customer.id,
                system="核心业务系统",
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
        "system": "核心业务系统",
        "kind": "主备切换演练",
        "wished_day": wished.isoformat(),
        "day_off_ok": "否",
        "requested_by": "客户信息科",
    }
    run_id = drive.h.run("drill/drill", {"request": form}, as_form=True)
    case_id = drive.case_of_run(run_id)
    one_step = {**PLAN, "steps": "切换到备库 | 刘工程师 | 30"}
    t = t0 + timedelta(minutes=1)
    drive.act(case_id, "drill-plan", "submitted", t, run_id=run_id, fields=one_step)
    drive.act(case_id, "drill-plan-approval", "approved", t + timedelta(minutes=1), run_id=run_id)
    drive.act(case_id, "drill-plan-signature", "signed", t + timedelta(minutes=2), run_id=run_id)
    drive.act(
        case_id, "drill-date", "submitted", t + timedelta(minutes=3), run_id=run_id, fields={"action": "确认"}
    )
    data = _until(lambda: (c := drive.session().get(Case, case_id)) and "notice_at" in c.data and c.data)
    notice_at, reconfirm_at, start_at = (
        datetime.fromisoformat(data[k]) for k in ("notice_at", "reconfirm_at", "start_at")
    )
    assert _local(notice_at) == add_working_days(wished, -5) and _local(reconfirm_at) == add_working_days(
        wished, -1
    )

    drive.tick(notice_at)
    _until(lambda: "drill_notice_sent" in drive.events(case_id))
    drive.tick(reconfirm_at)
    drive.act(
        case_id,
        "drill-reconfirm-r1",
        "submitted",
        reconfirm_at + timedelta(hours=1),
        run_id=run_id,
        fields={"action": "确认"},
    )
    drive.h.wait(run_id, "Suspended", timeout=60)
    drive.tick(start_at)
    end = start_at + timedelta(minutes=25)
    drive.act(
        case_id,
        "drill-step",
        "submitted",
        end + timedelta(minutes=1),
        run_id=run_id,
        fields={"started_at": _bj(start_at), "ended_at": _bj(end), "result": "成功"},
    )
    drive.act(
        case_id,
        "drill-evaluation",
        "submitted",
        end + timedelta(hours=1),
        run_id=run_id,
        fields={"data_loss_minutes": "0", "meets_need": "是"},
    )
    drive.sign_on_report_page(
        case_id, "drill-report-signature", end + timedelta(hours=2), name="北京维护负责人", run_id=run_id
    )
    drive.act(case_id, "drill-report-approval", "approved", end + timedelta(hours=3), run_id=run_id)
    done = drive.finish(run_id)
    assert done.state.result() == "archived"

    with drive.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "archived" and case.channel == "request"
        assert case.data["evaluation"]["rto_met"] and case.data["evaluation"]["actual_total"] == 25.0
        assert (
            s.exec(select(DrillStepResult).where(DrillStepResult.case_id == case_id)).one().result == "成功"
        )
        report = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "drill_report")).one()
        assert report.status == "archived"
    assert {n for n, t in drive.notifications(case_id) if t == "drill/notice"} == {
        "北京维护负责人",
        "张技术",
        "刘工程师",
        "吴总监",
    }
    assert _at(wished, 9, 30) == start_at
