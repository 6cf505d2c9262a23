"""The Prefect-UI run form `drill` (issue 19 item 2): Chinese, typed (customers and kinds of drill as
choices), what it sends validated by Prefect's own validator and taken by the flow's model."""

from __future__ import annotations

from datetime import date

import pytest
from prefect.utilities.schema_tools import validate

from rules.drill import DRILL_KINDS_ZH
from tasks.drill import DrillRequest
from tests.test_run_forms import (
    CUSTOMERS,
    form_of,
    schema_of,
)
from tests.test_run_forms import (
    test_every_field_of_the_run_forms_speaks_chinese_and_none_is_a_type_toggle as speaks_chinese,
)


def test_the_drill_form_speaks_chinese_and_offers_customers_and_kinds(demo: str) -> None:
    speaks_chinese(demo, "drill")
    form = form_of("drill")
    assert form["title"] == "应急演练 / emergency drill"
    fields = form["properties"]
    assert fields["customer"]["enum"] == CUSTOMERS
    assert fields["kind"]["enum"] == list(DRILL_KINDS_ZH.values())
    assert fields["day_off_ok"]["enum"] == ["否", "是"]
    assert set(form["required"]) == {"customer", "system", "kind", "wished_day"}


def test_what_the_drill_form_sends_is_taken_and_what_it_does_not_offer_is_refused(demo: str) -> None:
    schema = schema_of("drill")
    sent = {
        "customer": CUSTOMERS[0],
        "system": "核心业务系统",
        "kind": "数据恢复演练",
        "wished_day": "2026-12-19",
        "day_off_ok": "是",
        "requested_by": "",
    }
    assert validate({"request": sent}, schema, raise_on_error=False) == []
    taken = DrillRequest.model_validate(sent)
    assert (taken.kind, taken.wished_day, taken.day_off_ok, taken.customer) == (
        "restore",
        date(2026, 12, 19),
        True,
        CUSTOMERS[0],
    )
    assert validate({"request": {**sent, "kind": "随便演练"}}, schema, raise_on_error=False)
    assert validate({"request": {**sent, "customer": "不存在的客户"}}, schema, raise_on_error=False)
    with pytest.raises(ValueError, match="未知的演练类型"):
        DrillRequest.model_validate({**sent, "kind": "随便演练"})


@pytest.mark.parametrize("typed", ["2026-13-45", "2026-02-30", "下周六"])
def test_a_wished_day_that_does_not_exist_is_refused_in_chinese(typed: str) -> None:
    """The run form takes any text of 10–20 characters; a day that does not exist failed the run with
    pydantic's English "month value is outside expected range of 1-12" as its state message."""
    with pytest.raises(ValueError, match=f"无法识别的期望演练日期“{typed}”，请写成 2026-12-19"):
        DrillRequest.model_validate(
            {"customer": "BJYH", "system": "核心业务系统", "kind": "failover", "wished_day": typed}
        )
    assert DrillRequest.model_validate({"kind": "failover", "wished_day": " 2026-12-19 "}).wished_day == date(
        2026, 12, 19
    )
