"""The inspection pages through the real web app and a real SQLite file: the engineer's checklist
behind the same signed link every approval uses (bad input → Chinese errors, nothing recorded), and
the monthly service summary with the customer's rating."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

AT = datetime(2026, 10, 13, 2, tzinfo=UTC)  # the visit day, 10:00 local


@pytest.fixture
def web(demo):
    from web.app import create_app
    from web.approvals import clock

    app = create_app()
    app.dependency_overrides[clock] = lambda: AT + timedelta(hours=2)
    return TestClient(app)


def _link(session: Session, case_id: int | None, template: str) -> str:
    from models.outbox import Notification

    session.expire_all()
    body = session.exec(
        select(Notification.body).where(Notification.case_id == case_id, Notification.template == template)
    ).first()
    assert body, f"no {template} notification"
    return re.search(r"https?://\S+", body)[0]  # type: ignore[index]


@pytest.fixture
def checklist(demo, session: Session) -> tuple[int, int, str]:
    """A planned inspection whose checklist waits for 刘工程师: (case id, approval id, page path)."""
    from tasks.inspection import plan_inspections

    return _checklist_request(
        demo, session, plan_inspections(datetime(2026, 9, 30, 17, 15, tzinfo=UTC), url=demo).created[0]
    )


def _checklist_request(demo: str, session: Session, case_id: int) -> tuple[int, int, str]:
    """The engineer's checklist request of `case_id`, as the flow asks for it: (case id, approval id, page path)."""
    from models import Staff
    from models.db import session_scope
    from tasks.approvals import ApprovalRequest, open_approval
    from tasks.inspection import checklist_spec, precheck_facts
    from tasks.links import CHECKLIST_PAGE

    with session_scope(demo) as s:
        engineer = s.exec(select(Staff).where(Staff.name == "刘工程师")).one()
        row = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="checklist-v1",
                version=1,
                subject="请填写巡检检查表",
                content="逐项填写",
                kind="form",
                approver_staff_ids=[engineer.id],
                approver_role="engineer",
                expires_at=AT + timedelta(days=3),
                now=AT,
                form={
                    **checklist_spec(s, case_id),
                    "page": CHECKLIST_PAGE,
                    "precheck": precheck_facts(s, case_id),
                },
                template="inspection/checklist_request",
                context={"page": CHECKLIST_PAGE},
            ),
        )
        approval_id = row.id
    url = _link(session, case_id, "inspection/checklist_request")
    assert (
        "/inspection/checklist/" in url
    )  # the engineer's link opens the checklist page, not the generic one
    return case_id, approval_id, "/" + url.split("/", 3)[3]


def _all_normal(page: str) -> dict[str, str]:
    """Every item of the page answered 正常, the backup confirmed, as a phone would post it."""
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]  # type: ignore[index]
    data = {
        "csrf": csrf,
        "pre_changes": "上月升级了存储微码",
        "pre_reported": "夜间偶有告警",
        "pre_backup": "yes",
        "pre_agreed": "yes",
        "pre_agreed_by": "王维护",
        "pre_risks": "重启前切换到备机",
    }
    for key in {html.unescape(k) for k in re.findall(r'name="r\|([^"]+)"', page)}:
        data[f"r|{key}"] = "normal"
    return data


def test_checklist_page_refuses_bad_input_in_chinese_then_records_through_decide(web, checklist, session):
    from models.approvals import Approval
    from models.inspection import ChecklistResult

    case_id, approval_id, path = checklist
    page = web.get(path)
    assert page.status_code == 200
    assert "操作前确认" in page.text and "电源" in page.text and "现场已处理（经客户同意）" in page.text
    good = _all_normal(page.text)
    server = next(k for k in good if k.startswith("r|device:"))[2:]
    power = next(k for k in good if k.startswith("r|device:") and k.endswith("|power"))[2:]

    def refused(data: dict[str, str], message: str) -> None:
        answer = web.post(path, data=data)
        assert answer.status_code == 422 and message in answer.text, answer.text[:400]
        session.expire_all()
        assert session.get(Approval, approval_id).decision is None  # nothing recorded
        assert not session.exec(select(ChecklistResult).where(ChecklistResult.case_id == case_id)).all()

    refused({**good, "pre_backup": ""}, "操作前须确认数据已备份")
    # [001 §2.3.3.6] the customer's staff agree the operations: the tick and who agreed, both required
    refused({**good, "pre_agreed": ""}, "请勾选客户同意并填写同意人姓名")
    refused({**good, "pre_agreed_by": "  "}, "请勾选客户同意并填写同意人姓名")
    refused({**good, "pre_agreed_by": "王" * 51}, "客户同意人姓名过长")
    refused({k: v for k, v in good.items() if k != f"r|{server}"}, "以下检查项未填写")
    refused({**good, f"r|{power}": "abnormal", f"h|{power}": "repair", f"n|{power}": ""}, "异常须填写说明")
    refused(
        {**good, f"r|{power}": "abnormal", f"n|{power}": "电源1告警"},
        "请选择「现场已处理（经客户同意）」或「转维修」",
    )
    # the refused values stay on the page: the engineer corrects, not retypes
    again = web.post(path, data={**good, f"r|{power}": "abnormal", f"n|{power}": "电源1告警"})
    assert 'value="电源1告警"' in again.text

    fixed = {
        **good,
        f"r|{power}": "abnormal",
        f"n|{power}": "电源1告警",
        f"h|{power}": "repair",
        f"s|{power}": "2",
    }
    answer = web.post(path, data=fixed)
    assert answer.status_code == 200 and "已记录：提交。流程将继续。" in answer.text, answer.text[:400]
    session.expire_all()
    row = session.get(Approval, approval_id)
    assert row.decision == "submitted" and row.decided_by == "刘工程师" and row.channel == "link"
    item = next(i for i in row.payload["items"] if i["target"] + "|" + i["code"] == power)
    assert item == {
        "target": item["target"],
        "code": "power",
        "result": "abnormal",
        "note": "电源1告警",
        "fixed_on_site": False,
        "severity": "2",
    }
    assert row.payload["prechecks"] == {
        "changes": "上月升级了存储微码",
        "customer_reported": "夜间偶有告警",
        "backup_confirmed": True,
        "customer_agreed": True,
        "agreed_by": "王维护",
        "risks": "重启前切换到备机",
    }
    assert web.post(path, data=fixed).status_code == 409  # a second submission is refused, not recorded twice
    # the flow records it: the customer's agreement is an event of its own and the report says who agreed
    from models import Event
    from tasks.inspection import record_checklist, report_context

    assert record_checklist.fn(case_id, 1, row.payload, AT, "刘工程师", row.form)["error"] == ""
    agreed = session.exec(
        select(Event).where(Event.case_id == case_id, Event.kind == "customer_agreed")
    ).one()
    assert (
        agreed.actor == "王维护"
        and agreed.data["risks"] == "重启前切换到备机"
        and agreed.data["engineer"] == "刘工程师"
    )
    assert report_context.fn(case_id, 1)["prechecks"]["agreed_by"] == "王维护"
    assert web.get(path.replace("/checklist/", "/checklist/x")).status_code == 403  # a forged link


def test_summary_page_shows_the_summary_and_takes_one_rating(web, demo, session):
    from models.db import session_scope
    from models.inspection import ServiceSummary
    from tasks.inspection import calendar_for
    from tasks.summary import issue_summary

    now = datetime(2026, 11, 2, 2, tzinfo=UTC)
    with session_scope(demo) as s:
        row, created = issue_summary(
            s,
            1,
            kind="monthly",
            period="2026-10",
            first=date(2026, 10, 1),
            last=date(2026, 10, 31),
            now=now,
            calendar=calendar_for(s),
        )
        summary_id = row.id
    assert created
    path = "/" + _link(session, None, "inspection/service_summary").split("/", 3)[3]
    page = web.get(path)
    assert page.status_code == 200 and "阶段性服务总结" in page.text and "月度巡检质量" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    rating = {"rate_inspection": "优", "rate_repair": "良", "rate_uptime": "优", "rate_skill": "良"}

    missing = web.post(path, data={"csrf": csrf, **rating, "by": "北京维护负责人"})
    assert missing.status_code == 422 and "请为每一项选择 优/良/中/差：总体评价" in missing.text
    no_name = web.post(path, data={"csrf": csrf, **rating, "rate_overall": "优", "by": " "})
    assert no_name.status_code == 422 and "请填写评价人姓名" in no_name.text
    session.expire_all()
    assert session.get(ServiceSummary, summary_id).rated_at is None

    done = web.post(
        path,
        data={
            "csrf": csrf,
            **rating,
            "rate_overall": "优",
            "by": "北京维护负责人",
            "comment": "巡检细致，望保持",
        },
    )
    assert done.status_code == 200 and "感谢您的评价，已记录。" in done.text
    session.expire_all()
    saved = session.get(ServiceSummary, summary_id)
    assert saved.rating == {
        "inspection": "优",
        "repair": "良",
        "uptime": "优",
        "skill": "良",
        "overall": "优",
        "comment": "巡检细致，望保持",
    }
    assert saved.rated_by == "北京维护负责人"
    twice = web.post(path, data={"csrf": csrf, **rating, "rate_overall": "差", "by": "别人"})
    assert twice.status_code == 409 and "已由 北京维护负责人" in twice.text
    assert "您的评价" in web.get(path).text  # the page now shows the rating, no form
    assert web.post(path, data={**rating, "rate_overall": "差", "by": "x"}).status_code == 403  # no csrf


def test_checklist_edits_reach_the_engineers_page_and_a_form_sent_keeps_its_items(web, demo, session):
    """Checklists are data (PROCEDURES.md §4 step 4): an added item is on the page the engineer gets, a
    switched-off one is not; a form already sent is checked against the items it showed."""
    from models.approvals import Approval
    from models.db import session_scope
    from tasks.inspection import (
        InspectionError,
        add_checklist_item,
        change_checklist_item,
        checklist_items,
        plan_inspections,
        record_checklist,
    )

    with session_scope(demo) as s:
        add_checklist_item(s, "server", "fan_speed", "风扇转速与告警")
        change_checklist_item(s, "cleaning", kind="server", active=False)
        with pytest.raises(InspectionError, match="多个设备类别"):
            change_checklist_item(s, "power", active=False)  # server, storage, network, ups all have one
        with pytest.raises(InspectionError, match="已有检查项"):
            add_checklist_item(s, "server", "fan_speed", "再加一次")
        with pytest.raises(InspectionError, match="编码"):
            add_checklist_item(s, "server", "Fan|1", "坏编码")
    with session_scope(demo) as s:
        server = [(i.code, i.active) for i in checklist_items(s, "server")]
    assert server[-1] == ("fan_speed", True) and ("cleaning", False) in server
    assert len([c for c, _ in server]) == 11  # the 10 seeded ones stay, one switched off

    case_id = plan_inspections(datetime(2026, 9, 30, 17, 15, tzinfo=UTC), url=demo).created[0]
    _, approval_id, path = _checklist_request(demo, session, case_id)
    page = web.get(path)
    assert page.status_code == 200
    form = session.get(Approval, approval_id).form
    servers = [t["target"] for t in form["targets"] if t["device_class"] == "server"]
    storages = [t["target"] for t in form["targets"] if t["device_class"] == "storage"]
    assert len(servers) == 2 and len(storages) == 2
    for target in servers:
        assert f'name="r|{target}|fan_speed"' in page.text and f'name="r|{target}|cleaning"' not in page.text
    for target in storages:  # the other classes are as seeded
        assert f'name="r|{target}|fan_speed"' not in page.text and f'name="r|{target}|cleaning"' in page.text
    assert page.text.count("风扇转速与告警") == 2

    # after the form went out, an item is switched on again: the answers are checked against what was asked
    with session_scope(demo) as s:
        change_checklist_item(s, "cleaning", kind="server", active=True)
    answer = web.post(path, data=_all_normal(page.text))
    assert answer.status_code == 200 and "已记录" in answer.text, answer.text[:400]
    session.expire_all()
    row = session.get(Approval, approval_id)
    assert record_checklist.fn(case_id, 1, row.payload, AT, "刘工程师", row.form) == {
        "error": "",
        "problems": [],
    }
    assert "未填写" in record_checklist.fn(case_id, 2, row.payload, AT, "刘工程师")["error"]  # today's items


def test_checklist_page_shows_the_last_findings_open_cases_and_changes_since(web, demo, session):
    """Issue 22 item 7 (PROCEDURES.md §4.2): the engineer's pre-checks start from the last inspection's
    findings, the devices' open cases and what changed since that visit — escaped, a long list folded;
    the changes prefill the field the engineer edits."""
    from models import Case, Device
    from models.assets import SparePart, Stock, StockMove
    from models.db import session_scope
    from tasks.cases import Channel, RepairRequest, open_case
    from tasks.inspection import checklist_spec, parse_checklist, plan_inspections, store_checklist
    from tests.test_inspection_flow import _answers

    september = plan_inspections(datetime(2026, 8, 31, 17, 15, tzinfo=UTC), url=demo).created[0]
    last_visit = datetime(2026, 9, 15, 2, tzinfo=UTC)
    with session_scope(demo) as s:
        spec = checklist_spec(s, september)
        server = spec["targets"][1]
        codes = [it["code"] for it in server["items"]][:6]
        problems = {
            (server["target"], c): {"result": "abnormal", "note": f"<b>问题{n}</b>", "fixed_on_site": True}
            for n, c in enumerate(codes)
        }
        store_checklist(
            s, september, 1, parse_checklist(spec, _answers(spec, problems)), at=last_visit, by="刘工程师"
        )
        device = s.get(Device, server["device_id"])
        assert device is not None
        site = device.site_id
    request = {
        "customer": "BJYH",
        "device": server["serial"],
        "reported_by": "值班员",
        "channel": Channel.HOTLINE,
    }
    with session_scope(demo) as s:
        from models.parties import Site

        site_name = s.get(Site, site).name  # type: ignore[union-attr]
        still_open = open_case(
            s,
            RepairRequest(
                **request,
                site=site_name,
                severity=3,
                description="<i>风扇异响</i>",
                reported_at=AT - timedelta(days=3),
            ),
            now=AT - timedelta(days=3),
        )
        closed = open_case(
            s,
            RepairRequest(
                **request,
                site=site_name,
                severity=2,
                description="电源模块故障",
                reported_at=AT - timedelta(days=10),
            ),
            now=AT - timedelta(days=10),
        )
        closed.closed_at, closed.status = AT - timedelta(days=9), "closed"
        s.add(closed)
        part, stock = s.exec(select(SparePart)).first(), s.exec(select(Stock)).first()
        assert part is not None and stock is not None
        s.add(
            StockMove(
                part_id=part.id,
                stock_id=stock.id,
                case_id=closed.id,
                key="issue",
                quantity=-1,
                reason="更换",
                at=AT - timedelta(days=9),
            )
        )
        numbers = (still_open.number, closed.number)
        part_name = part.name
    october = plan_inspections(datetime(2026, 9, 30, 17, 15, tzinfo=UTC), url=demo).created[0]
    _, _, path = _checklist_request(demo, session, october)
    page = web.get(path)
    assert page.status_code == 200
    text = page.text
    with session_scope(demo) as s:
        prev = s.get(Case, september)
        assert prev is not None and f"上次巡检 {prev.number}" in text
    # six findings: folded, escaped (never markup)
    assert "上次巡检发现的问题</strong>（6 条，点击展开）" in text and "<details>" in text
    assert "&lt;b&gt;问题5&lt;/b&gt;" in text and "<b>问题5</b>" not in text
    assert numbers[0] in text and "&lt;i&gt;风扇异响&lt;/i&gt;" in text  # the open case
    # the changes since: the repair closed and the part changed, also prefilled in the engineer's field
    assert f"维修单 {numbers[1]} 已结束" in text and f"更换备件 {part_name}×1" in text
    prefilled = re.search(r'<textarea id="pre_changes" name="pre_changes">([^<]*)</textarea>', text)
    assert prefilled and numbers[1] in prefilled[1] and part_name in html.unescape(prefilled[1])
