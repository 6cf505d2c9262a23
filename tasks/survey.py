"""The annual satisfaction survey's steps (年度客户满意度调查, PROCEDURES.md §8; issue 24): one survey
per customer and year, opened in the survey month of the customer's contract (December unless the
contract's `sla_policy["survey"]["month"]` says otherwise), its run started once; the reminder to the
customer while the scorecard is unanswered.

A dispatcher opens a customer's survey now (a contract that started mid-year, a survey the account
manager asks for) through `request_survey` — the run form `survey-now` (flows/survey.py) and
`aftercare survey new`: the same `open_survey` as the schedule, so still once per customer and year
(`existing_survey`), and the run started by `start_survey_run` with the schedule's idempotency key.

Exactly once rests on keys, as the renewal planner's: the unique (kind, contract, period) of `case`
with period = the year, and Prefect's idempotency key `survey:<contract>:<year>` on the run. The
answers are `survey_answered` events (their `scores`), which the KPIs read (tasks/kpi.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from sqlmodel import Session, col, select

from models import wallclock
from models.approvals import Approval
from models.cases import Case, CaseKind, CaseStatus, add_period_case, append_event
from models.contracts import Contract
from models.db import session_scope
from models.forms import explain
from models.parties import Customer, Role, Staff
from models.settings import business_timezone
from tasks.approvals import Approver, approval_link
from tasks.cases import IntakeError, customer_contact, find_customer, start_period_run, start_period_runs
from tasks.inspection import local_day
from tasks.ledger import step
from tasks.notify import queue
from tasks.people import first_with_role

SURVEY_DEPLOYMENT = "survey/survey"
DEFAULT_MONTH = 12  # the year's service is rated once it is (nearly) over


class SurveyError(ValueError):
    """A contract's survey setting that cannot be used; the message says why, for a person."""


def survey_month(sla_policy: dict[str, Any] | None) -> int:
    """The month a contract's customer is surveyed in (1–12), from `sla_policy["survey"]["month"]`."""
    raw = (sla_policy or {}).get("survey") or {}
    if not isinstance(raw, dict):
        raise SurveyError("合同的满意度调查设置必须是字典 / sla_policy['survey'] must be a mapping")
    month = raw.get("month", DEFAULT_MONTH)
    if not isinstance(month, int) or isinstance(month, bool) or not 1 <= month <= 12:
        raise SurveyError(f"满意度调查月份须为 1–12，收到 {month!r} / survey month must be 1..12")
    return month


def contracts_in_force(
    session: Session, now: datetime, customer_id: int | None = None
) -> dict[int, Contract]:
    """Per customer (or the one customer), the contract in force on `now` that speaks for it in its
    survey: of several, the one that runs longest."""
    query = select(Contract).order_by(col(Contract.customer_id), col(Contract.id))
    if customer_id is not None:
        query = query.where(Contract.customer_id == customer_id)
    chosen: dict[int, Contract] = {}
    for contract in session.exec(query).all():
        today = local_day(now, contract.timezone)
        if not contract.start_date <= today <= contract.end_date:
            continue
        best = chosen.get(contract.customer_id)
        if best is None or (contract.end_date, contract.id or 0) > (best.end_date, best.id or 0):
            chosen[contract.customer_id] = contract
    return chosen


def open_surveys(now: datetime, *, url: str | None = None) -> list[int]:
    """Open the survey of every customer whose contract in force is in its survey month and who has
    none for this year yet (in one transaction); returns the new case ids."""
    created: list[int] = []
    with session_scope(url) as session:
        for contract in contracts_in_force(session, now).values():
            try:
                month = survey_month(contract.sla_policy)
            except SurveyError:
                continue  # a bad setting surveys nobody: `aftercare check` and the contract page say so
            today = local_day(now, contract.timezone)
            if today.month != month:
                continue
            case_id = open_survey(session, contract, year=today.year, now=now)
            if case_id is not None:
                created.append(case_id)
    return created


def existing_survey(session: Session, customer_id: int, year: int) -> Case | None:
    """The customer's survey of `year` under any of its contracts (a renewed contract too), or None."""
    return session.exec(
        select(Case)
        .where(Case.kind == str(CaseKind.SURVEY), Case.customer_id == customer_id, Case.period == str(year))
        .order_by(col(Case.id))
    ).first()


def open_survey(
    session: Session,
    contract: Contract,
    *,
    year: int,
    now: datetime,
    channel: str = "schedule",
    requested_by: str = "",
) -> int | None:
    """The customer's survey of `year` (in the caller's transaction); None when it exists already —
    once per customer and year, whichever contract or route opened it. `channel` / `requested_by`:
    a survey asked for by a person ("request"), recorded as who asked."""
    if existing_survey(session, contract.customer_id, year) is not None:
        return None
    manager = session.get(Staff, contract.account_manager_id) if contract.account_manager_id else None
    if manager is None or not manager.active:
        manager = first_with_role(session, Role.ACCOUNT_MANAGER)
    data = {"year": year, "contract": contract.code, "team": {Role.ACCOUNT_MANAGER: manager.id}}
    if requested_by:
        data["requested_by"] = requested_by
    return add_period_case(
        session,
        contract,
        str(CaseKind.SURVEY),
        str(year),
        status=CaseStatus.OPEN,
        title=f"{year} 年度客户满意度调查",
        description=f"请客户对 {year} 年度的服务评分（优/良/中/差）",
        channel=channel,
        data=data,
        now=now,
        event="survey_opened",
        key="opened",
        reported_by=requested_by or "system",
        actor=requested_by or "system",
    )


# --- a survey asked for now (run form `survey-now`, `aftercare survey new`) -------------------------


def _this_year(info: ValidationInfo) -> int:
    """The current year in the business time zone, at the request's `now` (the context)."""
    now = (info.context or {}).get("now") or wallclock.now()
    return local_day(now, business_timezone()).year


class SurveyRequest(BaseModel):
    """A survey a dispatcher opens now: the customer, the year (default: this year, business time
    zone), who asked. Validated with `now` in the context; `request_survey` names a refused field."""

    model_config = ConfigDict(title="满意度调查 / satisfaction survey")

    customer: str = Field(title="客户", min_length=1, max_length=100)
    year: int = Field(default=0, title="调查年度", validate_default=True)  # 0: not given → this year
    requested_by: str = Field(default="", title="提出人", max_length=100)

    @field_validator("customer", "requested_by", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("year", mode="before")
    @classmethod
    def _year(cls, value: Any, info: ValidationInfo) -> int:
        """ "" or None → this year; a text of four digits → that year; the current year or the one
        before (a year just ended, surveyed in January) — a later year has no service to rate yet."""
        this_year = _this_year(info)
        if value is None or (isinstance(value, str) and not value.strip()) or value == 0:
            return this_year
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit() or len(text) != 4:
            raise ValueError(f"无法识别的年份“{value}”，请写四位年份，如 {this_year}")
        year = int(text)
        if year > this_year:
            raise ValueError(f"不能晚于今年（{this_year}）：{year} 年度的服务还没有可评的")
        if year < this_year - 1:
            raise ValueError(f"只能调查今年（{this_year}）或去年（{this_year - 1}）的服务")
        return year


def survey_request(values: dict[str, Any] | SurveyRequest, now: datetime) -> SurveyRequest:
    """The form's values as a SurveyRequest; SurveyError names each refused field by its label."""
    raw = values.model_dump() if isinstance(values, SurveyRequest) else dict(values or {})
    try:
        return SurveyRequest.model_validate(raw, context={"now": now})
    except ValidationError as exc:
        raise SurveyError(str(explain(exc, SurveyRequest))) from None


def request_survey(
    values: dict[str, Any] | SurveyRequest, *, now: datetime, url: str | None = None
) -> tuple[int, str]:
    """Open the customer's survey of the year asked for now (`open_survey`, as the schedule does);
    returns (case id, number). SurveyError says why not: a field refused, a customer unknown or
    without a contract in force, the year's survey already there (named by its number)."""
    request = survey_request(values, now)
    with session_scope(url) as session:
        try:
            customer = find_customer(session, request.customer)
        except IntakeError as exc:
            raise SurveyError(f"「客户」{exc}") from None
        customer_id = int(customer.id)  # type: ignore[arg-type]
        contract = contracts_in_force(session, now, customer_id).get(customer_id)
        if contract is None:
            raise SurveyError(
                f"{customer.name} 没有有效合同，无法发起满意度调查 / no contract in force: no survey"
            )
        case_id = open_survey(
            session,
            contract,
            year=request.year,
            now=now,
            channel="request",
            requested_by=request.requested_by,
        )
        if case_id is None:
            raise SurveyError(_already(session, customer, request.year))
        case = session.get(Case, case_id)
        assert case is not None
        return case_id, case.number


def _already(session: Session, customer: Customer, year: int) -> str:
    found = existing_survey(session, int(customer.id), year)  # type: ignore[arg-type]
    number = found.number if found is not None else "?"
    return (
        f"{customer.name} 的 {year} 年度满意度调查已有：{number}（每客户每年一次），未重复发起"
        f" / the {year} survey of {customer.code} exists already: {number}"
    )


def start_survey_runs(now: datetime, *, url: str | None = None) -> int:
    """Start the run of every open survey without one (idempotent by its key); returns how many."""
    return start_period_runs(CaseKind.SURVEY, SURVEY_DEPLOYMENT, now=now, url=url)


def start_survey_run(case_id: int, now: datetime, *, url: str | None = None) -> str:
    """Start one survey's run as `start_survey_runs` does (`start_period_run`: the same idempotency
    key, so the schedule and a request never start two); returns the run id."""
    return start_period_run(case_id, SURVEY_DEPLOYMENT, now=now, url=url)


@step("request-survey", title="发起满意度调查 / open the survey asked for")
def request_survey_step(values: dict[str, Any], at: datetime) -> dict[str, Any]:
    """{"error": "" or why not, "case_id", "number"}: a refusal is the run's message, not a traceback."""
    try:
        case_id, number = request_survey(values, now=at)
    except SurveyError as exc:
        return {"error": str(exc), "case_id": None, "number": ""}
    return {"error": "", "case_id": case_id, "number": number}


@step("start-survey-run", title="启动满意度调查 / start the survey run", transactional=False)  # Prefect run
def start_survey_run_step(case_id: int, at: datetime) -> str:
    return start_survey_run(case_id, at)


@step("open-surveys", title="创建满意度调查 / open the surveys")
def open_surveys_step(now: datetime) -> int:
    """Open the surveys due on `now` (idempotent); returns how many were new."""
    return len(open_surveys(now))


@step("start-survey-runs", title="启动满意度调查 / start the runs", transactional=False)  # Prefect runs
def start_survey_runs_step(now: datetime) -> int:
    return start_survey_runs(now)


@step("survey-reminder", title="提醒客户填写满意度调查 / remind the customer", key="{round_}")
def remind_customer(case_id: int, approval_id: int, round_: int, at: datetime) -> None:
    """The customer has not answered: the same link again, with the event (once per round)."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        row = session.get(Approval, approval_id)
        assert case is not None and row is not None
        contact = customer_contact(session, case_id)
        link = approval_link(row, Approver("contact", int(contact.id)))  # type: ignore[arg-type]
        append_event(
            session, case_id, "survey_reminded", at=at, data={"round": round_}, key=f"reminder:{round_}"
        )
        queue(
            session,
            recipients=[contact],
            template="survey/reminder",
            key=f"{case_id}:survey-reminder:{round_}",
            case_id=case_id,
            now=at,
            context={"number": case.number, "year": case.data.get("year", ""), "link": link, "round": round_},
        )
