"""The annual satisfaction survey's steps (年度客户满意度调查, PROCEDURES.md §8; issue 24): one survey
per customer and year, opened in the survey month of the customer's contract (December unless the
contract's `sla_policy["survey"]["month"]` says otherwise), its run started once; the reminder to the
customer while the scorecard is unanswered.

Exactly once rests on keys, as the renewal planner's: the unique (kind, contract, period) of `case`
with period = the year, and Prefect's idempotency key `survey:<contract>:<year>` on the run. The
answers are `survey_answered` events (their `scores`), which the KPIs read (tasks/kpi.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from models.approvals import Approval
from models.cases import Case, CaseKind, CaseStatus, add_period_case, append_event
from models.contracts import Contract
from models.db import session_scope
from models.parties import Role, Staff
from tasks.approvals import Approver, approval_link
from tasks.cases import customer_contact, start_period_runs
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


def open_surveys(now: datetime, *, url: str | None = None) -> list[int]:
    """Open the survey of every customer whose contract in force is in its survey month and who has
    none for this year yet (in one transaction); returns the new case ids."""
    created: list[int] = []
    with session_scope(url) as session:
        contracts = session.exec(select(Contract).order_by(col(Contract.customer_id), col(Contract.id))).all()
        chosen: dict[int, Contract] = {}
        for contract in contracts:
            today = local_day(now, contract.timezone)
            if not contract.start_date <= today <= contract.end_date:
                continue
            best = chosen.get(contract.customer_id)
            # one survey per customer: the contract in force that runs longest speaks for it
            if best is None or (contract.end_date, contract.id or 0) > (best.end_date, best.id or 0):
                chosen[contract.customer_id] = contract
        for contract in chosen.values():
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


def open_survey(session: Session, contract: Contract, *, year: int, now: datetime) -> int | None:
    """The customer's survey of `year` (in the caller's transaction); None when it exists already."""
    manager = session.get(Staff, contract.account_manager_id) if contract.account_manager_id else None
    if manager is None or not manager.active:
        manager = first_with_role(session, Role.ACCOUNT_MANAGER)
    data = {"year": year, "contract": contract.code, "team": {Role.ACCOUNT_MANAGER: manager.id}}
    return add_period_case(
        session,
        contract,
        str(CaseKind.SURVEY),
        str(year),
        status=CaseStatus.OPEN,
        title=f"{year} 年度客户满意度调查",
        description=f"请客户对 {year} 年度的服务评分（优/良/中/差）",
        channel="schedule",
        data=data,
        now=now,
        event="survey_opened",
        key="opened",
    )


def start_survey_runs(now: datetime, *, url: str | None = None) -> int:
    """Start the run of every open survey without one (idempotent by its key); returns how many."""
    return start_period_runs(CaseKind.SURVEY, SURVEY_DEPLOYMENT, now=now, url=url)


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
