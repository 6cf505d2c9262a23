"""The Prefect-UI run forms (issue 18 item 6), in process: the deployments are built the way the
runner serves them, against a real database, and their parameter schema is what the UI draws.

Prefect's own validator (the one its server runs on a form's values) checks what the form sends;
the flow's own model and intake then take those values.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from prefect.utilities.schema_tools import validate

from tests.conftest import T0

HAN = re.compile(r"[\u4e00-\u9fff]")
CUSTOMERS = ["北京某银行数据中心（BJYH）", "石家庄某医院信息中心（SJZY）", "太原某大学网络中心（TYDX）"]
SEVERITIES = [
    "1 特大故障 / 一级（紧急）",
    "2 重大故障 / 二级（严重）",
    "3 严重故障 / 三级",
    "4 一般故障 / 四级",
]


def served(name: str) -> Any:
    """The deployment `name` as the runner builds it now (deployments.registry)."""
    from deployments.registry import all_deployments

    return next(d for d in all_deployments() if d.name == name)


def schema_of(name: str) -> dict[str, Any]:
    return served(name)._parameter_openapi_schema.model_dump()


def form_of(name: str) -> dict[str, Any]:
    schema = schema_of(name)
    ref = schema["properties"]["request"]["$ref"].split("/")[-1]
    return dict(schema["definitions"][ref])


def walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


@pytest.mark.parametrize("name", ["repair", "accident", "extra-inspection", "assurance"])
def test_every_field_of_the_run_forms_speaks_chinese_and_none_is_a_type_toggle(demo: str, name: str) -> None:
    deployment = served(name)
    assert deployment.enforce_parameter_schema  # the UI validates the form before it submits
    schema = schema_of(name)
    # no `X | None`: Prefect draws an anyOf with null as the "Property is type None" toggle
    assert not [n for n in walk(schema) if "anyOf" in n or n.get("type") == "null"]
    form = form_of(name)
    assert HAN.search(form["title"]) and HAN.search(form["description"])
    assert HAN.search(schema["properties"]["request"]["title"])
    for field, spec in form["properties"].items():
        assert HAN.search(spec.get("title", "")), f"{name}.{field} has no Chinese title"
        assert HAN.search(spec.get("description", "")), f"{name}.{field} has no Chinese description"
    # Prefect's "is a required property" cannot be translated: the field says it is required
    for field in form.get("required", []):
        assert form["properties"][field]["description"].startswith("必填"), f"{name}.{field}"
    for field, spec in form["properties"].items():
        if field not in form.get("required", []) and spec.get("default") == "":
            assert "留空" in spec["description"], f"{name}.{field}: what leaving it empty means"


@pytest.mark.parametrize("name", ["repair", "accident", "extra-inspection"])
def test_customers_and_sites_are_choices_of_the_database(demo: str, name: str) -> None:
    form = form_of(name)["properties"]
    offered = [c for c in form["customer"]["enum"] if c]
    assert offered == CUSTOMERS
    assert form["site"]["enum"] == ["", "亦庄机房", "天津灾备机房", "门诊楼机房", "图书馆机房"]
    assert "北京某银行数据中心：亦庄机房、天津灾备机房" in form["site"]["description"]


def test_severity_is_a_labelled_choice(demo: str) -> None:
    repair = form_of("repair")["properties"]["severity"]
    assert (repair["type"], repair["enum"], repair["default"]) == ("string", SEVERITIES, SEVERITIES[2])
    accident = form_of("accident")["properties"]["severity"]
    assert accident["enum"] == ["", *SEVERITIES] and "留空为一级" in accident["description"]
    assert form_of("accident")["properties"]["found_by"]["enum"] == [
        "客户发现",
        "服务中心发现",
        "巡检发现",
        "维修中发现",
    ]


def test_the_choices_are_read_again_when_the_deployments_are_served(demo: str, session: Any) -> None:
    from models import Customer, Site

    customer = Customer(code="GZDX", name="广州某电信机楼", created_at=T0)
    session.add(customer)
    session.flush()
    session.add(
        Site(
            customer_id=customer.id,
            name="天河机房",
            service_point="广州服务站",
            distance_km=10.0,
            same_city=True,
            room_rules="",
        )
    )
    session.commit()
    form = form_of("repair")["properties"]
    assert form["customer"]["enum"][-1] == "广州某电信机楼（GZDX）" and "天河机房" in form["site"]["enum"]


def test_without_a_readable_database_the_fields_are_free_text(aftercare_home: Any) -> None:
    form = form_of("repair")["properties"]  # no migrated database behind AFTERCARE_HOME
    assert "enum" not in form["customer"] and "enum" not in form["site"]
    assert form["severity"]["enum"] == SEVERITIES


def test_what_the_form_sends_is_taken_and_what_it_does_not_offer_is_refused(demo: str, session: Any) -> None:
    from tasks.cases import IntakeError, RepairRequest, resolve_request

    schema = schema_of("repair")
    sent = {
        "customer": CUSTOMERS[0],
        "site": "亦庄机房",
        "device": "",
        "reported_by": "王先生 13800000000",
        "channel": "热线",
        "description": "存储阵列告警",
        "severity": SEVERITIES[1],
        "reported_at": "",
        "parent_case_id": "",
    }
    assert validate({"request": sent}, schema, raise_on_error=False) == []
    request = RepairRequest.model_validate(sent)
    assert (request.severity, request.site, request.device, request.parent_case_id, request.reported_at) == (
        2,
        "亦庄机房",
        None,
        None,
        None,
    )
    resolved = resolve_request(session, request, today=T0)
    assert (resolved.customer.code, resolved.site.name) == ("BJYH", "亦庄机房")
    # a site left empty, a case named by its number
    assert (
        RepairRequest.model_validate({**sent, "site": "", "parent_case_id": "WX-000012"}).parent_case_id == 12
    )

    # what the form does not offer is refused by the server's check before any run exists
    for field, value in (("customer", "不存在的客户"), ("severity", "9 级"), ("severity", 2), ("site", None)):
        errors = validate({"request": {**sent, field: value}}, schema, raise_on_error=False)
        assert errors, f"{field}={value!r} passed the form's schema"
    assert validate({"request": {}}, schema, raise_on_error=False)  # nothing filled in: refused
    # a program's free text still meets intake's own Chinese message
    with pytest.raises(IntakeError, match="未知客户"):
        resolve_request(session, RepairRequest.model_validate({**sent, "customer": "不存在的客户"}), today=T0)


def test_the_accident_and_extra_inspection_forms_values_are_taken(demo: str) -> None:
    from tasks.accident import AccidentRequest
    from tasks.inspection import ExtraInspectionRequest

    accident = {
        "customer": CUSTOMERS[0],
        "site": "",
        "device": "",
        "reported_by": "王先生",
        "channel": "热线",
        "description": "核心交换机宕机",
        "severity": "",
        "reported_at": "",
        "parent_case_id": "",
        "handover_reason": "",
        "found_by": "服务中心发现",
        "tolerance_hours": 0,
        "lead_on_site": False,
        "team": [],
    }
    assert validate({"request": accident}, schema_of("accident"), raise_on_error=False) == []
    taken = AccidentRequest.model_validate(accident)
    assert (taken.severity, taken.found_by, taken.tolerance_hours, taken.site) == (
        None,
        "service_centre",
        None,
        None,
    )
    assert AccidentRequest.model_validate({**accident, "severity": SEVERITIES[0]}).severity == 1
    # a hand-over names only the repair
    assert AccidentRequest.model_validate({"parent_case_id": "WX-000007"}).parent_case_id == 7

    extra = {"customer": CUSTOMERS[1], "site": "", "reason": "核心系统升级前", "day": "", "requested_by": ""}
    assert validate({"request": extra}, schema_of("extra-inspection"), raise_on_error=False) == []
    request = ExtraInspectionRequest.model_validate(extra)
    assert (request.site, request.day) == (None, None)
