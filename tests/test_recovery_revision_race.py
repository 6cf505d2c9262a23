"""Two revisions of one system's 应急恢复方案 at once: the second is refused up front naming the
revision in progress (run form / flow, and `aftercare drill revise-plan`: one line, exit 2); two
writers that still meet (two revisions opened at the same moment, a drill's follow-up beside a
revision) never crash on the unique (customer, system, version): one is refused, or each version
gets its own number. Threads on the same SQLite file or PostgreSQL database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from flows.drill import drill, recovery_plan
from models import Case
from models.cases import CaseKind
from models.drill import RecoveryPlan
from tasks.drill import DrillRequest, open_recovery_revision, record_recovery_plan, recovery_approved
from tests.conftest import T0
from tests.fixtures.fastflow import FastFlow, say
from tests.test_drill_branches import _local
from tests.test_recovery_revision import REVISED, _versions, _with_plan_in_force

MIN = timedelta(minutes=1)
SYSTEM = "核心业务系统"


def _revisions(fast: FastFlow) -> list[Case]:
    with fast.session() as s:
        return list(
            s.exec(select(Case).where(Case.kind == str(CaseKind.RECOVERY_PLAN)).order_by(col(Case.id))).all()
        )


def _together(*work: Callable[[], Any]) -> list[Any]:
    """Run each callable on its own thread, released at the same moment; what each returned or raised."""
    gate = threading.Barrier(len(work))
    out: list[Any] = [None] * len(work)

    def run(i: int) -> None:
        gate.wait()
        try:
            out[i] = work[i]()
        except Exception as exc:  # noqa: BLE001 - the test asserts no writer raised
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_a_second_revision_of_the_same_plan_is_refused_naming_the_one_in_progress(fast: FastFlow) -> None:
    request = _with_plan_in_force(fast, "HFTWO")
    first = fast.run(recovery_plan, request, at=T0, script=[], until="recovery-plan-v2")
    assert first.step == "recovery-plan-v2"
    first_run = fast.run_id
    [open_case] = _revisions(fast)
    second = fast.run(recovery_plan, request, at=T0 + 5 * MIN, script=[])
    # the run ends with the message (Prefect's Failed state), no traceback, nothing written
    assert second.is_failed()
    message = str(second.message)
    assert f"已有修订在进行中（{open_case.number}）" in message and "already in progress" in message
    assert [c.id for c in _revisions(fast)] == [open_case.id]
    # the first goes on; once it is over, the next revision is taken (from the version it made)
    done = fast.run(
        recovery_plan,
        request,
        run_id=first_run,
        script=[
            say("recovery-plan-v2", REVISED, at=T0 + 20 * MIN),
            say("recovery-plan-approval", decision="approved", by="吴总监", at=T0 + 40 * MIN),
        ],
    )
    assert done == "approved"
    third = fast.run(recovery_plan, request, at=T0 + 60 * MIN, script=[], until="recovery-plan-v3")
    assert third.step == "recovery-plan-v3" and len(_revisions(fast)) == 2
    assert [v[:3] for v in _versions(fast)] == [(1, 60, True), (2, 30, True)]


def test_revise_plan_on_the_command_line_names_the_revision_in_progress(
    fast: FastFlow, tmp_path: Path
) -> None:
    from tests.test_cli import clean_env, free_port, run_cli

    request = _with_plan_in_force(fast, "HFCLI")
    fast.run(recovery_plan, request, at=T0, script=[], until="recovery-plan-v2")
    [open_case] = _revisions(fast)
    env = clean_env(tmp_path, AFTERCARE_DATABASE_URL=fast.db_url, AFTERCARE_PREFECT_PORT=str(free_port()))
    done = run_cli(
        ["drill", "revise-plan", "--customer", "HFCLI", "--system", "核心业务系统", "--reason", "再改一次"],
        env,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and open_case.number in lines[0] and "已有修订在进行中" in lines[0]
    assert "Traceback" not in done.stderr and "无法启动修订流程" not in done.stderr  # no run was tried
    assert len(_revisions(fast)) == 1


def test_two_revisions_opened_at_the_same_moment_one_is_refused(fast: FastFlow) -> None:
    request = _with_plan_in_force(fast, "HFRACE")
    got = _together(
        lambda: open_recovery_revision(request, "run-a", T0),
        lambda: open_recovery_revision(request, "run-b", T0),
    )
    assert not [g for g in got if isinstance(g, Exception)], got
    opened = [g for g in got if not g["error"]]
    refused = [g for g in got if g["error"]]
    [case] = _revisions(fast)
    assert len(opened) == 1 and opened[0]["case_id"] == case.id
    assert len(refused) == 1 and case.number in refused[0]["error"]


def test_a_drill_s_follow_up_and_a_revision_writing_at_once_get_versions_2_and_3(fast: FastFlow) -> None:
    """A revision in progress and a drill of the same system, both writing the next version (2) at
    the same moment: no crash, each stored under its own number, each approval marks its own."""
    request = _with_plan_in_force(fast, "HFBOTH")
    fast.run(recovery_plan, request, at=T0, script=[], until="recovery-plan-v2")
    revision = _revisions(fast)[0].id
    wished = _local(T0) + timedelta(days=22)  # a Tuesday
    drilled = fast.run(
        drill,
        DrillRequest(customer="HFBOTH", system=SYSTEM, kind="主备切换演练", wished_day=wished),
        at=T0,
        script=[],
        until="*",
    )
    assert not getattr(drilled, "message", None), drilled.message
    with fast.session() as s:
        drill_case = s.exec(select(Case).where(Case.kind == str(CaseKind.DRILL))).one().id
    assert revision is not None and drill_case is not None
    rto = {revision: "30", drill_case: "45"}
    got = _together(
        *(
            (lambda c=c: record_recovery_plan(c, 2, {**REVISED, "rto_minutes": rto[c]}, "张技术", T0 + MIN))
            for c in (revision, drill_case)
        )
    )
    assert not [g for g in got if isinstance(g, Exception)], got
    assert sorted(g["version"] for g in got) == [2, 3]
    for c in (revision, drill_case):  # the director approves "v2" on each case: its own version
        assert recovery_approved(c, 2, T0 + 10 * MIN)["rto_minutes"] == int(rto[c])
    with fast.session() as s:
        plans = s.exec(select(RecoveryPlan).order_by(col(RecoveryPlan.version))).all()
        assert [(p.version, p.approved_at is not None) for p in plans] == [(1, True), (2, True), (3, True)]
        assert {p.case_id for p in plans[1:]} == {revision, drill_case}
    # the step again (a busy database re-ran it, the keeper's retry): the same version, nothing added
    again = record_recovery_plan(drill_case, 2, {**REVISED, "rto_minutes": "45"}, "张技术", T0 + MIN)
    assert again["case_id"] == drill_case and len(_versions(fast)) == 3
