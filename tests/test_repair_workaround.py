"""业务先恢复 and the fault-analysis report (issue 22 items 1–2) on the fast layer: the workaround
given remotely by the lead or on site by the engineer, typed on their forms and validated by the
real decide(); the workaround clock (30/30/60 min) and the fault-analysis clock (1 working day from
the restore) as the repair runs them; the reports and the monthly summary that show them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlmodel import select

from flows.repair import repair
from models.clocks import Clock
from models.reports import Report
from tests.fixtures.fastflow import FastFlow, say
from tests.test_repair_branches import MIN, after_service, bj, clocks, hardware, on_site, repaired, request


def clock_row(fast: FastFlow, case_id: int, kind: str) -> Clock:
    with fast.session() as s:
        return s.exec(select(Clock).where(Clock.case_id == case_id, Clock.kind == kind)).one()


def test_lead_gives_a_workaround_remotely_and_the_reports_show_it(fast: FastFlow) -> None:
    t = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Beijing; severity 3: 60 min
    diagnosis = {
        "contacted_at": bj(t + 5 * MIN),
        "fault_confirmed": "是",
        "result": "缓存策略被改，已恢复",
        "command_log": "$ set cache policy=write-back",
        "solved_remotely": "是",
    }
    outcome = fast.run(
        repair,
        request(t),
        at=t,
        script=[
            # a workaround's time without the workaround, and a time in the future: both refused by decide()
            say("diagnosis", {**diagnosis, "workaround_at": bj(t + 10 * MIN)}, at=t + 30 * MIN),
            say(
                "diagnosis",
                {**diagnosis, "workaround": "核心业务切换到备用 LUN", "workaround_at": bj(t + 90 * MIN)},
                at=t + 30 * MIN,
            ),
            say(
                "diagnosis",
                {**diagnosis, "workaround": "核心业务切换到备用 LUN", "workaround_at": bj(t + 20 * MIN)},
                at=t + 30 * MIN,
            ),
            say("service-report-signature", decision="signed", signer="王先生", report=True, at=t + 40 * MIN),
            *after_service(t + 40 * MIN),
        ],
    )
    assert outcome.status == "archived", outcome
    assert [why for _, why in fast.refused] == [
        "未记录，请更正：「临时方案发出时间」请同时填写「临时解决方案（业务先恢复）」",
        f"未记录，请更正：「临时方案发出时间」不能晚于当前时间（现在是 {bj(t + 30 * MIN)}）",
    ]
    case_id = fast.case_of_run()
    assert "workaround" in fast.events(case_id)
    workaround = clock_row(fast, case_id, "workaround")
    assert workaround.started_at == t and workaround.due_at == t + 60 * MIN
    assert (
        workaround.stopped_at == t + 20 * MIN and workaround.met_at is not None
    )  # the workaround, not the restore
    # the fault-analysis report: 1 working day from the restore (Monday 10:30 → Tuesday 10:30), met by
    # the 故障处理报告 filed 2 h after the signature
    analysis = clock_row(fast, case_id, "analysis_report")
    assert analysis.started_at == t + 30 * MIN and analysis.due_at == t + timedelta(days=1, minutes=30)
    assert analysis.stopped_at == t + 160 * MIN and analysis.met_at is not None
    with fast.session() as s:
        reports = {r.kind: r for r in s.exec(select(Report).where(Report.case_id == case_id))}
    for kind in ("service_report", "fault_report"):
        html = reports[kind].content
        assert f"<th>临时方案发出</th><td>{bj(t + 20 * MIN)}</td>" in html, kind
        assert "<th>临时解决方案</th><td>核心业务切换到备用 LUN</td>" in html, kind
    fault = reports["fault_report"].content
    assert "<td>临时解决方案</td>" in fault and "<td>故障分析报告</td>" in fault  # the clock table rows


def test_engineer_gives_the_workaround_on_site_too_late_for_level_2(fast: FastFlow) -> None:
    t = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    script = on_site(t)
    onsite = next(e for e in script if e.step == "onsite")
    assert isinstance(onsite.fields, dict)
    onsite.fields = {
        **onsite.fields,
        "workaround": "业务切换到单电源运行并降低负载",
        "workaround_at": bj(t + 42 * MIN),
    }
    outcome = fast.run(
        repair,
        hardware(t),
        at=t,
        script=[
            *script,
            say("solution-plan-signature", decision="signed", at=t + 55 * MIN),
            repaired(t + 120 * MIN),
            say(
                "service-report-signature",
                decision="signed",
                signer="北京维护负责人",
                report=True,
                at=t + 130 * MIN,
            ),
            *after_service(t + 130 * MIN),
        ],
    )
    assert outcome.status == "archived", outcome
    case_id = fast.case_of_run()
    workaround = clock_row(fast, case_id, "workaround")
    # level 2: 30 min; issued on site at 42 min — breached, stopped there (not at the restore, 110 min)
    assert workaround.due_at == t + 30 * MIN and workaround.stopped_at == t + 42 * MIN
    assert workaround.breached_at == t + 30 * MIN
    assert clocks(fast, case_id)["analysis_report"] == "met"
    with fast.session() as s:
        service = s.exec(
            select(Report).where(Report.case_id == case_id, Report.kind == "service_report")
        ).one()
    assert f"<th>临时方案发出</th><td>{bj(t + 42 * MIN)}</td>" in service.content
    assert "业务切换到单电源运行并降低负载" in service.content

    # the monthly summary shows both new clocks among its SLA figures
    from models import Case
    from rules.calendar import DEFAULT_CALENDAR
    from tasks.summary import issue_summary

    with fast.session() as s:
        customer_id = s.get(Case, case_id).customer_id  # type: ignore[union-attr]
        row, _ = issue_summary(
            s,
            customer_id,
            kind="monthly",
            period="2026-11",
            first=date(2026, 11, 1),
            last=date(2026, 11, 30),
            now=datetime(2026, 12, 1, 2, tzinfo=UTC),
            calendar=DEFAULT_CALENDAR,
        )
        s.commit()
        figures = {c["kind"]: c for c in row.figures["clocks"]}
        html = row.content_html
    assert (figures["workaround"]["count"], figures["workaround"]["breached"]) == (1, 1)
    assert (figures["analysis_report"]["count"], figures["analysis_report"]["met"]) == (1, 1)
    assert "<td>临时方案</td>" in html and "<td>故障分析报告</td>" in html


def test_level_4_has_no_workaround_clock(fast: FastFlow) -> None:
    t = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    outcome = fast.run(
        repair,
        request(t, severity=4),
        at=t,
        script=[
            say(
                "diagnosis",
                {"contacted_at": bj(t + 5 * MIN), "result": "配置咨询，已答复", "solved_remotely": "是"},
                at=t + 8 * MIN,
            ),
            say("service-report-signature", decision="signed", signer="王先生", report=True, at=t + 40 * MIN),
            *after_service(t + 40 * MIN),
        ],
    )
    assert outcome.status == "archived", outcome
    found = clocks(fast, fast.case_of_run())
    assert (
        "workaround" not in found
    )  # 不适用 for level 4 (PROCEDURES.md §1): never started, never counted met
    assert found["analysis_report"] == "met" and found["restore"] == "met"
