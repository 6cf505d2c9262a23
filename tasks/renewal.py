"""Contract renewal steps (续约, PROCEDURES.md §6): opening one renewal case per contract term 60 days
before its end, the keeper's outreach while the customer has not answered, and recording the outcome
(a new contract version, the terms in force from the new start).

Exactly once rests on keys, not timing (as the inspection planner): the unique (kind, contract,
period) of `case` with period = the term's end date (`renewal:2026-12-31`), and Prefect's idempotency
key `renewal:<contract>:<end>` on the flow run. Outreach actions are events keyed `outreach:<key>`:
a keeper tick twice, or two keepers, send nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pendulum
import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, select

from models.approvals import Approval, ApprovalStatus, DecisionKind
from models.cases import Case, CaseKind, CaseStatus, Event, Incident, add_period_case, append_event
from models.contracts import Contract, ContractVersion, InspectionFrequency
from models.db import session_scope
from models.forms import FREQUENCY_ZH, QuoteForm
from models.parties import Role, Staff
from rules import inspection as inspection_rules
from rules import renewal as rules
from rules.calendar import Calendar
from tasks.approvals import Approver, approval_link, wake_approval
from tasks.cases import CaseFacts, case_facts, customer_contact, start_period_runs
from tasks.clocks import load_calendar
from tasks.inspection import create_inspection, start_inspection_run
from tasks.ledger import step
from tasks.notify import queue
from tasks.people import NobodyForRole, first_with_role

RENEWAL_DEPLOYMENT = "renewal/renewal"
ANSWER_STEP = "renewal-answer"  # the customer's answer to the 续约通知函 (steps carry the version)
LAPSED_BY = "系统（合同到期未答复）"
FREQUENCY_CODE = {
    "每月": InspectionFrequency.MONTHLY,
    "每季度": InspectionFrequency.QUARTERLY,
    "不巡检": "none",
}


class RenewalError(ValueError):
    """Bad input for a renewal step; the message says what, for a person."""


def period_of(end: date) -> str:
    """The renewal case's period: one renewal per contract term, named by the term's end."""
    return f"renewal:{end.isoformat()}"


def local_day(now: datetime, tz: str) -> date:
    return pendulum.instance(now).in_timezone(tz).date()


def _manager_of(session: Session, staff: Staff) -> Staff:
    """The account manager's manager: their `manager_id`, else the first sales manager."""
    boss = session.get(Staff, staff.manager_id) if staff.manager_id else None
    return boss if boss is not None and boss.active else first_with_role(session, Role.SALES_MANAGER)


def _previous_terms(contract: Contract) -> dict[str, Any]:
    return {
        "start_date": contract.start_date.isoformat(),
        "end_date": contract.end_date.isoformat(),
        "service_hours": str(contract.service_hours),
        "inspection_frequency": FREQUENCY_ZH.get(str(contract.inspection_frequency), "每月"),
        "fee": str(Decimal(str(contract.fee)).quantize(Decimal("0.01"))),
        "sla_level": str((contract.sla_policy or {}).get("level", "标准")),
    }


# ---- opening: the daily deployment ----------------------------------------------------------------


def open_renewals(now: datetime, *, url: str | None = None) -> list[int]:
    """Open the renewal case of every contract term due on `now`'s local day (idempotent); the new ids."""
    created: list[int] = []
    calendars: dict[tuple[str, str], Calendar] = {}
    with session_scope(url) as session:
        horizon = now.date() + timedelta(days=rules.OPEN_DAYS_BEFORE + 2 + rules._MAX_SHIFT)
        contracts = session.exec(
            select(Contract).where(
                Contract.end_date >= now.date() - timedelta(days=1), Contract.end_date <= horizon
            )
        ).all()
        for contract in contracts:
            key = (contract.calendar, contract.timezone)
            if key not in calendars:
                calendars[key] = load_calendar(session, contract.calendar, contract.timezone)
            cal = calendars[key]
            today = local_day(now, contract.timezone)
            if not rules.due_to_open(today, contract.start_date, contract.end_date, cal):
                continue
            try:
                with session.begin_nested():  # one contract's trouble leaves the others' renewals be
                    case_id = open_renewal(session, contract, cal, now=now)
            except NobodyForRole as exc:
                _nobody_incident(session, contract, str(exc), now)
                continue
            if case_id is not None:
                created.append(case_id)
    return created


def _nobody_incident(session: Session, contract: Contract, why: str, now: datetime) -> None:
    """No account manager (or sales manager) to give the renewal to: a dispatcher must see it, once a
    contract term; the next run opens the renewal once someone holds the role."""
    key = f"renewal:{contract.id}:{contract.end_date.isoformat()}"
    known = session.exec(
        select(Incident).where(Incident.kind == "renewal_unassigned", col(Incident.resolved_at).is_(None))
    ).all()
    if any(i.data.get("key") == key for i in known):
        return
    session.add(
        Incident(
            kind="renewal_unassigned",
            opened_at=now,
            message=f"合同 {contract.code}（{contract.end_date} 到期）的续约工单无法分派：{why}",
            data={"key": key, "contract_id": contract.id},
        )
    )


def open_renewal(session: Session, contract: Contract, cal: Calendar, *, now: datetime) -> int | None:
    """Create the renewal case of the contract's current term, assigned to its account manager
    (in the caller's transaction); None when that term already has its renewal."""
    manager = session.get(Staff, contract.account_manager_id) if contract.account_manager_id else None
    if manager is None or not manager.active:
        manager = first_with_role(session, Role.ACCOUNT_MANAGER)
    boss = _manager_of(session, manager)
    end = contract.end_date
    data = {
        "contract_start": contract.start_date.isoformat(),
        "contract_end": end.isoformat(),
        "open_day": rules.open_day(end, cal).isoformat(),
        "notice_deadline": rules.notice_deadline(end).isoformat(),
        "previous": _previous_terms(contract),
        "team": {Role.ACCOUNT_MANAGER: manager.id, Role.SALES_MANAGER: boss.id},
    }
    case_id = add_period_case(
        session,
        contract,
        str(CaseKind.RENEWAL),
        period_of(end),
        status=CaseStatus.OPEN,
        title=f"续约 {contract.code}（{end} 到期）",
        description=f"合同 {contract.code} 将于 {end} 到期，请联系客户确认是否续约",
        channel="schedule",
        data=data,
        now=now,
        event="renewal_opened",
        key="opened",
    )
    if case_id is None:
        return None
    queue(
        session,
        recipients=[manager],
        template="renewal/opened",
        key=f"{case_id}:opened",
        case_id=case_id,
        now=now,
        context={"number": f"XF-{case_id:06d}", "contract": contract.code, "end": end.isoformat()},
    )
    return case_id


def start_renewal_runs(now: datetime, *, url: str | None = None) -> int:
    """Start the run of every open renewal that has none yet; returns how many."""
    return start_period_runs(CaseKind.RENEWAL, RENEWAL_DEPLOYMENT, now=now, url=url)


@step("open-renewals", title="创建续约工单 / open the renewals")
def open_renewals_step(now: datetime) -> int:
    """Open the renewals due on `now` (idempotent); returns how many were new."""
    return len(open_renewals(now))


@step("start-renewal-runs", title="启动续约流程 / start the runs", transactional=False)  # Prefect runs
def start_renewal_runs_step(now: datetime) -> int:
    """Start the run of every open renewal without one (idempotent by key)."""
    return start_renewal_runs(now)


# ---- one renewal's facts and records ----------------------------------------------------------------


@dataclass(frozen=True)
class RenewalFacts(CaseFacts):
    """A renewal's facts: the case's, and the contract term it renews with its previous terms."""

    contract_id: int = 0
    contract_start: str = ""
    contract_end: str = ""
    notice_deadline: str = ""
    previous: dict[str, Any] = field(default_factory=dict)
    account_manager: str = ""
    sales_manager: str = ""


@step("renewal-facts", title="续约概况 / renewal facts")
def load_renewal(case_id: int) -> RenewalFacts:
    """The renewal's facts (customer, contract, the term and its terms), typed."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        if case is None or case.kind != CaseKind.RENEWAL:
            raise RenewalError(f"续约工单 {case_id} 不存在 / no renewal {case_id}")
        team = case.data.get("team") or {}
        am = session.get(Staff, team.get(Role.ACCOUNT_MANAGER) or 0)
        boss = session.get(Staff, team.get(Role.SALES_MANAGER) or 0)
        return RenewalFacts(
            **case_facts(session, case_id).as_dict(),
            contract_id=int(case.contract_id or 0),
            contract_start=case.data.get("contract_start", ""),
            contract_end=case.data.get("contract_end", ""),
            notice_deadline=case.data.get("notice_deadline", ""),
            previous=dict(case.data.get("previous") or {}),
            account_manager=am.name if am else "",
            sales_manager=boss.name if boss else "",
        )


class Quote(BaseModel):
    """One version of the renewal quote as the account manager filled it in."""

    version: int
    form: QuoteForm
    by: str
    reason: str = ""  # why this version was written (the manager's or the customer's note)


def quote_prefill(facts: RenewalFacts, quote: Quote | None = None) -> dict[str, str]:
    """The quote form filled in with the previous quote, or with the contract's terms and next term."""
    if quote is not None:
        return {k: str(v) for k, v in quote.form.model_dump(mode="json").items()}
    prev = facts.previous
    end = date.fromisoformat(facts.contract_end)
    start, new_end = rules.next_term(end, 12)
    return {
        "scope": f"合同 {facts.contract_code} 所含全部设备与服务",
        "sla_level": prev.get("sla_level", "标准"),
        "service_hours": prev.get("service_hours", "7x24"),
        "inspection_frequency": prev.get("inspection_frequency", "每月"),
        "start_date": start.isoformat(),
        "end_date": new_end.isoformat(),
    }


def quote_context(facts: RenewalFacts, quote: Quote) -> dict[str, Any]:
    """What the quote, notice and change-request templates show: the new terms beside the previous."""
    return {
        "quote": quote.form.model_dump(mode="json"),
        "quote_version": quote.version,
        "quote_by": quote.by,
        "previous": facts.previous,
        "contract_start": facts.contract_start,
        "contract_end": facts.contract_end,
        "notice_deadline": facts.notice_deadline,
        "account_manager": facts.account_manager,
    }


def quote_text(facts: RenewalFacts, quote: Quote) -> str:
    """The quote as the manager reads it in the approval (the previous fee beside the new one)."""
    q, prev = quote.form, facts.previous
    return (
        f"续约报价 v{quote.version}（客户经理 {quote.by}）\n"
        f"客户：{facts.customer}　合同：{facts.contract_code}（{facts.contract_start} 至 {facts.contract_end}）\n"
        f"服务范围：{q.scope}\n"
        f"SLA 等级：{q.sla_level}（原 {prev.get('sla_level', '—')}）\n"
        f"服务时间：{q.service_hours}（原 {prev.get('service_hours', '—')}）\n"
        f"巡检频率：{q.inspection_frequency}（原 {prev.get('inspection_frequency', '—')}）\n"
        f"新合同期限：{q.start_date} 至 {q.end_date}\n"
        f"续约费用：{q.fee} 元（原合同 {prev.get('fee', '—')} 元）\n"
        + (f"报价说明：{q.note}\n" if q.note else "")
        + (f"本版修改原因：{quote.reason}\n" if quote.reason else "")
    )


def _case_contract(session: Session, case_id: int) -> tuple[Case, Contract]:
    """The renewal and the contract it renews (a renewal always has one)."""
    case = session.get(Case, case_id)
    assert case is not None and case.contract_id is not None
    contract = session.get(Contract, case.contract_id)
    assert contract is not None
    return case, contract


def _contract_version(session: Session, case_id: int, version: int) -> tuple[Contract, ContractVersion]:
    """The contract the renewal renews and its terms' version `version` (one the renewal recorded)."""
    _, contract = _case_contract(session, case_id)
    row = session.exec(
        select(ContractVersion).where(
            ContractVersion.contract_id == contract.id, ContractVersion.version == version
        )
    ).one()
    return contract, row


@step("notice-sent", title="续约通知已发出 / notice sent")
def notice_sent(case_id: int, report_id: int, at: datetime) -> str:
    """Record the notice's day (the outreach counts from it) and send the customer the printable notice."""
    with session_scope() as session:
        case, contract = _case_contract(session, case_id)
        day = local_day(at, contract.timezone)
        case.data = {**case.data, "notice_day": day.isoformat(), "notice_report_id": report_id}
        case.updated_at = at
        session.add(case)
        append_event(
            session, case_id, "renewal_notice_sent", at=at, data={"report_id": report_id}, key="notice-sent"
        )
        from tasks.cases import queue_for_case

        queue_for_case(
            session,
            case_id,
            template="renewal/notice",
            key="notice",
            now=at,
            customer=True,
            context={"report_id": report_id, "end": case.data.get("contract_end", "")},
            urgent=False,
        )
        return day.isoformat()


@step("record-renewal", title="记录新合同版本 / record the new contract version")
def record_renewal(case_id: int, quote: Quote, by: str, at: datetime) -> int:
    """Renew: the term just ended is kept as a version (when it was not yet), the new term is appended
    as the next version, and the contract runs to the new end (new requests are in contract). The new
    terms hold from the new start (`terms_on`); `apply_terms` puts them on the contract row then."""
    with session_scope() as session:
        _, contract = _case_contract(session, case_id)
        found = session.exec(
            select(ContractVersion).where(
                ContractVersion.contract_id == contract.id, ContractVersion.case_id == case_id
            )
        ).first()
        if found is not None:
            return int(found.version)
        versions = list(
            session.exec(select(ContractVersion).where(ContractVersion.contract_id == contract.id)).all()
        )
        q = quote.form
        if q.start_date <= contract.end_date:
            raise RenewalError(
                f"新合同开始日期 {q.start_date} 应晚于原合同到期日 {contract.end_date} / the new term overlaps"
            )
        if not any(v.start_date == contract.start_date for v in versions):
            prev = ContractVersion(
                contract_id=contract.id,  # type: ignore[arg-type]
                version=len(versions) + 1,
                start_date=contract.start_date,
                end_date=contract.end_date,
                service_hours=contract.service_hours,
                inspection_frequency=contract.inspection_frequency,
                inspection_every_months=contract.inspection_every_months,
                sla_policy=dict(contract.sla_policy or {}),
                sla_level=str((contract.sla_policy or {}).get("level", "标准")),
                scope=f"合同 {contract.code}",
                fee=contract.fee,
                recorded_by="system",
                recorded_at=at,
            )
            session.add(prev)
            versions.append(prev)
        new = ContractVersion(
            contract_id=contract.id,  # type: ignore[arg-type]
            version=len(versions) + 1,
            start_date=q.start_date,
            end_date=q.end_date,
            service_hours=q.service_hours,
            inspection_frequency=FREQUENCY_CODE[q.inspection_frequency],
            inspection_every_months=3 if q.inspection_frequency == "每季度" else 1,
            sla_policy={
                **(contract.sla_policy or {}),
                "level": q.sla_level,
            },
            sla_level=q.sla_level,
            scope=q.scope,
            fee=float(q.fee),
            case_id=case_id,
            recorded_by=by,
            recorded_at=at,
        )
        session.add(new)
        contract.end_date = q.end_date  # the contract runs on: requests in the new term are in contract
        session.add(contract)
        session.flush()
        append_event(
            session,
            case_id,
            "contract_version_recorded",
            at=at,
            actor=by,
            data={"version": new.version, "start": q.start_date.isoformat(), "end": q.end_date.isoformat()},
            key=f"contract-version:{new.version}",
        )
        return int(new.version)


@step("apply-terms", title="新合同条款生效 / the new terms take effect")
def apply_terms(case_id: int, version: int, at: datetime) -> None:
    """From the new start day, the contract row carries the new version's terms."""
    with session_scope() as session:
        contract, row = _contract_version(session, case_id, version)
        contract.start_date = row.start_date
        contract.end_date = max(contract.end_date, row.end_date)
        contract.service_hours = row.service_hours
        contract.inspection_frequency = row.inspection_frequency
        contract.inspection_every_months = row.inspection_every_months
        contract.sla_policy = dict(row.sla_policy or {})
        contract.fee = row.fee
        session.add(contract)
        append_event(
            session,
            case_id,
            "contract_terms_effective",
            at=at,
            data={"version": version},
            key="terms-effective",
        )


def start_day_moment(case_id: int, version: int) -> datetime:
    """Midnight (local) of the new version's first day, in UTC."""
    with session_scope() as session:
        contract, row = _contract_version(session, case_id, version)
        return pendulum.datetime(
            row.start_date.year, row.start_date.month, row.start_date.day, tz=contract.timezone
        ).in_timezone("UTC")


@step("terms-start", title="新合同开始时间 / new term starts")
def terms_start(case_id: int, version: int) -> datetime:
    """When the new version's term starts (midnight local), for the flow's wait."""
    return datetime.fromisoformat(start_day_moment(case_id, version).isoformat())


@step("open-cases", title="未结工单 / open cases")
def open_cases(case_id: int) -> str:
    """The customer's open cases (the handover lists each), one line each."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        rows = session.exec(
            select(Case)
            .where(Case.customer_id == case.customer_id, col(Case.closed_at).is_(None), Case.id != case_id)
            .order_by(col(Case.id))
        ).all()
        return "\n".join(f"{c.number} {c.title or c.kind}：" for c in rows) or "无"


# ---- the keeper: outreach while the customer has not answered -----------------------------------------


def outreach_step(now: datetime) -> int:
    """Follow-ups, escalations, the customer's reminder and the lapse of every renewal whose notice is
    unanswered, each once (keeper step); returns how many actions were taken."""
    with session_scope() as session:
        waiting = session.exec(
            select(Approval.id, Case.id)
            .join(Case, col(Case.id) == col(Approval.case_id))
            .where(
                Case.kind == str(CaseKind.RENEWAL),
                col(Case.closed_at).is_(None),
                col(Approval.step).startswith(ANSWER_STEP),
                Approval.status == ApprovalStatus.PENDING,
            )
        ).all()
    done = 0
    calendars: dict[tuple[str, str], Calendar] = {}  # one load per calendar and tick, not per case
    for approval_id, case_id in waiting:
        done += _outreach_case(int(case_id), int(approval_id), now, calendars)  # type: ignore[arg-type]
    return done


def _outreach_case(
    case_id: int, approval_id: int, now: datetime, calendars: dict[tuple[str, str], Calendar]
) -> int:
    lapsed: Approval | None = None
    done = 0
    with session_scope() as session:
        case = session.get(Case, case_id)
        contract = session.get(Contract, case.contract_id) if case and case.contract_id else None
        row = session.get(Approval, approval_id)
        if case is None or contract is None or row is None or "notice_day" not in case.data:
            return 0
        which = (contract.calendar, contract.timezone)
        if which not in calendars:
            calendars[which] = load_calendar(session, contract.calendar, contract.timezone)
        cal = calendars[which]
        end = date.fromisoformat(case.data["contract_end"])
        plan = rules.outreach(date.fromisoformat(case.data["notice_day"]), end, cal)
        keys = set(
            session.exec(
                select(Event.key).where(Event.case_id == case_id, col(Event.key).startswith("outreach:"))
            ).all()
        )
        team = case.data.get("team") or {}
        am = session.get(Staff, team.get(Role.ACCOUNT_MANAGER) or 0)
        boss = session.get(Staff, team.get(Role.SALES_MANAGER) or 0)
        contact = customer_contact(session, case_id)
        link = approval_link(row, Approver("contact", int(contact.id)))  # type: ignore[arg-type]
        facts = {"number": case.number, "contract": contract.code, "end": end.isoformat(), "customer": ""}
        facts["customer"] = case_facts(session, case_id).customer
        quiet = not rules.sendable_at(now, cal)  # a late tick at night / on a day off holds the outreach
        for due in plan:
            if due.at > now or f"outreach:{due.key}" in keys:
                continue
            if quiet and due.kind != rules.Outreach.LAPSE:
                continue  # the next tick in working hours sends it
            append_event(
                session,
                case_id,
                f"renewal_{due.kind}",
                at=now,
                data={"key": due.key, "due": due.at.isoformat(), "days_before_end": due.days_before_end},
                key=f"outreach:{due.key}",
            )
            done += 1
            context = {**facts, "days": due.days_before_end, "link": link, "provisional": due.provisional}
            # (template, recipients): a customer's message carries nothing meant for staff
            staff = [p for p in (am, boss) if p is not None]
            plans: dict[str, list[tuple[str, list[Any]]]] = {
                rules.Outreach.FOLLOW_UP: [("follow_up", [contact]), ("follow_up_staff", staff[:1])],
                rules.Outreach.ESCALATE: [("escalate", staff)],
                rules.Outreach.REMIND: [("remind", [contact]), ("remind_staff", staff[:1])],
                rules.Outreach.LAPSE: [("lapse", staff)],
            }
            for template, people in plans[due.kind]:
                queue(
                    session,
                    recipients=people,
                    template=f"renewal/{template}",
                    key=f"{case_id}:outreach:{due.key}:{template}",
                    case_id=case_id,
                    now=now,
                    context=context,
                )
            if due.kind == rules.Outreach.LAPSE:
                lapsed = _settle_lapsed(session, row, now)
                break
    if lapsed is not None:
        wake_approval(lapsed, now)
    return done


def _settle_lapsed(session: Session, row: Approval, now: datetime) -> Approval | None:
    """The end passed with no answer: the notice's answer is settled as lapsed (the flow reads
    `payload.lapsed` and ends the renewal); conditional, so a customer's click at the same moment wins
    or loses whole."""
    written = cast(
        "sa.CursorResult[Any]",
        session.execute(
            sa.update(Approval)
            .where(col(Approval.id) == row.id, col(Approval.decision).is_(None))
            .values(
                decision=str(DecisionKind.SUBMITTED),
                decided_at=now,
                decided_by=LAPSED_BY,
                comment="合同到期，客户未答复",
                payload={"lapsed": True},
                channel="system",
                status=ApprovalStatus.DECIDED,
            )
        ),
    ).rowcount
    if not written:
        return None
    append_event(
        session,
        row.case_id,
        "form_decided",
        at=now,
        actor=LAPSED_BY,
        data={"approval_id": row.id, "step": row.step, "version": row.version, "decision": "lapsed"},
        key=f"approval:{row.id}:decided",
    )
    session.flush()
    session.refresh(row)
    return row


# ---- the warranty-end inspection (质保期满巡检, 003 §8.1.3 item 6) -------------------------------------

WARRANTY_INSPECTION_DAYS = 45  # a contract's `sla_policy["warranty_inspection_days"]` overrides it
WARRANTY_TITLE = "质保期满巡检"


def warranty_period(until: date) -> inspection_rules.Period:
    """The inspection period of a warranty's end: one per contract and warranty end date."""
    return inspection_rules.Period(f"{inspection_rules.WARRANTY_PREFIX}{until.isoformat()}", until, until)


def plan_warranty_inspections(now: datetime, *, url: str | None = None) -> list[int]:
    """For every contract whose warranty ends within its next N days (45 by default), plan a full
    inspection of all the devices it supplied through the inspection flow, before the warranty ends
    (idempotent per contract and warranty end); its defects become repairs there, and its signed
    inspection report is the defects report to the customer. Returns the new inspection ids."""
    created: list[int] = []
    with session_scope(url) as session:
        horizon = now.date() + timedelta(days=366)
        contracts = session.exec(
            select(Contract).where(
                col(Contract.warranty_until).is_not(None),
                col(Contract.warranty_until) >= now.date() - timedelta(days=1),
                col(Contract.warranty_until) <= horizon,
            )
        ).all()
        for contract in contracts:
            until = contract.warranty_until
            assert until is not None
            today = local_day(now, contract.timezone)
            days = int((contract.sla_policy or {}).get("warranty_inspection_days", WARRANTY_INSPECTION_DAYS))
            if not today <= until <= today + timedelta(days=days):
                continue
            cal = load_calendar(session, contract.calendar, contract.timezone)
            proposed = inspection_rules.proposed_day(
                cal, planned_on=today, window_start=today, window_end=until
            )
            reason = f"{WARRANTY_TITLE}：质保期至 {until}，对所供全部设备进行全面巡检，缺陷在质保期内修复并报告客户"
            case_id = create_inspection(
                session,
                contract,
                warranty_period(until),
                window_start=today,
                window_end=until,
                proposed=min(proposed, until),
                now=now,
                extra_reason=reason,
            )
            if case_id is None:
                continue
            case = session.get(Case, case_id)
            assert case is not None
            case.title = f"{WARRANTY_TITLE}（质保至 {until}）"
            case.data = {**case.data, "warranty_until": until.isoformat(), "inspection_kind": WARRANTY_TITLE}
            session.add(case)
            created.append(case_id)
    return created


def start_warranty_runs(case_ids: list[int], now: datetime) -> int:
    """Start the inspection run of each warranty-end inspection (idempotent by its key)."""
    for case_id in case_ids:
        start_inspection_run(case_id, now=now)
    return len(case_ids)


@step("plan-warranty-inspections", title="质保期满巡检 / warranty-end inspections", transactional=False)
def warranty_inspections_step(now: datetime) -> int:
    """Plan the warranty-end inspections due and start their runs (idempotent by keys); how many new."""
    return start_warranty_runs(plan_warranty_inspections(now), now)


# ---- the monthly summary's lines (阶段性服务总结, PROCEDURES.md §4 step 8) -------------------------------

RENEWAL_OUTCOME_ZH = {
    "renewed": "已续约",
    "changed": "变更后续约",
    "ended": "客户书面通知终止",
    "lapsed": "到期未续约，合同失效",
}


def renewal_lines(session: Session, customer_id: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The customer's renewals open in, or closed within, [start, end): contract, end date, where each
    stands (quote, notice unanswered with its follow-ups, the outcome) and how many days before the end
    the customer decided."""
    cases = session.exec(
        select(Case)
        .where(
            Case.customer_id == customer_id,
            Case.kind == str(CaseKind.RENEWAL),
            Case.reported_at < end,
            sa.or_(col(Case.closed_at).is_(None), col(Case.closed_at) >= start),
        )
        .order_by(col(Case.reported_at))
    ).all()
    lines = []
    for case in cases:
        events = session.exec(select(Event).where(Event.case_id == case.id).order_by(col(Event.id))).all()
        kinds = {e.kind: e for e in events}
        contract = session.get(Contract, case.contract_id) if case.contract_id else None
        follow_ups = sum(1 for e in events if e.kind.startswith("renewal_follow_up"))
        if "contract_lapsed" in kinds:
            state = RENEWAL_OUTCOME_ZH["lapsed"]
        elif "renewal_closed" in kinds and "renewed" in kinds:
            term = kinds["renewed"].data
            state = f"{RENEWAL_OUTCOME_ZH['renewed']}：新合同 {term.get('start')} 至 {term.get('end')}"
        elif "renewal_closed" in kinds:
            state = RENEWAL_OUTCOME_ZH.get(str(kinds["renewal_closed"].data.get("outcome")), "已结束")
        elif "renewed" in kinds:
            state = f"已续约，新合同自 {kinds['renewed'].data.get('start')} 起生效"
        elif "termination_notice" in kinds:
            state = "客户书面通知终止，办理移交中"
        elif "renewal_notice_sent" in kinds:
            state = "已发续约通知函，待客户答复" + (f"（已跟进 {follow_ups} 次）" if follow_ups else "")
        else:
            state = "续约报价审批中"
        answered = kinds.get("renewal_answered")
        lines.append(
            {
                "number": case.number,
                "contract": contract.code if contract else "",
                "end": case.data.get("contract_end", ""),
                "state": state,
                "decided_days_before_end": answered.data.get("days_before_end") if answered else None,
            }
        )
    return lines


@step("days-before-end", title="答复距到期天数 / days before the end")
def days_before_end(case_id: int, at: datetime) -> int:
    """How many days before the contract's end the customer answered (the renewal's KPI)."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        contract = session.get(Contract, case.contract_id) if case and case.contract_id else None
        assert case is not None and contract is not None
        return (date.fromisoformat(case.data["contract_end"]) - local_day(at, contract.timezone)).days
