"""The renewal flow's branches (PROCEDURES.md §6) on the fast layer (tests/fixtures/fastflow.py): the
flow body in-process, every answer through the real decide() the link page calls, timers fired by the
real keeper; renew, change, end and lapse the whole way."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlmodel import col, select

from flows.renewal import renewal
from models import Case, Contract, ContractVersion, Event
from models.approvals import Approval
from tasks.renewal import open_renewals
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, say

DAY = timedelta(days=1)
END = date(2027, 1, 22)  # 60 days after T0's day (Monday 2026-11-23): the renewal opens at T0
QUOTE = {
    "scope": "北京亦庄机房全部服务器与存储",
    "sla_level": "增强",
    "service_hours": "5x8",
    "inspection_frequency": "每季度",
    "start_date": "2027-01-23",
    "end_date": "2028-01-22",
    "fee": "398000",
}


def _open(fast: FastFlow, end: date = END) -> int:
    with fast.session() as s:
        contract = s.exec(select(Contract).where(Contract.code == "HT-2026-BJYH")).one()
        contract.end_date = end
        s.add(contract)
        s.commit()
    created = open_renewals(T0, url=fast.db_url)
    assert len(created) == 1
    return created[0]


def _contract(fast: FastFlow) -> Contract:
    with fast.session() as s:
        return s.exec(select(Contract).where(Contract.code == "HT-2026-BJYH")).one()


def _versions(fast: FastFlow) -> list[ContractVersion]:
    with fast.session() as s:
        return list(s.exec(select(ContractVersion).order_by(col(ContractVersion.version))).all())


def test_renew_records_a_new_contract_version_whose_terms_hold_from_the_new_start(fast: FastFlow) -> None:
    case_id = _open(fast)
    # the same day again opens nothing: one renewal per contract term
    assert open_renewals(T0 + DAY, url=fast.db_url) == []
    result = fast.run(
        renewal,
        case_id,
        at=T0,
        script=[
            say("renewal-quote-v1", QUOTE, by="沈经理", at=T0 + timedelta(hours=2)),
            say("quote-approval", decision="approved", by="高经理", at=T0 + timedelta(hours=5)),
            say("renewal-answer-v1", {"choice": "续约"}, at=T0 + 3 * DAY),
        ],
    )
    assert result == "renewed"
    versions = _versions(fast)
    assert [(v.version, v.start_date, v.end_date, v.service_hours) for v in versions] == [
        (1, date(2026, 1, 1), END, "7x24"),
        (2, date(2027, 1, 23), date(2028, 1, 22), "5x8"),
    ]
    assert float(versions[1].fee) == 398000.0 and versions[1].case_id == case_id
    contract = _contract(fast)
    # the timer to the new start fired (scripted clock), then the row took the new terms
    assert (contract.start_date, contract.end_date, contract.service_hours) == (
        date(2027, 1, 23),
        date(2028, 1, 22),
        "5x8",
    )
    events = fast.events(case_id)
    assert events.index("renewed") < events.index("contract_terms_effective") < events.index("renewal_closed")
    sent = fast.notifications(case_id)
    assert ("沈经理", "renewal/opened") in sent
    assert any(t == "renewal/notice" for _, t in sent)


def test_sla_clocks_count_with_the_terms_in_force_on_the_day_they_start(fast: FastFlow) -> None:
    """A case reported in the old term keeps the old 7x24 terms, one in the new term gets 5x8 — even
    after the contract row carries the new terms."""
    from models.db import session_scope
    from rules.sla import ClockKind
    from tasks.cases import RepairRequest, open_case
    from tasks.clocks import start_clock

    test_renew_records_a_new_contract_version_whose_terms_hold_from_the_new_start(fast)
    last_old = datetime(2027, 1, 22, 8, tzinfo=UTC)  # 16:00 Beijing, the old term's last day
    first_new = datetime(2027, 1, 25, 2, tzinfo=UTC)  # Monday 10:00 in the new term
    hours = []
    for at in (last_old, first_new):
        with session_scope(fast.db_url) as s:
            case = open_case(
                s,
                RepairRequest(
                    customer="BJYH", site="亦庄机房", reported_by="王", description="告警", reported_at=at
                ),
                now=at,
            )
            clock = start_clock(s, case.id, ClockKind.RESTORE, started_at=at, severity=3)  # type: ignore[arg-type]
            hours.append(clock.terms["service_hours"])
    assert hours == ["7x24", "5x8"]


def test_manager_sends_the_quote_back_then_rejects_it_each_gives_a_new_version(fast: FastFlow) -> None:
    case_id = _open(fast)
    fast.run(
        renewal,
        case_id,
        at=T0,
        until="renewal-answer-v1",
        script=[
            say("renewal-quote-v1", {**QUOTE, "fee": "300000"}, by="沈经理"),
            say("quote-approval", decision="revise", by="高经理", comment="价格低于现行标准"),
            say("renewal-quote-v2", {**QUOTE, "fee": "350000"}, by="沈经理"),
            say("quote-approval", decision="rejected", by="高经理", comment="SLA 等级须重新评估"),
            say("renewal-quote-v3", QUOTE, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
        ],
    )
    with fast.session() as s:
        steps = [
            (a.step, a.version, a.decision)
            for a in s.exec(select(Approval).where(Approval.case_id == case_id).order_by(col(Approval.id)))
        ]
    assert [x for x in steps if x[0] == "quote-approval"] == [
        ("quote-approval", 1, "revise"),
        ("quote-approval", 2, "rejected"),
        ("quote-approval", 3, "approved"),
    ]
    assert ("沈经理", "renewal/quote_rejected") in fast.notifications(case_id)
    events = fast.events(case_id)
    assert events.count("quote_returned") == 2 and "quote_approved" in events


def test_a_quote_without_a_fee_or_ending_before_it_starts_is_refused_and_records_nothing(
    fast: FastFlow,
) -> None:
    case_id = _open(fast)
    no_fee = {k: v for k, v in QUOTE.items() if k != "fee"}
    fast.run(
        renewal,
        case_id,
        at=T0,
        until="quote-approval",
        script=[
            say("renewal-quote-v1", no_fee, by="沈经理"),
            say("renewal-quote-v1", {**QUOTE, "end_date": "2027-01-01"}, by="沈经理"),
            say("renewal-quote-v1", {**QUOTE, "start_date": "2027-01-22"}, by="沈经理"),
            say("renewal-quote-v1", {**QUOTE, "fee": "0"}, by="沈经理"),
            say("renewal-quote-v1", QUOTE, by="沈经理"),
        ],
    )
    reasons = [why for step, why in fast.refused]
    assert len(reasons) == 4
    assert "续约费用" in reasons[0] and "必填" in reasons[0]
    assert "新合同结束日期" in reasons[1] and "早于开始日期" in reasons[1]
    assert "新合同开始日期" in reasons[2] and "应晚于原合同到期日 2027-01-22" in reasons[2]
    assert "金额须大于 0" in reasons[3]
    assert fast.events(case_id).count("renewal_quote_drafted") == 1


def test_change_goes_through_a_change_request_the_customer_signs_then_renews(fast: FastFlow) -> None:
    case_id = _open(fast)
    result = fast.run(
        renewal,
        case_id,
        at=T0,
        script=[
            say("renewal-quote-v1", QUOTE, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
            say("renewal-answer-v1", {"choice": "变更", "change": "服务时间改为 7x24"}, at=T0 + 2 * DAY),
            say("renewal-quote-v2", {**QUOTE, "service_hours": "7x24", "fee": "468000"}, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
            say("change-request-signature", decision="objected", comment="费用请再议", at=T0 + 4 * DAY),
            say("renewal-quote-v3", {**QUOTE, "service_hours": "7x24", "fee": "450000"}, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
            say("change-request-signature", decision="signed", report=True, at=T0 + 6 * DAY),
        ],
    )
    assert result == "changed"
    with fast.session() as s:
        closed = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "renewal_closed")).one()
    assert closed.data["outcome"] == "changed"  # what the KPIs read: a change is not counted as "renewed"
    new = _versions(fast)[-1]
    assert (new.service_hours, float(new.fee)) == ("7x24", 450000.0)
    events = fast.events(case_id)
    assert events.count("change_request_objected") == 1 and "change_request_signed" in events
    with fast.session() as s:
        from models.reports import Report

        kinds = [r.kind for r in s.exec(select(Report).where(Report.case_id == case_id))]
    assert kinds.count("change_request") == 2


def test_a_notice_to_end_later_than_60_days_before_the_end_is_refused_and_records_nothing(
    fast: FastFlow,
) -> None:
    case_id = _open(fast)
    late = T0 + 2 * DAY  # 58 days before the end
    waiting = fast.run(
        renewal,
        case_id,
        at=T0,
        until="renewal-answer-v1",
        script=[
            say("renewal-quote-v1", QUOTE, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
            say("renewal-answer-v1", {"choice": "终止", "reason": "业务迁移上云"}, at=late),
        ],
    )
    assert waiting.step == "renewal-answer-v1"  # still waiting for an answer that can be taken
    (why,) = [why for step, why in fast.refused if step == "renewal-answer-v1"]
    assert "须提前 60 天书面通知" in why and "2026-11-23" in why and "2026-11-25" in why
    assert "termination_notice" not in fast.events(case_id)
    with fast.session() as s:
        row = s.exec(
            select(Approval).where(Approval.case_id == case_id, Approval.step == "renewal-answer-v1")
        ).one()
        assert row.decision is None


def test_end_in_time_takes_the_written_notice_then_a_handover_signed_by_both(fast: FastFlow) -> None:
    case_id = _open(fast)
    result = fast.run(
        renewal,
        case_id,
        at=T0,
        script=[
            say("renewal-quote-v1", QUOTE, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
            say("renewal-answer-v1", {"choice": "终止"}, at=T0 + timedelta(hours=8)),
            say(
                "renewal-answer-v1", {"choice": "终止", "reason": "业务迁移上云"}, at=T0 + timedelta(hours=9)
            ),
            say(
                "handover",
                {
                    "documents": "设备档案、配置文档",
                    "passwords": "管理账号已交客户修改",
                    "spare_parts": "无",
                    "open_cases": "无",
                },
                by="沈经理",
            ),
            say("handover-approval", decision="approved", by="高经理"),
            say("handover-signature", decision="signed", report=True),
        ],
    )
    assert result == "ended"
    (why,) = [why for step, why in fast.refused if step == "renewal-answer-v1"]
    assert "终止合同须写明原因" in why
    events = fast.events(case_id)
    assert "termination_notice" in events and "handover_approved" in events and "handover_signed" in events
    assert _versions(fast) == []  # nothing renewed
    assert _contract(fast).end_date == END


def test_no_answer_follow_ups_escalations_reminder_then_the_contract_lapses(fast: FastFlow) -> None:
    case_id = _open(fast)
    run = "renewal-lapse"
    fast.run(
        renewal,
        case_id,
        at=T0,
        run_id=run,
        until="renewal-answer-v1",
        script=[
            say("renewal-quote-v1", QUOTE, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
        ],
    )
    for day in range(1, 62):
        fast.tick(T0 + day * DAY)
    with fast.session() as s:
        rows = s.exec(select(Event).where(Event.case_id == case_id).order_by(col(Event.id))).all()
        outreach = [(e.key, e.at) for e in rows if (e.key or "").startswith("outreach:")]
    keys = [k for k, _ in outreach]
    assert keys[:2] == ["outreach:follow-up-1", "outreach:follow-up-2"]
    for key in ("outreach:escalate-30", "outreach:escalate-15", "outreach:remind-7", "outreach:lapse"):
        assert keys.count(key) == 1
    assert keys[-1] == "outreach:lapse"
    sent = fast.notifications(case_id)
    assert ("高经理", "renewal/escalate") in sent
    assert any(t == "renewal/follow_up" for _, t in sent) and any(t == "renewal/remind" for _, t in sent)
    # the run, woken, finds the answer settled as lapsed and closes the renewal
    assert fast.run(renewal, case_id, run_id=run, script=[]) == "lapsed"
    with fast.session() as s:
        case = s.get(Case, case_id)
        assert case is not None and case.status == "closed"
    # a request after the end is paid service (existing behaviour, kept)
    from tasks.cases import RepairRequest, resolve_request

    with fast.session() as s:
        resolved = resolve_request(
            s,
            RepairRequest(
                customer="BJYH",
                site="亦庄机房",
                reported_by="客户",
                channel="热线",
                description="硬盘告警",
                severity=3,
                reported_at=datetime(2027, 1, 25, 2, tzinfo=UTC),
            ),
            today=datetime(2027, 1, 25, 2, tzinfo=UTC),
        )
    assert resolved.out_of_contract


def test_a_warranty_ending_within_45_days_gets_one_full_inspection_through_the_inspection_flow(
    fast: FastFlow,
) -> None:
    """003 §8.1.3 item 6: the demo's first contract's warranty ends 2026-12-31, 38 days after T0."""
    from flows.renewal import plan_renewals_flow
    from tasks.inspection import load_checklist_spec

    with fast.session() as s:
        later = s.exec(select(Contract).where(Contract.code == "HT-2026-SJZY")).one()
        later.warranty_until = date(2027, 1, 15)  # 53 days ahead: not yet
        s.add(later)
        s.commit()
    result = fast.run(plan_renewals_flow, T0, at=T0, script=[])
    assert result["warranty_inspections"] == 1
    with fast.session() as s:
        (case,) = s.exec(select(Case).where(Case.kind == "inspection")).all()
    assert case.title == "质保期满巡检（质保至 2026-12-31）" and case.status == "planned"
    assert date.fromisoformat(case.data["proposed_day"]) < date(2026, 12, 31)
    assert [(d, p["case_id"]) for d, p, _ in fast.started] == [("inspection/inspection", case.id)]
    from tasks.inspection import report_context

    assert report_context(case.id, 1)["period"] == "质保期满巡检（质保至 2026-12-31）"  # type: ignore[arg-type]
    # every device the contract supplied, at both sites, is on the checklist
    spec = load_checklist_spec(case.id)  # type: ignore[arg-type]
    serials = {t.get("serial") for t in spec["targets"] if t.get("serial")}
    assert serials == {"SNBJYH0SE00", "SNBJYH0ST00", "SNBJYH1SE00", "SNBJYH1ST00"}
    # the next day plans nothing again; the other warranty once it is 45 days away
    again = fast.run(plan_renewals_flow, T0 + DAY, at=T0 + DAY, script=[], run_id="planner-2")
    assert again["warranty_inspections"] == 0
    third = fast.run(plan_renewals_flow, T0 + 8 * DAY, at=T0 + 8 * DAY, script=[], run_id="planner-3")
    assert third["warranty_inspections"] == 1


def test_a_contract_without_an_account_manager_to_give_it_to_raises_one_incident(fast: FastFlow) -> None:
    from models import Incident, Staff

    with fast.session() as s:
        for person in s.exec(select(Staff)).all():
            if "account_manager" in person.roles:
                person.active = False
                s.add(person)
        contract = s.exec(select(Contract).where(Contract.code == "HT-2026-BJYH")).one()
        contract.account_manager_id = None
        contract.end_date = END
        s.add(contract)
        s.commit()
    assert open_renewals(T0, url=fast.db_url) == []
    assert open_renewals(T0 + DAY, url=fast.db_url) == []
    with fast.session() as s:
        (incident,) = s.exec(select(Incident).where(Incident.kind == "renewal_unassigned")).all()
        assert "HT-2026-BJYH" in incident.message and "客户经理" in incident.message
        assert s.exec(select(Case).where(Case.kind == "renewal")).all() == []


def test_a_follow_up_caught_up_at_night_waits_for_the_next_working_morning(fast: FastFlow) -> None:
    case_id = _open(fast)
    fast.run(
        renewal,
        case_id,
        at=T0,
        until="renewal-answer-v1",
        script=[
            say("renewal-quote-v1", QUOTE, by="沈经理"),
            say("quote-approval", decision="approved", by="高经理"),
        ],
    )
    due = T0 + 7 * DAY  # follow-up 1: Monday 2026-11-30 10:00 Beijing
    for night in (due + timedelta(hours=10), due + timedelta(hours=16)):  # 20:00, then 02:00 Beijing
        fast.tick(night)
        assert "renewal_follow_up" not in fast.events(case_id)
        assert not any(t.startswith("renewal/follow_up") for _, t in fast.notifications(case_id))
    fast.tick(due + DAY)  # Tuesday 10:00 Beijing
    assert fast.events(case_id).count("renewal_follow_up") == 1
    assert any(t == "renewal/follow_up" for _, t in fast.notifications(case_id))
    fast.tick(due + DAY + timedelta(hours=1))
    assert fast.events(case_id).count("renewal_follow_up") == 1  # once
