"""The dispatcher's board at the web root, over HTTP against a real SQLite file: cases opened through
the real intake, clocks and approvals at T0, the page's clock moved by overriding its dependency.
And what a waiting run says in Prefect: its name, its Suspended state's message, its artifact —
on the real Prefect harness with one repair run.
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


def shown(page: Any) -> str:
    """The page's text as a person reads it (tags dropped, blanks folded)."""
    return " ".join(re.sub(r"<[^>]+>", " ", page.text).split())


@pytest.fixture
def board_client(demo: str) -> TestClient:
    """A dispatcher logged in to the board (the staff login of web.staff)."""
    from web.app import create_app
    from web.board import board_now
    from web.staff import staff_now

    app = create_app()
    now = {"at": T0 + timedelta(minutes=10)}
    app.dependency_overrides[board_now] = lambda: now["at"]
    app.dependency_overrides[staff_now] = lambda: now["at"]
    client = TestClient(app)
    client.now = now  # type: ignore[attr-defined]
    make_account("dispatcher1", roles=("dispatcher",), name="调度员甲")
    assert log_in(client).status_code == 303
    return client


def open_repair(
    customer: str = "BJYH",
    site: str | None = "亦庄机房",
    description: str = "存储阵列告警，部分 LUN 读写变慢",
    severity: int = 2,
    run: str | None = None,
) -> int:
    """A repair as the flow's intake opens it at T0: the case with its team, its first three clocks,
    and the technical lead's diagnosis form (what the flow asks first)."""
    from flows.steps import subject
    from models.db import session_scope
    from tasks.approvals import ApprovalRequest, open_approval
    from tasks.cases import RepairRequest, assignees, case_facts, open_case
    from tasks.clocks import start_clock

    request = RepairRequest(
        customer=customer,
        site=site,
        reported_by="王先生 13900000000",
        description=description,
        severity=severity,
        reported_at=T0,
    )
    with session_scope() as s:
        case = open_case(s, request, now=T0, flow_run_id=run)
        assert case.id is not None
        for kind in ("first_contact", "remote_response", "restore"):
            start_clock(s, case.id, kind, started_at=T0, severity=severity)
        facts = case_facts(s, case.id)
        case_id = case.id
    with session_scope() as s:
        open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="diagnosis",
                version=1,
                subject=subject(facts, "请联系客户并远程诊断"),
                content=description,
                kind="form",
                form_name="diagnosis",
                approver_staff_ids=assignees.fn(case_id, "technical_lead"),
                approver_role="technical_lead",
                expires_at=T0 + timedelta(days=3),
                now=T0,
                flow_run_id=run,
            ),
        )
    return case_id


def lead_name(case_id: int) -> str:
    from models import Case, Staff
    from models.db import session_scope

    with session_scope() as s:
        case = s.get(Case, case_id)
        assert case is not None
        staff = s.get(Staff, case.data["team"]["technical_lead"])
        assert staff is not None
        return staff.name


def card(page: Any, number: str) -> str:
    """The text of one case's card on the board."""
    match = re.search(rf'<article[^>]*id="case-{number}".*?</article>', page.text, re.S)
    assert match, f"{number} is not on the board"
    return " ".join(re.sub(r"<[^>]+>", " ", match[0]).split())


def number_of(case_id: int) -> str:
    return f"WX-{case_id:06d}"


def test_the_board_lists_a_waiting_repair_with_its_step_person_and_deadline(board_client: TestClient) -> None:
    from models.settings import get_settings

    case_id = open_repair(severity=4, run="11111111-2222-3333-4444-555555555555")
    page = board_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = card(page, number_of(case_id))
    assert "故障维修" in text and "北京某银行数据中心" in text and "亦庄机房" in text
    assert "联系客户并远程诊断" in text  # what it waits for, in Chinese
    assert f"项目技术负责人 {lead_name(case_id)}" in text  # for whom
    assert "自 2026-11-23 10:00" in text  # since when (Beijing time)
    # until when: the nearest deadline of its running clocks — first contact within 30 minutes of T0
    assert "首次联系 2026-11-23 10:30" in text and "已超时" not in text
    assert "4 级（一般故障）" in text and "有偿服务" not in text  # the contract's severity wording
    ui = get_settings().prefect_url.removesuffix("/api")
    assert f'<a href="{ui}/runs/flow-run/11111111-2222-3333-4444-555555555555">Prefect 运行</a>' in page.text
    # refreshes itself without script; a phone-sized layout
    assert re.search(r'<meta http-equiv="refresh" content="60; url=/">', page.text)
    assert 'name="viewport"' in page.text and "<script" not in page.text
    assert page.headers["cache-control"] == "no-store"


def test_a_breached_clock_is_marked_in_red_and_listed_first(board_client: TestClient) -> None:
    late = open_repair(severity=3)
    board_client.now["at"] = T0 + timedelta(hours=2)  # type: ignore[attr-defined]  # first contact (30 min) is past
    page = board_client.get("/")
    text = card(page, number_of(late))
    # severity 3: remote response within 10 minutes, first contact within 30 — both passed, both marked
    assert (
        "电话/远程响应 2026-11-23 10:10（已超时）" in text and "首次联系 2026-11-23 10:30（已超时）" in text
    )
    assert "恢复服务 2026-11-24 10:00" in text and "恢复服务 2026-11-24 10:00（已超时）" not in text
    article = re.search(rf'<article class="([^"]*)"[^>]*id="case-{number_of(late)}"', page.text)
    assert article and "breached" in article[1]
    assert re.search(r'<span class="late">电话/远程响应 2026-11-23 10:10（已超时）', page.text)
    assert "已超时 1 件" in shown(page)


def test_a_closed_case_is_not_listed_and_paid_service_is_marked(board_client: TestClient) -> None:
    from models.cases import CaseStatus
    from models.db import session_scope
    from tasks.cases import set_status

    closed = open_repair(description="已处理完毕的告警")
    paid = open_repair(
        customer="TYDX", site=None, description="交换机端口故障"
    )  # contract lapsed: paid service
    with session_scope() as s:
        set_status(s, closed, CaseStatus.ARCHIVED, at=T0 + timedelta(minutes=5))
    page = board_client.get("/")
    assert f'id="case-{number_of(closed)}"' not in page.text
    assert "有偿服务" in card(page, number_of(paid))


def test_a_report_of_the_case_is_linked_by_a_signed_view_link(board_client: TestClient) -> None:
    from tasks.reports import issue

    case_id = open_repair()
    getattr(issue, "fn", issue)(
        case_id,
        "service_report",
        "repair/service_report",
        {
            "solved_remotely": True,
            "diagnosis": "恢复",
            "command_log": "",
            "plan": None,
            "work_done": "远程恢复",
            "parts_used": [],
            "maintenance": "",
            "further_problems": [],
            "engineer": "刘工程师",
            "corrections": [],
        },
        T0,
        "刘工程师",
        1,
    )
    page = board_client.get("/")
    link = re.search(
        rf'id="case-{number_of(case_id)}".*?<a href="https?://[^/"]+(/reports/[^"]+)">维修服务报告</a>',
        page.text,
        re.S,
    )
    assert link, card(page, number_of(case_id))
    report = board_client.get(link[1])
    assert report.status_code == 200 and "维修服务报告" in report.text


def test_without_a_staff_login_the_board_sends_to_the_login_page_and_health_stays_open(
    board_client: TestClient,
) -> None:
    open_repair()
    board_client.cookies.clear()
    for headers in (
        {},
        {"Authorization": "Basic " + "YWZ0ZXJjYXJlOndyb25n"},  # the old Prefect basic auth opens nothing now
        {"Authorization": "Bearer x"},
    ):
        page = board_client.get("/", headers=headers, follow_redirects=False)
        assert page.status_code == 303, headers
        assert page.headers["location"] == "/login?next=/"
        assert "WX-" not in page.text
    login = board_client.get("/", follow_redirects=True)
    assert "员工登录" in shown(login) and "WX-" not in login.text
    assert "default-src 'none'" in login.headers["content-security-policy"]
    assert board_client.get("/health").json() == {"status": "ok"}


def test_a_signed_staff_link_opens_the_board_until_it_expires(board_client: TestClient) -> None:
    from web.board import board_link

    case_id = open_repair()
    url = board_link(days=30, now=T0)
    path = "/" + url.split("/", 3)[3]
    page = board_client.get(path)
    assert page.status_code == 200 and f'id="case-{number_of(case_id)}"' in page.text
    assert f'url={path}"' in page.text  # the refresh keeps the link
    assert board_client.get(path[:-3] + "xyz").status_code == 401  # tampered
    assert (
        board_client.get(path.replace("/board/", "/incidents/")).status_code == 403
    )  # another page's purpose
    board_client.now["at"] = T0 + timedelta(days=31)  # type: ignore[attr-defined]
    expired = board_client.get(path)
    assert expired.status_code == 401 and "已过期" in shown(expired)


def test_what_people_typed_is_shown_as_text_on_the_board(board_client: TestClient) -> None:
    case_id = open_repair(description="<script>alert(1)</script><img src=x onerror=alert(2)>")
    page = board_client.get("/")
    assert "<script>alert(1)" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert f'id="case-{number_of(case_id)}"' in page.text


def test_board_link_command_prints_a_working_link(board_client: TestClient) -> None:
    from typer.testing import CliRunner

    from deployments.cli import app

    result = CliRunner().invoke(app, ["board-link", "--days", "7"])
    assert result.exit_code == 0, result.output
    url = re.search(r"(https?://\S+/board/\S+)", result.output)
    assert url, result.output
    from models import wallclock

    board_client.now["at"] = wallclock.now()  # the command signs at the wall clock's now  # type: ignore[attr-defined]
    assert board_client.get("/" + url[1].split("/", 3)[3]).status_code == 200
    assert CliRunner().invoke(app, ["board-link", "--days", "0"]).exit_code != 0


# --- words of a wait ------------------------------------------------------------------------------


def test_a_wait_is_said_in_chinese_with_whom_and_until_when(demo: str) -> None:
    from models import Contact
    from models.approvals import Approval, Timer
    from models.db import session_scope
    from tasks.board import approval_waiting, step_words, timer_waiting

    assert step_words("【合同外·有偿服务】WX-000012 故障维修：请签收维修服务报告") == "签收维修服务报告"
    assert step_words("WX-000012 故障维修：维修遇到异常，请指导") == "指导（维修遇到异常）"
    assert step_words("XJ-000003 请签收巡检报告") == "签收巡检报告"
    with session_scope() as s:
        contact = s.exec(select(Contact)).first()
        assert contact is not None
        row = Approval(
            case_id=1,
            kind="signature",
            step="service-report-signature",
            subject="WX-000001 故障维修：请签收维修服务报告",
            content="",
            content_hash="",
            approver_contact_ids=[contact.id],
            approver_role="customer",
            created_at=T0,
            expires_at=T0 + timedelta(days=2),
        )
        said = approval_waiting(s, row)
        assert said.text == f"等待客户 {contact.name} 签收维修服务报告（链接已发送，2026-11-25 10:00 前有效）"
        plan = Approval(
            case_id=1,
            kind="approval",
            step="plan-approval",
            subject="WX-000001 故障维修：解决方案 v2 待技术总监审批",
            content="",
            content_hash="",
            approver_staff_ids=[],
            approver_role="technical_director",
            created_at=T0,
            expires_at=T0 + timedelta(days=3),
        )
        assert approval_waiting(s, plan).text.startswith("等待技术总监 审批：解决方案 v2（链接已发送")
    timer = Timer(
        case_id=1, flow_run_id="r", key="callback-due", due_at=T0 + timedelta(days=1), created_at=T0
    )
    assert timer_waiting(timer).text == "等待回访时间到 2026-11-24 10:00"


def test_runs_are_named_after_their_case(demo: str) -> None:
    from models import Case
    from models.db import session_scope
    from tasks.board import case_run_name

    repair = open_repair()
    with session_scope() as s:
        inspection = Case(
            kind="inspection", customer_id=1, title="月度巡检", reported_at=T0, created_at=T0, updated_at=T0
        )
        s.add(inspection)
        s.flush()
        case = s.get(Case, repair)
        assert case is not None
        assert case_run_name(s, case) == f"{number_of(repair)} 故障维修 北京某银行数据中心"
        assert case_run_name(s, inspection) == f"XJ-{inspection.id:06d} 巡检 北京某银行数据中心"
        assert (
            case_run_name(s, inspection, "加做巡检") == f"XJ-{inspection.id:06d} 加做巡检 北京某银行数据中心"
        )


# --- on the real Prefect harness: one repair run ---------------------------------------------------


@pytest.mark.timeout(240)
def test_a_suspended_repair_run_is_named_after_its_case_and_says_what_it_waits_for(harness: Any) -> None:
    from models import Case, Contact, Staff
    from models.approvals import Approval, ApprovalStatus
    from models.db import session_scope
    from tasks.approvals import Approver, decide

    request = {
        "customer": "BJYH",
        "site": "亦庄机房",
        "reported_by": "客户 王先生 13900000000",
        "channel": "热线",
        "description": "看板测试：存储阵列告警",
        "severity": 3,
        "reported_at": T0.isoformat(),
    }
    run_id = harness.run("repair/repair", {"request": request})
    run = harness.wait(run_id, "Suspended", timeout=90)
    with session_scope() as s:
        case = s.exec(select(Case).where(Case.flow_run_id == str(run_id))).one()
        number = case.number
        lead = s.get(Staff, case.data["team"]["technical_lead"])
        contact = s.get(Contact, case.data["contact_id"])
        assert lead is not None and contact is not None
        lead_name_, contact_name = lead.name, contact.name
        diagnosis = s.exec(
            select(Approval).where(Approval.case_id == case.id, Approval.step == "diagnosis")
        ).one()
    assert run.name == f"{number} 故障维修 北京某银行数据中心"
    assert run.state.message == (
        f"等待项目技术负责人 {lead_name_} 联系客户并远程诊断（链接已发送，2026-11-26 10:00 前有效）"
    )
    key = f"case-{number.lower()}"
    artifacts = read_artifacts(key)
    assert len(artifacts) == 1 and artifacts[0].flow_run_id == str(run.id) and artifacts[0].type == "markdown"
    assert "联系客户并远程诊断" in str(artifacts[0].data) and f"项目技术负责人 {lead_name_}" in str(
        artifacts[0].data
    )

    # the lead answers: solved remotely → the run waits for the customer's signature on the report
    result = decide(
        diagnosis.id,
        "submitted",
        by=Approver("staff", lead.id),
        channel="link",  # type: ignore[arg-type]
        now=T0 + timedelta(minutes=8),
        payload={
            "contacted_at": "2026-11-23 10:05",
            "fault_confirmed": "是",
            "result": "缓存策略被改，已恢复",
            "command_log": "",
            "solved_remotely": "是",
        },
    )
    assert result.recorded, result.message
    import time

    deadline_pending = None
    stop = time.monotonic() + 90
    while time.monotonic() < stop:
        with session_scope() as s:
            deadline_pending = s.exec(
                select(Approval).where(
                    Approval.case_id == case.id,
                    Approval.step == "service-report-signature",
                    Approval.status == ApprovalStatus.PENDING,
                )
            ).first()
        state = harness.read(run_id).state
        if deadline_pending is not None and state.name == "Suspended" and "签收" in (state.message or ""):
            break
        time.sleep(0.3)
    run = harness.read(run_id)
    assert run.state.message == (
        f"等待客户 {contact_name} 签收维修服务报告（链接已发送，2026-11-30 10:08 前有效）"
    ), run.state.message
    assert run.name == f"{number} 故障维修 北京某银行数据中心"  # the replay kept the name
    artifacts = read_artifacts(key)  # newest first: one version per wait of the case
    assert len(artifacts) == 2 and all(a.flow_run_id == str(run.id) for a in artifacts)
    assert f"客户 {contact_name}" in str(artifacts[0].data) and "签收维修服务报告" in str(artifacts[0].data)


def read_artifacts(key: str) -> list[Any]:
    """Every version of an artifact key, newest first, from Prefect's API (through its client's
    connection and credential; its `read_artifacts` sends `limit: null`, which this server refuses)."""
    from prefect.client.orchestration import get_client

    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 50, "offset": 0}
    with get_client(sync_client=True) as client:
        answer = client.request("POST", "/artifacts/filter", json=body)  # type: ignore[arg-type]
    answer.raise_for_status()
    from types import SimpleNamespace

    return [SimpleNamespace(**row) for row in answer.json()]


def test_every_procedure_with_a_case_names_its_runs_after_the_case() -> None:
    """The Prefect UI lists a run as `MY-000002 满意度调查 北京某银行数据中心`, not `mature-chimera`: the
    survey's runs were left with Prefect's random names."""
    from prefect import Flow

    from deployments.registry import PROCEDURES
    from models.cases import CaseKind
    from tasks.board import run_name

    flows = {
        value.name: value
        for module in PROCEDURES
        for value in vars(module).values()
        if isinstance(value, Flow) and value.name in {*CaseKind, "extra-inspection"}
    }
    assert {"repair", "drill", "assurance", "complaint", "renewal", "survey"} <= set(flows)
    assert [name for name, f in flows.items() if f.flow_run_name is not run_name] == []
