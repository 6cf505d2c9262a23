"""KPIs on demand (issue 24, PROCEDURES.md §8): read the facts of one customer and period from the case
rows and their event logs, hand them to rules/performance.py. Nothing is counted as it happens; every
figure is folded from the log here, so any past period can be asked for at any time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from models.assets import Device
from models.cases import CASE_PREFIX, Case, CaseKind, CaseStatus, Event
from models.contracts import Contract
from models.inspection import ServiceSummary
from models.parties import Customer, Site, Staff
from models.settings import business_timezone
from rules import drill as drill_rules
from rules import performance as perf
from rules.calendar import Calendar
from rules.sla import policy_for
from tasks.clocks import calendar_for_terms, load_calendar

# the kinds whose cases and events the KPIs read
LOG_KINDS = (str(CaseKind.REPAIR), str(CaseKind.ACCIDENT), str(CaseKind.COMPLAINT))
INSPECTION_DONE = (CaseStatus.REGISTERED, CaseStatus.SUBMITTED, CaseStatus.REPORT_PENDING, CaseStatus.CLOSED)
INSPECTION_DONE_EVENTS = ("report_signed", "report_registered")
INSPECTION_COLUMNS: tuple[Any, ...] = (
    Case.id,
    Case.contract_id,
    Case.period,
    Case.status,
    Case.updated_at,
    Case.site_id,
    Case.data,
)
DONE_COLUMNS: tuple[Any, ...] = (Event.case_id, Event.at)
EVENT_COLUMNS: tuple[Any, ...] = (Event.case_id, Event.kind, Event.at, Event.data, Event.actor)
CASE_COLUMNS: tuple[Any, ...] = (
    Case.id,
    Case.kind,
    Case.customer_id,
    Case.site_id,
    Case.device_id,
    Case.contract_id,
    Case.parent_id,
    Case.severity,
    Case.reported_at,
    Case.closed_at,
    Case.data,
)
# who a case's figures are put against: its engineer, else the first of these on its team
ENGINEER_ROLES = ("engineer", "senior_engineer", "technical_lead", "expert")
DEVICE_CLASS_ZH = {
    "server": "服务器",
    "storage": "存储",
    "network": "网络",
    "database": "数据库",
    "ups": "UPS",
    "security": "安全设备",
}


@dataclass
class KpiInput:
    customer: Customer | None  # None: every customer
    start: datetime
    end: datetime
    tz: str
    logs: list[perf.CaseLog] = field(default_factory=list)
    due: list[perf.DueFact] = field(default_factory=list)
    cards: list[perf.ScoreFact] = field(default_factory=list)
    renewals: list[perf.RenewalFact] = field(default_factory=list)
    calendar: Calendar | None = None
    calendars: dict[str, Calendar] = field(default_factory=dict)  # customer name → its service hours

    @property
    def one(self) -> Customer:
        """The customer asked for (the figures of one customer)."""
        assert self.customer is not None
        return self.customer


def find_customer(session: Session, name_or_code: str) -> Customer:
    """The customer by code or exact name; KpiError naming a few known ones otherwise."""
    wanted = name_or_code.strip()
    if not wanted:
        raise perf.KpiError("请指定客户（编号或名称） / name a customer (code or name)")
    row = session.exec(
        select(Customer).where(sa.or_(col(Customer.code) == wanted, col(Customer.name) == wanted))
    ).first()
    if row is None:
        known = session.exec(select(Customer.code).order_by(col(Customer.code)).limit(8)).all()
        hint = f"，已有客户编号：{'、'.join(known)}" if known else ""
        raise perf.KpiError(f"没有客户「{wanted}」{hint} / no customer {wanted!r}")
    return row


def window(first: date, last: date, tz: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the local days first..last."""
    if last < first:
        raise perf.KpiError(f"结束日期 {last} 早于开始日期 {first} / --to is before --from")
    zone = ZoneInfo(tz)
    end_day = last + timedelta(days=1)
    return (
        datetime(first.year, first.month, first.day, tzinfo=zone).astimezone(UTC),
        datetime(end_day.year, end_day.month, end_day.day, tzinfo=zone).astimezone(UTC),
    )


def _rows(session: Session, query: Any) -> list[Any]:
    """The rows of a column query (plain rows: building tens of thousands of ORM objects was most of
    the time the bulk figures took)."""
    return list(session.connection().execute(query))


def _is_outage(case: Any, scheme: str) -> bool:  # a Case or a row of CASE_COLUMNS
    """Whether the fault interrupts service: an accident always; a repair of severity 1–3 in the outage
    scheme (业务中断), of severity 1 in the business scheme (业务停止运行)."""
    if case.kind == str(CaseKind.ACCIDENT):
        return True
    if case.severity is None:
        return False
    return case.severity <= (1 if scheme == "business" else 3)


def gather(
    session: Session, customer: Customer | None, *, first: date, last: date, tz: str | None = None
) -> KpiInput:
    """Every fact the KPIs of one customer (or, `customer` None, of every customer: the bulk figures)
    over local days first..last need."""
    tz = tz or business_timezone()
    start, end = window(first, last, tz)
    facts = KpiInput(customer=customer, start=start, end=end, tz=tz)
    cid = customer.id if customer is not None else None

    def only(column: Any) -> list[Any]:
        return [column == cid] if customer is not None else []

    names = {c.id: c.name for c in ([customer] if customer is not None else session.exec(select(Customer)))}
    # the cases opened in the window, those still down when it began, and the faults of the 30 days
    # after it (a repeat on the same device says the fix was not a first-time one)
    wanted = [
        *only(Case.customer_id),
        col(Case.kind).in_(LOG_KINDS),
        Case.reported_at < end + perf.REOPEN_WINDOW,
        sa.or_(
            col(Case.reported_at) >= start - perf.REOPEN_WINDOW,
            col(Case.closed_at).is_(None),
            col(Case.closed_at) >= start,
        ),
    ]
    # columns, not ORM objects: building tens of thousands of model instances was most of the time
    cases = _rows(
        session, sa.select(*CASE_COLUMNS).where(*wanted).order_by(col(Case.reported_at), col(Case.id))
    )
    events: dict[int, list[perf.EventFact]] = defaultdict(list)
    if cases:
        # by a subquery, not a list of ids: the bulk figures read tens of thousands of cases
        for e in _rows(
            session,
            sa.select(*EVENT_COLUMNS)
            .where(col(Event.case_id).in_(select(Case.id).where(*wanted)))
            .order_by(col(Event.at), col(Event.id)),
        ):
            events[e.case_id].append(perf.EventFact(e.kind, e.at, e.data or {}, e.actor))
    sites = {s.id: s.name for s in session.exec(select(Site).where(*only(Site.customer_id)))}
    devices = {d.id: d for d in session.exec(select(Device).where(*only(Device.customer_id)))}
    contracts = {c.id: c for c in session.exec(select(Contract).where(*only(Contract.customer_id)))}
    staff = {s.id: s.name for s in session.exec(select(Staff))}
    for c in cases:
        dev = devices.get(c.device_id) if c.device_id else None
        contract = contracts.get(c.contract_id) if c.contract_id else None
        facts.logs.append(
            perf.CaseLog(
                case_id=c.id or 0,
                number=f"{CASE_PREFIX.get(CaseKind(c.kind), 'CS')}-{c.id:06d}",
                kind=c.kind,
                customer=names.get(c.customer_id, ""),
                reported_at=c.reported_at,
                events=tuple(events.get(c.id or 0, ())),
                site=sites.get(c.site_id, "") if c.site_id else "",
                device=f"{dev.model}（{dev.serial}）" if dev else "",
                device_class=DEVICE_CLASS_ZH.get(dev.device_class, dev.device_class) if dev else "",
                engineer=engineer_of(c.data, staff),
                severity=c.severity,
                outage=_is_outage(c, contract.severity_scheme if contract else "outage"),
                parent_id=c.parent_id,
                closed_at=c.closed_at,
            )
        )
    facts.due = inspections_due(session, cid, names, contracts.values(), first, last, sites, staff, tz)
    facts.due += drills_due(session, cid, names, contracts.values(), first, last, staff, tz)
    facts.renewals = renewals_due(session, cid, names, contracts, first, last)
    for row in session.exec(
        select(ServiceSummary).where(
            *only(ServiceSummary.customer_id),
            col(ServiceSummary.rated_at).is_not(None),
            col(ServiceSummary.rated_at) >= start,
            col(ServiceSummary.rated_at) < end,
        )
    ):
        assert row.rated_at is not None
        grades = {k: str(v) for k, v in (row.rating or {}).items() if v in perf.SCORE_VALUES}
        facts.cards.append(perf.ScoreFact("summary", names.get(row.customer_id, ""), row.rated_at, grades))
    # the annual survey's scorecards (flows.survey: `survey_answered` events of the customer's surveys)
    for e, owner in session.exec(
        select(Event, Case.customer_id)
        .join(Case, col(Case.id) == Event.case_id)
        .where(
            *only(Case.customer_id),
            Case.kind == str(CaseKind.SURVEY),
            Event.kind == "survey_answered",
            Event.at >= start,
            Event.at < end,
        )
    ):
        grades = {k: str(v) for k, v in (e.data.get("scores") or {}).items() if v in perf.SCORE_VALUES}
        facts.cards.append(perf.ScoreFact("survey", names.get(owner, ""), e.at, grades))
    # uptime counts in the contracted service hours of each customer's contract (the latest one)
    latest: dict[int, Contract] = {}
    for k in contracts.values():
        live = k.start_date <= last and k.end_date >= first
        if live and (k.customer_id not in latest or k.end_date > latest[k.customer_id].end_date):
            latest[k.customer_id] = k
    base: dict[tuple[str, str], Calendar] = {}
    hours: dict[str, Calendar] = {}  # one calendar per distinct terms: merging a policy copies it
    for owner, contract in latest.items():
        key = (contract.calendar, contract.timezone)
        if key not in base:
            base[key] = load_calendar(session, contract.calendar, contract.timezone)
        terms = repr((key, str(contract.service_hours), sorted((contract.sla_policy or {}).items(), key=str)))
        if terms not in hours:
            hours[terms] = policy_for(contract).calendar(base[key])
        facts.calendars[names.get(owner, "")] = hours[terms]
    if customer is not None:
        facts.calendar = facts.calendars.get(customer.name)
    return facts


def engineer_of(data: Mapping[str, Any], staff: Mapping[int | None, str]) -> str:
    team = data.get("team") or {}
    for role in ENGINEER_ROLES:
        who = team.get(role) if isinstance(team, Mapping) else None
        if who is not None and who in staff:
            return staff[who]
    return ""


def inspections_due(
    session: Session,
    customer_id: int | None,
    names: Mapping[int | None, str],
    contracts: Any,
    first: date,
    last: date,
    sites: Mapping[int | None, str],
    staff: Mapping[int | None, str],
    tz: str,
) -> list[perf.DueFact]:
    """Each regular inspection period of the customer's contracts that ends in first..last, and the day
    its report was signed (or registered), if it was."""
    inspections = {
        (c.contract_id, c.period): c
        for c in _rows(
            session,
            sa.select(*INSPECTION_COLUMNS).where(
                *([col(Case.customer_id) == customer_id] if customer_id is not None else []),
                col(Case.kind) == str(CaseKind.INSPECTION),
            ),
        )
    }
    done_at: dict[int, datetime] = {}
    ids = [c.id for c in inspections.values()]
    if ids:
        for e in _rows(
            session,
            sa.select(*DONE_COLUMNS).where(
                col(Event.case_id).in_(
                    select(Case.id).where(
                        *([Case.customer_id == customer_id] if customer_id is not None else []),
                        Case.kind == str(CaseKind.INSPECTION),
                    )
                ),
                col(Event.kind).in_(INSPECTION_DONE_EVENTS),
            ),
        ):
            done_at[e.case_id] = min(done_at.get(e.case_id, e.at), e.at)
    out = []
    for contract in contracts:
        for p in contract.inspection_periods(first, last):
            due = min(p.end, contract.end_date)
            if not first <= due <= last:
                continue
            case = inspections.get((contract.id, p.label))
            site = sites.get(case.site_id, "") if case is not None and case.site_id else ""
            out.append(
                _due_fact(
                    "inspection",
                    names.get(contract.customer_id, ""),
                    p.label,
                    due,
                    case,
                    INSPECTION_DONE,
                    done_at,
                    staff=staff,
                    tz=tz,
                    site=site,
                )
            )
    return out


# a drill took place once it started (the lead's phone form); cancelled ones are not due
DRILL_DONE = (
    CaseStatus.ON_SITE,
    CaseStatus.REPORT_PENDING,
    CaseStatus.SUBMITTED,
    CaseStatus.REJECTED,
    CaseStatus.REGISTERED,
    CaseStatus.CLOSED,
    CaseStatus.ARCHIVED,
)


def drills_due(
    session: Session,
    customer_id: int | None,
    names: Mapping[int | None, str],
    contracts: Any,
    first: date,
    last: date,
    staff: Mapping[int | None, str],
    tz: str,
) -> list[perf.DueFact]:
    """Each drill period (rules.drill: `per_year` blocks of the contract's year) that ends in
    first..last while the contract runs, and the day its drill started, if it did."""
    drills = {
        (c.contract_id, c.period): c
        for c in session.exec(
            select(Case).where(
                *([Case.customer_id == customer_id] if customer_id is not None else []),
                Case.kind == str(CaseKind.DRILL),
            )
        )
    }
    started: dict[int, datetime] = {}
    met: dict[int, bool] = {}
    ids = [c.id for c in drills.values()]
    if ids:
        for e in session.exec(
            select(Event).where(
                col(Event.case_id).in_(
                    select(Case.id).where(
                        *([Case.customer_id == customer_id] if customer_id is not None else []),
                        Case.kind == str(CaseKind.DRILL),
                    )
                ),
                col(Event.kind).in_(("drill_started", "drill_evaluated")),
            )
        ):
            if e.kind == "drill_evaluated":  # the lead's evaluation: the objectives, met or not
                met[e.case_id] = all(bool(e.data.get(k)) for k in ("rto_met", "rpo_met", "completed"))
            else:
                started[e.case_id] = min(started.get(e.case_id, e.at), e.at)
    out = []
    for contract in contracts:
        try:
            per_year = drill_rules.drill_settings(contract.sla_policy).per_year
        except drill_rules.DrillRuleError:
            continue  # a contract whose drill settings are unusable plans no drills either
        if per_year == 0:
            continue
        seen: set[str] = set()
        day = max(first, contract.start_date)
        while day <= min(last, contract.end_date):
            period = drill_rules.drill_period(day, per_year)
            day = period.end + timedelta(days=1)
            due = min(period.end, contract.end_date)
            if period.label in seen or not first <= due <= last:
                continue
            seen.add(period.label)
            case = drills.get((contract.id, period.label))
            fact = _due_fact(
                "drill",
                names.get(contract.customer_id, ""),
                period.label,
                due,
                case,
                DRILL_DONE,
                started,
                staff=staff,
                tz=tz,
            )
            evaluated = met.get(case.id) if case is not None and case.id is not None else None
            out.append(replace(fact, objectives_met=evaluated))
    return out


def _due_fact(
    kind: str,
    customer: str,
    label: str,
    due: date,
    case: Any,  # a Case, a row of its columns (the bulk figures) or None
    done: tuple[CaseStatus, ...],
    first_at: Mapping[int, datetime],
    *,
    staff: Mapping[int | None, str],
    tz: str,
    site: str = "",
) -> perf.DueFact:
    """A planned period (an inspection, a drill) as a fact: done on the local day of its case's
    first done event (`first_at`; its last change when none) once the case reached a `done`
    status; cancelled; its engineer. `case` None: nothing was planned for the period."""
    done_on = None
    if case is not None and case.status in done:
        moment = first_at.get(case.id or 0) or case.updated_at
        done_on = moment.astimezone(ZoneInfo(tz)).date()
    return perf.DueFact(
        kind=kind,
        customer=customer,
        label=label,
        due=due,
        done_on=done_on,
        cancelled=case is not None and case.status == CaseStatus.CANCELLED,
        site=site,
        engineer=engineer_of(case.data, staff) if case is not None else "",
    )


def renewals_due(
    session: Session,
    customer_id: int | None,
    names: Mapping[int | None, str],
    contracts: Mapping[int | None, Contract],
    first: date,
    last: date,
) -> list[perf.RenewalFact]:
    """The renewals (issue 20) of the contract terms ending in first..last and how each came out, from
    its events: `renewal_closed` carries renewed / changed / ended, `contract_lapsed` says the term ran out
    unanswered; none of them yet: pending."""
    cases = session.exec(
        select(Case).where(
            *([Case.customer_id == customer_id] if customer_id is not None else []),
            Case.kind == str(CaseKind.RENEWAL),
        )
    ).all()
    ids = [c.id for c in cases]
    outcome: dict[int, str] = {}
    decided: dict[int, int] = {}
    if ids:
        for e in session.exec(
            select(Event)
            .where(
                col(Event.case_id).in_(
                    select(Case.id).where(
                        *([Case.customer_id == customer_id] if customer_id is not None else []),
                        Case.kind == str(CaseKind.RENEWAL),
                    )
                ),
                col(Event.kind).in_(("renewal_closed", "contract_lapsed", "renewal_answered")),
            )
            .order_by(col(Event.at), col(Event.id))
        ):
            if e.kind == "renewal_answered":  # how far ahead the customer decided (flows.renewal)
                if isinstance(e.data.get("days_before_end"), int):
                    decided[e.case_id] = int(e.data["days_before_end"])
                continue
            outcome[e.case_id] = "lapsed" if e.kind == "contract_lapsed" else str(e.data.get("outcome") or "")
    out = []
    for c in cases:
        try:
            end = date.fromisoformat(str(c.data.get("contract_end") or ""))
        except ValueError:
            continue  # a renewal without its term's end is not one the planner opened
        if first <= end <= last:
            contract = contracts.get(c.contract_id)
            out.append(
                perf.RenewalFact(
                    customer=names.get(c.customer_id, ""),
                    contract=contract.code if contract else "",
                    due=end,
                    outcome=outcome.get(c.id or 0) or "pending",
                    decided_days=decided.get(c.id or 0),
                )
            )
    return out


def kpi_rows(
    session: Session,
    customer: str,
    *,
    first: date,
    last: date,
    by: str | None = None,
    tz: str | None = None,
) -> tuple[KpiInput, list[perf.KpiRow]]:
    """The KPI rows of one customer (code or name) over local days first..last, grouped `by`."""
    if by is not None and by not in perf.BY_CHOICES:
        raise perf.KpiError(f"未知的分组 / unknown grouping {by!r}: use one of {', '.join(perf.BY_CHOICES)}")
    facts = gather(session, find_customer(session, customer), first=first, last=last, tz=tz)
    calendar_for = _calendars_of(session)

    rows = perf.table(
        facts.logs,
        start=facts.start,
        end=facts.end,
        by=by,
        due=facts.due,
        cards=facts.cards,
        renewals=facts.renewals,
        calendar=facts.calendar,
        tz=facts.tz,
        calendar_for=calendar_for,
    )
    return facts, rows


def all_customers(session: Session, *, first: date, last: date, tz: str | None = None) -> list[perf.KpiRow]:
    """The KPIs of every customer over local days first..last, one row each (read in one pass: the
    bulk figures for management and the KPI bench)."""
    facts = gather(session, None, first=first, last=last, tz=tz)
    return perf.table(
        facts.logs,
        start=facts.start,
        end=facts.end,
        by="customer",
        due=facts.due,
        cards=facts.cards,
        renewals=facts.renewals,
        tz=facts.tz,
        calendar_for=_calendars_of(session),
        calendars=facts.calendars,
    )


def _calendars_of(session: Session) -> Any:
    cache: dict[str, Calendar] = {}

    def calendar_for(terms: Mapping[str, Any]) -> Calendar:
        key = repr(sorted(terms.items()))
        if key not in cache:
            cache[key] = calendar_for_terms(session, dict(terms))
        return cache[key]

    return calendar_for


# ---- output ----------------------------------------------------------------------------------------

FORMATS = ("table", "csv", "json")


def header(by: str | None) -> list[tuple[str, str]]:
    return [("group", perf.BY_ZH[by] if by else "范围")]


def to_csv(rows: list[perf.KpiRow], by: str | None) -> str:
    """The rows as CSV, a header of Chinese labels; ratios in per cent as people read them."""
    import csv
    import io

    cols = perf.columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([label for _, label in header(by) + cols])
    for row in rows:
        values = perf.flat(row.kpis)
        writer.writerow([row.group or "全部"] + [perf.shown(key, values.get(key)) for key, _ in cols])
    return buf.getvalue()


def to_json(facts: KpiInput, rows: list[perf.KpiRow], by: str | None) -> str:
    """The rows as JSON: raw values (ratios as fractions), the labels, the period and the customer."""
    import json

    cols = perf.columns(rows)
    doc = {
        "customer": {"code": facts.one.code, "name": facts.one.name},
        "from": facts.start.isoformat(),
        "to": facts.end.isoformat(),
        "by": by,
        "labels": dict(cols),
        "rows": [
            {
                "group": row.group,
                **{key: perf.flat(row.kpis).get(key) for key, _ in cols},
                "mttr_buckets": dict(row.kpis.mttr_buckets),
                "scores": row.kpis.scores,
            }
            for row in rows
        ],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2)
