"""The renewal end to end on a real Prefect server and runner (tests/fixtures/prefect.py): the daily
`plan-renewals` flow opens the renewal of a contract ending 60 days from today and starts its run;
the quote, the manager's approval and the customer's answer are posted on the pages their links
open; the keeper fires the new term's start. The branches are in tests/test_renewal_branches.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pendulum
from sqlmodel import select

from models import Case, Contact, Contract, ContractVersion, Customer, Staff
from models.db import session_scope
from tests.test_accident_flow import Driver

H = timedelta(hours=1)


def test_plan_renewals_opens_the_renewal_and_the_customer_renews_through_the_links(harness: Any) -> None:
    now = pendulum.now("Asia/Shanghai")
    end = now.add(days=60).date()  # due today whatever day this is: opened on or before end - 60
    code = f"XFE{now.format('HHmmss')}"
    with session_scope() as s:
        manager = s.exec(select(Staff).where(Staff.name == "沈经理")).one()
        customer = Customer(code=code, name=f"续约测试客户{code}", created_at=now)
        s.add(customer)
        s.flush()
        s.add(
            Contact(
                customer_id=customer.id,  # type: ignore[arg-type]
                name=f"续约联系人{code}",
                is_primary=True,
                notify_urls=[f"log://contact/{code}"],
            )
        )
        s.add(
            Contract(
                code=f"HT-{code}",
                customer_id=customer.id,  # type: ignore[arg-type]
                start_date=now.subtract(days=300).date(),
                end_date=end,
                fee=200000,
                account_manager_id=manager.id,
                created_at=now,
            )
        )
    planner = harness.run("plan-renewals/plan-renewals", {}, idempotency_key=f"plan-renewals-{code}")
    harness.wait(planner, "Completed", timeout=90)
    with session_scope() as s:
        contract = s.exec(select(Contract).where(Contract.code == f"HT-{code}")).one()
        case = s.exec(select(Case).where(Case.contract_id == contract.id, Case.kind == "renewal")).one()
        assert case.flow_run_id and case.period == f"renewal:{end.isoformat()}"
        run_id = case.flow_run_id
    d = Driver(harness, run_id)
    at = datetime.fromisoformat(now.in_timezone("UTC").isoformat())
    start = end + timedelta(days=1)
    quote = {
        "scope": "全部服务器与存储",
        "sla_level": "标准",
        "service_hours": "5x8",
        "inspection_frequency": "每季度",
        "start_date": start.isoformat(),
        "end_date": (start + timedelta(days=364)).isoformat(),
        "fee": "210000",
    }
    d.act("renewal-quote-v1", 1, "submitted", by="沈经理", at=at + 0.1 * H, fields=quote)
    d.act("quote-approval", 1, "approved", by="高经理", at=at + 0.2 * H)
    d.act(
        "renewal-answer-v1",
        1,
        "submitted",
        by=f"续约联系人{code}",
        at=at + 0.3 * H,
        fields={"choice": "续约"},
    )
    d.wait_for(lambda s: s.exec(select(ContractVersion).where(ContractVersion.case_id == d.case_id)).first())
    # the keeper fires the new term's first day; the contract then carries the new terms
    first = pendulum.datetime(start.year, start.month, start.day, tz="Asia/Shanghai").in_timezone("UTC")
    d.web.tick(datetime.fromisoformat(first.isoformat()) + timedelta(minutes=1))
    harness.wait(run_id, "Completed", timeout=90)
    with session_scope() as s:
        contract = s.exec(select(Contract).where(Contract.code == f"HT-{code}")).one()
        assert (contract.start_date, contract.service_hours) == (start, "5x8")
        assert s.get(Case, d.case_id).status == "closed"  # type: ignore[union-attr]
    assert d.events().count("renewed") == 1
