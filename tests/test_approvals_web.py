"""The approval link pages through the real web app and a real SQLite file: every bad link gets a
clear page and nothing is recorded (DESIGN.md §7 rows 3–7, 20)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from tests.conftest import T0

EXPIRES = T0 + timedelta(days=3)
PLAN_V1 = "解决方案 v1：更换 900W 电源模块（PSU-900W），预计停机 30 分钟。"
PLAN_V2 = "解决方案 v2：先切换到备用电源，再更换电源模块，业务不中断。"


@pytest.fixture
def web(demo):
    from web.app import create_app
    from web.approvals import clock

    app = create_app()
    now = {"at": T0 + timedelta(hours=1)}
    app.dependency_overrides[clock] = lambda: now["at"]
    client = TestClient(app)
    client.now = now  # type: ignore[attr-defined]
    return client


@pytest.fixture
def case_id(demo) -> int:
    from models import Case
    from models.db import session_scope

    with session_scope(demo) as s:
        case = Case(
            kind="repair", customer_id=1, title="存储控制器告警", reported_at=T0, created_at=T0, updated_at=T0
        )
        s.add(case)
        s.flush()
        return case.id


def staff_id(name: str) -> int:
    from models import Staff
    from models.db import session_scope

    with session_scope() as s:
        return s.exec(select(Staff).where(Staff.name == name)).one().id


def open_plan(case_id: int, version: int, content: str, **kw) -> int:
    from models.db import session_scope
    from tasks.approvals import ApprovalRequest, open_approval

    kw.setdefault("approver_role", "technical_director")
    with session_scope() as s:
        return open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="director-approval",
                version=version,
                subject="解决方案",
                content=content,
                expires_at=EXPIRES,
                now=T0,
                **kw,
            ),
        ).id


def links(approval_id: int) -> list[str]:
    """The tokens of the links sent for an approval, read from the outbox (what people received)."""
    from models.db import session_scope
    from models.outbox import Notification

    with session_scope() as s:
        rows = s.exec(select(Notification).where(Notification.key.like(f"approval:{approval_id}:%"))).all()
        return [m for r in rows for m in re.findall(r"/a/([A-Za-z0-9_.\-]+)", r.body)]


def row(approval_id: int):
    from models.approvals import Approval
    from models.db import session_scope

    with session_scope() as s:
        return s.get(Approval, approval_id)


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def post(web, token: str, **form):
    page = web.get(f"/a/{token}")
    return web.post(f"/a/{token}", data={"csrf": csrf(page.text), **form})


def test_director_approves_plan_by_link_and_second_click_is_told_who_decided(web, case_id) -> None:
    aid = open_plan(case_id, 1, PLAN_V1)
    [token] = links(aid)  # the one technical director got one link

    page = web.get(f"/a/{token}")
    assert page.status_code == 200
    assert PLAN_V1 in page.text and "第 1 版" in page.text and "批准" in page.text
    assert row(aid).decision is None  # opening (or a chat app's preview) records nothing

    done = web.post(f"/a/{token}", data={"csrf": csrf(page.text), "decision": "approved", "comment": "同意"})
    assert done.status_code == 200 and "已记录" in done.text
    r = row(aid)
    assert (r.decision, r.decided_by, r.channel, r.comment) == ("approved", "吴总监", "link", "同意")
    assert r.decided_at == T0 + timedelta(hours=1)

    again = web.post(
        f"/a/{token}", data={"csrf": csrf(page.text), "decision": "rejected", "comment": "不同意"}
    )
    assert again.status_code == 409
    assert "已由 吴总监 于 2026-11-23 11:00 批准" in again.text
    assert row(aid).decision == "approved"
    assert "已由 吴总监" in web.get(f"/a/{token}").text

    from models import Event
    from models.db import session_scope

    with session_scope() as s:
        kinds = [e.kind for e in s.exec(select(Event).where(Event.case_id == case_id)).all()]
    assert kinds == ["approval_requested", "approval_decided"]


def test_forged_or_tampered_link_is_refused_and_nothing_recorded(web, case_id) -> None:
    aid = open_plan(case_id, 1, PLAN_V1)
    [token] = links(aid)
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")

    assert web.get(f"/a/{tampered}").status_code == 403
    assert "无效或已被篡改" in web.get(f"/a/{tampered}").text
    from tasks.links import csrf_token

    forged = web.post(f"/a/{tampered}", data={"csrf": csrf_token(tampered), "decision": "approved"})
    assert forged.status_code == 403
    assert web.post(f"/a/{token}", data={"decision": "approved"}).status_code == 403  # no CSRF field
    assert row(aid).decision is None


def test_expired_link_explains_and_sends_a_fresh_link_to_the_same_approver(web, case_id) -> None:
    aid = open_plan(case_id, 1, PLAN_V1)
    [token] = links(aid)
    web.now["at"] = EXPIRES + timedelta(hours=2)

    page = web.get(f"/a/{token}")
    assert page.status_code == 410 and "过期" in page.text and "发送新链接" in page.text
    late = web.post(f"/a/{token}", data={"csrf": csrf(page.text), "decision": "approved"})
    assert late.status_code == 410 and row(aid).decision is None

    sent = web.post(f"/a/{token}/renew", data={"csrf": csrf(page.text)})
    assert sent.status_code == 200 and "新链接已发送给 吴总监" in sent.text
    fresh = [t for t in links(aid) if t != token]
    assert len(fresh) == 1
    assert post(web, fresh[0], decision="approved").status_code == 200
    assert row(aid).decision == "approved"


def test_link_expiry_is_judged_at_the_decisions_time_and_only_for_links(web, case_id) -> None:
    """The link's validity is judged at the time of the decision passed in, never the machine's
    clock; a decision in the Prefect UI (no link) is not refused for an expired link."""
    from tasks.approvals import decide

    aid = open_plan(case_id, 1, PLAN_V1)
    # within the window: recorded whatever today's date is
    in_time = decide(
        aid, "approved", by="吴总监", channel="link", now=EXPIRES - timedelta(minutes=1), wake=False
    )
    assert in_time.outcome == "recorded" and row(aid).decided_at == EXPIRES - timedelta(minutes=1)

    aid = open_plan(case_id, 2, PLAN_V2)
    late = EXPIRES + timedelta(days=2)
    refused = decide(aid, "approved", by="吴总监", channel="link", now=late, wake=False)
    assert refused.outcome == "expired" and row(aid).decision is None
    ui = decide(
        aid, "rejected", by="吴总监", comment="请先做回退演练", channel="prefect_ui", now=late, wake=False
    )
    assert ui.outcome == "recorded"
    assert (row(aid).decision, row(aid).channel, row(aid).decided_at) == ("rejected", "prefect_ui", late)


def test_link_for_replaced_plan_version_is_refused(web, case_id) -> None:
    v1 = open_plan(case_id, 1, PLAN_V1)
    [old] = links(v1)
    v2 = open_plan(case_id, 2, PLAN_V2)
    [new] = links(v2)

    page = web.get(f"/a/{old}")
    assert page.status_code == 409 and "此方案已被 v2 取代" in page.text
    from tasks.links import csrf_token

    assert web.post(f"/a/{old}", data={"csrf": csrf_token(old), "decision": "approved"}).status_code == 409
    assert row(v1).decision is None and row(v1).status == "superseded"
    assert PLAN_V2 in web.get(f"/a/{new}").text
    assert post(web, new, decision="revise", comment="请补充回退方案").status_code == 200
    assert row(v2).decision == "revise"


def test_approver_not_entitled_is_refused(web, case_id) -> None:
    from tasks.approvals import LINK_PURPOSE, decide
    from tasks.links import sign_token

    aid = open_plan(case_id, 1, PLAN_V1)
    r = row(aid)
    # a genuine signature, but for a person who is not an approver of this plan
    outsider = sign_token(
        LINK_PURPOSE, {"a": aid, "p": f"s:{staff_id('张技术')}", "h": r.content_hash[:16]}, expires_at=EXPIRES
    )
    assert web.get(f"/a/{outsider}").status_code == 403
    from tasks.links import csrf_token

    refused = web.post(f"/a/{outsider}", data={"csrf": csrf_token(outsider), "decision": "approved"})
    assert refused.status_code == 403 and "无权" in refused.text
    # the Prefect-UI route names the approver by name: same rule
    assert decide(aid, "approved", by="张技术", channel="prefect_ui", now=T0).outcome == "not_entitled"
    assert row(aid).decision is None


def test_rejection_needs_a_reason_and_bad_choice_is_refused(web, case_id) -> None:
    aid = open_plan(case_id, 1, PLAN_V1)
    [token] = links(aid)
    blank = post(web, token, decision="rejected", comment="  ")
    assert blank.status_code == 422 and "请写明原因" in blank.text and PLAN_V1 in blank.text
    odd = post(web, token, decision="signed")
    assert odd.status_code == 422 and "不是此事项的可选操作" in odd.text
    assert row(aid).decision is None


def test_link_for_other_content_is_refused(web, case_id) -> None:
    from tasks.approvals import LINK_PURPOSE
    from tasks.links import sign_token

    aid = open_plan(case_id, 1, PLAN_V1)
    from models.approvals import content_hash

    other = sign_token(
        LINK_PURPOSE,
        {"a": aid, "p": f"s:{staff_id('吴总监')}", "h": content_hash(PLAN_V2)[:16]},
        expires_at=EXPIRES,
    )
    assert web.get(f"/a/{other}").status_code == 409
    assert row(aid).decision is None


def test_customer_signature_binds_to_content_hash(web, case_id) -> None:
    from models import Contact
    from models.db import session_scope

    with session_scope() as s:
        contact = s.exec(select(Contact).where(Contact.customer_id == 1)).first()
    aid = open_plan(
        case_id,
        1,
        "维修服务报告：已更换电源模块，系统恢复正常。",
        kind="signature",
        approver_role=None,
        approver_contact_ids=[contact.id],
    )
    [token] = links(aid)
    page = web.get(f"/a/{token}")
    assert "签字确认" in page.text and "提出异议" in page.text
    assert post(web, token, decision="signed", signer="  ").status_code == 422
    assert post(web, token, decision="signed", signer=contact.name).status_code == 200
    r = row(aid)
    assert r.decision == "signed" and r.decided_by_contact_id == contact.id
    assert r.payload["content_hash"] == r.content_hash and r.payload["signer"] == contact.name


def test_form_fields_are_required_and_stored(web, case_id) -> None:
    from models import Contact
    from models.db import session_scope
    from models.forms import CallbackForm, form_spec

    with session_scope() as s:
        contact = s.exec(select(Contact).where(Contact.customer_id == 1)).first()
    aid = open_plan(
        case_id,
        1,
        "客户回访表",
        kind="form",
        approver_role=None,
        approver_contact_ids=[contact.id],
        form=form_spec(CallbackForm),
        form_name="callback",
    )
    [token] = links(aid)
    missing = post(web, token, decision="submitted", f_customer_person="王先生")
    assert missing.status_code == 422 and "「总体评价」必填" in missing.text
    assert row(aid).decision is None
    scores = {
        f"f_{k}": "优"
        for k in (
            "response",
            "arrival",
            "fix_speed",
            "spare_parts",
            "one_visit",
            "follow_up",
            "attitude",
            "skill",
            "overall",
        )
    }
    done = post(
        web,
        token,
        decision="submitted",
        f_customer_person=" 王先生 ",
        f_centre_confirmed="是",
        f_comments="<b>好</b>",
        **scores,
    )
    assert done.status_code == 200
    assert row(aid).payload == {
        "customer_person": "王先生",
        "centre_confirmed": True,
        "comments": "<b>好</b>",
        **{k[2:]: v for k, v in scores.items()},
    }
    assert "<b>好</b>" not in web.get(f"/a/{token}").text  # customer text is shown as text, never markup


@pytest.mark.parametrize("step", ["Director_Approval", "director approval", "审批", "-x", ""])
def test_a_step_name_prefect_cannot_key_is_refused_before_anything_is_recorded(case_id, step) -> None:
    from models.approvals import Approval
    from models.db import session_scope
    from tasks.approvals import ApprovalRequest, open_approval

    with session_scope() as s, pytest.raises(ValueError, match="lowercase letters, digits and dashes"):
        open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step=step,
                version=1,
                subject="解决方案",
                content="内容",
                approver_role="technical_director",
                expires_at=EXPIRES,
                now=T0,
            ),
        )
    with session_scope() as s:
        assert s.exec(select(Approval).where(Approval.case_id == case_id)).all() == []


def test_the_page_heading_names_a_version_once_and_a_forms_first_version_not_at_all(web, case_id) -> None:
    """The heading appended "（第 N 版）" to every subject: "请编写核心业务系统应急恢复方案（第 1 版）（第 1 版）"
    on the drill's form, "请在 2 小时内答复客户投诉（第 1 版）" on a complaint's first answer."""
    from models.db import session_scope
    from models.forms import PlanForm, form_spec
    from tasks.approvals import ApprovalRequest, open_approval

    def heading(step: str, version: int, subject: str, **kw) -> str:
        with session_scope() as s:
            request = ApprovalRequest(
                case_id=case_id,
                step=step,
                version=version,
                subject=subject,
                content="内容",
                expires_at=EXPIRES,
                now=T0,
                **kw,
            )
            aid = open_approval(s, request).id
        [token] = links(aid)
        return re.search(r"<h1>(.*?)</h1>", web.get(f"/a/{token}").text, re.S)[1]

    form = {
        "kind": "form",
        "approver_role": "technical_lead",
        "form": form_spec(PlanForm),
        "form_name": "plan",
    }
    assert heading("answer", 1, "请在 2 小时内答复客户投诉", **form) == "请在 2 小时内答复客户投诉"
    assert heading("recovery", 2, "请编写应急恢复方案（第 2 版）", **form) == "请编写应急恢复方案（第 2 版）"
    assert heading("review", 1, "技术评审报告第 1 版待总经理签批", approver_role="technical_director") == (
        "技术评审报告第 1 版待总经理签批"
    )
    assert heading("plan", 1, "解决方案", approver_role="technical_director") == "解决方案（第 1 版）"
    assert heading("sign", 1, "请确认重要通信保障方案 v1", approver_role="technical_director") == (
        "请确认重要通信保障方案 v1"
    )
    assert heading("ok", 1, "保障方案 v1 待技术总监审批", approver_role="technical_director") == (
        "保障方案 v1 待技术总监审批"
    )
    assert (
        heading("v12", 1, "方案 v12 待审批", approver_role="technical_director")
        == "方案 v12 待审批（第 1 版）"
    )
    assert heading("revised", 3, "请补充现场记录", **form) == "请补充现场记录（第 3 版）"
