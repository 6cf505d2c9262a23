"""`aftercare drill plans` (every version of a recovery plan, shown), `aftercare drill cancel` (the
centre cancels a drill with a reason; both sides told) and `aftercare drill training-done`, as a user
runs them: clear refusals, no tracebacks."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

from sqlmodel import select

from tests.test_cli import clean_env, free_port, run_cli


def test_recovery_plan_versions_are_listed_a_drill_cancelled_and_a_training_recorded_on_the_command_line(
    tmp_path: Path,
) -> None:
    from models import Case, Customer
    from models.db import session_scope
    from models.drill import RecoveryPlan, TrainingTask
    from models.outbox import Notification
    from tasks.drill import plan_drills

    env = clean_env(tmp_path, AFTERCARE_PREFECT_PORT=str(free_port()))  # nothing listens there
    assert run_cli(["seed"], env).returncode == 0
    url = f"sqlite:///{tmp_path / 'aftercare.db'}"
    now = datetime(2026, 11, 23, 2, tzinfo=UTC)
    with session_scope(url) as s:
        customer = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        for version, reason, approved in (
            (1, "", "吴总监"),
            (2, "YL-000001 演练发现的差距：切换脚本需手工确认", None),
        ):
            s.add(
                RecoveryPlan(
                    customer_id=customer.id,
                    system="核心业务系统",
                    version=version,
                    scope="核心数据库故障",
                    devices="核心数据库主备两台",
                    rto_minutes=60 - 15 * (version - 1),
                    rpo_minutes=5,
                    steps=[{"position": 1, "action": "切换到备库", "owner": "刘工程师", "minutes": 30}],
                    contacts="张技术 13800000003",
                    reason=reason,
                    created_by="张技术",
                    created_at=now,
                    approved_by=approved,
                    approved_at=now if approved else None,
                )
            )
    listed = run_cli(["drill", "plans", "BJYH"], env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "== 核心业务系统 v1（吴总监 于 2026-11-23 10:00 批准；编写 张技术）==" in listed.stdout
    assert "== 核心业务系统 v2（待批准；编写 张技术）==" in listed.stdout
    assert (
        "RTO 60 分钟" in listed.stdout
        and "RTO 45 分钟" in listed.stdout
        and "切换脚本需手工确认" in listed.stdout
    )
    unknown = run_cli(["drill", "plans", "NOPE"], env)
    assert unknown.returncode == 2 and "未知客户" in unknown.stderr and "Traceback" not in unknown.stderr

    created = plan_drills(now, url=url)  # the planner's drills of this half year (no run: no Prefect here)
    assert created
    with session_scope(url) as s:
        number = s.get(Case, created[0]).number  # type: ignore[union-attr]
    assert re.fullmatch(r"YL-\d{6}", number)
    no_reason = run_cli(["drill", "cancel", number, "--reason", " "], env)
    assert no_reason.returncode == 2 and "请填写取消原因" in no_reason.stderr
    bad = run_cli(["drill", "cancel", "XJ-1", "--reason", "x"], env)
    assert bad.returncode == 2 and "演练单号应如 YL-000123" in bad.stderr and "Traceback" not in bad.stderr
    cancelled = run_cli(
        ["drill", "cancel", number, "--reason", "客户系统迁移，本期不演练", "--by", "李调度"], env
    )
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert (
        f"{number} 已取消：客户系统迁移，本期不演练" in cancelled.stdout
        and "尚未启动流程" in cancelled.stdout
    )
    with session_scope(url) as s:
        case = s.get(Case, created[0])
        assert (
            case is not None
            and case.status == "cancelled"
            and case.data["cancel_reason"] == "客户系统迁移，本期不演练"
        )
        told = {
            n.recipient_name
            for n in s.exec(
                select(Notification).where(
                    Notification.case_id == case.id, Notification.template == "drill/cancelled"
                )
            )
        }
    assert {"王值班", "张技术", "刘工程师", "吴总监"} <= told and len(told) == 5  # and the customer's contact

    # a training task of another drill, recorded as held (`aftercare drill training-done`)
    with session_scope(url) as s:
        other = s.get(Case, created[1])
        assert other is not None
        task = TrainingTask(
            case_id=other.id,
            customer_id=other.customer_id,
            system="核心业务系统",
            topic="备份恢复操作",
            due_on=date(2027, 1, 15),
            created_at=now,
        )
        s.add(task)
        s.flush()
        task_id = task.id
    missing = run_cli(["drill", "training-done", "999", "--by", "张技术"], env)
    assert (
        missing.returncode == 2
        and "培训任务 999 不存在" in missing.stderr
        and "Traceback" not in missing.stderr
    )
    done = run_cli(["drill", "training-done", str(task_id), "--by", "张技术"], env)
    assert done.returncode == 0 and "已登记完成" in done.stdout, done.stdout + done.stderr
    with session_scope(url) as s:
        row = s.get(TrainingTask, task_id)
        assert row is not None and row.done_by == "张技术" and row.done_at is not None
