"""A revision of a system's 应急恢复方案 between drills (issue 19 item 1): started from the run form
`recovery-plan`, written by the lead on the plan's form filled in with the version in force, approved
by the technical director (要求修改 → another round; 驳回 → the version in force unchanged) — driven
through the same decide() the links hit; the versions page shows the new version and its reason."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import col, select

from flows.drill import recovery_plan
from models import Case
from models.cases import CaseKind, CaseStatus
from models.drill import RecoveryPlan
from tasks.drill import RecoveryRevisionRequest
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, say
from tests.staff_login import log_in, make_account
from tests.test_drill_branches import RECOVERY, _local, _request
from tests.test_inspection_flow import _new_contract

MIN = timedelta(minutes=1)
REVISED = {**RECOVERY, "rto_minutes": "30", "devices": "核心数据库主备两台、存储双活一套"}


def _with_plan_in_force(fast: FastFlow, code: str) -> RecoveryRevisionRequest:
    """The customer's contract and version 1 of its 核心业务系统 plan, approved."""
    from models import Customer

    _new_contract(fast.db_url, code, _local(T0) - timedelta(days=30), _local(T0) + timedelta(days=335))
    with fast.session() as s:
        customer = s.exec(select(Customer).where(Customer.code == code)).one()
        s.add(
            RecoveryPlan(
                customer_id=customer.id,  # type: ignore[arg-type]
                system="核心业务系统",
                version=1,
                scope=RECOVERY["scope"],
                devices=RECOVERY["devices"],
                rto_minutes=60,
                rpo_minutes=5,
                steps=[{"position": 1, "action": "切换到备用数据库", "owner": "刘工程师", "minutes": 30}],
                contacts=RECOVERY["contacts"],
                created_by="张技术",
                created_at=T0 - timedelta(days=10),
                approved_by="吴总监",
                approved_at=T0 - timedelta(days=9),
            )
        )
        s.commit()
    return RecoveryRevisionRequest(customer=code, system="核心业务系统", reason="新增存储双活")


def _versions(fast: FastFlow) -> list[tuple[int, int, bool, bool, str]]:
    with fast.session() as s:
        rows = s.exec(select(RecoveryPlan).order_by(col(RecoveryPlan.version))).all()
        return [
            (p.version, p.rto_minutes, p.approved_at is not None, p.rejected_at is not None, p.reason)
            for p in rows
        ]


def _page(fast: FastFlow, code: str) -> str:
    from web.app import create_app

    client = TestClient(create_app())
    make_account()
    path = f"/drill/recovery-plans?customer={code}"
    assert log_in(client, next=path).status_code == 303
    page = client.get(path)
    assert page.status_code == 200, page.text[:500]
    return " ".join(re.sub(r"<[^>]+>", " ", page.text).split())


def test_an_approved_revision_is_in_force_and_listed_with_its_reason(fast: FastFlow) -> None:
    request = _with_plan_in_force(fast, "HFOK")
    outcome = fast.run(
        recovery_plan,
        request,
        at=T0,
        script=[
            say("recovery-plan-v2", REVISED, at=T0 + 20 * MIN),
            say("recovery-plan-approval", decision="approved", by="吴总监", at=T0 + 40 * MIN),
        ],
    )
    assert outcome == "approved"
    assert fast.refused == []
    case_id = fast.case_of_run()
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        # a case of its own kind: never counted as a drill in the KPIs, the summary or the board
        assert (case.kind, case.status, case.number) == (
            CaseKind.RECOVERY_PLAN,
            CaseStatus.CLOSED,
            f"HF-{case_id:06d}",
        )
        assert s.exec(select(Case).where(Case.kind == str(CaseKind.DRILL))).all() == []
    reason = f"HF-{case_id:06d} 修订：新增存储双活"
    assert _versions(fast) == [(1, 60, True, False, ""), (2, 30, True, False, reason)]
    text = _page(fast, "HFOK")
    assert "核心业务系统：共 2 个版本（最新在前）" in text
    assert "第 2 版 现行" in text and "RTO 30 分钟" in text
    assert f"修订说明：{reason}" in text


def test_the_lead_s_form_comes_filled_in_with_the_version_in_force(fast: FastFlow) -> None:
    """The lead changes only what changes: the form's page shows version 1 filled in."""
    from models.approvals import Approval

    request = _with_plan_in_force(fast, "HFPRE")
    suspended = fast.run(recovery_plan, request, at=T0, script=[], until="recovery-plan-v2")
    assert suspended.step == "recovery-plan-v2"
    with fast.session() as s:
        form = s.exec(select(Approval).where(Approval.step == "recovery-plan-v2")).one().form
    assert form["values"]["rto_minutes"] == "60"
    assert form["values"]["steps"].startswith("切换到备用数据库 | 刘工程师 | 30")
    assert form["values"]["contacts"] == RECOVERY["contacts"]


def test_sent_back_for_changes_then_approved_makes_a_third_version(fast: FastFlow) -> None:
    request = _with_plan_in_force(fast, "HFBACK")
    outcome = fast.run(
        recovery_plan,
        request,
        at=T0,
        script=[
            say("recovery-plan-v2", REVISED, at=T0 + 20 * MIN),
            say(
                "recovery-plan-approval",
                decision="revise",
                comment="RTO 30 分钟须说明存储双活的切换时间",
                by="吴总监",
                at=T0 + 40 * MIN,
            ),
            say("recovery-plan-v3", {**REVISED, "rto_minutes": "40"}, at=T0 + 60 * MIN),
            say("recovery-plan-approval", decision="approved", by="吴总监", at=T0 + 80 * MIN),
        ],
    )
    assert outcome == "approved", fast.refused
    versions = _versions(fast)
    assert [v[:4] for v in versions] == [(1, 60, True, False), (2, 30, False, False), (3, 40, True, False)]
    assert "技术总监要求修改：RTO 30 分钟须说明存储双活的切换时间" in versions[2][4]
    assert "第 3 版 现行" in _page(fast, "HFBACK")


def test_a_rejected_revision_leaves_the_version_in_force(fast: FastFlow) -> None:
    request = _with_plan_in_force(fast, "HFNO")
    outcome = fast.run(
        recovery_plan,
        request,
        at=T0,
        script=[
            say("recovery-plan-v2", REVISED, at=T0 + 20 * MIN),
            say(
                "recovery-plan-approval",
                decision="rejected",
                comment="无需修订",
                by="吴总监",
                at=T0 + 40 * MIN,
            ),
        ],
    )
    assert outcome == "rejected"
    assert [v[:4] for v in _versions(fast)] == [(1, 60, True, False), (2, 30, False, True)]
    with fast.session() as s:
        case = s.get(Case, fast.case_of_run())
        assert case is not None and case.status == CaseStatus.CANCELLED
    text = _page(fast, "HFNO")
    assert "第 1 版 现行" in text and "第 2 版 技术总监驳回" in text and "吴总监 于" in text


def test_an_rto_of_0_is_refused_naming_the_field(fast: FastFlow) -> None:
    request = _with_plan_in_force(fast, "HFBAD")
    outcome = fast.run(
        recovery_plan,
        request,
        at=T0,
        script=[
            say("recovery-plan-v2", {**REVISED, "rto_minutes": "0"}, at=T0 + 10 * MIN),
            say("recovery-plan-v2", REVISED, at=T0 + 20 * MIN),
            say("recovery-plan-approval", decision="approved", by="吴总监", at=T0 + 40 * MIN),
        ],
    )
    assert outcome == "approved"
    assert [step for step, _ in fast.refused] == ["recovery-plan-v2"]
    assert "恢复时间目标 RTO（分钟）」须大于 0" in fast.refused[0][1]


def test_a_revision_without_a_reason_or_contract_is_refused_in_chinese(fast: FastFlow) -> None:
    _request(fast, "HFREQ", _local(T0) + timedelta(days=20))
    no_reason = fast.run(
        recovery_plan,
        RecoveryRevisionRequest(customer="HFREQ", system="核心业务系统", reason=" "),
        at=T0,
        script=[],
    )
    assert "请填写修订原因" in str(no_reason.message)


def test_the_recovery_plan_run_form_speaks_chinese_and_offers_the_customers(demo: str) -> None:
    from prefect.utilities.schema_tools import validate

    from tests.test_run_forms import CUSTOMERS, form_of, schema_of
    from tests.test_run_forms import (
        test_every_field_of_the_run_forms_speaks_chinese_and_none_is_a_type_toggle as speaks_chinese,
    )

    speaks_chinese(demo, "recovery-plan")
    form = form_of("recovery-plan")
    assert form["title"] == "应急恢复方案修订 / recovery plan revision"
    assert form["properties"]["customer"]["enum"] == CUSTOMERS
    assert set(form["required"]) == {"customer", "system", "reason"}
    sent = {"customer": CUSTOMERS[0], "system": "核心业务系统", "reason": "新增存储双活", "requested_by": ""}
    assert validate({"request": sent}, schema_of("recovery-plan"), raise_on_error=False) == []
    assert validate({"request": {**sent, "reason": ""}}, schema_of("recovery-plan"), raise_on_error=False)
    assert RecoveryRevisionRequest.model_validate(sent).reason == "新增存储双活"


def test_revise_plan_on_the_command_line_refuses_clearly(tmp_path: Path) -> None:
    """`aftercare drill revise-plan`: what is missing or unknown is named before any run starts;
    Prefect down is said plainly — no traceback."""
    from tests.test_cli import clean_env, free_port, run_cli

    env = clean_env(tmp_path, AFTERCARE_PREFECT_PORT=str(free_port()))  # nothing listens there
    assert run_cli(["seed"], env).returncode == 0
    revise = ["drill", "revise-plan", "--system", "核心业务系统"]
    no_reason = run_cli([*revise, "--customer", "BJYH", "--reason", " "], env)
    assert no_reason.returncode == 2 and "请填写修订原因" in no_reason.stderr
    unknown = run_cli([*revise, "--customer", "不存在的客户", "--reason", "新增存储双活"], env)
    assert unknown.returncode == 2 and "不存在的客户" in unknown.stderr and "Traceback" not in unknown.stderr
    down = run_cli([*revise, "--customer", "BJYH", "--reason", "新增存储双活"], env)
    assert down.returncode != 0 and "无法启动修订流程" in down.stderr and "Traceback" not in down.stderr
