"""Major-event assurance (重要通信保障, flows/assurance.py) on the fast layer (tests/fixtures/fastflow.py):
the flow body in-process, its answers scripted, every answer recorded by the real decide() — the
route a link click takes. The severity raise is driven through the repair flow's own intake.
The end-to-end run on a real Prefect server is tests/test_assurance_flow.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import select

from flows.assurance import assurance
from flows.repair import repair
from models import Case, Event
from models.approvals import Approval
from models.outbox import Notification
from models.reports import Report
from tasks.assurance import AssuranceRequest
from tasks.cases import RepairRequest
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, say

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
# 2026-12-20 00:00 to 2026-12-28 00:00 Beijing time (a whole-day period): UTC 16:00 the day before
START = datetime(2026, 12, 19, 16, 0, tzinfo=UTC)
END = datetime(2026, 12, 27, 16, 0, tzinfo=UTC)
PLAN = "保障方案：核心存储与服务器每日两次巡视；值班工程师驻场；故障 10 分钟内响应，备机预置在亦庄机房。"
ROSTER = (
    "刘工程师 | 13800000004 | 2026-12-20 | 2026-12-23 20:00\n"
    "陈工程师 | 13800000005 | 2026-12-23 20:00 | 2026-12-27"
)


def request(**fields: Any) -> AssuranceRequest:
    return AssuranceRequest.model_validate(
        {
            "customer": "BJYH",
            "site": "",
            "event": "年终结算保障",
            "starts": "2026-12-20",
            "ends": "2026-12-27",
            "requested_by": "北京维护负责人 13900000000",
            "requested_at": "",
            "onsite": True,
            "requirements": "核心交易系统、存储阵列",
            **fields,
        }
    )


def agreed(at: datetime) -> list[Any]:
    """The plan written, approved by the director, signed by the customer."""
    return [
        say("assurance-plan-1", {"plan": PLAN}, at=at + HOUR),
        say("plan-approval", decision="approved", by="吴总监", at=at + 2 * HOUR),
        say("assurance-plan-signature", decision="signed", at=at + 3 * HOUR),
    ]


def repair_at(fast: FastFlow, at: datetime, *, customer: str = "BJYH", site: str = "亦庄机房") -> Case:
    """A repair request of severity 3 taken at `at` through the repair flow's intake; its case."""
    req = RepairRequest.model_validate(
        {
            "customer": customer,
            "site": site,
            "reported_by": "客户 王先生",
            "description": "核心交易系统响应变慢",
            "severity": 3,
            "reported_at": at.isoformat(),
        }
    )
    run_id = f"repair-{customer}-{site}-{at.isoformat()}"
    fast.run(repair, req, at=at, run_id=run_id, script=[], until="diagnosis")
    with fast.session() as s:
        case = s.exec(select(Case).where(Case.flow_run_id == run_id)).one()
        return case


def test_assurance_from_request_to_signed_report_raises_requests_of_the_period(fast: FastFlow) -> None:
    run_id = "assurance-main"
    # 1. requested four weeks ahead: no director's approval; plan agreed; the pre-inspection started;
    # the roster is asked for a week before the period (a timer) — the run waits there
    waiting = fast.run(assurance, request(), at=T0, run_id=run_id, script=agreed(T0), until="duty-roster")
    assert waiting.step == "duty-roster"
    case_id = fast.case_of_run(run_id)
    assert "late-request" not in fast.waits
    # nobody filled it in by 3 days before the period: the director and the coordinator are told
    assert fast.waits[-3:] == ["timer:roster-ask", "timer:roster-due", "duty-roster"]
    overdue = [n for n, t in fast.notifications(fast.case_of_run(run_id)) if t == "assurance/roster_overdue"]
    assert sorted(overdue) == ["吴总监", "郑协调"]
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.number.startswith("BZ-") and case.data["in_force"]
        roster_ask = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "duty-roster")
        ).one()
        assert roster_ask.approver_role == "coordinator"
        assert roster_ask.created_at == START - timedelta(days=7)  # asked a week before the period
    # the pre-inspection: an extra inspection of the inspection flow, 2 working days before the period
    (deployment, parameters, _run), *_ = [r for r in fast.started if r[0] == "inspection/inspection"]
    with fast.session() as s:
        pre = s.get(Case, parameters["case_id"])
        assert pre is not None and pre.kind == "inspection" and pre.parent_id == case_id
        assert pre.data["proposed_day"] == "2026-12-17"  # Thu; the period starts on Sunday 12-20
        assert "年终结算保障" in pre.data["extra_reason"]

    # 2. during the period a new request of that customer is raised one level; at its boundaries
    # (Beijing midnight, not UTC's) and outside it, and for another customer, it is not
    before = repair_at(fast, START - MIN)
    first = repair_at(fast, START)
    last = repair_at(fast, END - MIN)
    after = repair_at(fast, END)
    other = repair_at(fast, START + HOUR, customer="SJZY", site="门诊楼机房")
    assert (before.severity, first.severity, last.severity, after.severity, other.severity) == (3, 2, 2, 3, 3)
    assert first.data["assurance"] == f"BZ-{case_id:06d}"
    assert "severity_raised_for_assurance" in fast.events(first.id)  # type: ignore[arg-type]
    assert "severity_raised_for_assurance" not in fast.events(after.id)  # type: ignore[arg-type]

    # 3. the roster, late but before the period: one line with a phone nobody can dial is refused with
    # its line named; one name that is nobody on the staff goes back with the reason; the third is sent
    asked = START - timedelta(days=3)
    outcome = fast.run(
        assurance,
        request(),
        run_id=run_id,
        script=[
            say("duty-roster", {"shifts": ROSTER.replace("13800000005", "12345")}, at=asked + HOUR),
            say("duty-roster", {"shifts": ROSTER.replace("陈工程师", "陈某")}, at=asked + 2 * HOUR),
            say("duty-roster", {"shifts": ROSTER, "hotline": "010-88886666"}, at=asked + 3 * HOUR),
            say(
                "assurance-report",
                {
                    "summary": "保障期间系统运行平稳，值班工程师驻场值守",
                    "extra_effort": "客户要求 12-27 夜间增派一名工程师驻场",
                    "extra_hours": "8",
                },
                at=END + 20 * HOUR,
            ),
            say("assurance-report-signature", decision="signed", report=True, at=END + 30 * HOUR),
        ],
    )
    assert outcome.status == "archived"
    assert [step for step, _ in fast.refused] == ["duty-roster"]
    assert "第 2 行" in fast.refused[0][1] and "12345" in fast.refused[0][1]
    with fast.session() as s:
        second = s.exec(
            select(Approval).where(
                Approval.case_id == case_id, Approval.step == "duty-roster", Approval.version == 2
            )
        ).one()
        assert "“陈某”不是在职员工" in second.content
        sent = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "roster_sent")).one()
        assert sent.at < START and sent.data["before_period"] and not sent.data["in_time"]
        told = s.exec(
            select(Notification).where(
                Notification.case_id == case_id, Notification.template == "assurance/roster"
            )
        ).one()
        assert told.recipient_name == "北京维护负责人" and told.created_at < START
        roster = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "duty_roster")).one()
        # the plan the director approved and the customer signed is a 重要通信保障方案, not a repair's 解决方案
        plans = s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "assurance_plan")).all()
        assert plans and all(p.title == "重要通信保障方案" and "故障描述" not in p.content for p in plans)
        assert not s.exec(
            select(Report).where(Report.case_id == case_id, Report.kind == "solution_plan")
        ).all()
        assert "010-88886666" in roster.content and "13800000005" in roster.content
        report = s.exec(
            select(Report).where(Report.case_id == case_id, Report.kind == "assurance_report")
        ).one()
        # the report lists the two requests of the period, raised 3 → 2, and marks the extra effort 有偿服务
        assert first.number in report.content and last.number in report.content
        assert before.number not in report.content and after.number not in report.content
        assert "3 → 2" in report.content and "有偿服务" in report.content
        paid = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "paid_service")).one()
        assert paid.data["hours"] == 8
    kinds = fast.events(case_id)
    assert kinds.index("assurance_in_force") < kinds.index("roster_sent") < kinds.index("assurance_started")
    assert kinds[-1] == "archived"


def test_a_request_less_than_three_weeks_ahead_needs_the_director_who_may_decline(fast: FastFlow) -> None:
    # asked on Monday 11-23 for 12-05 … 12-06: 11.6 days ahead
    outcome = fast.run(
        assurance,
        request(starts="2026-12-05", ends="2026-12-06"),
        at=T0,
        run_id="assurance-late",
        script=[say("late-request", decision="rejected", by="吴总监", comment="人员已排满", at=T0 + HOUR)],
    )
    case_id = fast.case_of_run("assurance-late")
    assert outcome.status == "cancelled"
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.data["late"] and case.data["notice_days"] == 11.6
        ask = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "late-request")
        ).one()
        assert "不足 3 周" in ask.subject and ask.approver_role == "technical_director"
    declined = [name for name, template in fast.notifications(case_id) if template == "assurance/declined"]
    assert "北京维护负责人" in declined
    # a declined assurance raises nothing: a request in its period keeps its severity
    assert repair_at(fast, datetime(2026, 12, 5, 2, 0, tzinfo=UTC)).severity == 3


def test_a_late_request_the_director_approves_goes_on_to_the_plan_of_one_site(fast: FastFlow) -> None:
    waiting = fast.run(
        assurance,
        request(starts="2026-12-05 08:00", ends="2026-12-05 20:00", site="亦庄机房"),
        at=T0,
        run_id="assurance-late-ok",
        script=[
            say("late-request", decision="approved", by="吴总监", at=T0 + HOUR),
            *agreed(T0 + HOUR),
        ],
        until="duty-roster",
    )
    case_id = fast.case_of_run("assurance-late-ok")
    assert waiting.step == "duty-roster"
    assert fast.waits[:2] == ["late-request", "assurance-plan-1"]
    assert "late_request_approved" in fast.events(case_id)
    # the assurance names one site: a request at the other site keeps its severity
    start = datetime(2026, 12, 5, 0, 0, tzinfo=UTC)  # 08:00 Beijing
    assert repair_at(fast, start).severity == 2
    assert repair_at(fast, start, site="天津灾备机房").severity == 3
    assert repair_at(fast, start + 12 * HOUR).severity == 3  # 20:00 Beijing: the period has ended


def test_a_request_that_cannot_be_taken_ends_the_run_with_the_reason(fast: FastFlow) -> None:
    outcome = fast.run(
        assurance, request(starts="2026-12-27", ends="2026-12-20"), at=T0, run_id="bad", script=[]
    )
    assert "结束时间须晚于开始时间" in outcome.message
    with fast.session() as s:
        assert s.exec(select(Case).where(Case.kind == "assurance")).all() == []
    outcome = fast.run(assurance, request(site="上海机房"), at=T0, run_id="bad-site", script=[])
    assert "未知站点" in outcome.message


def test_an_assurance_without_a_contract_in_force_is_paid_service_and_has_no_contract_inspection(
    fast: FastFlow,
) -> None:
    # TYDX's contract ended on 2026-03-31: the whole assurance is 有偿服务, said in every message
    waiting = fast.run(
        assurance,
        request(customer="TYDX", site=""),
        at=T0,
        run_id="assurance-paid",
        script=agreed(T0),
        until="duty-roster",
    )
    assert waiting.step == "duty-roster"
    case_id = fast.case_of_run("assurance-paid")
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.out_of_contract
        assert "有偿服务" in case.data["paid_service_reason"]
        asked = s.exec(select(Approval).where(Approval.case_id == case_id)).all()
        assert asked and all(a.subject.startswith("【合同外·有偿服务】") for a in asked)
        received = s.exec(
            select(Notification).where(
                Notification.case_id == case_id, Notification.template == "assurance/received"
            )
        ).one()
        assert "有偿服务" in received.body
    # no contract inspection can be held for it: the director and the coordinator are told why
    assert "pre_inspection_impossible" in fast.events(case_id)
    told = sorted(n for n, t in fast.notifications(case_id) if t == "assurance/no_pre_inspection")
    assert told == ["吴总监", "郑协调"]
    assert not [r for r in fast.started if r[0] == "inspection/inspection"]


def test_the_dispatchers_board_shows_what_an_assurance_waits_for(fast: FastFlow) -> None:
    from tasks.board import board

    fast.run(
        assurance, request(), at=T0, run_id="assurance-board", script=agreed(T0)[:1], until="plan-approval"
    )
    case_id = fast.case_of_run("assurance-board")
    with fast.session() as s:
        shown = next(c for c in board(s, now=T0 + 2 * HOUR) if c.id == case_id)
    assert shown.kind_zh == "重要通信保障" and shown.number.startswith("BZ-")
    assert [w.who for w in shown.waits] == ["技术总监 吴总监"], shown.waits
    assert shown.waits[0].text.startswith("等待技术总监 吴总监"), shown.waits[0].text
    # the step names the document (重要通信保障方案), without the procedure repeated before it ("重要通信保障：…")
    assert shown.waits[0].what == "审批：重要通信保障方案 v1", shown.waits[0].what


def test_an_agreed_assurance_called_off_raises_nothing_more_tells_everyone_and_its_run_ends(
    fast: FastFlow,
) -> None:
    from tasks.assurance import cancel_assurance

    run_id = "assurance-called-off"
    waiting = fast.run(assurance, request(), at=T0, run_id=run_id, script=agreed(T0), until="duty-roster")
    assert waiting.step == "duty-roster"
    case_id = fast.case_of_run(run_id)
    called_off = START - timedelta(days=2)
    assert cancel_assurance(case_id, "年终结算改期至明年", by="北京维护负责人", now=called_off)
    assert not cancel_assurance(case_id, "再次取消", by="北京维护负责人", now=called_off)  # once
    # intake no longer raises that customer's requests in the period
    assert repair_at(fast, START + HOUR).severity == 3
    told = {n for n, t in fast.notifications(case_id) if t == "assurance/cancelled"}
    assert {"王值班", "张技术", "郑协调", "刘工程师"} <= told and len(told) == 5  # and the customer's contact
    # the coordinator's roster, filled in anyway, is not sent: the run ends cancelled
    outcome = fast.run(
        assurance,
        request(),
        run_id=run_id,
        script=[say("duty-roster", {"shifts": ROSTER}, at=called_off + HOUR)],
    )
    assert outcome.status == "cancelled"
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "cancelled" and not case.data["in_force"]
        assert not s.exec(select(Report).where(Report.case_id == case_id, Report.kind == "duty_roster")).all()
    assert "roster_sent" not in fast.events(case_id) and "assurance_started" not in fast.events(case_id)
