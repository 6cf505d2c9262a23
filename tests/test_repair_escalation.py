"""Escalation levels 3–4 act on a repair (issue 22 item 3; PROCEDURES.md §1, 001 §3.1) on the fast
layer: the repair's answers go through the real decide(), the clock keeper ticks every hour while the
engineer is still repairing; level 3 forms the emergency team on the repair, level 4 requests the
vendor's support and sends a standby machine (half the restore time has passed) — each once, with
no hand-over to the accident flow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import select

from flows.repair import repair
from models import Case, Event
from models.clocks import Escalation
from tasks.escalation import act_on_escalations
from tests.fixtures.fastflow import FastFlow, say
from tests.test_repair_branches import MIN, after_service, hardware, on_site, repaired

H = timedelta(hours=1)


def test_levels_3_and_4_act_once_on_a_repair(fast: FastFlow) -> None:
    t = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Beijing; severity 2: restore in 4 h
    hourly = tuple(t + n * H + MIN for n in range(1, 50))  # the keeper wakes every hour for two days
    done = t + 50 * H
    outcome = fast.run(
        repair,
        hardware(t),
        at=t,
        script=[
            *on_site(t),
            say("solution-plan-signature", decision="signed", at=t + 50 * MIN),
            # the repair drags on: the keeper ticks while the engineer's repair form is awaited
            say(
                "repair-1",
                {**repaired(done).fields, "restored_at": "", "repaired_at": ""},  # type: ignore[dict-item]
                at=done,
                ticks=hourly,
            ),
            say(
                "service-report-signature",
                decision="signed",
                signer="北京维护负责人",
                report=True,
                at=done + 10 * MIN,
            ),
            *after_service(done + 10 * MIN),
        ],
    )
    assert outcome.status == "archived", outcome  # no hand-over: the repair went on to the end
    case_id = fast.case_of_run()
    with fast.session() as s:
        levels = {
            e.level: e.due_at
            for e in s.exec(
                select(Escalation).where(Escalation.case_id == case_id, Escalation.kind == "ladder")
            )
        }
        acted = {
            kind: s.exec(select(Event).where(Event.case_id == case_id, Event.kind == kind)).all()
            for kind in ("team_formed", "vendor_support_started", "standby_machine_requested")
        }
        case = s.get(Case, case_id)
        assert case is not None and case.kind == "repair"
        team = case.data["accident_team"]
    assert {3, 4} <= set(levels)
    # level 3: the team formed once, dated when level 3 became due, named on the repair
    assert (
        len(acted["team_formed"]) == 1 and acted["team_formed"][0].at == levels[3] == t + 4 * H + 5 * MIN
    )  # 5 min paused for the plan
    assert [m["name"] for m in team] == ["张技术", "孙专家", "周专家", "刘工程师"]
    # level 4: the vendor's support and the standby machine, once each, when level 4 became due
    # (half of the 4 h restore time had long passed)
    assert len(acted["vendor_support_started"]) == 1 and acted["vendor_support_started"][0].at == levels[4]
    assert acted["vendor_support_started"][0].key == "vendor-support-1"
    assert (
        len(acted["standby_machine_requested"]) == 1 and acted["standby_machine_requested"][0].at == levels[4]
    )
    assert "四级升级" in acted["standby_machine_requested"][0].data["reason"]
    sent = fast.notifications(case_id)
    assert {r for (r, tpl) in sent if tpl == "accident_team"} == {"张技术", "孙专家", "周专家", "刘工程师"}
    assert {r for (r, tpl) in sent if tpl == "accident_vendor_support"} == {"原厂支持", "吴总监"}
    assert {r for (r, tpl) in sent if tpl == "accident_standby"} == {"原厂支持", "何备件", "郑协调"}
    assert len([1 for (_, tpl) in sent if tpl.startswith("accident_")]) == 4 + 2 + 3  # each told once
    assert act_on_escalations(done + 100 * H) == 0  # a later keeper repeats nothing
