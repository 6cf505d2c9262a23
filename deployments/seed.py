"""Demo reference data for a first run: customers, sites at different distances, 7x24 and 5x8
contracts, staff for every role, devices and spare parts.

Notification addresses are `log://` URLs (aftercare's own Apprise plugin that appends to
`var/notifications.log`), so a demo sends nothing out of the machine; real deployments replace
them with `mailto://`, `dingtalk://`, `wecombot://`, `feishu://` or an SMS gateway.
"""

from __future__ import annotations

from datetime import date, datetime, time

from sqlmodel import Session, func, select

from models import (
    Contact,
    Contract,
    Customer,
    Device,
    InspectionFrequency,
    Role,
    ServiceHours,
    SeverityScheme,
    Site,
    SparePart,
    Staff,
    Stock,
)
from tasks.channels import validate_person  # every person entered goes through it

STAFF = [
    ("王值班", [Role.DISPATCHER], "13800000001"),
    ("李调度", [Role.DISPATCHER], "13800000002"),
    ("张技术", [Role.TECHNICAL_LEAD], "13800000003"),
    ("刘工程师", [Role.ENGINEER], "13800000004"),
    ("陈工程师", [Role.ENGINEER], "13800000005"),
    ("赵高工", [Role.SENIOR_ENGINEER], "13800000006"),
    ("孙专家", [Role.EXPERT], "13800000007"),
    ("周专家", [Role.EXPERT], "13800000008"),
    ("吴总监", [Role.TECHNICAL_DIRECTOR], "13800000009"),
    ("郑协调", [Role.COORDINATOR], "13800000010"),
    ("冯总经理", [Role.GENERAL_MANAGER], "13800000011"),
    ("何备件", [Role.PARTS_KEEPER], "13800000012"),
    ("原厂支持", [Role.VENDOR], "4008100000"),
    ("钱监理", [Role.SUPERVISION], "13800000013"),
    ("孔经理", [Role.DEPARTMENT_MANAGER], "13800000014"),
    ("林客服经理", [Role.SERVICE_MANAGER], "13800000015"),
    ("高经理", [Role.SALES_MANAGER], "13800000017"),
    ("沈经理", [Role.ACCOUNT_MANAGER], "13800000018"),  # reports to 高经理 (set below)
]

# The managers published to every customer for complaints, lowest to highest (PROCEDURES.md §7).
MANAGER_LADDER = ("林客服经理", "孔经理", "吴总监", "冯总经理")


def is_empty(session: Session) -> bool:
    return (session.exec(select(func.count()).select_from(Customer)).one() or 0) == 0


def seed_demo(session: Session, *, today: date, now: datetime) -> dict[str, int]:
    """Insert the demo data; the caller checks `is_empty` first and commits."""
    for name, roles, phone in STAFF:
        session.add(
            validate_person(
                Staff(
                    name=name,
                    phone=phone,
                    roles=[str(r) for r in roles],
                    notify_urls=[f"log://staff/{phone}"],
                )
            )
        )

    session.flush()
    by_name = {p.name: p.id for p in session.exec(select(Staff)).all()}
    ladder = [int(by_name[name]) for name in MANAGER_LADDER]  # type: ignore[arg-type]
    sales = session.exec(select(Staff).where(Staff.name == "高经理")).one()
    account_manager = session.exec(select(Staff).where(Staff.name == "沈经理")).one()
    account_manager.manager_id = sales.id
    session.add(account_manager)

    customers = [
        ("BJYH", "北京某银行数据中心", [("亦庄机房", 5.0, True), ("天津灾备机房", 120.0, False)]),
        ("SJZY", "石家庄某医院信息中心", [("门诊楼机房", 280.0, False)]),
        ("TYDX", "太原某大学网络中心", [("图书馆机房", 480.0, False)]),
    ]
    year = today.year
    contracts_made = 0
    for i, (code, name, sites) in enumerate(customers):
        customer = Customer(code=code, name=name, created_at=now, manager_ladder=ladder)
        session.add(customer)
        session.flush()
        assert customer.id is not None
        site_rows = []
        for site_name, km, same_city in sites:
            site = Site(
                customer_id=customer.id,
                name=site_name,
                service_point="北京服务站",
                distance_km=km,
                same_city=same_city,
                room_rules="进入机房须穿鞋套，操作前铺设防静电垫",
            )
            session.add(site)
            site_rows.append(site)
        session.add(
            validate_person(
                Contact(
                    customer_id=customer.id,
                    name=f"{name[:2]}维护负责人",
                    title="客户维护负责人",
                    phone=f"1390000000{i}",
                    is_primary=True,
                    notify_urls=[f"log://contact/{code}"],
                    quiet_start=time(22, 0),
                    quiet_end=time(7, 30),
                )
            )
        )
        hours = ServiceHours.H7X24 if i != 1 else ServiceHours.H5X8
        contract = Contract(
            code=f"HT-{year}-{code}",
            customer_id=customer.id,
            start_date=date(year, 1, 1),
            end_date=date(year + 1, 12, 31) if i != 2 else date(year, 3, 31),  # the third has lapsed
            service_hours=hours,
            inspection_frequency=InspectionFrequency.MONTHLY if i != 1 else InspectionFrequency.QUARTERLY,
            severity_scheme=SeverityScheme.OUTAGE if i != 1 else SeverityScheme.BUSINESS,
            fee=480000 - 100000 * i,
            restore_tolerance_hours=8.0,
            created_at=now,
            account_manager_id=account_manager.id,
            # 质保期 (003 §8.1.3): the first customer's supplied devices are under warranty this year
            warranty_until=date(year, 12, 31) if i == 0 else None,
        )
        session.add(contract)
        contracts_made += 1
        session.flush()
        for j, site in enumerate(site_rows):
            for cls, model in (("server", "华为 FusionServer 2288H V6"), ("storage", "华为 OceanStor 5310")):
                session.add(
                    Device(
                        customer_id=customer.id,
                        site_id=site.id,  # type: ignore[arg-type]
                        contract_id=contract.id,
                        device_class=cls,
                        model=model,
                        serial=f"SN{code}{j}{cls[:2].upper()}{i:02d}",
                        config={
                            "rack": f"A{j + 1}",
                            "os": "openEuler 22.03" if cls == "server" else "OceanStor OS",
                        },
                    )
                )

    for code, pname, cls, qty in (
        ("PSU-900W", "900W 电源模块", "server", 4),
        ("HDD-1.2T", "1.2TB SAS 硬盘", "storage", 10),
        ("FAN-8038", "服务器风扇", "server", 6),
        ("SFP-10G", "10G 多模光模块", "network", 0),
    ):
        part = SparePart(code=code, name=pname, device_class=cls)
        session.add(part)
        session.flush()
        session.add(Stock(part_id=part.id, location="北京备件库", quantity=qty))  # type: ignore[arg-type]

    session.flush()
    return {"customers": len(customers), "contracts": contracts_made, "staff": len(STAFF)}
