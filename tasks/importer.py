"""Import reference data from the spreadsheets a provider already keeps (`aftercare import FILE`).

One file holds one kind of record (customers, sites, contacts, contracts, staff, devices, parts,
stock), named by `--kind` or by the file's name (`customers.xlsx`, `机房.csv` …). Its first row names
the columns, in Chinese (the labels of the admin pages) or as the field names; every other row is a
record. A row whose key (e.g. the customer code, a device's serial) exists updates that record with
the cells it fills (an empty cell keeps the value); a new key creates one.

Nothing is written unless every row is right: all rows are read, converted, resolved (a customer by
code or name, a site within its customer, a contract or part by code) and checked as the admin
pages check them (`tasks.backoffice.record_errors`; notification addresses with Apprise) first. The
errors name the row and the column (`第 5 行 距离（公里）（E 列）：不能小于 0`). A dry run lists what
would be created or changed, old → new, and writes nothing. The import writes in one transaction,
each record with its audit row (source "import").

.xlsx is read with openpyxl (the maintained reader of Excel files; read-only, cell values rather
than formulas); .csv with the standard library, as UTF-8 (with or without BOM) or, as Excel saves it
on a Chinese Windows, GB18030.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from sqlmodel import Session, col, select

from models import Contact, Contract, Customer, Device, Role, Site, SparePart, Staff, Stock
from models.parties import ROLE_LABELS_ZH
from tasks import channels
from tasks.accounts import audit
from tasks.backoffice import plain, record_errors, reference_errors, staff_by_names

MAX_ROWS = 20_000


class ImportError_(ValueError):
    """The file cannot be read as an import at all (format, kind, header); the message says why."""


@dataclass(frozen=True)
class Column:
    field: str  # the model's field, or a reference ("customer", "site", "contract", "part")
    label: str  # the Chinese column title
    # text / number / int / bool / date / time / json / lines / roles / ref / staff (a person by name) /
    # staff_list (people by name in order, separated by 、 or ,)
    kind: str = "text"
    required: bool = False  # must be filled for a new record


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    model: type[Any]
    key: tuple[str, ...]  # the columns (fields or references) that find an existing record
    columns: tuple[Column, ...]
    aliases: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "customers",
            "客户",
            Customer,
            ("code",),
            (
                Column("code", "客户编码", required=True),
                Column("name", "客户名称", required=True),
                Column("manager_ladder", "升级经理", "staff_list"),
            ),
            ("customer", "客户"),
        ),
        Kind(
            "sites",
            "机房",
            Site,
            ("customer", "name"),
            (
                Column("customer", "客户", "ref", True),
                Column("name", "机房名称", required=True),
                Column("address", "地址"),
                Column("service_point", "最近服务网点"),
                Column("distance_km", "距离（公里）", "number"),
                Column("same_city", "同城", "bool"),
                Column("room_rules", "机房规定"),
            ),
            ("site", "机房", "站点"),
        ),
        Kind(
            "contacts",
            "客户联系人",
            Contact,
            ("customer", "name"),
            (
                Column("customer", "客户", "ref", True),
                Column("name", "姓名", required=True),
                Column("title", "职务"),
                Column("phone", "电话"),
                Column("email", "电子邮件"),
                Column("is_primary", "客户维护负责人", "bool"),
                Column("notify_urls", "通知地址", "lines"),
                Column("quiet_start", "免打扰开始", "time"),
                Column("quiet_end", "免打扰结束", "time"),
            ),
            ("contact", "联系人"),
        ),
        Kind(
            "contracts",
            "服务合同",
            Contract,
            ("code",),
            (
                Column("code", "合同编号", required=True),
                Column("customer", "客户", "ref", True),
                Column("start_date", "开始日期", "date", True),
                Column("end_date", "结束日期", "date", True),
                Column("service_hours", "服务时间"),
                Column("inspection_frequency", "巡检频率"),
                Column("inspection_every_months", "巡检间隔（月）", "int"),
                Column("severity_scheme", "故障分级"),
                Column("sla_policy", "SLA 覆盖", "json"),
                Column("calendar", "工作日历"),
                Column("timezone", "时区"),
                Column("warranty_until", "保修截止", "date"),
                Column("fee", "合同金额（元）", "number"),
                Column("restore_tolerance_hours", "客户可容忍恢复时间（小时）", "number"),
                Column("account_manager_id", "客户经理", "staff"),
            ),
            ("contract", "合同"),
        ),
        Kind(
            "staff",
            "员工",
            Staff,
            ("name",),
            (
                Column("name", "姓名", required=True),
                Column("phone", "电话"),
                Column("email", "电子邮件"),
                Column("roles", "角色", "roles"),
                Column("notify_urls", "通知地址", "lines"),
                Column("quiet_start", "免打扰开始", "time"),
                Column("quiet_end", "免打扰结束", "time"),
                Column("active", "在岗", "bool"),
                Column("manager_id", "上级", "staff"),
            ),
            ("员工",),
        ),
        Kind(
            "devices",
            "设备档案",
            Device,
            ("serial",),
            (
                Column("serial", "序列号", required=True),
                Column("customer", "客户", "ref", True),
                Column("site", "机房", "ref", True),
                Column("contract", "合同", "ref"),
                Column("device_class", "设备类别", required=True),
                Column("model", "型号", required=True),
                Column("config", "配置", "json"),
            ),
            ("device", "设备"),
        ),
        Kind(
            "parts",
            "备件",
            SparePart,
            ("code",),
            (
                Column("code", "备件编码", required=True),
                Column("name", "名称", required=True),
                Column("device_class", "适用设备类别"),
                Column("min_quantity", "最低库存", "int"),
            ),
            ("part", "spareparts", "备件"),
        ),
        Kind(
            "stock",
            "备件库存",
            Stock,
            ("part", "location"),
            (
                Column("part", "备件编码", "ref", True),
                Column("location", "库位", required=True),
                Column("quantity", "数量", "int", True),
            ),
            ("库存",),
        ),
    )
}
REF_FIELDS = {"customer": "customer_id", "site": "site_id", "contract": "contract_id", "part": "part_id"}


@dataclass(frozen=True)
class RowError:
    row: int  # the spreadsheet's row number (the header is row 1)
    column: str  # the column's title as the file has it ("" for the whole row)
    letter: str  # A, B, … ("" for the whole row)
    message: str

    def __str__(self) -> str:
        where = f"第 {self.row} 行"
        if self.column:
            where += f" {self.column}（{self.letter} 列）"
        return f"{where}：{self.message}"


@dataclass
class Change:
    row: int
    action: str  # create / update
    key: str
    values: dict[str, Any]  # create: the values; update: field -> [old, new] (as JSON, for the listing)
    record_id: int | None = None  # the record an update changes
    typed: dict[str, Any] = field(default_factory=dict)  # the values to write, as the model takes them


@dataclass
class ImportResult:
    kind: Kind
    rows: int = 0
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    written: bool = False

    def summary(self) -> str:
        created = sum(c.action == "create" for c in self.changes)
        updated = sum(c.action == "update" for c in self.changes)
        return (
            f"{self.kind.label}：共 {self.rows} 行，新建 {created}，修改 {updated}，无变化 {self.unchanged}"
        )


# --- reading the file --------------------------------------------------------------------------------


def kind_for(path: Path, given: str | None) -> Kind:
    if given:
        name = given.strip().lower()
        for kind in KINDS.values():
            if name == kind.name or name in kind.aliases or name == kind.label:
                return kind
        raise ImportError_(f"未知的记录类型 {given!r}；可选：{', '.join(KINDS)}")
    stem = path.stem.strip().lower()
    for kind in KINDS.values():
        if (
            stem == kind.name
            or stem in kind.aliases
            or stem == kind.label
            or stem.startswith(kind.name + "_")
        ):
            return kind
    raise ImportError_(f"无法从文件名 {path.name} 判断记录类型：请用 --kind 指定（{', '.join(KINDS)}）")


def read_table(path: Path) -> list[list[Any]]:
    """The file's rows (the first sheet of a workbook), cells as the reader gives them."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ImportError_(f"找不到文件 {path}")
    if suffix == ".csv":
        raw = path.read_bytes()
        for encoding in ("utf-8-sig", "gb18030"):
            try:
                text = raw.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        else:
            raise ImportError_(f"{path.name} 既不是 UTF-8 也不是 GB18030 编码的 CSV")
        return [list(r) for r in csv.reader(io.StringIO(text))]
    if suffix in (".xlsx", ".xlsm"):
        try:
            book = load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many kinds for a file that is not a workbook
            raise ImportError_(f"无法读取 Excel 文件 {path.name}：{exc}") from exc
        try:
            sheet = book.worksheets[0]
            return [list(r) for r in sheet.iter_rows(values_only=True)]
        finally:
            book.close()
    raise ImportError_(f"只支持 .xlsx 和 .csv 文件，不支持 {suffix or path.name}")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# --- converting cells --------------------------------------------------------------------------------

_TRUE = {"是", "y", "yes", "true", "1", "√", "在岗", "启用"}
_FALSE = {"否", "n", "no", "false", "0", "×", "离岗", "停用"}
_ROLE_BY_WORD = {
    **{r.value: r.value for r in Role},
    **{label: r.value for r, label in ROLE_LABELS_ZH.items()},
}


def _convert(column: Column, value: Any) -> Any:
    """A cell as the model's value; ValueError with a Chinese reason."""
    if column.kind in ("text", "ref", "staff", "staff_list"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # a code typed as a number in Excel
        return str(value).strip()
    if column.kind in ("number", "int"):
        if isinstance(value, bool):
            raise ValueError("应为数字")
        text = str(value).strip().replace(",", "")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"应为数字（不是 {value!r}）") from None
        if column.kind == "int":
            if not number.is_integer():
                raise ValueError(f"应为整数（不是 {value!r}）")
            return int(number)
        return number
    if column.kind == "bool":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError("应为 是/否")
    if column.kind == "date":
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        text = str(value).strip().replace("/", "-").replace(".", "-")
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"应为日期，如 2026-11-23（不是 {value!r}）") from None
    if column.kind == "time":
        if isinstance(value, dt.time):
            return value
        if isinstance(value, dt.datetime):
            return value.time()
        try:
            return dt.time.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(f"应为时间，如 22:00（不是 {value!r}）") from None
    if column.kind == "json":
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(str(value))
        except json.JSONDecodeError as exc:
            raise ValueError(f"不是有效的 JSON（第 {exc.colno} 个字符附近）") from None
        if not isinstance(parsed, dict):
            raise ValueError("应为 JSON 对象，如 {}")
        return parsed
    if column.kind == "lines":
        return [part.strip() for part in re.split(r"[\n;；]+", str(value)) if part.strip()]
    if column.kind == "roles":
        roles = []
        for word in re.split(r"[、,，;；\s]+", str(value).strip()):
            if not word:
                continue
            if word.lower() not in _ROLE_BY_WORD and word not in _ROLE_BY_WORD:
                raise ValueError(f"未知角色 {word!r}；可填：{'、'.join(ROLE_LABELS_ZH.values())}")
            roles.append(_ROLE_BY_WORD.get(word, _ROLE_BY_WORD.get(word.lower(), word)))
        return sorted(set(roles))
    raise AssertionError(column.kind)


# --- resolving references ----------------------------------------------------------------------------


def _customer(session: Session, text: str) -> Customer:
    found = session.exec(select(Customer).where(Customer.code == text)).first()
    if found is None:
        named = session.exec(select(Customer).where(Customer.name == text)).all()
        if len(named) > 1:
            raise ValueError(f"有 {len(named)} 个客户名为 {text!r}，请填客户编码")
        found = named[0] if named else None
    if found is None:
        raise ValueError(f"没有客户 {text!r}（按客户编码或名称查找）")
    return found


def _resolve(session: Session, ref: str, text: str, values: dict[str, Any]) -> int:
    if ref == "customer":
        customer = _customer(session, text)
        assert customer.id is not None
        return customer.id
    if ref == "site":
        query = select(Site).where(Site.name == text)
        if values.get("customer_id") is not None:
            query = query.where(Site.customer_id == values["customer_id"])
        sites = session.exec(query).all()
        if not sites:
            raise ValueError(f"该客户没有机房 {text!r}")
        if len(sites) > 1:
            raise ValueError(f"有 {len(sites)} 个机房名为 {text!r}")
        assert sites[0].id is not None
        return sites[0].id
    if ref == "contract":
        contract = session.exec(select(Contract).where(Contract.code == text)).first()
        if contract is None or contract.id is None:
            raise ValueError(f"没有合同编号 {text!r}")
        if values.get("customer_id") is not None and contract.customer_id != values["customer_id"]:
            raise ValueError(f"合同 {text} 不属于该客户")
        return contract.id
    if ref == "part":
        part = session.exec(select(SparePart).where(SparePart.code == text)).first()
        if part is None or part.id is None:
            raise ValueError(f"没有备件编码 {text!r}")
        return part.id
    raise AssertionError(ref)


def _existing(session: Session, kind: Kind, values: dict[str, Any]) -> Any | None:
    fields = [REF_FIELDS.get(k, k) for k in kind.key]
    if any(values.get(f) in (None, "") for f in fields):
        return None
    query = select(kind.model)
    for name in fields:
        query = query.where(getattr(kind.model, name) == values[name])
    rows = session.exec(query.order_by(col(kind.model.id))).all()
    if len(rows) > 1:
        raise ValueError(
            f"数据库中有 {len(rows)} 条相同的记录（{'、'.join(str(values[f]) for f in fields)}），请在后台管理中处理"
        )
    return rows[0] if rows else None


# --- the import --------------------------------------------------------------------------------------


def _header(kind: Kind, cells: list[Any], errors: list[RowError]) -> dict[int, Column]:
    by_title = {c.label: c for c in kind.columns} | {c.field: c for c in kind.columns}
    mapping: dict[int, Column] = {}
    for index, cell in enumerate(cells):
        if _blank(cell):
            continue
        title = str(cell).strip().removesuffix("*").strip()
        column = by_title.get(title) or by_title.get(title.lower())
        if column is None:
            errors.append(
                RowError(
                    1,
                    str(cell),
                    get_column_letter(index + 1),
                    f"未知列；{kind.label}的列为：{'、'.join(c.label for c in kind.columns)}",
                )
            )
        elif column in mapping.values():
            errors.append(RowError(1, str(cell), get_column_letter(index + 1), "此列重复"))
        else:
            mapping[index] = column
    for needed in (c for c in kind.columns if c.field in kind.key):
        if needed not in mapping.values():
            errors.append(RowError(1, "", "", f"缺少列“{needed.label}”"))
    return mapping


def _records(table: list[list[Any]]) -> Iterator[tuple[int, list[Any]]]:
    for number, cells in enumerate(table[1:], start=2):
        if all(_blank(c) for c in cells):
            continue
        yield number, cells


def plan_import(session: Session, path: Path, *, kind: str | None = None) -> ImportResult:
    """Read, convert, resolve and check every row; the changes it would make, or the errors."""
    the_kind = kind_for(path, kind)
    table = read_table(path)
    result = ImportResult(the_kind)
    if not table or all(_blank(c) for c in table[0]):
        raise ImportError_(f"{path.name} 的第一行应为列名（{'、'.join(c.label for c in the_kind.columns)}）")
    mapping = _header(the_kind, table[0], result.errors)
    if result.errors:
        return result
    titles = {i: str(table[0][i]).strip() for i in mapping}
    seen: dict[tuple[Any, ...], int] = {}
    for number, cells in _records(table):
        result.rows += 1
        if result.rows > MAX_ROWS:
            raise ImportError_(f"一次最多导入 {MAX_ROWS} 行")
        row_errors: list[RowError] = []

        def fail(
            index: int | None, message: str, _n: int = number, _errs: list[RowError] = row_errors
        ) -> None:
            if index is None:
                _errs.append(RowError(_n, "", "", message))
            else:
                _errs.append(RowError(_n, titles[index], get_column_letter(index + 1), message))

        values: dict[str, Any] = {}
        where: dict[str, int] = {}
        for index, column in mapping.items():
            cell = cells[index] if index < len(cells) else None
            where[REF_FIELDS.get(column.field, column.field)] = index
            if _blank(cell):
                continue
            try:
                value = _convert(column, cell)
                if column.kind == "ref":
                    value = _resolve(session, column.field, value, values)
                elif column.kind in ("staff", "staff_list"):
                    # names as the admin form reads them; active staff checked with the record
                    people = staff_by_names(session, value)
                    if column.kind == "staff" and len(people) != 1:
                        raise ValueError(f"只能填一位员工（不是 {value!r}）")
                    value = people if column.kind == "staff_list" else people[0]
            except ValueError as exc:
                fail(index, str(exc))
                continue
            values[REF_FIELDS.get(column.field, column.field)] = value
        key_fields = [REF_FIELDS.get(k, k) for k in the_kind.key]
        if not row_errors:
            key = tuple(values.get(f) for f in key_fields)
            if key in seen:
                shown = "、".join(str(cells[where[f]]).strip() for f in key_fields if f in where)
                fail(None, f"与第 {seen[key]} 行重复（{shown}）")
            else:
                seen[key] = number
        existing = None
        if not row_errors:
            try:
                existing = _existing(session, the_kind, values)
            except ValueError as exc:
                fail(None, str(exc))
        if not row_errors and existing is None:
            for column in the_kind.columns:
                target = REF_FIELDS.get(column.field, column.field)
                if column.required and target not in values:
                    found = next((i for i, c in mapping.items() if c is column), None)
                    fail(
                        found,
                        "新记录必须填写"
                        if found is not None
                        else f"新记录必须填写“{column.label}”（缺少此列）",
                    )
        if not row_errors:
            current = (
                {c.name: getattr(existing, c.name) for c in the_kind.model.__table__.columns}
                if existing
                else {}
            )
            merged = {**current, **values}
            for name, message in record_errors(the_kind.model, merged):
                fail(where.get(name), message if name in where else f"{name}：{message}")
            if not row_errors:
                # a device's site and contract belong to its customer, also when a row moves an existing
                # device to another customer and leaves its site blank (the admin's check, one place)
                for name, message in reference_errors(session, the_kind.model, merged):
                    fail(where.get(name, where.get("customer_id")), message)
            if not row_errors and the_kind.model in (Staff, Contact):
                probe = the_kind.model.model_validate(merged)
                try:
                    channels.validate_person(probe)
                except channels.ChannelError as exc:
                    fail(where.get("notify_urls", where.get("quiet_start")), str(exc))
                else:
                    if "notify_urls" in values:
                        values["notify_urls"] = probe.notify_urls
        if row_errors:
            result.errors.extend(row_errors)
            continue
        label = "、".join(str(cells[where[f]]).strip() for f in key_fields if f in where)
        if existing is None:
            result.changes.append(
                Change(number, "create", label, {k: plain(v) for k, v in values.items()}, typed=values)
            )
        else:
            diff = {
                k: [plain(getattr(existing, k)), plain(v)]
                for k, v in values.items()
                if plain(getattr(existing, k)) != plain(v)
            }
            if diff:
                typed = {k: values[k] for k in diff}
                result.changes.append(Change(number, "update", label, diff, existing.id, typed))
            else:
                result.unchanged += 1
    return result


def apply_import(
    session: Session, result: ImportResult, *, now: dt.datetime, actor: str, actor_staff_id: int | None = None
) -> None:
    """Write the planned changes (only a plan without errors) with their audit rows, in `session`'s
    transaction."""
    if result.errors:
        raise ImportError_("有错误的导入不能写入")
    kind = result.kind
    for change in result.changes:
        if change.action == "create":
            values = dict(change.typed)
            if "created_at" in kind.model.model_fields:
                values.setdefault("created_at", now)
            record = kind.model(**values)
        else:
            record = session.get(kind.model, change.record_id)
            if record is None:
                raise ImportError_(f"第 {change.row} 行的记录已被删除，请重新导入")
            for name, value in change.typed.items():
                setattr(record, name, value)
        session.add(record)
        session.flush()
        audit(
            session,
            now=now,
            actor=actor,
            actor_staff_id=actor_staff_id,
            action=change.action,
            record=kind.model.__tablename__,
            record_id=str(record.id),
            changes={**change.values, "_row": change.row},
            source="import",
        )
    result.written = True
