"""The messages as people receive them (the recording Apprise plugin reads what was sent): the case
number once in a title, line breaks kept on every channel, nothing internal in a customer's message,
severity levels labelled once, escalations only to the people the ladder names at that level."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import select

from models import Contact, Staff
from models.db import session_scope
from tasks.cases import RepairRequest, open_case, queue_for_case
from tasks.notify import send_due

T = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai


def _case(
    customer: str = "SJZY", severity: int = 3, description: str = "门诊楼机房存储控制器告警\n业务读写变慢"
) -> int:
    site = {"BJYH": "亦庄机房"}.get(customer)
    with session_scope() as s:
        case = open_case(
            s,
            RepairRequest(
                customer=customer,
                site=site,
                reported_by="客户 刘主任",
                description=description,
                severity=severity,
                reported_at=T,
            ),
            now=T,
        )
        return int(case.id)  # type: ignore[arg-type]


def _person(name: str) -> Staff | Contact:
    with session_scope() as s:
        person = (
            s.exec(select(Staff).where(Staff.name == name)).first()
            or s.exec(select(Contact).where(Contact.name == name)).one()
        )
        s.expunge(person)
        return person


def _send(at: datetime = T) -> None:
    send_due(at + timedelta(seconds=1), worker="test")


def test_case_lines_keep_their_breaks_and_a_5x8_case_says_its_level_once(demo: str, notifications) -> None:  # noqa: ANN001
    case_id = _case()
    with session_scope() as s:
        queue_for_case(s, case_id, template="repair/opened", key="opened", now=T, roles=["dispatcher"])
        queue_for_case(s, case_id, template="repair/received", key="received", now=T, customer=True)
    _send()
    [opened] = notifications.to(_person("王值班"))
    assert opened.title == "【WX-000001】新故障报修：门诊楼机房存储控制器告警"  # the first line only
    lines = opened.body.splitlines()
    assert (
        "工单：WX-000001（三级）" in lines
    )  # the business scheme's label carries the level: "三级", not "3 级 三级"
    assert "客户：石家庄某医院信息中心 · 门诊楼机房" in lines  # its own line: the line after it was glued on
    assert any(line.startswith("报告人：客户 刘主任") for line in lines)
    [received] = notifications.to(_person("石家维护负责人"))
    assert "3 级" not in received.body and "（三级）" in received.body

    outage = _case(customer="BJYH", severity=2, description="核心交换机宕机")
    with session_scope() as s:
        queue_for_case(s, outage, template="repair/received", key="received", now=T, customer=True)
    _send()
    bank = notifications.to(_person("北京维护负责人"))[-1]
    assert (
        "工单：WX-000002（2 级（重大故障））" in bank.body.splitlines()
    )  # the outage scheme: number and word


def test_the_customer_visit_notice_carries_no_internal_instruction(demo: str, notifications) -> None:  # noqa: ANN001
    case_id = _case()
    visit = T + timedelta(hours=3)
    with session_scope() as s:  # what the repair flow's visit step tells (flows/repair.py step 4)
        queue_for_case(
            s,
            case_id,
            template="repair/visit_booked",
            key="visit-booked",
            now=T,
            customer=True,
            context={"visit_at": visit},
        )
        queue_for_case(
            s,
            case_id,
            template="repair/visit_coordinator",
            key="visit-booked-coordinator",
            now=T,
            roles=["coordinator"],
            context={"visit_at": visit},
        )
    _send()
    [customer] = notifications.to(_person("石家维护负责人"))
    assert "13:00" in customer.title and "2026-11-23 13:00" in customer.body
    for internal in ("总协调人", "随同", "决定"):
        assert internal not in customer.title + customer.body, internal
    [coordinator] = notifications.to(_person("郑协调"))
    assert "请决定是否随同前往" in coordinator.title and "随同前往" in coordinator.body


def test_request_titles_name_the_case_once(demo: str, notifications) -> None:  # noqa: ANN001
    from flows.steps import subject
    from models.approvals import ApprovalKind
    from tasks.approvals import ApprovalRequest, open_approval
    from tasks.cases import case_facts

    case_id = _case()
    with session_scope() as s:
        facts = case_facts(s, case_id)
        dispatcher = s.exec(select(Staff).where(Staff.name == "王值班")).one()
        director = s.exec(select(Staff).where(Staff.name == "吴总监")).one()
        open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="visit",
                version=1,
                subject=subject(facts, "请与客户预约上门时间"),
                content="方案：更换控制器电池",
                kind=ApprovalKind.FORM,
                approver_staff_ids=[dispatcher.id],
                expires_at=T + timedelta(days=1),
                now=T,
                form_name="visit",
            ),
        )
        open_approval(
            s,
            ApprovalRequest(
                case_id=case_id,
                step="plan-approval",
                version=2,
                subject=subject(facts, "请审批解决方案 v2"),
                content="更换电池\n回退：原样恢复",
                approver_staff_ids=[director.id],
                approver_role="technical_director",
                expires_at=T + timedelta(days=1),
                now=T,
            ),
        )
    _send()
    [form] = notifications.to(_person("王值班"))
    assert form.title == "【请填写】WX-000001 故障维修：请与客户预约上门时间"  # not "WX-000001 WX-000001 …"
    assert form.title.count("WX-000001") == 1 and form.body.count("WX-000001") == 1
    assert "案件 WX-000001（门诊楼机房存储控制器告警）：请与客户预约上门时间。" in form.body.splitlines()
    [approval] = notifications.to(_person("吴总监"))
    assert approval.title == "【待审批】WX-000001 故障维修：请审批解决方案 v2（第 2 版）"
    assert "请审批解决方案 v2（第 2 版），请您以技术总监身份审批。" in approval.body


def test_escalations_go_only_to_the_people_the_ladder_names(demo: str, notifications) -> None:  # noqa: ANN001
    """PROCEDURES.md §1: level 1 is where a case starts (its engineer is on it: no message at minute 0),
    level 2 the senior engineer, level 3 the expert group and the case's technical lead, level 4 the
    technical director and the vendor; the breach the case's own lead and dispatcher — not everyone
    holding those roles."""
    from models.clocks import Escalation
    from tasks.clocks import fire_due_clocks, start_clock

    case_id = _case(customer="BJYH", severity=2, description="核心交换机宕机")
    with session_scope() as s:
        clock_id = start_clock(s, case_id, "restore", started_at=T, severity=2).id
    fire_due_clocks(T + timedelta(minutes=1))
    _send(T + timedelta(minutes=1))
    assert notifications == []  # level 1 at minute 0: recorded, nobody is told "恢复服务未完成"
    with session_scope() as s:
        assert [e.level for e in s.exec(select(Escalation).where(Escalation.clock_id == clock_id))] == [1]
    for hours in (2, 4, 24):
        fire_due_clocks(T + timedelta(hours=hours, minutes=1))
        _send(T + timedelta(hours=hours, minutes=1))
    by_title: dict[str, list[str]] = {}
    names = {
        tuple(p.notify_urls): p.name
        for p in (
            _person(n)
            for n in (
                "刘工程师",
                "陈工程师",
                "王值班",
                "李调度",
                "赵高工",
                "孙专家",
                "周专家",
                "张技术",
                "吴总监",
                "原厂支持",
            )
        )
    }
    for sent in notifications:
        who = next(name for urls, name in names.items() if sent.url in urls)
        by_title.setdefault(sent.title.split("】", 1)[1], []).append(who)
    assert by_title["二级升级：恢复服务未完成"] == ["赵高工"]
    assert by_title["三级升级：恢复服务未完成"] == ["孙专家", "周专家", "张技术"]
    assert by_title["四级升级：恢复服务未完成"] == ["吴总监", "原厂支持"]
    assert by_title["超时：恢复服务已超过服务时限"] == ["张技术", "王值班"]  # the case's lead and dispatcher
    breach = next(s for s in notifications if "超时" in s.title)
    assert "故障级别已由 2 级（重大故障）自动提升为 1 级（特大故障）。" in breach.body.splitlines()


def test_a_markdown_robot_keeps_every_line_break(demo: str, robot_server) -> None:  # noqa: ANN001
    """A DingTalk robot set to markdown renders one newline as a space: each line ends in a hard break."""
    from tasks.channels import deliver

    body = "工单：WX-000001（三级）\n客户：石家庄某医院信息中心 · 门诊楼机房\n\n报告人：客户 刘主任"
    assert deliver("dingtalk://mdtok/?format=markdown", title="【WX-000001】新故障报修", body=body) is None
    [call] = robot_server.received
    text = call.payload["markdown"]["text"]
    assert "门诊楼机房  \n" in text and "（三级）  \n" in text and "\n\n报告人：客户 刘主任" in text


def test_every_message_template_says_who_sent_it_and_no_line_loses_its_break() -> None:
    """Conventions of templates/notify/README.md, checked on the sources: each message ends with the
    sender line, and no line ends in a block tag after text (trim_blocks would glue the next line on)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "templates"
    glued = re.compile(r"\S.*\{%-?[^}]*?[^+]%\}$")  # text, then a block tag closing the line (not "+%}")
    sources = [p for p in root.rglob("*.txt.j2") if not p.name.startswith("_")]
    assert len(sources) > 30
    for path in sources:
        text = path.read_text()
        if "notify" in path.parts:  # a message (templates/accident/plan.zh.txt.j2 is a document)
            assert '{% include "notify/_signature.' in text, path
        for n, line in enumerate(text.splitlines(), 1):
            if not line.lstrip().startswith(("{%", "{#")):
                assert not glued.search(line), f"{path}:{n}: {line}"
