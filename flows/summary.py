"""Month end (月末), PROCEDURES.md §4 steps 7–8: the list of inspection reports due but not returned
goes to the technical director and supervision; every customer gets the monthly service summary
(阶段性服务总结) within 5 working days after month end, with a link to rate the service; at a
quarter's end the quarterly analysis goes out the same way.

Runs daily (cron, business time zone): every step is idempotent per month and customer, so the first run
after month end does the work and a day the scheduler missed is caught up by the next.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from tasks.ledger import step
from tasks.summary import month_end
from tasks.timers import current_time


# a batch committed per customer (idempotent per month), not one transaction
@step("month-end-step", title="月末总结 / month-end step", transactional=False)
def month_end_step(now: datetime) -> dict[str, Any]:
    """Unreturned-report list, monthly summaries and quarterly analyses for the month before `now`."""
    result = month_end(now)
    return {
        "month": result.month,
        "unreturned": result.unreturned,
        "monthly": result.monthly,
        "quarterly": result.quarterly,
        "late": result.late,
    }


@flow(name="month-end", retries=0, log_prints=True)
def month_end_flow(now: datetime | None = None) -> dict[str, Any]:
    """月末：未交巡检报告清单、阶段性服务总结、季度分析报告。"""
    return month_end_step(now or current_time())


def deployments() -> list[Any]:
    return []  # served through flows.inspection.deployments() (one procedure module)
