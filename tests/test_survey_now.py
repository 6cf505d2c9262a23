"""A customer's satisfaction survey opened now by a dispatcher (issue 24 follow-up): the Prefect-UI run
form `survey-now` (Chinese, the customer a choice), its flow on the fast layer — the schedule's own
`open_survey` (once per customer and year, a second refused naming the first) and the `survey` run
started as the schedule starts it; bad input refused with the field's label, never a traceback."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect.utilities.schema_tools import validate
from sqlmodel import select

from flows.survey import survey, survey_now
from models import Case, Contract, Customer
from tasks.survey import open_surveys
from tests.fixtures.fastflow import FastFlow, say
from tests.test_run_forms import CUSTOMERS, form_of, schema_of
from tests.test_run_forms import (
    test_every_field_of_the_run_forms_speaks_chinese_and_none_is_a_type_toggle as speaks_chinese,
)
from tests.test_survey import DEC1, GOOD

JUNE = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)  # 10:00 Asia/Shanghai, far from the December survey month
BJYH = CUSTOMERS[0]


def _surveys(fast: FastFlow) -> list[Case]:
    with fast.session() as s:
        return list(s.exec(select(Case).where(Case.kind == "survey").order_by(Case.id)).all())  # type: ignore[arg-type]


def _refusal(outcome: Any) -> str:
    """A refused request ends the run Failed with its message (a Prefect state, not an exception)."""
    assert outcome.is_failed(), outcome
    return str(outcome.message)


def test_the_survey_form_speaks_chinese_and_offers_the_customers(demo: str) -> None:
    speaks_chinese(demo, "survey-now")  # Chinese titles and descriptions, no anyOf / None toggle
    form = form_of("survey-now")
    assert form["title"] == "满意度调查 / satisfaction survey"
    fields = form["properties"]
    assert fields["customer"]["enum"] == CUSTOMERS
    assert (fields["year"]["type"], fields["year"]["default"]) == ("string", "")
    assert set(form["required"]) == {"customer"}
    schema = schema_of("survey-now")
    sent = {"customer": BJYH, "year": "", "requested_by": "沈经理"}
    assert validate({"request": sent}, schema, raise_on_error=False) == []
    assert validate({"request": {**sent, "customer": "不存在的客户"}}, schema, raise_on_error=False)
    assert validate({"request": {"year": "2026"}}, schema, raise_on_error=False)  # the customer is required


def test_a_survey_asked_for_mid_year_is_opened_once_and_its_run_started(fast: FastFlow) -> None:
    said = fast.run(survey_now, {"customer": BJYH, "year": "", "requested_by": "沈经理"}, at=JUNE, script=[])
    [case] = _surveys(fast)
    assert (case.period, case.channel, case.reported_by, case.data["contract"]) == (
        "2026",  # this year in Asia/Shanghai
        "request",
        "沈经理",
        "HT-2026-BJYH",
    )
    assert case.number in said and fast.events(int(case.id or 0)) == ["survey_opened"]
    # the survey's own run, started the way the schedule starts it (its idempotency key)
    [(deployment, parameters, run_id)] = fast.started
    assert (deployment, parameters, case.flow_run_id) == ("survey/survey", {"case_id": case.id}, run_id)
    answered = fast.run(
        survey, case.id, at=JUNE, run_id=run_id, script=[say("survey", GOOD, at=JUNE + timedelta(days=1))]
    )
    assert answered == "answered"

    # a second request of the same year is refused naming the case; nothing new opened or started
    again = _refusal(
        fast.run(survey_now, {"customer": "BJYH", "year": "2026"}, at=JUNE + timedelta(days=2), script=[])
    )
    assert case.number in again and "已有" in again
    # nor does the schedule open another in the survey month
    assert open_surveys(DEC1, url=fast.db_url)  # 石家庄's survey of the year
    assert [c.id for c in _surveys(fast) if c.customer_id == case.customer_id] == [case.id]
    assert len(fast.started) == 1
    # last year's survey is another matter (a year just ended)
    last_year = fast.run(survey_now, {"customer": BJYH, "year": "2025"}, at=JUNE, script=[])
    assert "MY-" in last_year and sorted(
        c.period for c in _surveys(fast) if c.customer_id == case.customer_id
    ) == [
        "2025",
        "2026",
    ]


def test_once_per_customer_and_year_under_a_renewed_contract_too(fast: FastFlow) -> None:
    fast.run(survey_now, {"customer": BJYH, "year": ""}, at=JUNE, script=[])
    [first] = _surveys(fast)
    with fast.session() as s:  # a longer contract of the same customer now speaks for it
        customer = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        s.add(
            Contract(
                code="HT-2026-BJYH-2",
                customer_id=customer.id,  # type: ignore[arg-type]
                start_date=date(2026, 6, 1),
                end_date=date(2029, 5, 31),
                created_at=JUNE,
            )
        )
        s.commit()
    again = _refusal(fast.run(survey_now, {"customer": BJYH}, at=JUNE + timedelta(days=1), script=[]))
    assert first.number in again and len(_surveys(fast)) == 1


def test_bad_input_is_refused_naming_the_field_and_nothing_is_opened(fast: FastFlow) -> None:
    def refused(values: dict[str, Any]) -> str:
        return _refusal(fast.run(survey_now, values, at=JUNE, script=[]))

    assert "「调查年度」无法识别的年份“26年”" in refused({"customer": BJYH, "year": "26年"})
    assert "「调查年度」不能晚于今年（2026）" in refused({"customer": BJYH, "year": "2027"})
    assert "「调查年度」只能调查今年（2026）或去年（2025）" in refused({"customer": BJYH, "year": "2020"})
    assert "「客户」未知客户：不存在的客户" in refused({"customer": "不存在的客户"})
    assert "「客户」必填" in refused({"customer": " "})
    # 太原's contract lapsed in March: no contract in force, no survey
    assert "太原某大学网络中心 没有有效合同" in refused({"customer": CUSTOMERS[2]})
    assert _surveys(fast) == [] and fast.started == []


def test_survey_new_on_the_command_line_opens_once_and_refuses_clearly(tmp_path: Path) -> None:
    """`aftercare survey new`: the run form's own function — a bad year or an unknown customer named
    in one line (exit 2); the survey opened even when Prefect is down (the daily planner starts its
    run; exit 1 says so); a second request of the year refused naming the first. No traceback."""
    from tests.test_cli import clean_env, free_port, run_cli

    env = clean_env(tmp_path, AFTERCARE_PREFECT_PORT=str(free_port()))  # nothing listens there
    assert run_cli(["seed"], env).returncode == 0
    bad_year = run_cli(["survey", "new", "--customer", "BJYH", "--year", "明年"], env)
    assert bad_year.returncode == 2 and "「调查年度」无法识别的年份“明年”" in bad_year.stderr
    unknown = run_cli(["survey", "new", "--customer", "不存在的客户"], env)
    assert unknown.returncode == 2 and "「客户」未知客户：不存在的客户" in unknown.stderr
    down = run_cli(["survey", "new", "--customer", "BJYH", "--requested-by", "沈经理"], env)
    assert down.returncode == 1 and "调查流程未能启动" in down.stderr, down.stderr
    number = re.search(r"MY-\d{6}", down.stderr)
    assert number is not None
    again = run_cli(["survey", "new", "--customer", "BJYH"], env)
    assert again.returncode == 2 and f"已有：{number.group(0)}" in again.stderr
    for result in (bad_year, unknown, down, again):
        assert "Traceback" not in result.stdout + result.stderr
