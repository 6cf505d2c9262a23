"""The annual survey end to end on a real Prefect server and runner (tests/fixtures/prefect.py): the
daily `plan-surveys` flow opens this year's survey of a customer whose contract asks for this month
and starts its run; the customer's scorecard and the account manager's follow-up are posted on the
pages their links open. The branches are in tests/test_survey.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pendulum
from sqlmodel import select

from models import Case, Contact, Contract, Customer, Event, Staff
from models.db import session_scope
from tests.test_accident_flow import Driver

H = timedelta(hours=1)


def test_plan_surveys_opens_the_survey_and_a_low_score_reaches_the_account_manager(harness: Any) -> None:
    now = pendulum.now("Asia/Shanghai")
    code = f"MYE{now.format('HHmmss')}"
    contact_name = f"调查联系人{code}"
    with session_scope() as s:
        manager = s.exec(select(Staff).where(Staff.name == "沈经理")).one()
        customer = Customer(code=code, name=f"调查测试客户{code}", created_at=now)
        s.add(customer)
        s.flush()
        s.add(
            Contact(
                customer_id=customer.id,  # type: ignore[arg-type]
                name=contact_name,
                is_primary=True,
                notify_urls=[f"log://contact/{code}"],
            )
        )
        s.add(
            Contract(
                code=f"HT-{code}",
                customer_id=customer.id,  # type: ignore[arg-type]
                start_date=now.subtract(days=200).date(),
                end_date=now.add(days=200).date(),
                fee=100000,
                account_manager_id=manager.id,
                sla_policy={"survey": {"month": now.month}},  # surveyed this month, whatever month it is
                created_at=now,
            )
        )
    planner = harness.run("plan-surveys/plan-surveys", {}, idempotency_key=f"plan-surveys-{code}")
    harness.wait(planner, "Completed", timeout=90)
    with session_scope() as s:
        contract = s.exec(select(Contract).where(Contract.code == f"HT-{code}")).one()
        case = s.exec(select(Case).where(Case.contract_id == contract.id, Case.kind == "survey")).one()
        assert case.flow_run_id and case.period == str(now.year)
        run_id = case.flow_run_id
    d = Driver(harness, run_id)
    at = datetime.fromisoformat(now.in_timezone("UTC").isoformat())
    scores = {
        "person": "调查填表人",
        "inspection": "优",
        "repair": "良",
        "uptime": "优",
        "skill": "中",
        "overall": "良",
    }
    d.act("survey", 1, "submitted", by=contact_name, at=at + 0.1 * H, fields=scores)
    d.act(
        "survey-follow-up",
        1,
        "submitted",
        by="沈经理",
        at=at + 0.2 * H,
        fields={"contacted": "调查填表人", "findings": "希望工程师更熟悉存储", "actions": "安排存储专项培训"},
    )
    harness.wait(run_id, "Completed", timeout=90)
    with session_scope() as s:
        assert s.get(Case, d.case_id).status == "closed"  # type: ignore[union-attr]
        answered = s.exec(
            select(Event).where(Event.case_id == d.case_id, Event.kind == "survey_answered")
        ).one()
        assert answered.data["scores"]["skill"] == "中"
    assert d.events().count("survey_followed_up") == 1


def test_survey_now_from_the_run_form_opens_the_survey_once_and_starts_its_run(harness: Any) -> None:
    """The dispatcher's run form `survey-now` (schema enforced, as the Prefect UI submits it): the
    customer's survey of the year opened and its `survey` run started, waiting for the scorecard; the
    same request again ends Failed naming the survey. Last year's survey: this year's may already be
    opened by the planner above (the real layer shares its database, and December is BJYH's month)."""
    year = pendulum.now("Asia/Shanghai").year - 1
    form = {"customer": "北京某银行数据中心（BJYH）", "year": str(year), "requested_by": "沈经理"}
    first = harness.run("survey-now/survey-now", {"request": form}, as_form=True)
    harness.wait(first, "Completed", timeout=90)
    with session_scope() as s:
        customer = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        case = s.exec(
            select(Case).where(
                Case.kind == "survey", Case.customer_id == customer.id, Case.period == str(year)
            )
        ).one()
        assert case.flow_run_id and case.reported_by == "沈经理"
        number, survey_run = case.number, case.flow_run_id
    harness.wait(survey_run, "Suspended", timeout=90)  # the scorecard went to the customer's contact
    again = harness.wait(
        harness.run("survey-now/survey-now", {"request": form}, as_form=True), "Failed", timeout=90
    )
    assert number in again.state.message and "Traceback" not in again.state.message
