"""The annual satisfaction survey (flows/survey.py, issue 24) on the fast layer: the flow body in-process,
the customer's scorecard and the account manager's follow-up through the real decide(), the reminder
timers fired by the real keeper; its answers counted by the KPIs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlmodel import select

from flows.survey import survey
from models import Case, Contract
from tasks.survey import SurveyError, open_surveys, survey_month
from tests.fixtures.fastflow import FastFlow, say

DEC1 = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)  # Tuesday 2026-12-01 02:00 Asia/Shanghai
DAY = timedelta(days=1)
GOOD = {
    "person": "王主任",
    "inspection": "优",
    "repair": "良",
    "uptime": "优",
    "skill": "优",
    "overall": "良",
}


def _open(fast: FastFlow) -> int:
    created = open_surveys(DEC1, url=fast.db_url)
    with fast.session() as s:
        cases = [s.get(Case, i) for i in created]
        bjyh = next(c for c in cases if c is not None and c.title and c.data["contract"] == "HT-2026-BJYH")
        return int(bjyh.id or 0)


def test_one_survey_per_customer_and_year_in_its_survey_month(fast: FastFlow) -> None:
    assert open_surveys(DEC1 - 8 * DAY, url=fast.db_url) == []  # November: not the survey month
    created = open_surveys(DEC1, url=fast.db_url)
    with fast.session() as s:
        cases = [s.get(Case, i) for i in created]
        # 北京 and 石家庄 have a contract in force; 太原's ended in March
        assert sorted(c.data["contract"] for c in cases if c) == ["HT-2026-BJYH", "HT-2026-SJZY"]
        assert {(c.kind, c.period, c.number[:3]) for c in cases if c} == {("survey", "2026", "MY-")}
    assert open_surveys(DEC1 + 3 * DAY, url=fast.db_url) == []  # once a year
    # a contract may ask for another month; a bad setting is named
    assert survey_month({"survey": {"month": 6}}) == 6 and survey_month(None) == 12
    with pytest.raises(SurveyError, match="1–12"):
        survey_month({"survey": {"month": 13}})


def test_the_customer_rates_the_year_and_the_kpis_count_it(fast: FastFlow) -> None:
    from models.db import session_scope
    from tasks.kpi import kpi_rows

    case_id = _open(fast)
    result = fast.run(survey, case_id, at=DEC1, script=[say("survey", GOOD, at=DEC1 + 2 * DAY)])
    assert result == "answered"
    events = fast.events(case_id)
    assert (
        events.index("survey_answered") < events.index("survey_closed") and "survey_followed_up" not in events
    )
    with fast.session() as s:
        assert s.get(Case, case_id).status == "closed"  # type: ignore[union-attr]
    with session_scope(fast.db_url) as session:
        _, [row] = kpi_rows(session, "BJYH", first=date(2026, 12, 1), last=date(2026, 12, 31))
    assert row.kpis.scores["overall"] == {"优": 0, "良": 1, "中": 0, "差": 0}
    assert row.kpis.score_means["inspection"] == 4.0 and row.kpis.score_mean == pytest.approx(3.6)


def test_a_low_score_opens_the_account_managers_follow_up(fast: FastFlow) -> None:
    case_id = _open(fast)
    result = fast.run(
        survey,
        case_id,
        at=DEC1,
        script=[
            say("survey", {**GOOD, "uptime": "差", "comments": "十月存储宕机影响业务"}, at=DEC1 + DAY),
            say(
                "survey-follow-up",
                {
                    "contacted": "王主任",
                    "findings": "十月存储宕机时间较长",
                    "actions": "一月底前完成存储固件升级",
                },
                by="沈经理",
                at=DEC1 + 3 * DAY,
            ),
        ],
    )
    assert result == "followed_up"
    events = fast.events(case_id)
    assert (
        events.index("survey_answered") < events.index("survey_followed_up") < events.index("survey_closed")
    )
    with fast.session() as s:
        from models import Event

        followed = s.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == "survey_followed_up")
        ).one()
        assert followed.data["items"] == ["系统不间断运行时间"] and followed.actor == "沈经理"


def test_unanswered_the_link_goes_again_every_week_three_times_then_the_survey_closes(fast: FastFlow) -> None:
    case_id = _open(fast)
    assert fast.run(survey, case_id, at=DEC1, script=[]) == "unanswered"
    events = fast.events(case_id)
    assert events.count("survey_reminded") == 3 and events[-1] == "survey_unanswered"
    reminders = [who for who, template in fast.notifications(case_id) if template == "survey/reminder"]
    assert len(reminders) == 3 and len(set(reminders)) == 1  # the customer's contact, each week
    with fast.session() as s:
        contract = s.exec(select(Contract).where(Contract.code == "HT-2026-BJYH")).one()
        assert s.get(Case, case_id).contract_id == contract.id  # type: ignore[union-attr]
