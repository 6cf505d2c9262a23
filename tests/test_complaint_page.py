"""The customer's complaint page (投诉与建议, PROCEDURES.md §7) fetched as HTML through the real web
app and a real SQLite file: a complaint taken with its number and acknowledgement, bad input
answered with a 422 page naming the field in Chinese, HTML typed in shown as text, floods refused,
an overdue complaint sent straight to the managers; the link is printed on notices and reports."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from models import Case, Event, Incident
from models.outbox import Notification
from tasks.links import complaint_url
from tests.conftest import T0

XSS = '<img src=x onerror="alert(1)">'


@pytest.fixture
def web(demo: str) -> Any:
    from web.app import create_app
    from web.complaints import clock, starter

    app = create_app()
    now = {"at": T0}
    started: list[tuple[int, str]] = []
    app.dependency_overrides[clock] = lambda: now["at"]
    app.dependency_overrides[starter] = lambda: (
        lambda case_id, request: started.append((case_id, request.customer)) or "run"
    )
    client = TestClient(app)
    client.now = now  # type: ignore[attr-defined]
    client.started = started  # type: ignore[attr-defined]
    return client


def path(code: str = "BJYH") -> str:
    """The page's path of the customer's complaint link (as printed under its notices)."""
    return "/" + complaint_url(code, now=T0).split("/", 3)[3]


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None
    return found.group(1)


def submit(web: Any, url: str, **form: str) -> Any:
    page = web.get(url)
    assert page.status_code == 200
    return web.post(url, data={"csrf": csrf(page.text), **form})


def complaints(session: Any) -> list[Case]:
    return list(session.exec(select(Case).where(Case.kind == "complaint")).all())


def test_a_complaint_on_the_page_gets_its_number_acknowledgement_and_flow(web: Any, session: Any) -> None:
    url = path()
    page = web.get(url)
    assert page.status_code == 200 and "北京某银行数据中心" in page.text
    assert "林客服经理" in page.text and "冯总经理" in page.text  # the published ladder, lowest first
    assert page.text.index("林客服经理") < page.text.index("冯总经理")
    answer = submit(
        web,
        url,
        complainant="王先生 13900000001",
        about="服务工程师",
        engineer="刘工程师",
        description=f"工程师迟到三小时 {XSS}",
        wish="书面道歉",
    )
    assert answer.status_code == 200, answer.text
    number = re.search(r"TS-\d{6}", answer.text)
    assert number is not None
    assert XSS not in answer.text and "&lt;img src=x" in answer.text
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
    (case,) = complaints(session)
    assert case.number == number.group(0) and case.channel == "网站" and case.reported_at == T0
    assert web.started == [(case.id, "BJYH")]
    kinds = [e.kind for e in session.exec(select(Event).where(Event.case_id == case.id))]
    assert "complaint_received" in kinds and "clock.started" in kinds
    sent = {
        (n.recipient_name, n.template)
        for n in session.exec(select(Notification).where(Notification.case_id == case.id))
    }
    assert ("北京维护负责人", "complaint/received") in sent and ("林客服经理", "complaint/opened") in sent
    # the page lists it, its HTML as text
    again = web.get(url)
    assert number.group(0) in again.text and XSS not in again.text


def test_bad_input_gets_a_422_page_naming_the_field_in_chinese(web: Any, session: Any) -> None:
    url = path()
    answer = submit(web, url, complainant="", about="服务工程师", description="x", case_ref="ABC-12")
    assert answer.status_code == 422
    assert "「投诉人」必填" in answer.text
    assert "「投诉内容」至少 2 个字" in answer.text
    assert "「相关工单」" in answer.text and "Traceback" not in answer.text
    unknown = submit(web, url, complainant="王先生", about="天气", description="工程师迟到")
    assert unknown.status_code == 422 and "「投诉对象」只能选择" in unknown.text
    elsewhere = submit(web, url, complainant="王先生", description="工程师迟到", case_ref="WX-999999")
    assert elsewhere.status_code == 422 and "相关工单（编号 999999）不存在" in elsewhere.text
    assert complaints(session) == []


def test_forged_link_or_missing_csrf_records_nothing(web: Any, session: Any) -> None:
    url = path()
    forged = web.get(url[:-3] + "abc")
    assert forged.status_code == 403 and "链接无效" in forged.text
    posted = web.post(url, data={"complainant": "王先生", "description": "工程师迟到"})
    assert posted.status_code == 403
    expired = complaint_url("BJYH", now=T0 - timedelta(days=500))
    assert web.get("/" + expired.split("/", 3)[3]).status_code == 403
    assert complaints(session) == []


def test_a_flood_from_one_link_is_refused_with_a_clear_message(web: Any, session: Any) -> None:
    url = path()
    for n in range(5):
        web.now["at"] = T0 + timedelta(minutes=n)
        assert submit(web, url, complainant="王先生", description=f"第 {n} 次投诉").status_code == 200
    sixth = submit(web, url, complainant="王先生", description="第 6 次投诉")
    assert sixth.status_code == 429 and "1 小时内已提交 5 件投诉" in sixth.text
    assert len(complaints(session)) == 5
    web.now["at"] = T0 + timedelta(hours=1, minutes=1)  # the hour has passed
    assert submit(web, url, complainant="王先生", description="一小时后").status_code == 200


def test_overdue_complaint_goes_straight_to_the_managers_once(web: Any, session: Any) -> None:
    url = path()
    assert submit(web, url, complainant="王先生", description="无人答复").status_code == 200
    (case,) = complaints(session)
    page = web.get(url)
    assert "直接提请管理层处理" not in page.text  # still within the 2 hours
    web.now["at"] = T0 + timedelta(hours=2, minutes=1)
    page = web.get(url)
    assert "直接提请管理层处理" in page.text
    sent = web.post(url + "/managers", data={"csrf": csrf(page.text), "case": str(case.id)})
    assert sent.status_code == 200 and "已直接转交管理层" in sent.text
    again = web.post(url + "/managers", data={"csrf": csrf(page.text), "case": str(case.id)})
    assert "此前转交管理层" in again.text
    told = {
        n.recipient_name
        for n in session.exec(select(Notification).where(Notification.template == "complaint/ladder"))
    }
    assert told == {"林客服经理", "孔经理", "吴总监", "冯总经理"}


def test_a_flow_that_cannot_start_leaves_the_complaint_taken_and_an_incident(demo: str, session: Any) -> None:
    from web.app import create_app
    from web.complaints import clock, starter

    def down(case_id: int, request: Any) -> str:
        raise ConnectionError("Prefect unreachable")

    app = create_app()
    app.dependency_overrides[clock] = lambda: T0
    app.dependency_overrides[starter] = lambda: down
    answer = submit(TestClient(app), path(), complainant="王先生", description="工程师迟到")
    assert answer.status_code == 200 and "TS-" in answer.text
    (incident,) = session.exec(select(Incident).where(Incident.kind == "run_not_started")).all()
    assert "投诉流程未能启动" in incident.message


def test_every_customer_notice_and_report_carries_the_complaint_link(web: Any, session: Any) -> None:
    submit(web, path(), complainant="王先生", description="工程师迟到")
    (row,) = session.exec(select(Notification).where(Notification.template == "complaint/received")).all()
    assert "投诉与建议（直达客服经理" in row.body and "/complaint/" in row.body
    staff = session.exec(select(Notification).where(Notification.template == "complaint/opened")).first()
    assert "/complaint/" not in staff.body  # staff notices do not carry it


def test_a_repair_request_left_unanswered_can_go_straight_to_the_managers(web: Any, session: Any) -> None:
    from tasks.cases import RepairRequest, open_case
    from tasks.clocks import start_clock

    repair = open_case(
        session,
        RepairRequest(
            customer="BJYH", site="亦庄机房", reported_by="李四", description="存储告警", severity=3
        ),
        now=T0,
    )
    start_clock(session, repair.id, "first_contact", started_at=T0, severity=3)  # 30 minutes
    session.commit()
    url = path()
    web.now["at"] = T0 + timedelta(minutes=20)
    assert repair.number not in web.get(url).text  # within its time: nothing to send
    web.now["at"] = T0 + timedelta(minutes=31)
    page = web.get(url)
    assert "超时未获答复的报修" in page.text and repair.number in page.text
    sent = web.post(url + "/managers", data={"csrf": csrf(page.text), "case": str(repair.id)})
    assert sent.status_code == 200 and f"{repair.number} 已直接转交管理层" in sent.text
    event = session.exec(
        select(Event).where(Event.case_id == repair.id, Event.kind == "request_to_managers")
    ).one()
    assert event.data["managers"] == ["林客服经理", "孔经理", "吴总监", "冯总经理"]
    other = web.post(url + "/managers", data={"csrf": csrf(page.text), "case": "999999"})
    assert other.status_code == 409 and "找不到此投诉或报修" in other.text


def test_a_flood_of_invalid_posts_is_refused_per_link_and_per_address(web: Any, session: Any) -> None:
    """Refused posts (invalid values, a bad form) count too: after 10 in an hour from one link the
    page answers 429 with a clear message (even to a valid post), nothing is taken; an hour later
    it takes complaints again. One address trying other customers' links is counted as well."""
    from tasks.complaints import REFUSED_LIMIT_ADDRESS, REFUSED_LIMIT_LINK

    url = path()
    for n in range(REFUSED_LIMIT_LINK):
        web.now["at"] = T0 + timedelta(minutes=n)
        assert submit(web, url, complainant="", description="x").status_code == 422
    flooded = submit(web, url, complainant="王先生", description="工程师迟到")
    assert flooded.status_code == 429 and "无效投诉已达 10 次" in flooded.text
    assert "Traceback" not in flooded.text
    assert complaints(session) == []
    web.now["at"] = T0 + timedelta(hours=1, minutes=REFUSED_LIMIT_LINK)  # the hour has passed
    assert submit(web, url, complainant="王先生", description="一小时后").status_code == 200
    # one address posting to links that are not a customer's: counted per address, and then the
    # address is refused on a real customer's link as well
    web.now["at"] = T0 + timedelta(hours=3)
    for n in range(REFUSED_LIMIT_ADDRESS):
        assert web.post(f"/complaint/guessed-{n}", data={"complainant": "x"}).status_code == 403
    other = submit(web, path("SJZY"), complainant="王先生", description="工程师迟到")
    assert other.status_code == 429 and f"无效投诉已达 {REFUSED_LIMIT_ADDRESS} 次" in other.text
