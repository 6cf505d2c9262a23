"""The forms and reports people saw in issue 18: one label per field on every form page, the plan
to revise shown filled in, the fault report's people under their own roles. Real SQLite, the real
web app through TestClient, the real report templates."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import T0
from tests.test_approvals_web import case_id, links, post, row, web  # noqa: F401 - fixtures

LABEL = re.compile(r'<label for="([^"]+)">([^<]*)</label>')


def form_page(web: Any, case_id: int, name: str, values: dict[str, str] | None = None) -> tuple[int, str]:  # noqa: F811
    """A registered form opened as a step's link (optionally with its prefill); (approval id, token)."""
    from models.forms import FORMS, form_spec

    spec = form_spec(FORMS[name])
    if values:
        spec = {**spec, "values": values}
    aid = _open_form(case_id, name, spec)
    [token] = links(aid)
    return aid, token


def _open_form(case_id: int, name: str, spec: dict[str, Any]) -> int:  # noqa: F811
    from models.db import session_scope
    from tasks.approvals import ApprovalRequest, open_approval

    with session_scope() as s:
        return open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step=f"form-{name.replace('_', '-')}",
                version=1,
                subject=f"表单 {name}",
                content="请填写",
                kind="form",
                approver_role="technical_lead",
                form=spec,
                form_name=name,
                expires_at=T0.replace(year=T0.year + 1),
                now=T0,
            ),
        ).id


def test_every_form_page_labels_each_field_once(web: Any, case_id: int) -> None:  # noqa: F811
    """The visit form had two fields labelled 备注 (its own note and the page's comment box)."""
    from models.forms import FORMS

    assert "visit" in FORMS
    for name in FORMS:
        _, token = form_page(web, case_id, name)
        page = web.get(f"/a/{token}")
        assert page.status_code == 200, name
        labels = [text.strip() for _, text in LABEL.findall(page.text)]
        assert labels and len(labels) == len(set(labels)), f"{name}: {labels}"
    _, token = form_page(web, case_id, "visit")
    labels = dict(LABEL.findall(web.get(f"/a/{token}").text))
    assert labels["f_note"] == "准备情况" and labels["comment"] == "备注"


def test_the_plan_to_revise_is_on_the_form_and_what_was_posted_wins(web: Any, case_id: int) -> None:  # noqa: F811
    old = "1. 上门更换第3槽硬盘\n2. 重建 RAID 并校验"
    aid, token = form_page(web, case_id, "plan", {"plan": old})
    page = web.get(f"/a/{token}").text
    assert re.search(
        r'<textarea id="f_plan"[^>]*>1\. 上门更换第3槽硬盘\n2\. 重建 RAID 并校验</textarea>', page
    )
    refused = post(web, token, decision="submitted", f_plan="太短")  # under 10 characters: shown again
    assert (
        refused.status_code == 422
        and ">太短</textarea>" in refused.text
        and old not in refused.text.split("f_plan")[-1]
    )
    assert row(aid).decision is None
    # a form without prefill starts empty
    _, other = form_page(web, case_id, "diagnosis")
    assert re.search(r'<textarea id="f_result"[^>]*></textarea>', web.get(f"/a/{other}").text)


def _fault_report(session: Any, **people: Any) -> str:
    from tasks.cases import RepairRequest, open_case
    from tasks.reports import issue_report

    case = open_case(
        session,
        RepairRequest(customer="BJYH", site="亦庄机房", reported_by="王先生", description="阵列告警"),
        now=T0,
    )
    context = {
        "times": {
            "reported_at": T0,
            "contact_at": T0,
            "remote_at": T0,
            "arrived_at": T0,
            "repaired_at": T0,
            "restored_at": T0,
        },
        "clocks": [],
        "corrections": [],
        "customer_engineer": "李工",
        "symptoms": "告警",
        "business_impact": "无",
        "process": "更换硬盘",
        "cause": "硬盘老化",
        "solution": "更换",
        "advice": "定期巡检",
        **people,
    }  # people: and any other value to vary
    report = issue_report(
        session,
        case.id,
        "fault_report",
        template="repair/fault_report",
        context=context,
        now=T0,
        by=people.get("lead", "张技术"),
    )
    session.commit()
    return str(report.content)


@pytest.mark.parametrize(
    ("people", "shown", "absent"),
    [
        # repaired on site by an engineer, the report written by the technical lead
        (
            {"engineer": "刘工程师", "engineer_role": "服务工程师", "lead": "张技术"},
            ["<th>服务工程师</th><td>刘工程师</td>", '<th>项目技术负责人</th><td colspan="3">张技术</td>'],
            [],
        ),
        # solved remotely by the lead, who wrote the report too: he is not called a service engineer
        (
            {"engineer": "张技术", "engineer_role": "项目技术负责人（远程处理）", "lead": "张技术"},
            ["<th>项目技术负责人（远程处理）</th><td>张技术</td>"],
            ["<th>服务工程师</th>", "<th>项目技术负责人</th>"],
        ),
    ],
)
def test_the_fault_report_names_each_person_by_their_role(
    demo: str, session: Any, people: dict[str, str], shown: list[str], absent: list[str]
) -> None:
    content = _fault_report(session, **people)
    for text in shown:
        assert text in content
    for text in absent:
        assert text not in content


def test_report_tables_stack_on_a_phone(demo: str, session: Any) -> None:
    """The labels of a report table wrapped one character per line at 390 px; the browser check of
    the same page is tests/test_browser.py::test_a_report_table_on_a_phone_keeps_its_labels_whole."""
    content = _fault_report(session, engineer="刘工程师", engineer_role="服务工程师", lead="张技术")
    css = content.split("<style>")[1].split("</style>")[0]
    assert re.search(r"th \{[^}]*white-space: nowrap", css) and re.search(r"th \{[^}]*min-width", css)
    phone = css.split("@media screen and (max-width: 480px)")[1]
    assert "table:has(th + td) td { display: block" in phone.replace("\n", " ").replace("    ", " ")
