"""The back office at /admin (sqladmin) over HTTP as logged-in staff, on a real SQLite file with the
demo data: login required, Chinese pages without inline script, CSRF on every change, role limits
(account manager: contracts; parts keeper: parts; administrator: all), checked values with Chinese
reasons (Apprise addresses, SLA overrides, distances), and every change in the audit history.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from tests.conftest import T0
from tests.staff_login import log_in, make_account


@pytest.fixture
def client(demo: str) -> TestClient:
    from web.app import create_app
    from web.staff import staff_now

    app = create_app()
    app.dependency_overrides[staff_now] = lambda: T0
    c = TestClient(app)
    make_account("admin1", roles=("administrator",), name="管理员甲")
    make_account("am1", roles=("account_manager",), name="客户经理乙")
    make_account("keeper1", roles=("parts_keeper",), name="备件管理员丙")
    make_account("eng1", roles=("engineer",), name="工程师丁")
    return c


def csrf_of(page: Any) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match, page.text[:1500]
    return match[1]


def form_values(page: Any) -> dict[str, str]:
    """What the edit form would post as it stands: inputs, textareas and the selected options."""
    import html

    values = {
        k: html.unescape(v)
        for k, v in re.findall(r'<input[^>]*name="([a-z_]+)"[^>]*value="([^"]*)"', page.text)
    }
    for name, body in re.findall(r'<textarea[^>]*name="([a-z_]+)"[^>]*>(.*?)</textarea>', page.text, re.S):
        values[name] = html.unescape(body.strip())
    for name, body in re.findall(r'<select[^>]*name="([a-z_]+)"[^>]*>(.*?)</select>', page.text, re.S):
        chosen = re.search(r'<option[^>]*selected[^>]*value="([^"]*)"|<option value="([^"]*)" selected', body)
        if chosen:
            values[name] = chosen[1] or chosen[2]
    return values


def text(page: Any) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page.text).split())


def audit_rows(record: str) -> list[Any]:
    from models.accounts import AuditEntry
    from models.db import session_scope

    with session_scope() as s:
        return list(
            s.exec(select(AuditEntry).where(AuditEntry.record == record).order_by(AuditEntry.id)).all()
        )


def test_the_back_office_needs_a_login_and_its_pages_are_chinese_without_inline_script(
    client: TestClient,
) -> None:
    first = client.get("/admin/customer/list", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/admin/customer/list"
    assert log_in(client, "admin1", next="/admin/customer/list").headers["location"] == "/admin/customer/list"
    page = client.get("/admin/customer/list")
    assert page.status_code == 200
    shown = text(page)
    for word in ("客户", "新建", "搜索", "北京"):
        assert word in shown, word
    # every script is a file of this site; the page's CSP forbids inline script
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for script in re.findall(r"<script[^>]*>(.*?)</script>", page.text, re.S):
        assert not script.strip(), script[:200]
    assert "/static/admin.js" in page.text
    assert client.get("/static/admin.js").status_code == 200


def test_a_change_without_the_csrf_token_is_refused_and_nothing_is_written(client: TestClient) -> None:
    from models import Customer
    from models.db import session_scope

    log_in(client, "admin1")
    client.get("/admin/customer/create")
    refused = client.post(
        "/admin/customer/create", data={"code": "NEW1", "name": "新客户"}, follow_redirects=False
    )
    assert refused.status_code == 403 and "表单已失效" in refused.text
    with session_scope() as s:
        assert s.exec(select(Customer).where(Customer.code == "NEW1")).first() is None
    assert audit_rows("customer") == []


def test_an_administrator_creates_and_edits_a_customer_and_the_audit_says_who_and_what(
    client: TestClient,
) -> None:
    from models import Customer
    from models.db import session_scope

    log_in(client, "admin1")
    token = csrf_of(client.get("/admin/customer/create"))
    made = client.post(
        "/admin/customer/create",
        data={"code": "SHYH", "name": "上海某银行", "csrf": token, "save": "保存"},
        follow_redirects=False,
    )
    assert made.status_code == 302, made.text[:2000]
    with session_scope() as s:
        customer = s.exec(select(Customer).where(Customer.code == "SHYH")).one()
        customer_id = customer.id
    edited = client.post(
        f"/admin/customer/edit/{customer_id}",
        data={"code": "SHYH", "name": "上海某银行股份有限公司", "csrf": token, "save": "保存"},
        follow_redirects=False,
    )
    assert edited.status_code == 302, edited.text[:2000]
    created, updated = audit_rows("customer")
    assert (created.action, created.actor, created.record_id) == ("create", "管理员甲", str(customer_id))
    assert created.changes["name"] == "上海某银行" and created.actor_staff_id is not None
    assert updated.action == "update" and updated.changes == {
        "name": ["上海某银行", "上海某银行股份有限公司"]
    }
    # the audit history is a page of its own, newest first
    history = text(client.get("/admin/audit-entry/list"))
    assert "管理员甲" in history and "上海某银行股份有限公司" in history


def test_roles_edit_only_what_they_own(client: TestClient) -> None:
    from models import Contract
    from models.db import session_scope

    with session_scope() as s:
        contract = s.exec(select(Contract)).first()
        assert contract is not None
        contract_id = contract.id
    # the engineer reads reference data but changes nothing, and sees no logins
    log_in(client, "eng1")
    assert client.get("/admin/device/list").status_code == 200
    assert client.get("/admin/contract/create").status_code == 403
    assert client.get("/admin/account/list").status_code == 403
    # the parts keeper: parts yes, contracts no
    log_in(client, "keeper1")
    token = csrf_of(client.get("/admin/spare-part/create"))
    part = client.post(
        "/admin/spare-part/create",
        data={
            "code": "PSU-750W",
            "name": "750W 电源模块",
            "device_class": "server",
            "csrf": token,
            "save": "保存",
        },
        follow_redirects=False,
    )
    assert part.status_code == 302, part.text[:2000]
    assert client.get(f"/admin/contract/edit/{contract_id}").status_code == 403
    assert client.post(f"/admin/contract/edit/{contract_id}", data={"csrf": token}).status_code == 403
    # the account manager: contracts yes, parts no
    log_in(client, "am1")
    assert client.get(f"/admin/contract/edit/{contract_id}").status_code == 200
    assert client.get("/admin/spare-part/create").status_code == 403
    assert client.get("/admin/audit-entry/list").status_code == 403
    (entry,) = audit_rows("sparepart")
    assert entry.actor == "备件管理员丙"


def test_a_bad_value_is_refused_on_the_form_in_chinese(client: TestClient) -> None:
    from models import Contract, Customer, Site, Staff
    from models.db import session_scope

    with session_scope() as s:
        customer = s.exec(select(Customer)).first()
        contract = s.exec(select(Contract)).first()
        person = s.exec(select(Staff)).first()
        assert customer and contract and person
        customer_id, contract_id, person_id = customer.id, contract.id, person.id
        sites = len(s.exec(select(Site)).all())
    log_in(client, "admin1")
    token = csrf_of(client.get("/admin/site/create"))
    far = client.post(
        "/admin/site/create",
        data={
            "customer_id": str(customer_id),
            "name": "新机房",
            "distance_km": "-5",
            "csrf": token,
            "save": "保存",
        },
    )
    assert far.status_code == 400 and "距离（公里）：不能小于 0" in text(far)
    assert (
        f'<option selected value="{customer_id}">' in far.text
        or f'value="{customer_id}" selected' in far.text
    )
    page = client.get(f"/admin/contract/edit/{contract_id}")
    form = form_values(page)
    assert form["customer_id"] and form["service_hours"] == "7x24", form
    form.update({"sla_policy": '{"clocks": {"restore": {"fortnights": 2}}}', "csrf": token, "save": "保存"})
    bad_sla = client.post(f"/admin/contract/edit/{contract_id}", data=form)
    assert bad_sla.status_code == 400 and "SLA 覆盖：时钟 restore 必须且只能有一个单位" in text(bad_sla)
    bad_url = client.post(
        f"/admin/staff/edit/{person_id}",
        data={
            "name": "张三",
            "roles": ["engineer"],
            "notify_urls": "notaurl\nmailto://x@example.com",
            "active": "y",
            "csrf": token,
            "save": "保存",
        },
    )
    assert bad_url.status_code == 400 and "不是通知地址" in text(bad_url) and "notaurl" in text(bad_url)
    with session_scope() as s:
        assert len(s.exec(select(Site)).all()) == sites
    assert audit_rows("site") == [] and audit_rows("staff") == []
    # the same form with a right distance: the site belongs to the chosen customer
    made = client.post(
        "/admin/site/create",
        data={
            "customer_id": str(customer_id),
            "name": "新机房",
            "distance_km": "42",
            "csrf": token,
            "save": "Save",
        },
        follow_redirects=False,
    )
    assert made.status_code == 302, text(made)[:500]
    with session_scope() as s:
        site = s.exec(select(Site).where(Site.name == "新机房")).one()
        assert site.customer_id == customer_id and site.distance_km == 42
    (entry,) = audit_rows("site")
    assert entry.changes["customer_id"] == customer_id and entry.changes["distance_km"] == 42


def test_a_delete_needs_the_token_header_as_admin_js_sends_it_and_is_audited(client: TestClient) -> None:
    from models import SparePart
    from models.db import session_scope

    with session_scope() as s:
        part = SparePart(code="FAN-01", name="风扇模块", device_class="server")
        s.add(part)
        s.flush()
        part_id = part.id
    log_in(client, "keeper1")
    token = csrf_of(client.get("/admin/spare-part/list"))
    assert client.delete(f"/admin/spare-part/delete?pks={part_id}").status_code == 403
    gone = client.delete(f"/admin/spare-part/delete?pks={part_id}", headers={"X-CSRF-Token": token})
    assert gone.status_code == 200, gone.text[:500]
    with session_scope() as s:
        assert s.get(SparePart, part_id) is None
    (entry,) = audit_rows("sparepart")
    assert entry.action == "delete" and entry.changes["code"] == "FAN-01" and entry.actor == "备件管理员丙"


def test_the_administrator_makes_a_login_for_a_staff_person_and_resets_its_password(
    client: TestClient,
) -> None:
    from models import Staff
    from models.accounts import Account
    from models.db import session_scope

    with session_scope() as s:
        person = s.exec(select(Staff).where(Staff.name == "刘工程师")).one()
        person_id = person.id
    log_in(client, "admin1")
    token = csrf_of(client.get("/admin/account/create"))
    short = client.post(
        "/admin/account/create",
        data={
            "staff_id": str(person_id),
            "username": "liu",
            "password": "short",
            "csrf": token,
            "save": "Save",
        },
    )
    assert short.status_code == 400 and "至少 10 个字符" in text(short)
    taken = client.post(
        "/admin/account/create",
        data={
            "staff_id": str(person_id),
            "username": "eng1",
            "password": "long enough password",
            "csrf": token,
            "save": "Save",
        },
    )
    assert taken.status_code == 400 and "登录名 eng1 已存在" in text(taken)
    made = client.post(
        "/admin/account/create",
        data={
            "staff_id": str(person_id),
            "username": "Liu",
            "password": "long enough password",
            "csrf": token,
            "save": "Save",
        },
        follow_redirects=False,
    )
    assert made.status_code == 302, text(made)[:500]
    with session_scope() as s:
        account = s.exec(select(Account).where(Account.username == "liu")).one()
        account_id = account.id
        assert account.password_hash.startswith("$argon2id$")
    (entry,) = [e for e in audit_rows("account") if e.action == "create"]
    assert "long enough password" not in str(entry.changes) and "password_hash" not in entry.changes
    # the engineer logs in with it; a new password set by the administrator ends that session
    engineer = TestClient(client.app)
    assert log_in(engineer, "liu", "long enough password").status_code == 303
    assert engineer.get("/", follow_redirects=False).status_code == 200
    reset = client.post(
        f"/admin/account/edit/{account_id}",
        data={
            "staff_id": str(person_id),
            "username": "liu",
            "password": "a new long password",
            "csrf": token,
            "save": "Save",
        },
        follow_redirects=False,
    )
    assert reset.status_code == 302, text(reset)[:500]
    assert engineer.get("/", follow_redirects=False).status_code == 303
    assert log_in(engineer, "liu", "a new long password").status_code == 303
    # an edit without a password keeps it
    renamed = client.post(
        f"/admin/account/edit/{account_id}",
        data={
            "staff_id": str(person_id),
            "username": "liu.gc",
            "password": "",
            "csrf": token,
            "save": "Save",
        },
        follow_redirects=False,
    )
    assert renamed.status_code == 302
    assert log_in(engineer, "liu.gc", "a new long password").status_code == 303


def test_a_device_in_a_site_of_another_customer_is_refused_on_the_form(client: TestClient) -> None:
    from models import Customer, Device, Site
    from models.db import session_scope

    with session_scope() as s:
        bank = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        hospital_site = s.exec(select(Site).where(Site.name == "门诊楼机房")).one()
        bank_site = s.exec(select(Site).where(Site.name == "亦庄机房")).one()
        bank_id, hospital_site_id, bank_site_id = bank.id, hospital_site.id, bank_site.id
        devices = len(s.exec(select(Device)).all())
    log_in(client, "admin1")
    token = csrf_of(client.get("/admin/device/create"))
    form = {
        "customer_id": str(bank_id),
        "site_id": str(hospital_site_id),
        "contract_id": "",
        "device_class": "server",
        "model": "PowerEdge R750",
        "serial": "SN-ADMIN-01",
        "config": "{}",
        "csrf": token,
        "save": "保存",
    }
    wrong = client.post("/admin/device/create", data=form)
    assert wrong.status_code == 400, text(wrong)[:800]
    assert "机房：机房“门诊楼机房”不属于客户“北京某银行数据中心”" in text(wrong)
    with session_scope() as s:
        assert len(s.exec(select(Device)).all()) == devices
    assert audit_rows("device") == []
    made = client.post(
        "/admin/device/create", data={**form, "site_id": str(bank_site_id)}, follow_redirects=False
    )
    assert made.status_code == 302, text(made)[:800]
    with session_scope() as s:
        device = s.exec(select(Device).where(Device.serial == "SN-ADMIN-01")).one()
        assert device.site_id == bank_site_id


def staff_id(name: str) -> int:
    from models import Staff
    from models.db import session_scope

    with session_scope() as s:
        person = s.exec(select(Staff).where(Staff.name == name)).one()
        assert person.id is not None
        return person.id


def test_a_customers_manager_ladder_is_typed_as_names_in_order_and_only_active_staff(
    client: TestClient,
) -> None:
    from models import Customer, Staff
    from models.db import session_scope

    with session_scope() as s:
        bank = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        bank_id, old_ladder = bank.id, list(bank.manager_ladder)
        gone = s.exec(select(Staff).where(Staff.name == "周专家")).one()
        gone.active = False
        s.add(gone)
    log_in(client, "admin1")
    page = client.get(f"/admin/customer/edit/{bank_id}")
    assert "升级经理（由低到高）" in text(page)
    form = form_values(page)
    assert form["manager_ladder"] == "林客服经理、孔经理、吴总监、冯总经理", form
    form["csrf"] = csrf_of(page)
    form["save"] = "保存"
    unknown = client.post(
        f"/admin/customer/edit/{bank_id}", data={**form, "manager_ladder": "孔经理、钱经理"}
    )
    assert unknown.status_code == 400 and "没有员工 &#39;钱经理&#39;" in unknown.text, text(unknown)[:800]
    inactive = client.post(
        f"/admin/customer/edit/{bank_id}", data={**form, "manager_ladder": "孔经理,周专家"}
    )
    assert inactive.status_code == 400 and "升级经理（由低到高）：经理“周专家”已不在岗" in text(inactive)
    twice = client.post(f"/admin/customer/edit/{bank_id}", data={**form, "manager_ladder": "孔经理、孔经理"})
    assert twice.status_code == 400 and "孔经理 出现不止一次" in text(twice)
    assert audit_rows("customer") == []
    saved = client.post(
        f"/admin/customer/edit/{bank_id}",
        data={**form, "manager_ladder": "孔经理，吴总监、冯总经理"},
        follow_redirects=False,
    )
    assert saved.status_code == 302, text(saved)[:800]
    new_ladder = [staff_id("孔经理"), staff_id("吴总监"), staff_id("冯总经理")]
    with session_scope() as s:
        bank = s.get(Customer, bank_id)
        assert bank is not None and bank.manager_ladder == new_ladder
    (entry,) = audit_rows("customer")
    assert entry.actor == "管理员甲" and entry.changes == {"manager_ladder": [old_ladder, new_ladder]}
    assert "孔经理 → 吴总监 → 冯总经理" in text(client.get("/admin/customer/list"))


def test_a_contracts_account_manager_and_a_persons_manager_are_active_staff_shown_by_name(
    client: TestClient,
) -> None:
    from models import Contract, Staff
    from models.db import session_scope

    with session_scope() as s:
        contract = s.exec(select(Contract)).first()
        assert contract is not None
        contract_id = contract.id
        gone = s.exec(select(Staff).where(Staff.name == "周专家")).one()
        gone.active = False
        s.add(gone)
    new_manager, gone_id = staff_id("孔经理"), staff_id("周专家")
    log_in(client, "am1")
    page = client.get(f"/admin/contract/edit/{contract_id}")
    assert "客户经理（续约负责人）" in text(page)
    form = {**form_values(page), "csrf": csrf_of(page), "save": "保存"}
    refused = client.post(
        f"/admin/contract/edit/{contract_id}", data={**form, "account_manager_id": str(gone_id)}
    )
    assert refused.status_code == 400 and "客户经理“周专家”已不在岗" in text(refused)
    saved = client.post(
        f"/admin/contract/edit/{contract_id}",
        data={**form, "account_manager_id": str(new_manager)},
        follow_redirects=False,
    )
    assert saved.status_code == 302, text(saved)[:800]
    (entry,) = audit_rows("contract")
    assert entry.actor == "客户经理乙" and entry.changes["account_manager_id"][1] == new_manager
    assert "孔经理" in text(client.get("/admin/contract/list"))
    # a person's manager (the renewal's escalation): the administrator's, never the person
    shen = staff_id("沈经理")
    denied = client.get(f"/admin/staff/edit/{shen}")
    assert denied.status_code in (302, 303, 403, 404)
    log_in(client, "admin1")
    page = client.get(f"/admin/staff/edit/{shen}")
    form = {**form_values(page), "csrf": csrf_of(page), "save": "保存"}
    form["roles"] = ["account_manager"]  # type: ignore[assignment]
    form.pop("notify_urls", None)
    self_managed = client.post(f"/admin/staff/edit/{shen}", data={**form, "manager_id": str(shen)})
    assert self_managed.status_code == 400 and "上级（续约升级）：上级不能是本人" in text(self_managed)
    assert "高经理" in text(client.get("/admin/staff/list"))


def test_the_contract_versions_are_a_read_only_list_for_staff(client: TestClient) -> None:
    from datetime import date

    from models import Contract, ContractVersion
    from models.db import session_scope

    with session_scope() as s:
        contract = s.exec(select(Contract)).first()
        assert contract is not None and contract.id is not None
        code = contract.code
        s.add(
            ContractVersion(
                contract_id=contract.id,
                version=2,
                start_date=date(2027, 1, 1),
                end_date=date(2027, 12, 31),
                sla_level="高级",
                fee=120000,
                recorded_by="沈经理",
                recorded_at=T0,
            )
        )
    log_in(client, "eng1")
    listed = text(client.get("/admin/contract-version/list"))
    assert "合同版本" in listed and code in listed and "高级" in listed and "2027-12-31" in listed
    assert "沈经理" in listed and "2026-11-23 10:00" in listed
    log_in(client, "admin1")
    assert client.get("/admin/contract-version/create").status_code in (403, 404)
    assert client.get("/admin/contract-version/edit/1").status_code in (403, 404)
