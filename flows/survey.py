"""The annual satisfaction survey (年度客户满意度调查), PROCEDURES.md §8 [003 §8.5.5.3; 002]; issue 24.

- `plan-surveys` (daily, business time zone): once a year per customer, in the survey month of its
  contract in force (December by default), a survey case is opened and its run started, once.
- `survey` (one run per case): the overall scorecard (月度巡检质量、维修质量、系统不间断运行时间、
  工程师技术水平、总体评价, 优/良/中/差) goes to the customer's contact by link; unanswered, the
  same link is sent again every 7 days, three times; then the survey closes unanswered. The answer is
  the `survey_answered` event whose scores the KPIs count (tasks/kpi.py: the KPI page, `aftercare kpi`
  and the next monthly summary's score chart). Any item rated 中 or 差 opens a follow-up task for the
  account manager (what the customer said, what will be done), recorded before the case closes.
- `survey-now` (the dispatcher's Prefect-UI run form, deployments.run_forms.SurveyRequestForm): a
  customer's survey opened now — a contract that started mid-year, a survey the account manager asks
  for — by the schedule's own `open_survey` (still once per customer and year: a second is refused
  naming the first), then its `survey` run started as the schedule starts it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import flow
from prefect.schedules import Cron

from deployments.run_forms import SurveyRequestForm, use_form
from flows.steps import answer_of, ask_customer, fill_form
from models.cases import CaseStatus
from models.forms import SURVEY_ITEMS, SurveyFollowUpForm, SurveyForm
from models.parties import Role
from models.settings import business_timezone
from tasks.approvals import await_approval_until
from tasks.board import PROCEDURE_ZH, name_run, run_name
from tasks.cases import load_case, record
from tasks.survey import (
    open_surveys_step,
    remind_customer,
    request_survey_step,
    start_survey_run_step,
    start_survey_runs_step,
)
from tasks.timers import current_time

PLAN_CRON = "50 1 * * *"  # daily 01:50 business time, after the renewal planner
REMIND_EVERY = timedelta(days=7)
REMINDERS = 3
LINK_VALID = REMIND_EVERY * (REMINDERS + 1) + timedelta(days=7)
LOW = ("中", "差")
STEP = "survey"


@flow(name="plan-surveys", retries=0, log_prints=True)
def plan_surveys_flow(now: datetime | None = None) -> dict[str, int]:
    """满意度调查计划: open each customer's survey of the year in its survey month, once, and start its run."""
    at = now or current_time()
    return {"created": open_surveys_step(at), "started": start_survey_runs_step(at)}


@flow(name="survey-now", flow_run_name=run_name, retries=0, log_prints=True)
def survey_now(request: dict[str, Any]) -> str:
    """立即发起满意度调查: the form checked (a refused field named by its label), the customer's survey
    of the year opened as the schedule opens it (once per customer and year), its `survey` run started.
    `request` stays a plain mapping: the form's values are validated by the step, so a bad value ends
    the run with its Chinese message instead of Prefect's parameter error."""
    from prefect.states import Failed

    now = current_time()
    opened = request_survey_step(dict(request or {}), now)
    if opened["error"]:
        return Failed(message=opened["error"])  # type: ignore[return-value]  # a clear message, no traceback
    case_id = int(opened["case_id"])
    name_run(case_id, PROCEDURE_ZH["survey-now"])  # "MY-000002 发起满意度调查 北京…", beside the survey's run
    run_id = start_survey_run_step(case_id, now)
    return f"已发起：{opened['number']} 年度客户满意度调查，调查流程已启动 / survey run {run_id}"


@flow(name="survey", flow_run_name=run_name, retries=0, log_prints=True)
def survey(case_id: int) -> str:
    """年度满意度调查：评分表发给客户（链接）、未答复每 7 天提醒、中/差项由客户经理跟进。"""
    facts = load_case(case_id)
    now = current_time()
    approval = ask_customer(
        case_id,
        STEP,
        1,
        subject=f"{facts.number} {facts.customer}：年度客户满意度调查",
        content="感谢贵单位一年来的支持。请对本年度的服务逐项评分（优/良/中/差），您的意见将用于改进服务。",
        now=now,
        kind="form",
        form=SurveyForm,
        expires=LINK_VALID,
    )
    decision = None
    for round_ in range(1, REMINDERS + 2):
        when = now + REMIND_EVERY * round_
        decision = await_approval_until(
            approval, STEP, 1, case_id=case_id, when=when, key=f"survey-wait-{round_}"
        )
        if decision is not None:
            break
        if round_ <= REMINDERS:
            remind_customer(case_id, approval, round_, when)
    if decision is None:
        record(
            case_id,
            "survey_unanswered",
            now + REMIND_EVERY * (REMINDERS + 1),
            data={"reminders": REMINDERS},
            key="unanswered",
            status=CaseStatus.CLOSED,
        )
        return "unanswered"
    answer = answer_of(SurveyForm, decision)
    form = answer.value
    scores = {key: getattr(form, key) for key in SURVEY_ITEMS}
    record(
        case_id,
        "survey_answered",
        answer.at,
        form.person,
        {"scores": scores, "comments": form.comments, "person": form.person, "by": answer.by},
        key="answered",
    )
    low = [SURVEY_ITEMS[key] for key, grade in scores.items() if grade in LOW]
    if not low:
        record(
            case_id,
            "survey_closed",
            answer.at,
            data={"follow_up": False},
            key="closed",
            status=CaseStatus.CLOSED,
        )
        return "answered"
    rated = "；".join(f"{SURVEY_ITEMS[k]}：{v}" for k, v in scores.items())
    follow = fill_form(
        case_id,
        "survey-follow-up",
        1,
        role=Role.ACCOUNT_MANAGER,
        form=SurveyFollowUpForm,
        now=answer.at,
        subject=f"{facts.number} {facts.customer}：满意度调查中「{'、'.join(low)}」评为中/差，请跟进",
        content=f"客户评分：{rated}\n客户意见：{form.comments or '—'}\n请与客户沟通，记录问题与改进措施。",
    )
    record(
        case_id,
        "survey_followed_up",
        follow.at,
        follow.by,
        {**follow.value.model_dump(mode="json"), "items": low},
        key="follow-up",
    )
    record(
        case_id, "survey_closed", follow.at, data={"follow_up": True}, key="closed", status=CaseStatus.CLOSED
    )
    return "followed_up"


def deployments() -> list[Any]:
    return [
        survey.to_deployment(name="survey", description="年度客户满意度调查：评分表、提醒、中/差项跟进"),
        use_form(
            survey_now.to_deployment(
                name="survey-now",
                tags=["survey", "满意度调查"],
                description="立即发起年度客户满意度调查：选择客户（可填年度，默认今年）——创建该客户当年的调查并启动"
                "调查流程（每客户每年一次：已有则说明其单号，不再重复）",
            ),
            SurveyRequestForm,
        ),
        plan_surveys_flow.to_deployment(
            name="plan-surveys",
            schedules=[Cron(PLAN_CRON, timezone=business_timezone())],
            description="每日：客户合同的调查月份（默认12月）为每个客户创建当年的满意度调查并启动流程（每客户每年一次）",
        ),
    ]
