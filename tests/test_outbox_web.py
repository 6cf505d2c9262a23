"""The dispatcher's incidents page: reached by a signed link only; resend to a corrected address."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from models.cases import Incident
from models.outbox import Notification
from models.parties import Staff
from tasks.notify import queue, send_due
from tests.conftest import T0


def _failed_notification(session: Session, notifications) -> Notification:
    staff = Staff(name="刘工程师", notify_urls=["record://staff/liu"])
    session.add(staff)
    session.commit()
    queue(
        session,
        recipients=[staff],
        template="outbox/test",
        context={"now": T0},
        key="k",
        case_id=None,
        now=T0,
        urgent=True,
    )
    session.commit()
    notifications.down("record://staff/liu")
    now = T0
    while send_due(now, worker="w") == 0 and session.exec(select(Notification)).one().status == "pending":
        session.expire_all()
        now = session.exec(select(Notification)).one().next_try_at
    session.expire_all()
    return session.exec(select(Notification)).one()


def test_incidents_page_lists_the_failure_and_resends_to_a_corrected_address(
    session: Session, notifications
) -> None:
    from web.app import create_app
    from web.incidents import incidents_link

    row = _failed_notification(session, notifications)
    assert row.status == "failed"
    client = TestClient(create_app())
    link = incidents_link()
    path = link[link.index("/incidents/") :]

    page = client.get(path)
    assert page.status_code == 200 and "待处理事件" in page.text and "刘工程师" in page.text
    listing = client.get(path, params={"format": "json"}).json()
    [item] = listing["open_incidents"]
    assert item["notification_id"] == row.id and item["can_resend"] is True
    assert listing["outbox"] == {"failed": 1}

    from tasks.links import csrf_token

    token = path.rsplit("/", 1)[1]
    refused = client.post(
        f"{path}/{item['id']}",
        data={"action": "resend", "address": "dingtalk://!!", "csrf": csrf_token(token)},
    )
    assert refused.status_code == 400 and "通知地址无效" in refused.json()["detail"]
    stale = client.post(f"{path}/{item['id']}", data={"action": "resend", "csrf": "nope"})
    assert stale.status_code == 403

    done = client.post(
        f"{path}/{item['id']}",
        data={"action": "resend", "address": "record://phone/liu", "by": "王值班", "csrf": csrf_token(token)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    session.expire_all()
    incident = session.get(Incident, item["id"])
    assert incident.resolved_by == "王值班" and incident.resolved_at is not None
    assert client.get(path, params={"format": "json"}).json()["open_incidents"] == []
    assert send_due(T0 + timedelta(days=3650), worker="w") == 1  # the page used the wall clock
    assert [s.url for s in notifications] == ["record://phone/liu"]


def test_incidents_page_refuses_a_forged_link(db_url: str) -> None:
    from web.app import create_app

    client = TestClient(create_app())
    assert client.get("/incidents/not-a-real-token").status_code == 403
