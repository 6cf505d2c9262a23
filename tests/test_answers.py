"""One validation for a person's answer, on every route (issue 14 item 2, DESIGN.md §2 "Typed
answers", §7 rows 18 and 26): the link page and the Prefect-UI route both go through `decide`,
which validates with the step's registered form before anything is recorded. A refusal names
the field by its Chinese label, keeps what was typed, and leaves the database as it was.

In process: the real web app (TestClient), a real SQLite file, a fixed clock.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import col, select

from tests.conftest import T0

NOW = T0 + timedelta(hours=1)  # the page's clock: Monday 11:00 Beijing time


@pytest.fixture
def web(demo: str) -> TestClient:
    from web.app import create_app
    from web.approvals import clock

    app = create_app()
    app.dependency_overrides[clock] = lambda: NOW
    return TestClient(app)


@pytest.fixture
def case_id(demo: str) -> int:
    from models import Case
    from models.db import session_scope

    with session_scope(demo) as s:
        case = Case(
            kind="repair", customer_id=1, title="存储阵列告警", reported_at=T0, created_at=T0, updated_at=T0
        )
        s.add(case)
        s.flush()
        assert case.id is not None
        return case.id


def staff(name: str) -> Any:
    from models import Staff
    from models.db import session_scope

    with session_scope() as s:
        return s.exec(select(Staff).where(Staff.name == name)).one()


def ask(case_id: int, form: Any, *, step: str = "diagnosis", approver: str = "张技术") -> int:
    """A pending form approval as `flows.steps.fill_form` opens it."""
    from models.db import session_scope
    from models.forms import form_name, form_spec
    from tasks.approvals import ApprovalRequest, open_approval

    with session_scope() as s:
        row = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step=step,
                version=1,
                subject="请联系客户并远程诊断",
                content="存储阵列告警",
                kind="form",
                approver_staff_ids=[staff(approver).id],
                approver_role=None,
                expires_at=T0 + timedelta(days=3),
                now=T0,
                form=form_spec(form),
                form_name=form_name(form),
            ),
        )
        assert row.id is not None
        return row.id


def token_of(approval_id: int) -> str:
    from models.db import session_scope
    from models.outbox import Notification

    with session_scope() as s:
        rows = s.exec(
            select(Notification).where(col(Notification.key).like(f"approval:{approval_id}:request:%"))
        )
        return next(m for r in rows for m in re.findall(r"/a/([A-Za-z0-9_.\-]+)", r.body))


def post(web: TestClient, approval_id: int, **fields: str) -> Any:
    token = token_of(approval_id)
    page = web.get(f"/a/{token}")
    assert page.status_code == 200, page.text[:300]
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)[1]  # type: ignore[index]
    data = {"csrf": csrf, "decision": "submitted", **{f"f_{k}": v for k, v in fields.items()}}
    return web.post(f"/a/{token}", data=data)


def recorded(case_id: int, approval_id: int) -> tuple[Any, list[str], int]:
    """(the approval row, the case's event kinds, the case's outbox rows) — what a refusal must not change."""
    from models import Event
    from models.approvals import Approval
    from models.db import session_scope
    from models.outbox import Notification

    with session_scope() as s:
        row = s.get(Approval, approval_id)
        kinds = [
            e.kind for e in s.exec(select(Event).where(Event.case_id == case_id).order_by(col(Event.id)))
        ]
        sent = len(s.exec(select(Notification).where(Notification.case_id == case_id)).all())
        return row, kinds, sent


GOOD = {"contacted_at": "2026-11-23 10:05", "result": "缓存策略被改，已恢复", "solved_remotely": "是"}


@pytest.mark.parametrize(
    ("fields", "label", "reason"),
    [
        ({"contacted_at": "明天下午三点"}, "首次联系客户时间", "无法识别的时间"),
        ({"contacted_at": "2026-11-23"}, "首次联系客户时间", "请写明日期和时刻"),
        ({"contacted_at": "2026-13-45 99:99"}, "首次联系客户时间", "无法识别的时间"),
        (
            {"contacted_at": "2026-11-23 11:30"},
            "首次联系客户时间",
            "不能晚于当前时间（现在是 2026-11-23 11:00）",
        ),
        ({"contacted_at": "2026-11-22 09:00"}, "首次联系客户时间", "不能早于报修时间（2026-11-23 10:00）"),
        ({"result": "长" * 4001}, "诊断结论", "不能超过 4000 个字"),
        ({"command_log": "$ dmesg\n" * 25_001}, "远程操作命令记录", "不能超过 200000 个字"),
        ({"solved_remotely": "也许"}, "已远程解决", "请选择“是”或“否”"),
        ({"result": ""}, "诊断结论", "必填"),
    ],
)
def test_a_bad_answer_on_the_link_page_is_refused_with_the_field_named_and_nothing_recorded(
    web: TestClient, case_id: int, fields: dict[str, str], label: str, reason: str
) -> None:
    """DESIGN.md §7 row 26: a date that does not parse or lies in the future is refused, the field named."""
    aid = ask(case_id, _diagnosis())
    before = recorded(case_id, aid)
    answer = post(web, aid, **{**GOOD, **fields})
    assert answer.status_code == 422
    assert f"「{label}」{reason}" in answer.text
    assert "未记录" in answer.text
    typed = next(iter(fields.values()))
    if 0 < len(typed) < 100 and "solved_remotely" not in fields:  # a select shows only what it offers
        assert typed in answer.text  # what was typed is kept on the page
    row, kinds, sent = recorded(case_id, aid)
    assert row.decision is None and row.payload == {} and row.status == "pending"
    assert (kinds, sent) == (before[1], before[2])  # no event, no message


def test_a_choice_not_offered_is_refused(web: TestClient, case_id: int) -> None:
    from models.forms import CallbackForm

    aid = ask(case_id, CallbackForm, step="callback", approver="王值班")
    scores = {
        k: "优"
        for k in (
            "response",
            "arrival",
            "fix_speed",
            "spare_parts",
            "one_visit",
            "follow_up",
            "attitude",
            "skill",
        )
    }
    answer = post(web, aid, customer_person="王先生", overall="非常好", **scores)
    assert answer.status_code == 422 and "「总体评价」只能选择：优、良、中、差" in answer.text
    assert recorded(case_id, aid)[0].decision is None


def test_a_good_answer_is_recorded_as_the_typed_form(web: TestClient, case_id: int) -> None:
    from flows.steps import answer_of
    from models.forms import DiagnosisForm
    from tasks.approvals import decision_of

    aid = ask(case_id, DiagnosisForm)
    log = "\n".join(f"$ show controller {n}" for n in range(2000))
    done = post(
        web, aid, **{**GOOD, "command_log": log, "contacted_at": "2026-11-23 11:04"}
    )  # 4 min ahead: a fast clock
    assert done.status_code == 200, done.text[:500]
    row = recorded(case_id, aid)[0]
    assert row.payload["contacted_at"] == "2026-11-23T03:04:00Z"  # Beijing 11:04 as UTC
    assert row.payload["command_log"] == log  # kept whole in the record
    answer = answer_of(DiagnosisForm, decision_of(row))
    assert answer.value.solved_remotely is True and answer.value.contacted_at == T0 + timedelta(minutes=64)
    assert (answer.by, answer.at) == ("张技术", NOW)


def test_an_over_long_comment_is_refused(web: TestClient, case_id: int) -> None:
    from models.db import session_scope
    from tasks.approvals import ApprovalRequest, open_approval

    with session_scope() as s:
        aid = open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="plan-approval",
                version=1,
                subject="解决方案",
                content="更换电源模块",
                approver_role="technical_director",
                expires_at=T0 + timedelta(days=3),
                now=T0,
            ),
        ).id
    token = token_of(aid)
    page = web.get(f"/a/{token}")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)[1]  # type: ignore[index]
    answer = web.post(f"/a/{token}", data={"csrf": csrf, "decision": "rejected", "comment": "不" * 2001})
    assert answer.status_code == 422 and "不能超过 2000 个字" in answer.text
    assert recorded(case_id, aid)[0].decision is None


def test_the_prefect_ui_route_validates_the_same_way_and_records_on_behalf_of_the_named_person(
    case_id: int,
) -> None:
    """The Prefect-UI route (`settle_approval` → `decide`, channel prefect_ui): the same refusal;
    a good answer is recorded as entered in the Prefect UI on behalf of the person named, who is
    told in the same transaction."""
    from models import Event
    from models.approvals import Channel
    from models.db import session_scope
    from models.forms import DiagnosisForm
    from models.outbox import Notification
    from tasks.approvals import decide

    aid = ask(case_id, DiagnosisForm)
    bad = decide(
        aid,
        "submitted",
        by="张技术",
        payload={**GOOD, "contacted_at": "2999-01-01 10:00"},
        channel=Channel.PREFECT_UI,
        now=NOW,
        wake=False,
    )
    assert bad.outcome == "invalid" and "「首次联系客户时间」不能晚于当前时间" in bad.message
    assert bad.errors == {"contacted_at": "不能晚于当前时间（现在是 2026-11-23 11:00）"}
    shape = decide(
        aid,
        "submitted",
        by="张技术",
        payload="contacted_at=now",  # type: ignore[arg-type]
        channel=Channel.PREFECT_UI,
        now=NOW,
        wake=False,
    )
    assert shape.outcome == "invalid" and "表单内容" in shape.message
    assert recorded(case_id, aid)[0].decision is None

    done = decide(
        aid, "submitted", by="张技术", payload=GOOD, channel=Channel.PREFECT_UI, now=NOW, wake=False
    )
    assert done.recorded
    row = recorded(case_id, aid)[0]
    assert (row.decided_by, row.channel) == ("张技术", "prefect_ui")
    with session_scope() as s:
        event = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "form_decided")).one()
        told = s.exec(
            select(Notification).where(
                Notification.case_id == case_id, Notification.template == "approval_entered_for_you"
            )
        ).all()
    assert event.actor == "在 Prefect 界面代 张技术 录入" and event.data["entered"] == event.actor
    assert [n.recipient_name for n in told] == ["张技术"] and told[0].urgent
    assert "以您的名义" in told[0].subject and "在 Prefect 界面代 张技术 录入" in told[0].body
    assert "如果这不是您的决定" in told[0].body
    # the link, opened later, says how it was decided
    again = decide(aid, "submitted", by="张技术", payload=GOOD, channel="link", now=NOW, wake=False)
    assert again.outcome == "already_decided" and "在 Prefect 界面代 张技术 录入" in again.message


def test_a_decision_by_link_tells_nobody_it_was_entered_for_them(web: TestClient, case_id: int) -> None:
    from models.forms import DiagnosisForm

    aid = ask(case_id, DiagnosisForm)
    assert post(web, aid, **GOOD).status_code == 200
    from models.db import session_scope
    from models.outbox import Notification

    with session_scope() as s:
        assert not s.exec(
            select(Notification).where(Notification.template == "approval_entered_for_you")
        ).all()


def test_a_form_approval_must_name_its_registered_form(case_id: int) -> None:
    from models.db import session_scope
    from tasks.approvals import ApprovalRequest, open_approval

    with session_scope() as s, pytest.raises(ValueError, match="registered form"):
        open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="callback",
                version=1,
                subject="回访",
                content="回访",
                kind="form",
                approver_role="dispatcher",
                expires_at=T0 + timedelta(days=3),
                now=T0,
                form={"fields": []},
            ),
        )
    with session_scope() as s, pytest.raises(ValueError, match="unknown form"):
        open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="callback",
                version=1,
                subject="回访",
                content="回访",
                kind="form",
                approver_role="dispatcher",
                expires_at=T0 + timedelta(days=3),
                now=T0,
                form_name="no-such-form",
            ),
        )


def test_every_free_text_of_every_form_has_a_maximum_length() -> None:
    from models.forms import FORMS

    for name, model in FORMS.items():
        for field, info in model.model_fields.items():
            annotation = str(info.annotation)
            if "str" in annotation and "Literal" not in annotation:
                limits = [m for m in info.metadata if getattr(m, "max_length", None)]
                assert limits, f"{name}.{field} has no max_length"


def test_long_texts_are_folded_on_pages_and_kept_whole_in_the_record(demo: str, session: Any) -> None:
    from tasks.render import fold
    from tests.test_reports import _report

    log = "\n".join(f"$ show controller {n}" for n in range(2000))
    assert fold("短文本") == "短文本"
    folded = fold(log)
    assert folded.splitlines()[:8] == log.splitlines()[:8]
    assert folded.endswith("……（共 2000 行、" + str(len(log)) + " 字，全文见报告）")
    one_line = fold("x" * 20_000)
    assert len(one_line) < 700 and "全文见报告" in one_line
    report = _report(session, command_log=log)  # the customer's signing page and the PDF show this content
    assert "$ show controller 7\n" in report.content and "$ show controller 8\n" not in report.content
    assert "共 2000 行" in report.content and "全文见案件记录" in report.content
    assert len(report.content) < 10_000


def _diagnosis() -> Any:
    from models.forms import DiagnosisForm

    return DiagnosisForm


def test_messages_fold_a_long_text_typed_by_a_person() -> None:
    from tasks.notify import render_message

    reason = "\n".join(f"第 {n} 步：切换控制器失败，日志见附件" for n in range(300))
    case = {
        "number": "WX-000001",
        "severity": 2,
        "severity_label": "重大",
        "severity_text": "2 级（重大）",
        "customer": "北京某银行数据中心",
        "site": "亦庄机房",
        "device": "",
        "out_of_contract": False,
        "paid_service_reason": "",
    }
    _, body = render_message("repair/handed_over", {"case": case, "paid": "", "reason": reason})
    assert "第 7 步" in body and "第 8 步" not in body and "共 300 行" in body and "全文见报告" in body
    assert len(body) < 1000


def test_the_prefect_ui_shows_a_steps_own_form_with_its_chinese_labels() -> None:
    """The Prefect-UI form of a waiting step is built from its registered form: choices as choices,
    every other field as text (decide validates it), the approver named; other kinds keep theirs."""
    from prefect.input import RunInput

    from models.forms import FORMS
    from tasks.ui_forms import ApprovalForm, ui_form

    for name in FORMS:
        assert issubclass(ui_form("form", name), RunInput)  # no form field collides with the approval's own
    schema = ui_form("form", "callback").model_json_schema()
    assert schema["properties"]["customer_person"]["title"] == "受访客户人员（必填）"
    assert schema["properties"]["overall"]["anyOf"][0]["enum"] == ["优", "良", "中", "差"]
    assert schema["required"] == ["approver"] and schema["additionalProperties"] is False
    assert (
        ui_form("approval") is ApprovalForm and ui_form("form", "no-such-form").__name__ == "FormSubmission"
    )


def test_an_answer_entered_on_the_command_line_is_validated_the_same_way(case_id: int) -> None:
    """`aftercare answer`: refused in one line with exit code ≠ 0 and nothing recorded; a good answer
    is recorded as entered on the command line on behalf of the person named, who is told."""
    from typer.testing import CliRunner

    from deployments.cli import app
    from models.db import session_scope
    from models.forms import DiagnosisForm
    from models.outbox import Notification

    aid = ask(case_id, DiagnosisForm)
    fields = [f"--field={k}={v}" for k, v in {**GOOD, "contacted_at": "2026-13-45 99:99"}.items()]
    refused = CliRunner().invoke(app, ["answer", str(aid), "--as", "张技术", *fields])
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert refused.exit_code == 1 and len(lines) == 1, refused.output
    assert "「首次联系客户时间」无法识别的时间" in lines[0]
    stranger = CliRunner().invoke(app, ["answer", str(aid), "--as", "吴总监", *fields])
    assert stranger.exit_code == 1 and "无权处理" in stranger.output
    assert recorded(case_id, aid)[0].decision is None

    good = [f"--field={k}={v}" for k, v in GOOD.items()]
    done = CliRunner().invoke(app, ["answer", str(aid), "--as", "张技术", *good])
    assert done.exit_code == 0 and "已记录" in done.output and "在命令行代 张技术 录入" in done.output, (
        done.output
    )
    row, kinds, _ = recorded(case_id, aid)
    assert (row.decided_by, row.channel, row.payload["solved_remotely"]) == ("张技术", "cli", True)
    with session_scope() as s:
        told = s.exec(select(Notification).where(Notification.template == "approval_entered_for_you")).all()
    assert [n.recipient_name for n in told] == ["张技术"] and "在命令行代 张技术 录入" in told[0].body
