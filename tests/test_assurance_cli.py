"""`aftercare assurance new` (a request checked before any run starts; Prefect down said plainly) and
`aftercare assurance cancel` (an agreed assurance called off: no longer in force, everyone told), as a
user runs them: clear refusals, no tracebacks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import select

from tests.test_cli import clean_env, free_port, run_cli


def test_an_assurance_is_requested_and_an_agreed_one_cancelled_on_the_command_line(tmp_path: Path) -> None:
    from models import Case, Customer
    from models.db import session_scope
    from models.outbox import Notification

    env = clean_env(tmp_path, AFTERCARE_PREFECT_PORT=str(free_port()))  # nothing listens there
    assert run_cli(["seed"], env).returncode == 0
    url = f"sqlite:///{tmp_path / 'aftercare.db'}"

    new = ["assurance", "new", "--customer", "BJYH", "--requested-by", "王先生 13900000000"]
    no_event = run_cli([*new, "--event", "", "--starts", "2027-06-01", "--ends", "2027-06-03"], env)
    assert no_event.returncode == 2 and "保障事由" in no_event.stderr and "Traceback" not in no_event.stderr
    # a day that does not exist is named before anything starts (it was told "is Prefect running?")
    no_day = run_cli([*new, "--event", "年中结算保障", "--starts", "2027-06-31", "--ends", "2027-07-03"], env)
    assert no_day.returncode == 2 and "无法识别的时间“2027-06-31”" in no_day.stderr, no_day.stderr
    backwards = run_cli(
        [*new, "--event", "年中结算保障", "--starts", "2027-06-05", "--ends", "2027-06-03"], env
    )
    assert backwards.returncode == 2 and "保障结束时间须晚于开始时间" in backwards.stderr
    down = run_cli([*new, "--event", "年中结算保障", "--starts", "2027-06-01", "--ends", "2027-06-03"], env)
    assert down.returncode != 0 and "无法启动保障流程" in down.stderr and "Traceback" not in down.stderr

    now = datetime(2026, 11, 23, 2, tzinfo=UTC)
    with session_scope(url) as s:
        customer = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        case = Case(
            kind="assurance",
            customer_id=customer.id,  # type: ignore[arg-type]
            severity=4,
            status="open",
            title="重要通信保障：年终结算保障",
            reported_by="王先生",
            reported_at=now,
            data={
                "event": "年终结算保障",
                "period_start": "2030-12-19T16:00:00+00:00",
                "period_end": "2030-12-27T16:00:00+00:00",
                "onsite": True,
                "in_force": True,  # agreed: the plan approved and signed
            },
            created_at=now,
            updated_at=now,
        )
        s.add(case)
        s.flush()
        case_id, number = case.id, case.number
    assert number.startswith("BZ-")

    no_reason = run_cli(["assurance", "cancel", number, "--reason", " "], env)
    assert no_reason.returncode == 2 and "请填写取消原因" in no_reason.stderr
    bad = run_cli(["assurance", "cancel", "YL-1", "--reason", "x"], env)
    assert bad.returncode == 2 and "保障单号应如 BZ-000012" in bad.stderr and "Traceback" not in bad.stderr
    done = run_cli(["assurance", "cancel", number, "--reason", "结算改期", "--by", "王先生（电话）"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{number} 已取消：结算改期" in done.stdout and "尚未启动流程" in done.stdout
    again = run_cli(["assurance", "cancel", number, "--reason", "结算改期"], env)
    assert again.returncode == 0 and "已是取消状态" in again.stdout
    with session_scope(url) as s:
        row = s.get(Case, case_id)
        assert row is not None and row.status == "cancelled" and row.data["in_force"] is False
        told = {
            n.recipient_name
            for n in s.exec(
                select(Notification).where(
                    Notification.case_id == case_id, Notification.template == "assurance/cancelled"
                )
            )
        }
    assert {"王值班", "张技术", "郑协调", "刘工程师"} <= told and len(told) == 5  # and the customer's contact
