"""The step ledger (tasks.ledger): replays return recorded, typed results without running a step
again; a step's effect and its ledger row commit together; keys do not depend on a step's source.

In-process: `replaying(run_id)` replays a flow body as a plain call against a run's ledger, the
way a resumed Prefect run does (tests/test_repair_flow.py and test_approvals_flow.py prove the
same against a real Prefect server, counting task runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select

from models import Event, Role, append_event
from models.approvals import Timer
from models.db import get_engine, session_scope
from models.steps import StepRecord
from tasks.approvals import Decision
from tasks.cases import load_case
from tasks.ledger import decode, dumps, encode, loads, replaying, step
from tasks.timers import current_time, timer_fired
from tests.conftest import T0

ROOT = Path(__file__).resolve().parents[1]
CALLS: Counter[str] = Counter()  # real executions of the steps below, by name
CRASH = {"after_effect": False}


@step("test-note", key="{key}")
def note(case_id: int, key: str, at: datetime) -> int:
    """An effect (an event on the case) whose result is its id."""
    CALLS["note"] += 1
    with session_scope() as session:
        event = append_event(session, case_id, "ledger_note", at=at, key=key)
        assert event.id is not None
        event_id = event.id
    if CRASH["after_effect"]:
        raise RuntimeError("the process dies after the effect, before the step's commit")
    return event_id


@step("test-facts")
def facts(case_id: int) -> dict[str, Any]:
    """A typed read: a dict carrying a datetime, an enum and a tuple."""
    CALLS["facts"] += 1
    return {"case_id": case_id, "at": T0, "role": Role.ENGINEER, "pair": (1, "a")}


@step("test-outer")
def outer(case_id: int) -> int:
    """A step that calls another step: the inner one is part of the outer effect."""
    CALLS["outer"] += 1
    return note(case_id, "inner", T0) + 0


def body(case_id: int) -> tuple[int, datetime, dict[str, Any], int]:
    """A flow body: two effects, a clock read and a typed read, in replay order."""
    first = note(case_id, "one", T0)
    now = current_time()
    read = facts(case_id)
    second = note(case_id, "two", now)
    return first, now, read, second


@pytest.fixture
def case_id(demo: str) -> int:
    from models import Case

    with session_scope() as s:
        case = s.exec(select(Case)).first()
        if case is None:
            from tasks.cases import RepairRequest, open_case

            case = open_case(
                s,
                RepairRequest(customer="BJYH", site="亦庄机房", reported_by="王", description="告警"),
                now=T0,
            )
        assert case.id is not None
        return case.id


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    CRASH["after_effect"] = False


def events(case_id: int) -> Counter[str]:
    with session_scope() as s:
        return Counter(
            e.key for e in s.exec(select(Event).where(Event.case_id == case_id, Event.kind == "ledger_note"))
        )


def statements_during(fn: Any) -> tuple[Any, int]:
    """Run `fn`; how many SQL statements it sent."""
    engine = get_engine()
    count = [0]

    def seen(*_args: Any) -> None:
        count[0] += 1

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        return fn(), count[0]
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)


@dataclass(frozen=True)
class Point:
    x: int
    at: datetime


def test_results_come_back_typed() -> None:
    decision = Decision(
        approval_id=3,
        version=2,
        decision="approved",
        by="吴总监",
        at=T0,
        payload={"when": "2026-11-23 10:00", "n": 1},
    )
    values = [
        decision,
        T0,
        date(2026, 11, 23),
        timedelta(hours=2),
        Role.ENGINEER,
        (1, "a"),
        {1: "x"},
        {"$dt": "not a tag"},
        Point(1, T0),
        [decision, None],
        {"at": T0, "nested": {"roles": [Role.ENGINEER]}},
        3,
        "text",
        None,
        True,
        1.5,
    ]
    for value in values:
        back = loads(dumps(value))
        assert back == value and type(back) is type(value), value
    assert isinstance(decode(encode(decision)).at, datetime)
    with pytest.raises(TypeError, match="cannot be recorded"):
        dumps(object())


def test_the_case_facts_a_flow_reads_are_recorded_and_replayed_as_case_facts(case_id: int) -> None:
    """`load_case` gives the flow a typed CaseFacts (facts.number, not facts["number"]), and the ledger
    gives the same type back on a replay."""
    from tasks.cases import CaseFacts, case_facts

    with session_scope() as s:
        facts = case_facts(s, case_id)
    back = loads(dumps(facts))
    assert type(back) is CaseFacts and back == facts and back.number.startswith("WX-")
    assert load_case.fn(case_id) == facts  # type: ignore[attr-defined]


def test_a_replay_returns_recorded_results_without_running_a_step(case_id: int) -> None:
    with replaying("run-replay"):
        first = body(case_id)
    assert CALLS == {"note": 2, "facts": 1}
    CALLS.clear()

    def again() -> Any:
        with replaying("run-replay"):
            return body(case_id)

    second, statements = statements_during(again)
    assert second == first and isinstance(second[2]["role"], Role) and second[2]["pair"] == (1, "a")
    assert CALLS == {}  # nothing ran again
    assert statements == 1  # the ledger, read once
    assert events(case_id) == {"one": 1, "two": 1}
    with session_scope() as s:
        keys = s.exec(select(StepRecord.key).where(StepRecord.flow_run_id == "run-replay")).all()
    # keys: the step's name, its own key, the occurrence — no cache-busting argument in sight
    assert sorted(keys) == ["current-time#1", "test-facts#1", "test-note:one#1", "test-note:two#1"]


def test_a_repeated_call_is_its_own_step(case_id: int) -> None:
    with replaying("run-repeat"):
        a, b = facts(case_id), facts(case_id)
    assert a == b and CALLS["facts"] == 2
    with replaying("run-repeat"):
        facts(case_id), facts(case_id)
        facts(case_id)  # a third call (new code after an upgrade, or a loop's next round) is new
    assert CALLS["facts"] == 3


def test_a_step_that_dies_before_its_commit_leaves_nothing_and_runs_again(case_id: int) -> None:
    CRASH["after_effect"] = True
    with replaying("run-crash"), pytest.raises(RuntimeError):
        body(case_id)
    # the effect (written through its own session_scope, joined to the step's transaction) is gone
    assert events(case_id) == {}
    with session_scope() as s:
        assert s.exec(select(StepRecord).where(StepRecord.flow_run_id == "run-crash")).all() == []
    CRASH["after_effect"] = False
    with replaying("run-crash"):
        body(case_id)
    assert events(case_id) == {"one": 1, "two": 1}


def test_a_caught_error_inside_a_step_undoes_only_its_block(case_id: int) -> None:
    """A step that catches an error from one of its blocks (the parts request) keeps the rest."""

    with replaying("run-savepoint"):
        kept = savepoint_step(case_id)
    assert kept == "kept" and events(case_id) == {"kept": 1}


@step("test-savepoint")
def savepoint_step(case_id: int) -> str:
    with session_scope() as session:
        append_event(session, case_id, "ledger_note", at=T0, key="kept")
    try:
        with session_scope() as session:
            append_event(session, case_id, "ledger_note", at=T0, key="undone")
            raise ValueError("refused")
    except ValueError:
        pass
    return "kept"


KILLED = """
import os, sys
from tests.test_ledger import note
from tasks.ledger import replaying
from tests.conftest import T0
with replaying("run-killed"):
    note(int(sys.argv[1]), "one", T0)
    os._exit(9)  # killed between the effect and the suspend
"""


def test_a_process_killed_between_an_effect_and_the_suspend_repeats_nothing(case_id: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", KILLED, str(case_id)], cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 9
    assert events(case_id) == {"one": 1}
    with replaying("run-killed"):
        body(case_id)
    assert CALLS["note"] == 1  # only "two": "one" was recorded with its effect
    assert events(case_id) == {"one": 1, "two": 1}


def test_a_waiting_case_survives_an_upgrade_that_changes_a_step(case_id: int, monkeypatch) -> None:
    with replaying("run-upgrade"):
        first = body(case_id)
    key = note.base_key((case_id, "one", T0), {})

    def rewritten(case_id: int, key: str, at: datetime) -> int:  # the new release's code of the step
        raise AssertionError("a finished step ran again after the upgrade")

    monkeypatch.setattr(note, "body", rewritten)
    monkeypatch.setattr(note, "fn", rewritten)
    assert note.base_key((case_id, "one", T0), {}) == key == "test-note:one"  # the key has no source in it
    with replaying("run-upgrade"):
        assert body(case_id) == first


def test_a_step_inside_a_step_is_part_of_its_effect(case_id: int) -> None:
    with replaying("run-nested"):
        outer(case_id)
    with session_scope() as s:
        keys = s.exec(select(StepRecord.key).where(StepRecord.flow_run_id == "run-nested")).all()
    assert keys == ["test-outer#1"] and events(case_id) == {"inner": 1}


def test_a_fresh_read_is_recorded_only_once_it_has_an_answer(case_id: int) -> None:
    with session_scope() as s:
        timer = Timer(case_id=case_id, flow_run_id="run-fresh", key="callback", due_at=T0, created_at=T0)
        s.add(timer)
        s.flush()
        timer_id = timer.id
    with replaying("run-fresh"):
        assert timer_fired(timer_id) is False
    with replaying("run-fresh") as ledger:
        assert ledger.records == {}  # no answer yet: read again on the next wake-up
    with session_scope() as s:
        s.execute(sa.update(Timer).where(Timer.id == timer_id).values(fired_at=T0 + timedelta(days=2)))
    with replaying("run-fresh"):
        assert timer_fired(timer_id) is True
    with session_scope() as s:
        s.execute(sa.update(Timer).where(Timer.id == timer_id).values(fired_at=None))
    with replaying("run-fresh"):
        assert timer_fired(timer_id) is True  # the answer the run acted on stands


def test_outside_a_flow_run_a_step_just_runs(case_id: int) -> None:
    assert isinstance(note(case_id, "plain", T0), int) and CALLS["note"] == 1
    assert isinstance(current_time(), datetime) and current_time().tzinfo is UTC
    with session_scope() as s:
        assert s.exec(select(StepRecord)).all() == []


def test_two_steps_cannot_share_a_name() -> None:
    with pytest.raises(ValueError, match="taken"):

        @step("test-note")
        def another(case_id: int) -> int:
            return case_id


def test_a_not_yet_the_run_went_on_from_stays_its_history(case_id: int) -> None:
    """A fresh read that said "not yet" and after which the run recorded more (a refused Prefect-UI
    input, then the next attempt) is recorded with that record: later replays take the same path."""
    with session_scope() as s:
        timer = Timer(case_id=case_id, flow_run_id="run-path", key="callback", due_at=T0, created_at=T0)
        s.add(timer)
        s.flush()
        timer_id = timer.id
    with replaying("run-path"):
        assert timer_fired(timer_id) is False
        note(case_id, "after-not-yet", T0)  # the run went on from the "not yet"
    with session_scope() as s:
        s.execute(sa.update(Timer).where(Timer.id == timer_id).values(fired_at=T0))
    with replaying("run-path") as ledger:
        assert timer_fired(timer_id) is False  # what the run acted on, not what the row says now
        assert timer_fired(timer_id) is True  # the next check (the run's next attempt) reads afresh
        assert set(ledger.records) == {
            f"timer-fired:{timer_id}#1",
            f"timer-fired:{timer_id}#2",
            "test-note:after-not-yet#1",
        }
