"""`aftercare import` on real spreadsheet files written into tmp_path (openpyxl for .xlsx; CSV in
UTF-8 and in GB18030 as Excel saves it on a Chinese Windows), against the demo data in a real
SQLite file: the dry run lists what would change and writes nothing, a wrong row names its row and
column and nothing at all is written, a good file is written with its audit rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook
from sqlmodel import select
from typer.testing import CliRunner


def xlsx(path: Path, rows: list[list[Any]]) -> Path:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def csv_file(path: Path, rows: list[list[Any]], encoding: str = "utf-8-sig") -> Path:
    import csv
    import io

    out = io.StringIO()
    csv.writer(out).writerows(rows)
    path.write_bytes(out.getvalue().encode(encoding))
    return path


def run(*args: str) -> Any:
    from deployments.cli import app

    return CliRunner().invoke(app, ["import", *args])


def audit_of(record: str) -> list[Any]:
    from models.accounts import AuditEntry
    from models.db import session_scope

    with session_scope() as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.record == record)).all())


def test_customers_xlsx_dry_run_lists_new_and_changed_and_writes_nothing_then_the_import_writes(
    demo: str, tmp_path: Path
) -> None:
    from models import Customer
    from models.db import session_scope

    path = xlsx(
        tmp_path / "customers.xlsx",
        [
            ["客户编码", "客户名称"],
            ["BJYH", "北京某银行数据中心（新址）"],
            ["SJZY", "石家庄某医院信息中心"],
            ["GZYH", "广州某银行"],
        ],
    )
    dry = run(str(path), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "第 2 行 修改 BJYH：name: 北京某银行数据中心 → 北京某银行数据中心（新址）" in dry.output
    assert "第 4 行 新建 GZYH：code=GZYH，name=广州某银行" in dry.output
    assert "新建 1，修改 1，无变化 1" in dry.output and "试运行，未写入" in dry.output
    with session_scope() as s:
        assert s.exec(select(Customer).where(Customer.code == "GZYH")).first() is None
        assert s.exec(select(Customer).where(Customer.code == "BJYH")).one().name == "北京某银行数据中心"
    assert audit_of("customer") == []

    done = run(str(path), "--as", "导入员甲")
    assert done.exit_code == 0 and "已写入" in done.output, done.output
    with session_scope() as s:
        assert s.exec(select(Customer).where(Customer.code == "GZYH")).one().name == "广州某银行"
        assert s.exec(select(Customer).where(Customer.code == "BJYH")).one().name.endswith("（新址）")
    rows = sorted(audit_of("customer"), key=lambda e: e.action)
    assert [(e.action, e.actor, e.source) for e in rows] == [
        ("create", "导入员甲", "import"),
        ("update", "导入员甲", "import"),
    ]
    assert (
        rows[1].changes["name"] == ["北京某银行数据中心", "北京某银行数据中心（新址）"]
        and rows[1].changes["_row"] == 2
    )
    again = run(str(path))
    assert "新建 0，修改 0，无变化 3" in again.output


@pytest.mark.parametrize("encoding", ["utf-8-sig", "gb18030"])
def test_a_sites_csv_with_wrong_rows_names_row_and_column_and_writes_nothing(
    demo: str, tmp_path: Path, encoding: str
) -> None:
    from models import Site
    from models.db import session_scope

    with session_scope() as s:
        before = len(s.exec(select(Site)).all())
    path = csv_file(
        tmp_path / "机房.csv",
        [
            ["客户", "机房名称", "地址", "距离（公里）", "同城"],
            ["BJYH", "顺义机房", "顺义区", "35", "是"],  # good, but must not be written
            ["BJYH", "昌平机房", "", "-5", "否"],
            ["不存在的客户", "某机房", "", "10", "否"],
            ["SJZY", "新院区机房", "", "十公里", "也许"],
            ["BJYH", "顺义机房", "", "36", "是"],
        ],
        encoding,
    )
    result = run(str(path))
    assert result.exit_code == 1
    out = result.output
    assert "第 3 行 距离（公里）（D 列）：不能小于 0\n" in out
    assert "第 4 行 客户（A 列）：没有客户 '不存在的客户'" in out
    assert "第 5 行 距离（公里）（D 列）：应为数字" in out and "第 5 行 同城（E 列）：应为 是/否" in out
    assert "第 6 行：与第 2 行重复（BJYH、顺义机房）" in out
    assert "未写入任何记录" in out
    with session_scope() as s:
        assert len(s.exec(select(Site)).all()) == before
    assert audit_of("site") == []
    # the header row is checked first: an unknown column names its letter
    bad_header = csv_file(tmp_path / "sites.csv", [["客户", "机房名称", "楼层"], ["BJYH", "X", "3"]])
    refused = run(str(bad_header))
    assert refused.exit_code == 1 and "第 1 行 楼层（C 列）：未知列" in refused.output


def test_staff_with_roles_in_chinese_and_addresses_checked_by_apprise(demo: str, tmp_path: Path) -> None:
    from models import Staff
    from models.db import session_scope

    bad = xlsx(
        tmp_path / "staff.xlsx",
        [
            ["姓名", "电话", "角色", "通知地址"],
            ["马工程师", "13800000099", "服务工程师、高级工程师", "log://staff/13800000099"],
            ["牛工程师", "13800000098", "修理工", ""],
            ["杨工程师", "13800000097", "服务工程师", "notaurl"],
        ],
    )
    refused = run(str(bad))
    assert refused.exit_code == 1
    assert "第 3 行 角色（C 列）：未知角色 '修理工'" in refused.output
    assert "第 4 行 通知地址（D 列）" in refused.output and "不是通知地址" in refused.output
    with session_scope() as s:
        assert s.exec(select(Staff).where(Staff.name == "马工程师")).first() is None
    good = xlsx(
        tmp_path / "staff.xlsx",
        [
            ["姓名", "电话", "角色", "通知地址"],
            ["马工程师", "13800000099", "服务工程师、高级工程师", "log://staff/13800000099"],
        ],
    )
    assert run(str(good)).exit_code == 0
    with session_scope() as s:
        person = s.exec(select(Staff).where(Staff.name == "马工程师")).one()
        assert person.roles == ["engineer", "senior_engineer"] and person.notify_urls == [
            "log://staff/13800000099"
        ]


def test_contracts_are_checked_like_the_admin_pages_dates_and_sla_overrides(
    demo: str, tmp_path: Path
) -> None:
    from datetime import date

    from models import Contract
    from models.db import session_scope

    path = xlsx(
        tmp_path / "contracts.xlsx",
        [
            ["合同编号", "客户", "开始日期", "结束日期", "服务时间", "SLA 覆盖"],
            [
                "HT-2027-GOOD",
                "北京某银行数据中心",
                date(2027, 1, 1),
                date(2027, 12, 31),
                "5x8",
                '{"clocks": {"restore": {"hours": [2, 4, 24, 24]}}}',
            ],
            ["HT-2027-BACK", "BJYH", "2027-12-31", "2027-01-01", "7x24", ""],
            [
                "HT-2027-SLA",
                "BJYH",
                "2027/01/01",
                "2027/12/31",
                "7x24",
                '{"clocks": {"restore": {"fortnights": 1}}}',
            ],
            ["HT-2027-JSON", "BJYH", "2027-01-01", "2027-12-31", "9x9", "{not json"],
        ],
    )
    result = run(str(path), "--dry-run")
    assert result.exit_code == 1
    assert "第 3 行 结束日期（D 列）：结束日期早于开始日期" in result.output
    assert "第 4 行 SLA 覆盖（F 列）：时钟 restore 必须且只能有一个单位" in result.output
    assert "第 5 行 SLA 覆盖（F 列）：不是有效的 JSON" in result.output
    with session_scope() as s:
        assert s.exec(select(Contract).where(Contract.code == "HT-2027-GOOD")).first() is None
    good = xlsx(
        tmp_path / "contracts.xlsx",
        [
            ["合同编号", "客户", "开始日期", "结束日期", "服务时间"],
            ["HT-2027-GOOD", "BJYH", date(2027, 1, 1), date(2027, 12, 31), "5x8"],
        ],
    )
    assert run(str(good)).exit_code == 0
    with session_scope() as s:
        contract = s.exec(select(Contract).where(Contract.code == "HT-2027-GOOD")).one()
        assert contract.start_date == date(2027, 1, 1) and contract.service_hours == "5x8"


def test_devices_resolve_customer_site_and_contract_and_update_by_serial(demo: str, tmp_path: Path) -> None:
    from models import Contract, Customer, Device, Site
    from models.db import session_scope

    with session_scope() as s:
        customer = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        contract = s.exec(select(Contract).where(Contract.customer_id == customer.id)).first()
        assert contract is not None
        code = contract.code
    path = xlsx(
        tmp_path / "devices.xlsx",
        [
            ["序列号", "客户", "机房", "合同", "设备类别", "型号", "配置"],
            ["SN-NEW-001", "BJYH", "亦庄机房", code, "server", "PowerEdge R750", '{"cpu": "2x16C"}'],
            ["SN-NEW-002", "BJYH", "门诊楼机房", "", "storage", "Unity 480", ""],
        ],
    )
    refused = run(str(path))
    assert refused.exit_code == 1 and "第 3 行 机房（C 列）：该客户没有机房 '门诊楼机房'" in refused.output
    good = xlsx(
        path,
        [
            ["序列号", "客户", "机房", "合同", "设备类别", "型号", "配置"],
            ["SN-NEW-001", "BJYH", "亦庄机房", code, "server", "PowerEdge R750", '{"cpu": "2x16C"}'],
        ],
    )
    assert run(str(good)).exit_code == 0
    moved = xlsx(
        tmp_path / "devices.xlsx", [["序列号", "客户", "机房"], ["SN-NEW-001", "BJYH", "天津灾备机房"]]
    )
    dry = run(str(moved), "--dry-run")
    assert "第 2 行 修改 SN-NEW-001：site_id:" in dry.output
    assert run(str(moved)).exit_code == 0
    with session_scope() as s:
        device = s.exec(select(Device).where(Device.serial == "SN-NEW-001")).one()
        site = s.get(Site, device.site_id)
        assert site is not None and site.name == "天津灾备机房" and device.config == {"cpu": "2x16C"}
    # moving the device to another customer and leaving its site blank would leave it in the first
    # customer's site: refused by the admin pages' check, on the customer column, nothing written
    other = xlsx(tmp_path / "devices.xlsx", [["序列号", "客户"], ["SN-NEW-001", "SJZY"]])
    wrong = run(str(other))
    assert wrong.exit_code == 1, wrong.output
    assert "第 2 行 客户（B 列）：机房“天津灾备机房”不属于客户“石家庄某医院信息中心”" in wrong.output
    with session_scope() as s:
        device = s.exec(select(Device).where(Device.serial == "SN-NEW-001")).one()
        assert device.customer_id == customer.id


def test_a_file_that_is_not_an_import_is_refused_with_a_clear_message(demo: str, tmp_path: Path) -> None:
    unknown = tmp_path / "misc.csv"
    unknown.write_text("a,b\n1,2\n")
    assert run(str(unknown)).exit_code == 2 and "--kind" in run(str(unknown)).output
    notxlsx = tmp_path / "customers.xlsx"
    notxlsx.write_text("not a workbook")
    answer = run(str(notxlsx))
    assert (
        answer.exit_code == 2 and "无法读取 Excel 文件" in answer.output and "Traceback" not in answer.output
    )
    assert "找不到文件" in run(str(tmp_path / "customers.csv")).output


def test_the_manager_ladder_account_manager_and_manager_are_imported_by_name(
    demo: str, tmp_path: Path
) -> None:
    from models import Contract, Customer, Staff
    from models.db import session_scope

    with session_scope() as s:
        ids = {p.name: p.id for p in s.exec(select(Staff)).all()}
        gone = s.exec(select(Staff).where(Staff.name == "周专家")).one()
        gone.active = False
        s.add(gone)
        contract = s.exec(select(Contract)).first()
        assert contract is not None
        code = contract.code
    wrong = xlsx(
        tmp_path / "customers.xlsx",
        [
            ["客户编码", "客户名称", "升级经理"],
            ["BJYH", "北京某银行数据中心", "孔经理、钱经理"],
            ["SJZY", "石家庄某医院信息中心", "孔经理,周专家"],
        ],
    )
    refused = run(str(wrong))
    assert refused.exit_code == 1, refused.output
    assert "第 2 行 升级经理（C 列）：没有员工 '钱经理'" in refused.output
    assert "第 3 行 升级经理（C 列）：经理“周专家”已不在岗" in refused.output
    good = xlsx(
        tmp_path / "customers.xlsx",
        [["客户编码", "客户名称", "升级经理"], ["BJYH", "北京某银行数据中心", "孔经理，吴总监、冯总经理"]],
    )
    assert run(str(good)).exit_code == 0
    contracts = xlsx(tmp_path / "contracts.xlsx", [["合同编号", "客户经理"], [code, "孔经理、吴总监"]])
    two = run(str(contracts))
    assert two.exit_code == 1 and "第 2 行 客户经理（B 列）：只能填一位员工" in two.output
    contracts = xlsx(tmp_path / "contracts.xlsx", [["合同编号", "客户经理"], [code, "孔经理"]])
    assert run(str(contracts)).exit_code == 0
    staff = xlsx(tmp_path / "staff.xlsx", [["姓名", "上级"], ["沈经理", "沈经理"]])
    itself = run(str(staff))
    assert itself.exit_code == 1 and "第 2 行 上级（B 列）：上级不能是本人" in itself.output
    staff = xlsx(tmp_path / "staff.xlsx", [["姓名", "上级"], ["沈经理", "吴总监"]])
    assert run(str(staff)).exit_code == 0
    with session_scope() as s:
        bank = s.exec(select(Customer).where(Customer.code == "BJYH")).one()
        assert bank.manager_ladder == [ids["孔经理"], ids["吴总监"], ids["冯总经理"]]
        assert s.exec(select(Contract).where(Contract.code == code)).one().account_manager_id == ids["孔经理"]
        assert s.exec(select(Staff).where(Staff.name == "沈经理")).one().manager_id == ids["吴总监"]
    assert [e.changes for e in audit_of("customer")][-1]["manager_ladder"][1] == bank.manager_ladder
