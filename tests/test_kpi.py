"""KPIs on demand from a real database (tasks/kpi.py) and `aftercare kpi` (issue 24).

The clocks are run by tasks.clocks itself, so the events the KPIs fold are the ones the flows write.
At 北京某银行数据中心 (7x24), local times (UTC+8):
  r1  repair, storage, reported Oct 31 22:00, restore clock paused 22:30–23:30 while the customer
      was away, restored Nov 1 02:00 (4 h; the clock ran 3 h, its 4 h deadline moved on by the pause:
      met); callback 优 / 良.
  r2  repair, server, reported Nov 10 08:00, handed over at 09:00 to accident a3 (r2's clock closes,
      not breached), a3 restored 14:00: one fault of 6 h, restore clock 5 h against 4 h: breached.
  c4  complaint Nov 12 09:00, answered at 10:00 (2 h allowed): met.
October: 1 fault, 2 h down of 744 h; November: 1 fault, 2 + 6 h down of 720 h.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

CST = timedelta(hours=8)


def _at(m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, m, d, hh, mm, tzinfo=UTC) - CST


@pytest.fixture
def log(demo: str, session: Session) -> dict:
    from models import Case, Contract, Customer, Device, Staff
    from models.cases import CaseStatus, append_event
    from tasks.cases import set_status
    from tasks.clocks import pause_clock, resume_clock, start_clock, stop_clock

    customer = session.exec(select(Customer).where(Customer.code == "BJYH")).one()
    contract = session.exec(select(Contract).where(Contract.customer_id == customer.id)).one()
    devices = {
        d.device_class: d for d in session.exec(select(Device).where(Device.customer_id == customer.id))
    }
    engineers = [s for s in session.exec(select(Staff)) if "engineer" in s.roles]
    zhang = engineers[0]

    def case(kind: str, reported: datetime, severity: int | None, device: str | None, **kw) -> int:
        row = Case(
            kind=kind,
            customer_id=int(customer.id or 0),
            contract_id=contract.id,
            device_id=devices[device].id if device else None,
            site_id=devices[device].site_id if device else None,
            severity=severity,
            reported_at=reported,
            created_at=reported,
            updated_at=reported,
            data={"team": {"engineer": zhang.id}},
            **kw,
        )
        session.add(row)
        session.flush()
        return int(row.id or 0)

    r1 = case("repair", _at(10, 31, 22), 2, "storage")
    start_clock(session, r1, "restore", started_at=_at(10, 31, 22), severity=2)
    pause_clock(session, r1, "restore", at=_at(10, 31, 22, 30), reason="客户不在现场")
    resume_clock(session, r1, "restore", at=_at(10, 31, 23, 30))
    append_event(session, r1, "restored", at=_at(11, 1, 2))
    stop_clock(session, r1, "restore", at=_at(11, 1, 2))
    append_event(
        session,
        r1,
        "callback_done",
        at=_at(11, 3, 10),
        data={"scores": {"response": "优", "overall": "良"}},
    )

    r2 = case("repair", _at(11, 10, 8), 1, "server")
    start_clock(session, r2, "restore", started_at=_at(11, 10, 8), severity=1)
    a3 = case("accident", _at(11, 10, 9), 1, "server", parent_id=r2)
    append_event(session, r2, "handed_over_to_accident", at=_at(11, 10, 9), data={"accident_id": a3})
    set_status(session, r2, CaseStatus.HANDED_OVER, at=_at(11, 10, 9))
    start_clock(session, a3, "restore", started_at=_at(11, 10, 9), severity=1)
    append_event(session, a3, "service_restored", at=_at(11, 10, 14))
    stop_clock(session, a3, "restore", at=_at(11, 10, 14))

    c4 = case("complaint", _at(11, 12, 9), None, None)
    start_clock(session, c4, "complaint_answer", started_at=_at(11, 12, 9), severity=3)
    stop_clock(session, c4, "complaint_answer", at=_at(11, 12, 10))
    session.commit()
    return {"customer": customer, "engineer": zhang.name, "r1": r1, "a3": a3}


def test_kpis_of_a_customer_from_the_clocks_and_events_the_system_wrote(log: dict, session: Session):
    from tasks.kpi import kpi_rows

    facts, [row] = kpi_rows(session, "BJYH", first=date(2026, 10, 1), last=date(2026, 11, 30))
    k = row.kpis
    assert k.faults == 2 and k.restored == 2
    assert k.mttr_hours == 5.0 and k.mttr_max == 6.0  # (4 + 6) / 2, the hand-over from r2's report
    restore = {c.kind: c for c in k.clocks}["restore"]
    assert (restore.count, restore.met, restore.breached) == (3, 1, 1)  # r2's closed clock: neither
    assert restore.mean_minutes == pytest.approx((180 + 300) / 2)
    assert k.ftf == 1 and k.ftf_eligible == 2  # the handed-over fault was not fixed the first time
    assert k.outage_hours == 10 and k.uptime == pytest.approx(1 - 10 / 1464)
    assert k.complaints == 1 and [(c.kind, c.met) for c in k.complaint_clocks] == [("complaint_answer", 1)]
    assert k.scores["response"]["优"] == 1 and k.score_mean == 3.5
    # monthly inspections of the 7x24 contract: October and November due, none done
    assert (k.inspections_due, k.inspections_done) == (2, 0)
    assert k.complaint_rate == pytest.approx(100 / 4)

    _, months = kpi_rows(
        session, "北京某银行数据中心", first=date(2026, 10, 1), last=date(2026, 11, 30), by="month"
    )
    by_month = {r.group: r.kpis for r in months}
    assert by_month["2026-10"].faults == 1 and by_month["2026-10"].outage_hours == 2
    assert by_month["2026-11"].faults == 1 and by_month["2026-11"].outage_hours == 8
    assert by_month["2026-11"].uptime == pytest.approx(1 - 8 / 720)

    _, devices = kpi_rows(
        session, "BJYH", first=date(2026, 10, 1), last=date(2026, 11, 30), by="device_class"
    )
    assert {r.group: r.kpis.faults for r in devices} == {"存储": 1, "服务器": 1, "（未注明）": 0}


def _cli(*args: str):
    from deployments.cli import app

    return CliRunner().invoke(app, ["kpi", *args])


def test_aftercare_kpi_prints_a_table_csv_and_json(log: dict):
    base = ["--customer", "BJYH", "--from", "2026-10-01", "--to", "2026-11-30"]
    table = _cli(*base)
    assert table.exit_code == 0, table.output
    assert "北京某银行数据中心 服务指标" in table.output and "平均修复时间(小时)" in table.output
    assert "达标率·恢复服务" in table.output and "99.32%" in table.output  # 1 − 10/1464

    csv = _cli(*base, "--by", "month", "--format", "csv")
    assert csv.exit_code == 0, csv.output
    lines = csv.output.strip().splitlines()
    assert lines[0].startswith("月份,故障数,已恢复,平均修复时间(小时)")
    assert lines[1].startswith("2026-10,1,1,4,") and lines[2].startswith("2026-11,1,1,6,")

    out = _cli(*base, "--by", "engineer", "--format", "json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["customer"]["code"] == "BJYH" and doc["labels"]["ftf_rate"] == "一次修复率"
    rows = {r["group"]: r for r in doc["rows"]}
    assert rows[log["engineer"]]["faults"] == 2 and rows[log["engineer"]]["uptime"] is None
    assert rows["（未注明）"]["inspections"] == "0/2"  # inspections not yet planned have no engineer


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--customer", "BJYH", "--from", "2026-13-01", "--to", "2026-11-30"],
            "--from 日期格式应为 YYYY-MM-DD",
        ),
        (
            ["--customer", "BJYH", "--from", "2026-11-30", "--to", "2026-11-01"],
            "结束日期 2026-11-01 早于开始日期",
        ),
        (["--customer", "无此客户", "--from", "2026-11-01", "--to", "2026-11-30"], "没有客户「无此客户」"),
        (
            ["--customer", "BJYH", "--from", "2026-11-01", "--to", "2026-11-30", "--by", "weather"],
            "未知的分组",
        ),
        (
            ["--customer", "BJYH", "--from", "2026-11-01", "--to", "2026-11-30", "--format", "xls"],
            "未知的输出格式",
        ),
    ],
)
def test_aftercare_kpi_explains_a_bad_option(demo: str, args: list[str], message: str):
    result = _cli(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_drills_done_against_the_periods_the_contract_calls_for(demo: str, session: Session):
    from models import Case, Contract, Customer
    from models.cases import append_event
    from tasks.kpi import kpi_rows

    customer = session.exec(select(Customer).where(Customer.code == "BJYH")).one()
    contract = session.exec(select(Contract).where(Contract.customer_id == customer.id)).one()
    drill = Case(
        kind="drill",
        customer_id=int(customer.id or 0),
        contract_id=contract.id,
        period="2026-H1",
        status="registered",
        reported_at=_at(5, 1, 9),
        created_at=_at(5, 1, 9),
        updated_at=_at(6, 2, 9),
    )
    session.add(drill)
    session.flush()
    append_event(session, int(drill.id or 0), "drill_started", at=_at(5, 20, 9), key="started")
    session.commit()
    # twice a year by default: H1 (due Jun 30) done on May 20; H2 (due Dec 31) not done yet
    _, [row] = kpi_rows(session, "BJYH", first=date(2026, 1, 1), last=date(2026, 12, 31))
    assert (row.kpis.drills_due, row.kpis.drills_done) == (2, 1)
    _, [first_half] = kpi_rows(session, "BJYH", first=date(2026, 1, 1), last=date(2026, 6, 30))
    assert (first_half.kpis.drills_due, first_half.kpis.drills_done) == (1, 1)


def test_drill_objectives_met_of_the_drills_evaluated(demo: str, session: Session):
    from models import Case, Contract, Customer
    from models.cases import append_event
    from rules.performance import flat
    from tasks.kpi import kpi_rows

    customer = session.exec(select(Customer).where(Customer.code == "BJYH")).one()
    contract = session.exec(select(Contract).where(Contract.customer_id == customer.id)).one()
    # H1: RTO, RPO met, every step done; H2: the data lost went past the RPO; Q3 of none: not evaluated
    for period, month, figures in (
        ("2026-H1", 5, {"rto_met": True, "rpo_met": True, "completed": True}),
        ("2026-H2", 9, {"rto_met": True, "rpo_met": False, "completed": True}),
    ):
        drill = Case(
            kind="drill",
            customer_id=int(customer.id or 0),
            contract_id=contract.id,
            period=period,
            status="registered",
            reported_at=_at(month, 1, 9),
            created_at=_at(month, 1, 9),
            updated_at=_at(month, 2, 9),
        )
        session.add(drill)
        session.flush()
        append_event(session, int(drill.id or 0), "drill_started", at=_at(month, 20, 9), key="started")
        append_event(
            session,
            int(drill.id or 0),
            "drill_evaluated",
            at=_at(month, 21, 9),
            key="evaluated",
            data=figures,
        )
    session.commit()

    _, [year] = kpi_rows(session, "BJYH", first=date(2026, 1, 1), last=date(2026, 12, 31))
    assert (year.kpis.drills_done, year.kpis.drills_evaluated, year.kpis.drills_objectives_met) == (2, 2, 1)
    assert flat(year.kpis)["drills_objectives_met"] == "1/2"
    _, [first_half] = kpi_rows(session, "BJYH", first=date(2026, 1, 1), last=date(2026, 6, 30))
    assert flat(first_half.kpis)["drills_objectives_met"] == "1/1"


def test_renewal_outcomes_of_the_terms_ending_in_the_period(demo: str, session: Session):
    from models import Case, Contract, Customer
    from models.cases import append_event
    from tasks.kpi import kpi_rows

    customer = session.exec(select(Customer).where(Customer.code == "BJYH")).one()
    contract = session.exec(select(Contract).where(Contract.customer_id == customer.id)).one()

    def renewal(end: str, event: str | None, **data: str) -> None:
        case = Case(
            kind="renewal",
            customer_id=int(customer.id or 0),
            contract_id=contract.id,
            period=f"renewal:{end}",
            reported_at=_at(9, 1, 9),
            created_at=_at(9, 1, 9),
            updated_at=_at(9, 1, 9),
            data={"contract_end": end},
        )
        session.add(case)
        session.flush()
        if event:
            append_event(session, int(case.id or 0), event, at=_at(10, 20, 9), data=data)

    renewal("2026-10-31", "renewal_closed", outcome="renewed")
    renewal("2026-11-15", "contract_lapsed")
    renewal("2026-11-30", None)
    renewal("2027-03-31", "renewal_closed", outcome="ended")  # a term ending after the period
    session.commit()
    _, [row] = kpi_rows(session, "BJYH", first=date(2026, 10, 1), last=date(2026, 11, 30))
    assert row.kpis.renewals == {"renewed": 1, "lapsed": 1, "pending": 1}
    _, [later] = kpi_rows(session, "BJYH", first=date(2027, 1, 1), last=date(2027, 6, 30))
    assert later.kpis.renewals == {"ended": 1}


def test_every_customer_in_one_pass_gives_each_the_figures_asked_one_by_one(log: dict, session: Session):
    from tasks.kpi import all_customers, kpi_rows

    rows = {r.group: r.kpis for r in all_customers(session, first=date(2026, 10, 1), last=date(2026, 11, 30))}
    _, [one] = kpi_rows(session, "BJYH", first=date(2026, 10, 1), last=date(2026, 11, 30))
    bulk = rows["北京某银行数据中心"]
    assert (bulk.faults, bulk.mttr_hours, bulk.uptime, bulk.ftf, bulk.complaints) == (
        one.kpis.faults,
        one.kpis.mttr_hours,
        one.kpis.uptime,
        one.kpis.ftf,
        one.kpis.complaints,
    )
    assert bulk.inspections_due == one.kpis.inspections_due == 2
    # 石家庄's quarterly inspection falls due on Dec 31 and 太原's contract ended: nothing to count
    assert set(rows) == {"北京某银行数据中心"}
