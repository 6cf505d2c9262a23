"""Accident keeper steps on a real database: hourly updates re-arm until the restore, the vendor's
daily report runs while vendor support is engaged, a standby machine goes out at half the restore
time. Time moves by passing later `now` values."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

from sqlmodel import select

import tasks.accident as A
from models import Case, Event
from models.db import session_scope
from models.outbox import Notification
from tests.conftest import T0

H = timedelta(hours=1)


def _open(**extra) -> int:
    request = A.AccidentRequest(
        customer="BJYH",
        site="亦庄机房",
        reported_by="客户 李四",
        description="核心存储宕机，网银业务中断",
        reported_at=T0,
        **extra,
    )
    case_id = A.open_accident.fn(request, T0, f"run-{extra}")
    A.form_team.fn(case_id, T0)
    return case_id


def _sent(case_id: int, template: str) -> Counter:
    with session_scope() as s:
        rows = s.exec(
            select(Notification).where(Notification.case_id == case_id, Notification.template == template)
        ).all()
        return Counter(r.recipient_name for r in rows)


def _events(case_id: int, kind: str) -> list[Event]:
    with session_scope() as s:
        return list(
            s.exec(select(Event).where(Event.case_id == case_id, Event.kind == kind).order_by(Event.at))
        )


def test_hourly_updates_rearm_each_hour_then_stop_at_the_restore(demo):
    case_id = _open()
    assert A.send_progress_updates(T0 + 59 * timedelta(minutes=1)) == 0
    for hour in range(1, 6):  # the keeper ticks every hour
        assert A.send_progress_updates(T0 + hour * H) == 1
    assert A.send_progress_updates(T0 + 5 * H) == 0  # a second tick in the same hour sends nothing
    # the keeper was down for 3 hours: each missed update goes out once
    assert A.send_progress_updates(T0 + 8 * H + timedelta(minutes=5)) == 3
    A.record_execution.fn(case_id, 1, "restored", "业务恢复", "张技术", T0 + 9 * H + timedelta(minutes=30))
    assert A.send_progress_updates(T0 + 30 * H) == 0
    assert [e.data["n"] for e in _events(case_id, "progress_update")] == list(range(1, 10))
    assert _sent(case_id, "accident_progress") == {"郑协调": 9, "北京维护负责人": 9}
    with session_scope() as s:
        assert s.get(Case, case_id).status == "restored"


def test_a_standby_machine_goes_out_once_at_half_the_restore_time(demo):
    case_id = _open()
    assert A.send_due_standby(T0 + 2 * H - timedelta(seconds=1)) == 0  # severity 1: restore in 4 h
    assert A.send_due_standby(T0 + 2 * H) == 1
    assert A.send_due_standby(T0 + 3 * H) == 0
    assert A.request_standby_machine.fn(case_id, "技术总监决定", T0 + 4 * H) is False
    [event] = _events(case_id, "standby_machine_requested")
    assert event.at == T0 + 2 * H and event.actor == "system"
    assert _sent(case_id, "accident_standby") == {"原厂支持": 1, "何备件": 1, "郑协调": 1}


def test_vendor_gets_a_daily_report_only_while_support_is_engaged(demo):
    case_id = _open(tolerance_hours=2)
    assert A.send_vendor_daily_reports(T0 + 48 * H) == 0  # no vendor support yet
    assert A.window_expired.fn(case_id, T0 + 2 * H) is True
    # the flow asks at 3 h (a failed test); the support dates from the window's close at 2 h
    A.start_vendor_support.fn(case_id, 1, "方案测试失败且超出客户可容忍时间", T0 + 3 * H)
    [started] = _events(case_id, "vendor_support_started")
    assert started.at == T0 + 2 * H
    assert A.send_vendor_daily_reports(T0 + 26 * H - timedelta(seconds=1)) == 0
    assert A.send_vendor_daily_reports(T0 + 26 * H) == 1
    assert A.send_vendor_daily_reports(T0 + 74 * H) == 2
    A.record_execution.fn(case_id, 3, "restored", "", "张技术", T0 + 76 * H)
    assert A.send_vendor_daily_reports(T0 + 200 * H) == 0
    assert _sent(case_id, "accident_vendor_support") == {"原厂支持": 1, "吴总监": 1}
    assert _sent(case_id, "accident_vendor_daily") == {"原厂支持": 3}


def test_a_window_that_closes_without_a_plan_brings_in_the_vendor_by_itself(demo):
    waiting = _open(tolerance_hours=2)
    restored = _open(tolerance_hours=2, team=["张技术"])
    A.record_execution.fn(restored, 1, "restored", "", "张技术", T0 + H)
    assert A.send_due_vendor_support(T0 + 2 * H - timedelta(seconds=1)) == 0
    # the keeper was down for an hour: the support still dates from the window's close
    assert A.send_due_vendor_support(T0 + 3 * H) == 1
    assert A.send_due_vendor_support(T0 + 4 * H) == 0  # once
    [started] = _events(waiting, "vendor_support_started")
    assert started.at == T0 + 2 * H and started.actor == "吴总监" and started.data["attempt"] == 1
    assert "可容忍时间" in started.data["reason"]
    assert _events(restored, "vendor_support_started") == []
    assert _sent(waiting, "accident_vendor_support") == {"原厂支持": 1, "吴总监": 1}
    # a plan that fails later is the flow's second call, not a repeat of the first
    assert A.start_vendor_support.fn(waiting, 1, "第 1 版方案测试失败", T0 + 5 * H) is False
    assert A.start_vendor_support.fn(waiting, 2, "第 2 版方案部分恢复", T0 + 6 * H) is True
    assert [e.data["attempt"] for e in _events(waiting, "vendor_support_started")] == [1, 2]


def test_a_plan_being_carried_out_when_the_window_closes_needs_no_vendor(demo):
    executing = _open(tolerance_hours=2)
    A.set_stage.fn(executing, "executing", T0 + H)  # plan v1 approved and accepted within the window
    assert A.send_due_vendor_support(T0 + 30 * H) == 0
    assert _events(executing, "vendor_support_started") == []
    # the plan failed after the window: the flow itself brings in the vendor (§3 step 5)
    A.record_execution.fn(executing, 1, "failed", "切换失败", "张技术", T0 + 31 * H)
    assert A.send_due_vendor_support(T0 + 31 * H) == 1


# procedures whose events stay in cases of their own kind (never in a repair's or an accident's history)
OWN_CASE_PROCEDURES = {"inspection", "drill", "renewal", "assurance", "survey"}


def _recorded_kinds() -> set[str]:
    """Every event kind the procedures can write into a case that an accident's history may carry
    (its own and a handed-over repair's), read from the `record(...)` / `append_event(...)` calls of
    flows/ and tasks/ (OWN_CASE_PROCEDURES' events stay in their own cases)."""
    import re
    from pathlib import Path

    from models.approvals import ApprovalKind
    from rules.renewal import Outreach

    root = Path(__file__).resolve().parent.parent
    call = re.compile(
        r"(?:append_event|\brecord|add_opened_case)\(\s*(?:session,\s*)?[\w.]+,(?:\s*#[^\n]*)?\s*"
        r'((?:f?"[^"\n]*"(?:\s+if\s+[^,\n]+?\s+else\s+)?)+)'
    )
    # the kinds built with f-strings: approvals by their kind, signed reports by theirs (flows.steps)
    built = {
        "{kind}_requested": [f"{k}_requested" for k in ApprovalKind],
        "{row.kind}_requested": [f"{k}_requested" for k in ApprovalKind],
        "{row.kind}_decided": [f"{k}_decided" for k in ApprovalKind],
        "{kind}_signed": ["service_report_signed", "accident_report_signed", "complaint_reply_signed"],
        "{kind}_objected": ["service_report_objected", "accident_report_objected"],
        "renewal_{due.kind}": [f"renewal_{k}" for k in Outreach],  # tasks.renewal's outreach
    }
    # the kinds a shared step records are handed to it as a pair (flows.steps: events=("…", "…"))
    pair = re.compile(r'\bevents(?::[^=\n]*)?=\s*\(\s*"([^"]+)",\s*"([^"]+)"\s*\)')
    kinds: set[str] = set()
    for path in [*(root / "flows").glob("*.py"), *(root / "tasks").glob("*.py")]:
        if path.stem in OWN_CASE_PROCEDURES:
            continue
        for match in pair.finditer(path.read_text(encoding="utf-8")):
            kinds.update(match.groups())
        for match in call.finditer(path.read_text(encoding="utf-8")):
            literals = re.sub(r"\s+if\s+[^,\n]+?\s+else\s+", " ", match.group(1))
            for f, literal in re.findall(r'(f?)"([^"]*)"', literals):
                assert not f or literal in built, f'{path.name}: new built event kind f"{literal}"'
                kinds.update(built[literal] if f else [literal])
    return kinds


def test_every_event_kind_has_a_chinese_history_text():
    kinds = _recorded_kinds()
    assert {
        "opened",
        "remote_diagnosis",
        "plan_signed",
        "clock.breach",
        "gm_signed_off",
        "form_decided",
    } <= kinds
    assert sorted(kinds - set(A.EVENT_TEXT_ZH)) == []
    for kind in kinds:  # with or without its data, never the raw kind
        for data in (
            {},
            {"version": 2, "clock": "restore", "kind": "service_report", "decision": "approved"},
        ):
            text = A.event_text(kind, data)
            assert text and not re.search(r"[A-Za-z_]{3,}", text), (kind, text)
    assert A.event_text("some_future_step", {"x": 1}) == A.EVENT_TEXT_FALLBACK_ZH


def test_a_handed_over_repair_history_reads_as_chinese_in_the_accident_report(demo):
    from models import CaseKind, append_event
    from tasks.cases import RepairRequest, open_case

    with session_scope() as s:
        repair = open_case(
            s,
            RepairRequest(
                customer="BJYH",
                site="亦庄机房",
                reported_by="客户 王五",
                description="存储阵列告警，性能下降",
                severity=2,
                reported_at=T0,
            ),
            kind=CaseKind.REPAIR,
            now=T0,
        )
        append_event(
            s,
            repair.id,
            "remote_diagnosis",
            at=T0 + H,
            actor="张技术",
            key="remote",
            data={"result": "控制器 B 故障", "solved": False},
        )
        append_event(
            s,
            repair.id,
            "plan_approved",
            at=T0 + 2 * H,
            actor="吴总监",
            key="approved",
            data={"version": 1, "step": "plan-approval", "comment": ""},
        )
        append_event(
            s, repair.id, "clock.breach", at=T0 + 4 * H, key="breach", data={"clock": "restore", "level": 0}
        )
        repair_id = repair.id
    case_id = A.open_accident.fn(
        A.AccidentRequest(parent_case_id=repair_id, handover_reason="维修无法完成"),
        T0 + 5 * H,
        "run-handover",
    )
    with session_scope() as s:
        history = [line["text"] for line in A.accident_history(s, case_id)]
    assert history[:4] == [
        "[维修单] 工单受理（热线，2 级）",
        "[维修单] 远程诊断：控制器 B 故障",
        "[维修单] 技术总监批准方案第 1 版",
        "[维修单] 恢复服务超时未完成",
    ]
    assert "由维修单 WX-000001 转入事故处理" in history
