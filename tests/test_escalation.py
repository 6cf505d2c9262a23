"""The escalation ladder as the keeper walks it: each step once, in order, with the right people told
(PROCEDURES.md §1), a breach that raises the severity, stale records escalated to the next manager."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session, select

from models import Case, Event, Staff
from models.clocks import Escalation
from models.db import session_scope
from models.outbox import Notification
from rules.escalation import BREACH, due_steps, next_check
from tasks.clocks import escalate_stale_records, fire_due_clocks, start_clock

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=SH).astimezone(UTC)  # Monday 10:00


def new_case(session: Session, severity: int, at: datetime, customer_id: int = 1) -> int:
    case = Case(
        kind="repair",
        customer_id=customer_id,
        site_id=1 if customer_id == 1 else 3,
        contract_id=customer_id,
        severity=severity,
        title="核心交换机宕机",
        reported_at=at,
        created_at=at,
        updated_at=at,
    )
    session.add(case)
    session.commit()
    assert case.id is not None
    return case.id


def told(session: Session, key: str, *, urgent: bool = True) -> list[str]:
    """Names of the people a step's notifications went to, in row order; `urgent`: whether they
    ignore quiet hours (severity 1–2 only, DESIGN §4)."""
    rows = session.exec(select(Notification).where(Notification.key == key).order_by(Notification.id)).all()
    assert all(r.urgent == urgent for r in rows), [(r.recipient_name, r.urgent) for r in rows]
    return [r.recipient_name for r in rows]


def test_due_steps_are_ordered_and_skip_what_is_done() -> None:
    ladder = [(1, T0), (2, T0 + timedelta(hours=2)), (3, T0 + timedelta(hours=4))]
    steps = due_steps(
        due_at=T0 + timedelta(hours=4),
        ladder=ladder,
        done_levels={1},
        now=T0 + timedelta(hours=5),
        running=True,
    )
    assert [(s.level, s.at) for s in steps] == [
        (2, T0 + timedelta(hours=2)),
        (BREACH, T0 + timedelta(hours=4)),
        (3, T0 + timedelta(hours=4)),
    ]
    assert next_check(
        due_at=T0 + timedelta(hours=4), ladder=ladder, done_levels={1, 2}, running=True
    ) == T0 + timedelta(hours=4)
    assert next_check(due_at=T0, ladder=ladder, done_levels={0, 1, 2, 3}, running=True) is None
    assert (
        due_steps(due_at=T0, ladder=ladder, done_levels=(), now=T0 + timedelta(days=9), running=False) == []
    )


def test_ladder_tells_each_level_its_people_and_breach_raises_severity(demo: str) -> None:
    with session_scope() as s:
        case_id = new_case(s, 2, T0)
        clock_id = start_clock(s, case_id, "restore", started_at=T0, severity=2).id  # due 14:00
    for hours in (0, 2, 4, 24):
        fire_due_clocks(T0 + timedelta(hours=hours, minutes=1))
    with session_scope() as s:
        # level 1 is where the case starts (entered at intake): recorded, but nobody is told "恢复服务未完成"
        assert told(s, f"clock:{clock_id}:L1") == []
        assert s.exec(select(Escalation).where(Escalation.key == f"clock:{clock_id}:L1")).one().level == 1
        assert told(s, f"clock:{clock_id}:L2") == ["赵高工"]
        assert told(s, f"clock:{clock_id}:L3") == ["孙专家", "周专家", "张技术"]  # + technical lead informed
        assert told(s, f"clock:{clock_id}:L4") == ["吴总监", "原厂支持"]  # + vendor (standby machine)
        assert told(s, f"clock:{clock_id}:breach") == ["张技术", "王值班", "李调度"]
        body = s.exec(select(Notification).where(Notification.key == f"clock:{clock_id}:L4")).first().body  # type: ignore[union-attr]
        assert "备机" in body and "技术总监" in body
        breach = s.exec(select(Notification).where(Notification.key == f"clock:{clock_id}:breach")).first()
        assert (
            breach is not None
            and "超时" in breach.subject
            and "由 2 级（重大故障）自动提升为 1 级（特大故障）" in breach.body
        )
        assert (
            breach.subject.startswith("【") and "有偿服务" not in breach.subject + breach.body
        )  # in contract
        case = s.get(Case, case_id)
        assert case is not None and case.severity == 1
        raised = s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "severity.raised")).all()
        assert [(e.data["from"], e.data["to"]) for e in raised] == [(2, 1)]


def test_every_escalation_of_a_lapsed_contract_case_says_paid_service(demo: str) -> None:
    """Issue 7: an out-of-contract request says so in every message — the keeper's escalations too."""
    from tasks.cases import RepairRequest, open_case

    with session_scope() as s:
        case = open_case(
            s,
            RepairRequest(
                customer="TYDX",
                reported_by="客户 孙老师",
                description="图书馆机房 UPS 告警",
                severity=2,
                reported_at=T0,
            ),
            now=T0,
        )
        assert case.out_of_contract
        case_id, reason = case.id, case.data["paid_service_reason"]
        start_clock(s, case_id, "restore", started_at=T0, severity=2)
    for hours in (0, 2, 4, 24):  # the ladder, then the breach
        fire_due_clocks(T0 + timedelta(hours=hours, minutes=1))
    assert escalate_stale_records(T0 + timedelta(days=3)) == 1
    with session_scope() as s:
        rows = s.exec(select(Notification).where(Notification.case_id == case_id)).all()
        assert {r.template for r in rows} == {"escalation", "escalation_breach", "escalation_stale"}
        for row in rows:
            assert row.subject.startswith("【合同外·有偿服务】"), (row.template, row.subject)
            assert f"合同外 / 有偿服务 —— {reason}" in row.body, (row.template, row.body)


def test_a_non_ladder_clock_breach_tells_its_owner(demo: str) -> None:
    with session_scope() as s:
        case_id = new_case(s, 3, T0)
        clock_id = start_clock(s, case_id, "callback", started_at=T0, severity=3).id  # 2 days
    assert fire_due_clocks(T0 + timedelta(days=1)) == 0
    assert fire_due_clocks(T0 + timedelta(days=2, seconds=1)) == 1
    with session_scope() as s:
        assert told(s, f"clock:{clock_id}:breach", urgent=False) == [
            "王值班",
            "李调度",
            "郑协调",
        ]  # severity 3
        assert s.exec(select(Escalation).where(Escalation.case_id == case_id)).one().level == BREACH


def test_stale_record_is_escalated_once_to_the_next_manager(demo: str) -> None:
    with session_scope() as s:
        case_id = new_case(s, 3, T0)
    assert escalate_stale_records(T0 + timedelta(hours=23)) == 0
    assert escalate_stale_records(T0 + timedelta(hours=25)) == 1
    assert escalate_stale_records(T0 + timedelta(hours=26)) == 0  # once per quiet spell
    with session_scope() as s:
        esc = s.exec(select(Escalation).where(Escalation.case_id == case_id)).one()
        assert (esc.kind, esc.level) == ("stale", 2)
        assert told(s, esc.key, urgent=False) == ["赵高工"]  # severity 3: waits for quiet hours to end
        # the owner updates the case; a new quiet spell escalates again, one level higher
        case = s.get(Case, case_id)
        assert case is not None
        case.updated_at = T0 + timedelta(hours=30)
        s.add(case)
    assert escalate_stale_records(T0 + timedelta(hours=55)) == 1
    with session_scope() as s:
        levels = s.exec(
            select(Escalation.level).where(Escalation.case_id == case_id).order_by(Escalation.id)
        ).all()
        assert levels == [2, 3]
        case = s.get(Case, case_id)
        assert case is not None
        case.closed_at = T0 + timedelta(hours=56)
        s.add(case)
    assert escalate_stale_records(T0 + timedelta(days=30)) == 0  # closed cases never go stale


def test_a_case_waiting_by_plan_for_a_date_is_not_stale_until_the_date_passes(demo: str) -> None:
    from models.approvals import Timer

    with session_scope() as s:
        case_id = new_case(s, 3, T0)
        case = s.get(Case, case_id)
        assert case is not None
        case.kind = "inspection"  # agreed, now waiting for its visit day
        s.add(
            Timer(
                case_id=case_id,
                flow_run_id="run-1",
                key="visit",
                due_at=T0 + timedelta(days=10),
                created_at=T0,
            )
        )
    assert escalate_stale_records(T0 + timedelta(days=5)) == 0
    assert escalate_stale_records(T0 + timedelta(days=9, hours=23)) == 0
    # the visit day came and went and nobody touched the case: now it is stale
    assert escalate_stale_records(T0 + timedelta(days=10, hours=1)) == 1


def test_escalation_with_nobody_in_a_role_still_records_the_step(demo: str) -> None:
    with session_scope() as s:
        for person in s.exec(select(Staff)).all():
            if person.has_role("senior_engineer"):
                person.active = False
                s.add(person)
        case_id = new_case(s, 1, T0)
        clock_id = start_clock(s, case_id, "restore", started_at=T0, severity=1).id
    assert fire_due_clocks(T0 + timedelta(hours=3)) == 2
    with session_scope() as s:
        assert told(s, f"clock:{clock_id}:L2") == []
        event = s.exec(
            select(Event).where(
                Event.case_id == case_id, Event.kind == "clock.escalated", Event.key == "clock:restore:L2"
            )
        ).one()
        assert event.data["recipients"] == []


def test_only_severity_1_and_2_notifications_ignore_quiet_hours(demo: str) -> None:
    with session_scope() as s:
        ids = {sev: new_case(s, sev, T0) for sev in (1, 2, 3, 4)}
        clocks = {
            sev: start_clock(s, case_id, "restore", started_at=T0, severity=sev).id
            for sev, case_id in ids.items()
        }
    fire_due_clocks(T0 + timedelta(hours=2, minutes=1))  # levels 1 (silent) and 2 of every clock
    assert escalate_stale_records(T0 + timedelta(hours=25)) == 4
    with session_scope() as s:
        for sev, clock_id in clocks.items():
            assert told(s, f"clock:{clock_id}:L2", urgent=sev <= 2)
            stale = s.exec(
                select(Escalation).where(Escalation.case_id == ids[sev], Escalation.kind == "stale")
            ).one()
            assert told(s, stale.key, urgent=sev <= 2)


def test_a_breach_that_raises_the_case_to_severity_2_goes_out_urgently(demo: str) -> None:
    with session_scope() as s:
        case_id = new_case(s, 3, T0)
        clock_id = start_clock(s, case_id, "restore", started_at=T0, severity=3).id  # due in 24 h
    fire_due_clocks(T0 + timedelta(hours=4, minutes=1))
    fire_due_clocks(T0 + timedelta(hours=24, minutes=1))
    with session_scope() as s:
        assert told(s, f"clock:{clock_id}:L2", urgent=False)
        assert told(s, f"clock:{clock_id}:breach", urgent=True)  # raised 3 → 2 by the breach itself
        assert s.get(Case, case_id).severity == 2  # type: ignore[union-attr]


def test_stale_limit_counts_working_time_on_a_5x8_contract(demo: str) -> None:
    friday_17 = datetime(2026, 11, 27, 17, 0, tzinfo=SH).astimezone(UTC)
    with session_scope() as s:
        case_id = new_case(s, 3, friday_17, customer_id=2)  # 5x8 contract, default 24 h
    # 25 wall-clock hours later is Saturday evening: 1 working hour has passed
    assert escalate_stale_records(friday_17 + timedelta(hours=25)) == 0
    # 24 working hours: Friday 1 h + Monday 9 h + Tuesday 9 h + Wednesday 5 h → Wednesday 14:00
    wednesday_14 = datetime(2026, 12, 2, 14, 0, tzinfo=SH).astimezone(UTC)
    assert escalate_stale_records(wednesday_14 - timedelta(minutes=1)) == 0
    assert escalate_stale_records(wednesday_14 + timedelta(minutes=1)) == 1
    with session_scope() as s:
        esc = s.exec(select(Escalation).where(Escalation.case_id == case_id)).one()
        assert esc.kind == "stale" and esc.due_at == wednesday_14
        from models.outbox import Notification

        bodies = [
            n.body
            for n in s.exec(
                select(Notification).where(
                    Notification.case_id == case_id, Notification.template == "escalation_stale"
                )
            )
        ]
    assert bodies and all("已超过 24 个工作小时未更新状态" in b for b in bodies), bodies


def _set_stale_limit(session: Session, contract_id: int, hours: float) -> None:
    from models.contracts import Contract

    contract = session.get(Contract, contract_id)
    assert contract is not None
    contract.sla_policy = {**(contract.sla_policy or {}), "escalation": {"stale_after": {"hours": hours}}}
    session.add(contract)


def test_a_contract_stale_limit_below_the_default_takes_effect(demo: str) -> None:
    with session_scope() as s:
        _set_stale_limit(s, 1, 4)
        quick = new_case(s, 3, T0)  # contract 1: 4 h
        slow = new_case(s, 3, T0, customer_id=3)  # contract 3: the default 24 h
    assert escalate_stale_records(T0 + timedelta(hours=3, minutes=59)) == 0
    assert escalate_stale_records(T0 + timedelta(hours=4, minutes=1)) == 1
    with session_scope() as s:
        esc = s.exec(select(Escalation).where(Escalation.kind == "stale")).one()
        assert esc.case_id == quick and esc.due_at == T0 + timedelta(hours=4)
    assert escalate_stale_records(T0 + timedelta(hours=23)) == 0  # the default-limit case keeps its 24 h
    assert escalate_stale_records(T0 + timedelta(hours=24, minutes=1)) == 1
    with session_scope() as s:
        assert s.exec(
            select(Escalation.case_id).where(Escalation.kind == "stale").order_by(Escalation.id)
        ).all() == [quick, slow]


def test_candidates_not_yet_stale_by_their_own_limit_do_not_hide_a_stale_case(demo: str) -> None:
    friday_17 = datetime(2026, 11, 27, 17, 0, tzinfo=SH).astimezone(UTC)
    with session_scope() as s:
        _set_stale_limit(s, 1, 4)
        new_case(s, 3, friday_17, customer_id=2)  # 5x8: not stale over the weekend, and older
        stale = new_case(s, 3, friday_17 + timedelta(hours=16))  # 7x24, 4 h: stale by Saturday 13:00
    # one candidate per page: the older 5x8 case comes first and must not use up the sweep
    assert escalate_stale_records(friday_17 + timedelta(hours=21), limit=1) == 1
    with session_scope() as s:
        assert s.exec(select(Escalation.case_id).where(Escalation.kind == "stale")).all() == [stale]
