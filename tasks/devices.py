"""设备档案 / a device's file and history: every case, inspection finding, part change and drill
touching the device, newest first [001 §2.3.5; 003 §8.2.1].

What touches a device:
- a case whose `device_id` is the device (repairs, accidents, complaints … any kind);
- an inspection finding: a checklist answer about the device that was not 正常 (with its note and
  the repair it led to);
- a part change: a stock move (issued or returned) of one of the device's cases;
- a drill: a drill case of the device itself, of its machine room, or whose plan names the device's
  serial (the recovery plan's device list, the drill plan's scenario).

The page is shown to staff (`/devices/<id>`, logged in) and to the engineer through a signed link
on the diagnosis and on-site forms (`device_url`), which the form page carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, or_, select

from models import Case, Contract, Customer, Device, Site, SparePart, StockMove
from models.cases import CASE_KIND_ZH, CASE_STATUS_ZH, CaseKind
from models.drill import DrillPlan, RecoveryPlan
from models.inspection import RESULT_ZH, ChecklistResult, ItemResult
from tasks.links import sign_link

DEVICE_LINK = "device"  # the signed link's purpose
DEVICE_LINK_DAYS = 14
HISTORY_LIMIT = 500  # entries per page: the newest ones


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str  # case / finding / part / drill
    label: str  # 故障维修, 巡检发现, 备件更换, 应急演练 …
    case_number: str
    case_id: int | None
    text: str
    status: str = ""


@dataclass
class DeviceFile:
    device: Device
    customer: Customer | None
    site: Site | None
    contract: Contract | None
    entries: list[Entry] = field(default_factory=list)
    truncated: bool = False


def device_url(device_id: int, *, now: datetime, days: int = DEVICE_LINK_DAYS) -> str:
    """A link to the device's file for whoever holds it (put on the engineer's forms)."""
    return sign_link(
        DEVICE_LINK, {"d": device_id}, expires_at=now + timedelta(days=days), path="devices/link"
    )


def _number(case: Case | None) -> str:
    return case.number if case is not None and case.id is not None else ""


def device_file(session: Session, device_id: int, *, limit: int = HISTORY_LIMIT) -> DeviceFile | None:
    """The device with everything that touched it, newest first; None when there is no such device."""
    device = session.get(Device, device_id)
    if device is None:
        return None
    result = DeviceFile(
        device,
        session.get(Customer, device.customer_id),
        session.get(Site, device.site_id),
        session.get(Contract, device.contract_id) if device.contract_id else None,
    )
    entries: list[Entry] = []
    cases = {c.id: c for c in session.exec(select(Case).where(Case.device_id == device_id)).all()}
    for case in cases.values():
        entries.append(
            Entry(
                case.reported_at,
                "case",
                CASE_KIND_ZH.get(CaseKind(case.kind), case.kind),
                _number(case),
                case.id,
                case.title or case.description[:200],
                CASE_STATUS_ZH.get(case.status, case.status),
            )
        )
    findings = session.exec(
        select(ChecklistResult).where(
            ChecklistResult.device_id == device_id, ChecklistResult.result != ItemResult.NORMAL.value
        )
    ).all()
    for finding in findings:
        inspection = session.get(Case, finding.case_id)
        note = f"{finding.item_label}：{RESULT_ZH.get(ItemResult(finding.result), finding.result)}"
        if finding.note:
            note += f"（{finding.note}）"
        if finding.fixed_on_site:
            note += "，已现场处理"
        if finding.repair_case_id:
            note += f"，转维修 {_number(session.get(Case, finding.repair_case_id))}"
        entries.append(
            Entry(finding.recorded_at, "finding", "巡检发现", _number(inspection), finding.case_id, note)
        )
    if cases:
        moves = session.exec(select(StockMove).where(col(StockMove.case_id).in_(list(cases)))).all()
        for move in moves:
            part = session.get(SparePart, move.part_id)
            what = f"{part.code} {part.name}" if part else f"备件 #{move.part_id}"
            verb = "领用" if move.quantity < 0 else "退回"
            entries.append(
                Entry(
                    move.at,
                    "part",
                    "备件更换",
                    _number(cases.get(move.case_id)),
                    move.case_id,
                    f"{verb} {what} × {abs(move.quantity)}" + (f"（{move.reason}）" if move.reason else ""),
                )
            )
    entries.extend(_drills(session, device, skip=set(cases)))
    entries.sort(key=lambda e: (e.at, e.case_id or 0), reverse=True)
    result.truncated = len(entries) > limit
    result.entries = entries[:limit]
    return result


def _drills(session: Session, device: Device, *, skip: set[int | None]) -> list[Entry]:
    serial = device.serial.strip()
    named: set[int] = set()
    if serial:
        pattern = f"%{serial}%"
        named |= {
            p.case_id
            for p in session.exec(
                select(RecoveryPlan).where(
                    RecoveryPlan.customer_id == device.customer_id,
                    col(RecoveryPlan.devices).like(pattern),
                    col(RecoveryPlan.case_id).is_not(None),
                )
            ).all()
            if p.case_id is not None
        }
        named |= {
            p.case_id
            for p in session.exec(
                select(DrillPlan).where(
                    or_(col(DrillPlan.scenario).like(pattern), col(DrillPlan.failover).like(pattern))
                )
            ).all()
        }
    query = select(Case).where(
        Case.kind == CaseKind.DRILL.value,
        Case.customer_id == device.customer_id,
        or_(Case.device_id == device.id, Case.site_id == device.site_id, col(Case.id).in_(named or {-1})),
    )
    return [
        Entry(
            case.reported_at,
            "drill",
            "应急演练",
            _number(case),
            case.id,
            case.title or case.description[:200],
            CASE_STATUS_ZH.get(case.status, case.status),
        )
        for case in session.exec(query).all()
        if case.id not in skip
    ]


def config_lines(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The device's configuration as label/value pairs for the page."""
    return [(str(k), v if isinstance(v, str) else str(v)) for k, v in (config or {}).items()]
