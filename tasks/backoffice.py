"""Back-office records: the checks every customer, site, contract, person, device or part passes
before it is written (admin pages and `aftercare import` alike), and their values as the audit
history keeps them.

A record is validated as its SQLModel model (`model_validate`: types, lengths, ranges of the Field
declarations — the same declarations the schema comes from), each pydantic error said in Chinese,
then by the rules the types do not carry (a contract ends after it starts, its SLA overrides are
read by `rules.sla.merge_policy` as the clocks will read them, a person's roles exist, a time zone
exists). Notification addresses and quiet hours are checked by the person check of
`tasks.channels` on every flush (Apprise).
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from pydantic import ValidationError
from sqlmodel import Session, select

from models import Contract, Customer, Role, Site, Staff
from models.contracts import InspectionFrequency, ServiceHours, SeverityScheme
from rules.sla import PolicyError, merge_policy

SECRET_COLUMNS = {"password_hash"}  # never in an audit row


class RecordError(ValueError):
    """A record that cannot be written; `errors` lists (field, Chinese message)."""

    def __init__(self, errors: list[tuple[str, str]], labels: Mapping[str, str] | None = None) -> None:
        self.errors = errors
        names = labels or {}
        super().__init__("；".join(f"{names.get(field, field)}：{message}" for field, message in errors))


def _num(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _zh(error: Mapping[str, Any]) -> str:
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    if kind == "missing":
        return "必填"
    if kind == "string_too_long":
        return f"最多 {ctx.get('max_length')} 个字符"
    if kind == "string_too_short":
        return "不能为空" if ctx.get("min_length") == 1 else f"至少 {ctx.get('min_length')} 个字符"
    if kind in ("greater_than_equal", "greater_than"):
        return f"不能小于 {_num(ctx.get('ge', ctx.get('gt')))}"
    if kind in ("less_than_equal", "less_than"):
        return f"不能大于 {_num(ctx.get('le', ctx.get('lt')))}"
    if kind.startswith("int_"):
        return "应为整数"
    if kind.startswith("float_") or kind.startswith("decimal_"):
        return "应为数字"
    if kind.startswith("date"):
        return "应为日期，如 2026-11-23"
    if kind.startswith("time"):
        return "应为时间，如 22:00"
    if kind.startswith("bool"):
        return "应为 是/否"
    if kind.startswith("dict"):
        return "应为 JSON 对象，如 {}"
    if kind.startswith("list"):
        return "应为列表"
    return str(error.get("msg", kind))


def record_errors(model: type[Any], values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with `values` as a `model` row: (field, message) pairs; empty when it may be written."""
    try:
        record = model.model_validate(dict(values))
    except ValidationError as exc:
        return [(str(e["loc"][0]) if e["loc"] else "", _zh(e)) for e in exc.errors()]
    errors: list[tuple[str, str]] = []
    if model is Contract:
        if record.end_date < record.start_date:
            errors.append(("end_date", "结束日期早于开始日期"))
        for field, enum in (
            ("service_hours", ServiceHours),
            ("inspection_frequency", InspectionFrequency),
            ("severity_scheme", SeverityScheme),
        ):
            if str(getattr(record, field)) not in {e.value for e in enum}:
                errors.append((field, f"只能是 {' / '.join(e.value for e in enum)}"))
        if not isinstance(record.sla_policy, dict):
            errors.append(("sla_policy", "应为 JSON 对象，如 {}"))
        else:
            try:
                merge_policy(record.sla_policy, service_hours=str(record.service_hours))
            except (PolicyError, ValueError, TypeError, KeyError) as exc:
                errors.append(("sla_policy", str(exc)))
        try:
            ZoneInfo(str(record.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            errors.append(("timezone", f"未知时区 {record.timezone!r}，如 Asia/Shanghai"))
    if model is Staff:
        unknown = [r for r in record.roles or [] if r not in Role._value2member_map_]
        if unknown:
            errors.append(("roles", f"未知角色 {', '.join(map(str, unknown))}"))
    for field, value in values.items():
        if (
            isinstance(value, str)
            and field in model.model_fields
            and value != value.strip()
            and field != "notify_urls"
        ):
            errors.append((field, "首尾不能有空格"))
    return errors


NAME_SEPARATORS = re.compile(r"[、,，;；\n]+")  # how a list of names is typed (form and spreadsheet)


def staff_by_names(session: Session, text: str) -> list[int]:
    """Staff typed as names (or staff numbers) separated by 、 or , — their ids in the typed order;
    ValueError with a Chinese message for a name that is nobody's or more than one person's."""
    ids: list[int] = []
    for part in NAME_SEPARATORS.split(text):
        name = part.strip()
        if not name:
            continue
        if name.isdigit():
            person = session.get(Staff, int(name))
            if person is None:
                raise ValueError(f"没有员工编号 {name}")
        else:
            named = session.exec(select(Staff).where(Staff.name == name)).all()
            if not named:
                raise ValueError(f"没有员工 {name!r}")
            if len(named) > 1:
                raise ValueError(f"有 {len(named)} 位员工名为 {name!r}，请填员工编号")
            person = named[0]
        assert person.id is not None
        ids.append(person.id)
    return ids


def staff_names(session: Session, ids: list[int] | None, sep: str = "、") -> str:
    """Staff ids as their names (the way `staff_by_names` reads them back)."""
    people = [session.get(Staff, i) for i in ids or []]
    return sep.join(p.name if p else str(i) for p, i in zip(people, ids or [], strict=True))


def _active_staff(session: Session, staff_id: Any, what: str) -> str | None:
    person = session.get(Staff, staff_id)
    if person is None:
        return f"没有员工编号 {staff_id}"
    if not person.active:
        return f"{what}“{person.name}”已不在岗"
    return None


def reference_errors(session: Session, model: type[Any], values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What a record points at exists and fits — the one check the admin pages and `aftercare import`
    both make; (field, Chinese message) pairs: a device's site and contract belong to its customer;
    a contract's account manager, a person's manager and every step of a customer's manager ladder
    (lowest to highest) is an active staff member (a manager is not the person, a ladder names
    nobody twice)."""
    errors: list[tuple[str, str]] = []
    fields = model.model_fields
    customer_id = values.get("customer_id")
    if customer_id is not None and ("site_id" in fields or "contract_id" in fields):
        customer = session.get(Customer, customer_id)
        whose = f"客户“{customer.name}”" if customer else f"客户 {customer_id}"
        if "site_id" in fields and values.get("site_id") is not None:
            site = session.get(Site, values["site_id"])
            if site is None:
                errors.append(("site_id", f"没有编号为 {values['site_id']} 的机房"))
            elif site.customer_id != customer_id:
                errors.append(("site_id", f"机房“{site.name}”不属于{whose}"))
        if "contract_id" in fields and values.get("contract_id") is not None:
            contract = session.get(Contract, values["contract_id"])
            if contract is None:
                errors.append(("contract_id", f"没有编号为 {values['contract_id']} 的合同"))
            elif contract.customer_id != customer_id:
                errors.append(("contract_id", f"合同 {contract.code} 不属于{whose}"))
    if model is Contract and values.get("account_manager_id") is not None:
        wrong = _active_staff(session, values["account_manager_id"], "客户经理")
        if wrong:
            errors.append(("account_manager_id", wrong))
    if model is Staff and values.get("manager_id") is not None:
        if values.get("id") is not None and values["manager_id"] == values["id"]:
            errors.append(("manager_id", "上级不能是本人"))
        else:
            wrong = _active_staff(session, values["manager_id"], "上级")
            if wrong:
                errors.append(("manager_id", wrong))
    if model is Customer and values.get("manager_ladder"):
        ladder = values["manager_ladder"]
        if not isinstance(ladder, list) or not all(isinstance(i, int) for i in ladder):
            errors.append(("manager_ladder", "应为员工编号的列表"))
        else:
            for staff_id in ladder:
                wrong = _active_staff(session, staff_id, "经理")
                if wrong:
                    errors.append(("manager_ladder", wrong))
            twice = sorted({i for i in ladder if ladder.count(i) > 1})
            if twice:
                errors.append(("manager_ladder", f"{staff_names(session, twice)} 出现不止一次"))
    return errors


def check_record(
    model: type[Any], values: Mapping[str, Any], labels: Mapping[str, str] | None = None
) -> None:
    """Raise RecordError when `values` may not be written as a `model` row."""
    errors = record_errors(model, values)
    if errors:
        raise RecordError(errors, labels)


def plain(value: Any) -> Any:
    """A value as JSON keeps it in the audit history."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def audit_values(obj: Any, kind: str) -> dict[str, Any]:
    """A row's values for the audit history: all of them for create/delete, old → new for an update."""
    state = sa.inspect(obj)
    out: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        key = attr.key
        if key in SECRET_COLUMNS:
            continue
        if kind != "update":
            out[key] = plain(getattr(obj, key))
            continue
        history = state.attrs[key].history
        if not history.has_changes():
            continue
        old = history.deleted[0] if history.deleted else None
        new = history.added[0] if history.added else getattr(obj, key)
        if plain(old) != plain(new):
            out[key] = [plain(old), plain(new)]
    return out
