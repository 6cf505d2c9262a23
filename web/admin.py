"""后台管理 / the back office at `/admin`: customers, sites, contacts, contracts with their SLA
overrides, staff with roles and notification addresses, devices, spare parts and stock, checklists,
logins and the audit history.

Built on sqladmin (maintained admin pages for SQLAlchemy on Starlette/FastAPI: list, search, sort,
create, edit, delete, export) rather than hand-written CRUD. What aftercare adds around it:

- **Login**: `StaffAuth` asks `web.staff` for the session (the same cookie and clock as every staff
  page); not logged in → `/login?next=/admin/…`. sqladmin's own login form is never used.
- **CSRF**: every POST/DELETE under /admin carries the session's token (the form field `csrf` or
  the header `X-CSRF-Token`), checked in `StaffAuth.authenticate` before sqladmin reads the form.
  sqladmin's templates have no token, so `/static/admin.js` (a file: the CSP runs no inline script)
  adds the hidden field to every POST form and the header to jQuery's requests (the delete button).
- **CSP**: sqladmin's pages load only their own files under /admin/statics; the one inline script
  (the toast of flash messages, `sqladmin/flash.html`) is replaced by a template without script
  (web/templates/admin/sqladmin/flash.html), and the CSV import modal (a fetch without the token) is
  off — spreadsheets come in through `aftercare import`, with its dry run.
- **Roles** (`StaffGrants`): the administrator edits everything; an account manager owns customers,
  sites, contacts and contracts; the parts keeper owns spare parts and stock; every staff person
  may read the reference data; logins and the audit history are for administrators only.
- **Audit**: every insert, update and delete made through these pages writes an `AuditEntry` (who,
  when, the record, old → new values) in the same transaction (`AdminSession`'s after_flush).
- **Checks**: every record is validated as its SQLModel model (types, lengths, ranges) plus the
  rules of `tasks.backoffice.check_record` (dates in order, SLA overrides read by rules.sla, known
  roles; notification addresses and quiet hours by Apprise through the person check) and of
  `tasks.backoffice.reference_errors`, the import's own (a device's site and contract belong to its
  customer; account manager, manager and manager ladder are active staff) — a refused value is shown
  on the form in Chinese. The contract versions a renewal records are a read-only list.
- **Chinese**: labels per column here; sqladmin's own words through `ZH` (its template `_()`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqladmin import Admin, ModelView
from sqladmin.authentication import AuthenticationBackend
from sqladmin.authorization import WILDCARD, GrantsAuthorizationBackend
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col, select
from starlette.requests import Request
from wtforms import (
    Form,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    validators,
)

from models import (
    Contact,
    Contract,
    ContractVersion,
    Customer,
    Device,
    Role,
    Site,
    SparePart,
    Staff,
    Stock,
    wallclock,
)
from models.accounts import Account, AuditEntry
from models.db import get_engine, session_scope
from models.inspection import ChecklistItem
from models.parties import ROLE_LABELS_ZH
from tasks import channels  # noqa: F401  registers the address check on every Staff/Contact written
from tasks.accounts import (
    PASSWORD_MAX_LENGTH,
    PASSWORD_MIN_LENGTH,
    AccountError,
    audit,
    find_account,
    hash_password,
    normalise_username,
)
from tasks.backoffice import (
    RecordError,
    audit_values,
    check_record,
    reference_errors,
    staff_by_names,
    staff_names,
)
from web.pages import templates as page_templates
from web.staff import SAFE_METHODS, StaffUser, check_csrf, current_staff, staff_now

ADMIN_TEMPLATES = Path(__file__).resolve().parent / "templates" / "admin"

# who is acting in this request: set by StaffAuth.authenticate, read by the audit listener (sqladmin
# runs its database work in a worker thread; anyio copies the context there)
ACTOR: ContextVar[StaffUser | None] = ContextVar("aftercare_admin_actor", default=None)


class AdminSession(Session):
    """The admin's sessions: bound to the database of the moment (tests switch databases), and
    audited (`_audit_changes`)."""

    def __init__(self, bind: Any = None, **kwargs: Any) -> None:
        super().__init__(bind=bind or get_engine(), **kwargs)


def _audit_changes(session: sa.orm.Session, _context: object) -> None:
    """After each flush of an admin session: one AuditEntry per record created, changed or deleted."""
    user = ACTOR.get()
    if user is None:
        raise RuntimeError("an admin change without a logged-in person")
    now = wallclock.now()
    for kind, objects in (("create", session.new), ("update", session.dirty), ("delete", session.deleted)):
        for obj in list(objects):
            if isinstance(obj, AuditEntry):
                continue
            changes = audit_values(obj, kind)
            if kind == "update" and not changes:
                continue
            audit(
                session,  # type: ignore[arg-type]
                now=now,
                actor=user.name,
                actor_staff_id=user.staff_id,
                action=kind,
                record=obj.__tablename__,
                record_id=",".join(str(k) for k in sa.inspect(obj).mapper.primary_key_from_instance(obj)),
                changes=changes,
                source="admin",
            )


sa.event.listen(AdminSession, "after_flush", _audit_changes)


# --- who may do what --------------------------------------------------------------------------------

# views every staff person may read; their owners may change them
OWNED: dict[Role, set[str]] = {
    Role.ACCOUNT_MANAGER: {"customer", "site", "contact", "contract"},
    Role.PARTS_KEEPER: {"spare-part", "stock"},
}
# (sqladmin names a view after its model: SparePart -> "spare-part")
READABLE = {
    "customer",
    "site",
    "contact",
    "contract",
    "contract-version",
    "staff",
    "device",
    "spare-part",
    "stock",
    "checklist-item",
}
ADMIN_ONLY = {"account", "audit-entry"}  # no grant but the administrator's


def grants_for(user: StaffUser) -> set[tuple[str, str]]:
    if user.is_admin:
        return {(WILDCARD, WILDCARD)}
    grants = {(view, action) for view in READABLE for action in ("list", "details", "export")}
    for role, views in OWNED.items():
        if user.may(role):
            grants |= {(view, WILDCARD) for view in views}
    return grants


class StaffGrants(GrantsAuthorizationBackend):
    async def get_grants(self, request: Request) -> set[tuple[str, str]]:
        user = getattr(request.state, "staff_user", None)
        return grants_for(user) if isinstance(user, StaffUser) else set()


class StaffAuth(AuthenticationBackend):
    """The staff session of `web.staff` (no login form of its own); CSRF on every change."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.middlewares = []  # no Starlette session: the staff cookie is the session
        self.clock = clock

    async def login(self, request: Request) -> Response | bool:
        return RedirectResponse("/login?next=/admin/", status_code=303)

    async def logout(self, request: Request) -> Response | bool:
        # a GET cannot end a session (it would be a CSRF hole): the page offers the logout form
        user = current_staff(request, self.clock())
        html = page_templates.get_template("staff/logout.html.j2").render(user=user)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def authenticate(self, request: Request) -> Response | bool:
        user = current_staff(request, self.clock())
        if user is None:
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={here}", status_code=303)
        if request.method not in SAFE_METHODS and not await check_csrf(request, user.csrf):
            html = page_templates.get_template("staff/refused.html.j2").render(
                title="无权操作", message="表单已失效（缺少或错误的校验码），请刷新页面后重新提交。"
            )
            return HTMLResponse(html, status_code=403)
        request.state.staff_user = user
        request.state.staff_csrf = user.csrf
        ACTOR.set(user)
        return True

    async def get_user_id(self, request: Request) -> Any:
        user = getattr(request.state, "staff_user", None)
        return user.staff_id if user else None


# --- form fields ------------------------------------------------------------------------------------


class LinesField(TextAreaField):
    """A list of strings typed one per line (notification addresses)."""

    def _value(self) -> str:
        return "\n".join(self.data or [])

    def process_formdata(self, valuelist: list[Any]) -> None:
        text = valuelist[0] if valuelist else ""
        self.data = [line.strip() for line in str(text).splitlines() if line.strip()]


class StaffNamesField(StringField):
    """Staff typed by name in order, separated by 、 or , (a customer's manager ladder, lowest first),
    kept as their ids: read by `tasks.backoffice.staff_by_names`, as the import reads them; a name
    that is nobody's is shown on the field in Chinese."""

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        with session_scope() as session:
            return staff_names(session, self.data)

    def process_formdata(self, valuelist: list[Any]) -> None:
        text = str(valuelist[0]) if valuelist else ""
        with session_scope() as session:
            self.data = staff_by_names(session, text)  # a ValueError becomes the field's error


def _staff_list(attr: str) -> Callable[[Any, str], str]:
    """A list column of staff ids shown as names, lowest to highest."""

    def show(row: Any, field: str) -> str:
        with session_scope() as session:
            return staff_names(session, getattr(row, attr), " → ")

    return show


def _choices(model: Any, label: Callable[[Any], str]) -> Callable[[], list[tuple[int, str]]]:
    def load() -> list[tuple[int, str]]:
        with session_scope() as session:
            return [(row.id, label(row)) for row in session.exec(select(model).order_by(col(model.id))).all()]

    return load


def _optional_choices(model: Any, label: Callable[[Any], str]) -> Callable[[], list[tuple[Any, str]]]:
    required = _choices(model, label)
    return lambda: [("", "（无）"), *required()]


def _int_or_none(value: Any) -> int | None:
    return int(value) if value not in (None, "", "None") else None


def _name_of(model: Any, attr: str = "name") -> Callable[[Any, str], str]:
    """A list column that shows the referenced row's name instead of its number."""

    def show(row: Any, field: str) -> str:
        key = getattr(row, field)
        if key is None:
            return ""
        with session_scope() as session:
            other = session.get(model, key)
        return f"{getattr(other, attr)}" if other else str(key)

    return show


CUSTOMER_CHOICES = _choices(Customer, lambda c: f"{c.name}（{c.code}）")
SITE_CHOICES = _choices(Site, lambda s: s.name)
ROLE_CHOICES = [(r.value, ROLE_LABELS_ZH[r]) for r in Role]


class AftercareView(ModelView):
    """What every back-office view shares: Chinese, checked records, no CSV upload (see above)."""

    can_import: ClassVar[bool] = False
    page_size: ClassVar[int] = 50
    # sqladmin leaves foreign-key columns out of its forms unless primary keys are included (it expects
    # relationship attributes, which these models do not declare): the keys are in, the id is not, and
    # each foreign key is a select of the referenced rows (form_overrides below)
    form_include_pk: ClassVar[bool] = True
    form_excluded_columns: ClassVar = ["id"]
    extra_checks: ClassVar[tuple[Callable[[Any], None], ...]] = ()
    stamp_created: ClassVar[bool] = False  # a new record's created_at is the moment it is saved

    async def on_model_change(
        self, data: dict[str, Any], model: Any, is_created: bool, request: Request
    ) -> None:
        if is_created and self.stamp_created:
            model.created_at = wallclock.now()
        values = {c.name: getattr(model, c.name) for c in model.__table__.columns} if not is_created else {}
        values.update(data)
        labels = {str(k): v for k, v in self.column_labels.items()}
        check_record(type(model), values, labels)
        with session_scope() as session:  # a device's site and contract belong to its customer
            wrong = reference_errors(session, type(model), values)
        if wrong:
            raise RecordError(wrong, labels)


class CustomerAdmin(AftercareView, model=Customer):
    stamp_created: ClassVar[bool] = True
    name = "客户"
    name_plural = "客户"
    icon = "fa-solid fa-building"
    category = "客户与合同"
    column_list: ClassVar = ["id", "code", "name", "manager_ladder"]
    column_searchable_list: ClassVar = ["code", "name"]
    column_sortable_list: ClassVar = ["code", "name"]
    column_formatters: ClassVar = {"manager_ladder": _staff_list("manager_ladder")}
    column_formatters_detail: ClassVar = column_formatters
    form_columns: ClassVar = ["code", "name", "manager_ladder"]
    form_overrides: ClassVar = {"manager_ladder": StaffNamesField}
    form_args: ClassVar = {
        "manager_ladder": {
            "description": "投诉逐级升级的经理，由低到高，姓名以“、”或“,”分隔，如 王经理、李总监；须为在岗员工"
        }
    }
    column_labels: ClassVar = {
        "id": "编号",
        "code": "客户编码",
        "name": "客户名称",
        "created_at": "创建时间",
        "manager_ladder": "升级经理（由低到高）",
    }


class SiteAdmin(AftercareView, model=Site):
    name = "机房"
    name_plural = "机房（站点）"
    icon = "fa-solid fa-server"
    category = "客户与合同"
    column_list: ClassVar = [
        "id",
        "customer_id",
        "name",
        "distance_km",
        "same_city",
        "service_point",
    ]
    column_searchable_list: ClassVar = ["name", "address"]
    column_formatters: ClassVar = {"customer_id": _name_of(Customer)}
    column_formatters_detail: ClassVar = {"customer_id": _name_of(Customer)}
    form_columns: ClassVar = [
        "customer_id",
        "name",
        "address",
        "service_point",
        "distance_km",
        "same_city",
        "room_rules",
    ]
    form_overrides: ClassVar = {"customer_id": SelectField}
    form_args: ClassVar = {"customer_id": {"choices": CUSTOMER_CHOICES, "coerce": int}}
    column_labels: ClassVar = {
        "id": "编号",
        "customer_id": "客户",
        "name": "机房名称",
        "address": "地址",
        "service_point": "最近服务网点",
        "distance_km": "距离（公里）",
        "same_city": "同城",
        "room_rules": "机房规定（鞋套、防静电等）",
    }


class ContactAdmin(AftercareView, model=Contact):
    name = "客户联系人"
    name_plural = "客户联系人"
    icon = "fa-solid fa-address-book"
    category = "客户与合同"
    column_list: ClassVar = [
        "id",
        "customer_id",
        "name",
        "title",
        "phone",
        "is_primary",
    ]
    column_searchable_list: ClassVar = ["name", "phone"]
    column_formatters: ClassVar = {"customer_id": _name_of(Customer)}
    form_overrides: ClassVar = {"customer_id": SelectField, "notify_urls": LinesField}
    form_args: ClassVar = {
        "customer_id": {"choices": CUSTOMER_CHOICES, "coerce": int},
        "notify_urls": {"description": "每行一个 Apprise 地址，如 mailto://…、dingtalk://…、smsgw://139…"},
    }
    column_labels: ClassVar = {
        "id": "编号",
        "customer_id": "客户",
        "name": "姓名",
        "title": "职务",
        "phone": "电话",
        "email": "电子邮件",
        "is_primary": "客户维护负责人",
        "notify_urls": "通知地址",
        "quiet_start": "免打扰开始",
        "quiet_end": "免打扰结束",
    }


class ContractAdmin(AftercareView, model=Contract):
    stamp_created: ClassVar[bool] = True
    name = "服务合同"
    name_plural = "服务合同"
    icon = "fa-solid fa-file-contract"
    category = "客户与合同"
    column_list: ClassVar = [
        "id",
        "code",
        "customer_id",
        "start_date",
        "end_date",
        "service_hours",
        "inspection_frequency",
        "account_manager_id",
    ]
    column_searchable_list: ClassVar = ["code"]
    column_sortable_list: ClassVar = ["code", "end_date"]
    column_formatters: ClassVar = {
        "customer_id": _name_of(Customer),
        "account_manager_id": _name_of(Staff),
    }
    column_formatters_detail: ClassVar = column_formatters
    form_excluded_columns: ClassVar = ["id", "created_at"]
    form_overrides: ClassVar = {
        "customer_id": SelectField,
        "service_hours": SelectField,
        "inspection_frequency": SelectField,
        "severity_scheme": SelectField,
        "account_manager_id": SelectField,
    }
    form_args: ClassVar = {
        "customer_id": {"choices": CUSTOMER_CHOICES, "coerce": int},
        "account_manager_id": {"choices": _optional_choices(Staff, lambda p: p.name), "coerce": _int_or_none},
        "service_hours": {"choices": [("7x24", "7x24"), ("5x8", "5x8")]},
        "inspection_frequency": {
            "choices": [
                ("monthly", "每月"),
                ("quarterly", "每季度"),
                ("custom", "每 N 个月"),
                ("none", "不巡检"),
            ]
        },
        "severity_scheme": {
            "choices": [("outage", "特大/重大/严重/一般（001）"), ("business", "一级至四级（003）")]
        },
        "sla_policy": {
            "description": '对默认 SLA 表的覆盖（JSON），如 {"clocks": {"restore": {"hours": [2, 4, 24, 24]}}}；留空 {} 即默认'
        },
    }
    column_labels: ClassVar = {
        "id": "编号",
        "code": "合同编号",
        "customer_id": "客户",
        "start_date": "开始日期",
        "end_date": "结束日期",
        "service_hours": "服务时间",
        "inspection_frequency": "巡检频率",
        "inspection_every_months": "巡检间隔（月）",
        "severity_scheme": "故障分级",
        "sla_policy": "SLA 覆盖",
        "calendar": "工作日历",
        "timezone": "时区",
        "warranty_until": "保修截止",
        "fee": "合同金额（元）",
        "restore_tolerance_hours": "客户可容忍恢复时间（小时）",
        "account_manager_id": "客户经理（续约负责人）",
        "created_at": "创建时间",
    }


class StaffAdmin(AftercareView, model=Staff):
    name = "员工"
    name_plural = "员工与角色"
    icon = "fa-solid fa-users"
    category = "员工"
    can_delete: ClassVar[bool] = False  # people stay in the history: set 在岗 off instead
    column_list: ClassVar = ["id", "name", "roles", "phone", "active", "manager_id"]
    column_searchable_list: ClassVar = ["name", "phone"]
    column_formatters: ClassVar = {
        "roles": lambda m, a: "、".join(
            ROLE_LABELS_ZH.get(Role(r), r) for r in m.roles if r in Role._value2member_map_
        ),
        "manager_id": _name_of(Staff),
    }
    column_formatters_detail: ClassVar = column_formatters
    form_overrides: ClassVar = {
        "roles": SelectMultipleField,
        "notify_urls": LinesField,
        "manager_id": SelectField,
    }
    form_args: ClassVar = {
        "roles": {"choices": ROLE_CHOICES},
        "manager_id": {"choices": _optional_choices(Staff, lambda p: p.name), "coerce": _int_or_none},
        "notify_urls": {"description": "每行一个 Apprise 地址，如 mailto://…、dingtalk://…、smsgw://139…"},
    }
    column_labels: ClassVar = {
        "id": "编号",
        "name": "姓名",
        "phone": "电话",
        "email": "电子邮件",
        "roles": "角色",
        "notify_urls": "通知地址",
        "quiet_start": "免打扰开始",
        "quiet_end": "免打扰结束",
        "active": "在岗",
        "manager_id": "上级（续约升级）",
    }


class DeviceAdmin(AftercareView, model=Device):
    name = "设备档案"
    name_plural = "设备档案"
    icon = "fa-solid fa-hard-drive"
    category = "设备与备件"
    column_list: ClassVar = [
        "id",
        "customer_id",
        "site_id",
        "device_class",
        "model",
        "serial",
    ]
    column_searchable_list: ClassVar = ["serial", "model"]
    column_formatters: ClassVar = {
        "customer_id": _name_of(Customer),
        "site_id": _name_of(Site),
        "serial": lambda m, a: Markup('<a href="/devices/{}">{}</a>').format(m.id, m.serial),
    }
    column_formatters_detail: ClassVar = {
        "serial": lambda m, a: Markup('<a href="/devices/{}">{}（设备历史）</a>').format(m.id, m.serial)
    }
    form_overrides: ClassVar = {
        "customer_id": SelectField,
        "site_id": SelectField,
        "contract_id": SelectField,
    }
    form_args: ClassVar = {
        "customer_id": {"choices": CUSTOMER_CHOICES, "coerce": int},
        "site_id": {"choices": SITE_CHOICES, "coerce": int},
        "contract_id": {"choices": _optional_choices(Contract, lambda c: c.code), "coerce": _int_or_none},
        "config": {"description": '配置（JSON），如 {"cpu": "2x16C", "disks": 12}'},
    }
    column_labels: ClassVar = {
        "id": "编号",
        "customer_id": "客户",
        "site_id": "机房",
        "contract_id": "合同",
        "device_class": "设备类别",
        "model": "型号",
        "serial": "序列号",
        "config": "配置",
    }


class SparePartAdmin(AftercareView, model=SparePart):
    name = "备件"
    name_plural = "备件"
    icon = "fa-solid fa-gears"
    category = "设备与备件"
    column_list: ClassVar = ["id", "code", "name", "device_class", "min_quantity"]
    column_searchable_list: ClassVar = ["code", "name"]
    column_labels: ClassVar = {
        "id": "编号",
        "code": "备件编码",
        "name": "名称",
        "device_class": "适用设备类别",
        "min_quantity": "最低库存",
    }


class StockAdmin(AftercareView, model=Stock):
    name = "库存"
    name_plural = "备件库存"
    icon = "fa-solid fa-boxes-stacked"
    category = "设备与备件"
    column_list: ClassVar = ["id", "part_id", "location", "quantity"]
    column_formatters: ClassVar = {"part_id": _name_of(SparePart)}
    form_overrides: ClassVar = {"part_id": SelectField}
    form_args: ClassVar = {
        "part_id": {"choices": _choices(SparePart, lambda p: f"{p.code} {p.name}"), "coerce": int}
    }
    column_labels: ClassVar = {"id": "编号", "part_id": "备件", "location": "库位", "quantity": "数量"}


class ChecklistAdmin(AftercareView, model=ChecklistItem):
    name = "巡检检查项"
    name_plural = "巡检检查表"
    icon = "fa-solid fa-list-check"
    category = "设备与备件"
    can_delete: ClassVar[bool] = False  # results refer to item codes: set 启用 off instead
    column_list: ClassVar = [
        "device_class",
        "position",
        "code",
        "label",
        "active",
    ]
    column_default_sort: ClassVar = [("device_class", False), ("position", False)]
    column_searchable_list: ClassVar = ["label", "code"]
    column_labels: ClassVar = {
        "device_class": "设备类别（common = 机房与管理）",
        "code": "检查项编码",
        "label": "检查内容",
        "position": "顺序",
        "active": "启用",
    }


class AccountForm(Form):
    """A login: whose, its name, and a password (required for a new login; on an edit, a new one
    replaces the old and ends every session of the account)."""

    staff_id = SelectField("员工", choices=_choices(Staff, lambda p: p.name), coerce=int)
    username = StringField("登录名", validators=[validators.InputRequired(), validators.Length(max=64)])
    password = PasswordField(
        "密码",
        description=f"至少 {PASSWORD_MIN_LENGTH} 个字符；修改账号时留空即不改密码",
        validators=[validators.Optional(), validators.Length(max=PASSWORD_MAX_LENGTH)],
    )


class AccountAdmin(AftercareView, model=Account):
    name = "登录账号"
    name_plural = "登录账号"
    icon = "fa-solid fa-key"
    category = "员工"
    can_export: ClassVar[bool] = False
    form = AccountForm
    column_list: ClassVar = [
        "id",
        "username",
        "staff_id",
        "last_login_at",
        "created_at",
    ]
    column_details_exclude_list: ClassVar = ["password_hash", "session_version"]
    column_formatters: ClassVar = {"staff_id": _name_of(Staff)}
    column_labels: ClassVar = {
        "id": "编号",
        "username": "登录名",
        "staff_id": "员工",
        "last_login_at": "最近登录",
        "created_at": "创建时间",
        "password_changed_at": "密码修改时间",
    }

    async def on_model_change(
        self, data: dict[str, Any], model: Any, is_created: bool, request: Request
    ) -> None:
        """The password becomes its hash (never stored or audited in clear); a new one ends the
        account's sessions."""
        password = data.pop("password", None) or ""
        now = wallclock.now()
        try:
            data["username"] = normalise_username(str(data.get("username", "")))
            with session_scope() as session:
                other = find_account(session, data["username"])
                taken = other is not None and other.id != model.id
                has_login = session.exec(
                    select(Account).where(
                        Account.staff_id == data.get("staff_id"), col(Account.id) != model.id
                    )
                ).first()
            if taken:
                raise AccountError(f"登录名 {data['username']} 已存在")
            if has_login is not None:
                raise AccountError("该员工已有登录账号")
            if is_created and not password:
                raise AccountError("新账号必须设置密码")
            if password:
                data["password_hash"] = hash_password(password)
                data["password_changed_at"] = now
                if not is_created:
                    data["session_version"] = model.session_version + 1
        except AccountError as exc:
            raise RecordError(
                [("password" if "密码" in str(exc) else "username", str(exc))],
                {"password": "密码", "username": "登录名"},
            ) from exc
        if is_created:
            data["created_at"] = now


class ContractVersionAdmin(AftercareView, model=ContractVersion):
    """The terms each contract held, term by term (合同版本, written by the renewal): read only."""

    name = "合同版本"
    name_plural = "合同版本（历史）"
    icon = "fa-solid fa-code-branch"
    category = "客户与合同"
    can_create: ClassVar[bool] = False
    can_edit: ClassVar[bool] = False
    can_delete: ClassVar[bool] = False
    column_list: ClassVar = [
        "contract_id",
        "version",
        "start_date",
        "end_date",
        "service_hours",
        "sla_level",
        "fee",
        "recorded_by",
        "recorded_at",
    ]
    column_default_sort: ClassVar = [("contract_id", False), ("version", True)]
    column_formatters: ClassVar = {
        "contract_id": _name_of(Contract, "code"),
        "recorded_at": lambda m, a: page_templates.env.filters["local"](m.recorded_at, "%Y-%m-%d %H:%M"),
    }
    column_formatters_detail: ClassVar = column_formatters
    column_labels: ClassVar = {
        "id": "编号",
        "contract_id": "合同",
        "version": "版本",
        "start_date": "开始日期",
        "end_date": "结束日期",
        "service_hours": "服务时间",
        "inspection_frequency": "巡检频率",
        "inspection_every_months": "巡检间隔（月）",
        "sla_policy": "SLA 覆盖",
        "sla_level": "SLA 等级",
        "scope": "服务范围",
        "fee": "合同金额（元）",
        "case_id": "续约工单",
        "recorded_by": "记录人",
        "recorded_at": "记录时间",
    }


ACTION_ZH = {"create": "新建", "update": "修改", "delete": "删除", "account": "账号"}
SOURCE_ZH = {"admin": "后台管理", "import": "表格导入", "cli": "命令行"}
RECORD_ZH = {
    "customer": "客户",
    "site": "机房",
    "contact": "客户联系人",
    "contract": "服务合同",
    "staff": "员工",
    "account": "登录账号",
    "device": "设备档案",
    "sparepart": "备件",
    "stock": "备件库存",
    "checklistitem": "巡检检查项",
}


class AuditAdmin(AftercareView, model=AuditEntry):
    name = "变更记录"
    name_plural = "变更记录（审计）"
    icon = "fa-solid fa-clock-rotate-left"
    category = "员工"
    can_create: ClassVar[bool] = False
    can_edit: ClassVar[bool] = False
    can_delete: ClassVar[bool] = False
    column_list: ClassVar = [
        "at",
        "actor",
        "action",
        "record",
        "record_id",
        "source",
        "changes",
    ]
    column_default_sort: ClassVar = [("at", True), ("id", True)]
    column_formatters: ClassVar = {
        "at": lambda m, a: page_templates.env.filters["local"](m.at, "%Y-%m-%d %H:%M:%S"),
        "action": lambda m, a: ACTION_ZH.get(m.action, m.action),
        "record": lambda m, a: RECORD_ZH.get(m.record, m.record),
        "source": lambda m, a: SOURCE_ZH.get(m.source, m.source),
    }
    column_formatters_detail: ClassVar = column_formatters
    column_searchable_list: ClassVar = ["actor", "record"]
    column_labels: ClassVar = {
        "at": "时间",
        "actor": "操作人",
        "action": "操作",
        "record": "记录类型",
        "record_id": "记录编号",
        "source": "来源",
        "changes": "变更内容",
    }


VIEWS: list[type[ModelView]] = [
    CustomerAdmin,
    SiteAdmin,
    ContactAdmin,
    ContractAdmin,
    ContractVersionAdmin,
    StaffAdmin,
    AccountAdmin,
    DeviceAdmin,
    SparePartAdmin,
    StockAdmin,
    ChecklistAdmin,
    AuditAdmin,
]

# sqladmin's own words (its template function `_`); sqladmin ships no Chinese catalogue
ZH: dict[str, str] = {
    "List": "列表",
    "Details": "详情",
    "Create": "新建",
    "Edit": "编辑",
    "Delete": "删除",
    "Export": "导出",
    "Import": "导入",
    "New %(name)s": "新建%(name)s",
    "Cancel": "取消",
    "Save": "保存",
    "Save and continue editing": "保存并继续编辑",
    "Save and add another": "保存并新建",
    "Column": "字段",
    "Value": "值",
    "Go Back": "返回",
    "Edit %(name)s": "编辑%(name)s",
    "Save as new": "另存为新记录",
    "Logout": "退出登录",
    "Language": "语言",
    "You are not authorized to view these records.": "您无权查看这些记录。",
    "Actions": "操作",
    "Delete selected items": "删除所选",
    "Search": "搜索",
    "Select all": "全选",
    "Select item": "选择",
    "View": "查看",
    "Showing %(start)s to %(end)s of %(count)s items": "第 %(start)s–%(end)s 条，共 %(count)s 条",
    "prev": "上一页",
    "next": "下一页",
    "Show": "每页",
    "%(size)s / Page": "%(size)s 条/页",
    "Filters": "筛选",
    "Close": "关闭",
    "Done": "完成",
    "Clear filter": "清除筛选",
    "Apply Filter": "应用筛选",
    "Please confirm": "请确认",
    "Yes": "确定",
    "Page": "页",
}


def zh(message: str, **values: Any) -> str:
    text = ZH.get(message, message)
    return text % values if values else text


def mount(app: FastAPI) -> Admin:
    """The back office at /admin on `app` (after its own routes: /admin/login goes to /login)."""

    def clock() -> datetime:
        return app.dependency_overrides.get(staff_now, staff_now)()

    admin = Admin(
        app,
        session_maker=sessionmaker(class_=AdminSession),
        base_url="/admin",
        title="售后服务 · 后台管理",
        templates_dir=str(ADMIN_TEMPLATES),
        authentication_backend=StaffAuth(clock),
        authorization_backend=StaffGrants(),
    )
    admin.templates.env.globals["_"] = zh
    admin.templates.env.globals["gettext"] = zh
    for view in VIEWS:
        admin.add_view(view)
    return admin


__all__ = ["VIEWS", "RecordError", "mount"]
