"""服务指标页 / the KPI page (issue 24): a customer's KPIs over a period, with filters, the figures as
a table and as charts (SVG drawn on the server, shown as <img>: the page runs no script), and the
same rows as CSV. Staff only (web.staff login); every filter value is checked, a bad one is named.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response
from sqlmodel import col, select

from models.db import session_scope
from models.forms import CALLBACK_ITEMS
from models.parties import Customer
from models.settings import business_timezone
from rules import performance as perf
from tasks.charts import kpi_charts
from tasks.kpi import kpi_rows, to_csv
from tasks.summary import RATING_ITEMS
from web.pages import templates
from web.staff import SessionNow, StaffUser, require_staff

router = APIRouter()

MAX_DAYS = 3 * 366
TREND_MONTHS = 6


class FilterError(ValueError):
    pass


def _day(name: str, value: str | None, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise FilterError(f"{name}的格式应为 YYYY-MM-DD（例如 2026-11-01），收到「{value}」") from exc


def _filters(now: datetime, customer: str | None, date_from: str | None, date_to: str | None, by: str | None):
    today = now.astimezone(ZoneInfo(business_timezone())).date()
    y, m = today.year, today.month - (TREND_MONTHS - 1)
    while m < 1:
        y, m = y - 1, m + 12
    first = _day("开始日期", date_from, date(y, m, 1))
    last = _day("结束日期", date_to, today)
    if last < first:
        raise FilterError(f"结束日期 {last} 早于开始日期 {first}")
    if (last - first).days > MAX_DAYS:
        raise FilterError("查询期间最长三年")
    group = by or None
    if group is not None and group not in perf.BY_CHOICES:
        raise FilterError(f"未知的分组「{by}」")
    return (customer or "").strip(), first, last, group


def _customers() -> list[tuple[str, str]]:
    with session_scope() as session:
        return [(c.code, c.name) for c in session.exec(select(Customer).order_by(col(Customer.code)))]


def _page(user: StaffUser, *, status: int = 200, **context: Any) -> HTMLResponse:
    values: dict[str, Any] = {
        "error": "",
        "customer_name": "",
        "table": [],
        "groups": [],
        "charts": [],
        "buckets": [],
        "scores": {},
        "score_items": SCORE_ITEMS_ZH,
        **context,
    }
    html = templates.get_template("kpi/page.html.j2").render(
        user=user, customers=_customers(), by_choices=perf.BY_ZH, **values
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/kpi", response_class=HTMLResponse)
def kpi_page(
    now: SessionNow,
    user: Annotated[StaffUser, Depends(require_staff())],
    customer: Annotated[str | None, Query(max_length=200)] = None,
    date_from: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    date_to: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    by: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    """A customer's KPIs, any logged-in staff person (the figures stay inside the service centre)."""
    form = {"customer": customer or "", "from": date_from or "", "to": date_to or "", "by": by or ""}
    try:
        name, first, last, group = _filters(now, customer, date_from, date_to, by)
    except FilterError as exc:
        return _page(user, status=422, form=form, error=str(exc))
    form.update({"from": first.isoformat(), "to": last.isoformat()})
    if not name:
        return _page(user, form=form)
    try:
        with session_scope() as session:
            facts, rows = kpi_rows(session, name, first=first, last=last, by=group)
            _, whole = kpi_rows(session, name, first=first, last=last)
            _, months = kpi_rows(session, name, first=first, last=last, by="month")
            _, classes = kpi_rows(session, name, first=first, last=last, by="device_class")
    except perf.KpiError as exc:
        return _page(user, status=422, form=form, error=str(exc))
    by_class = sorted(((r.group, r.kpis.faults) for r in classes if r.kpis.faults), key=lambda x: -x[1])
    charts = kpi_charts(months, whole[0].kpis, by_class)
    cols = perf.columns(rows)
    table = [(label, [perf.shown(key, perf.flat(r.kpis).get(key)) for r in rows]) for key, label in cols]
    return _page(
        user,
        form=form,
        customer_name=facts.one.name,
        first=first,
        last=last,
        groups=[r.group or "全部" for r in rows],
        table=table,
        charts=charts,
        buckets=whole[0].kpis.mttr_buckets,
        scores=whole[0].kpis.scores,
        csv_query=f"customer={facts.one.code}&from={first}&to={last}" + (f"&by={group}" if group else ""),
    )


@router.get("/kpi.csv")
def kpi_csv(
    now: SessionNow,
    user: Annotated[StaffUser, Depends(require_staff())],
    customer: Annotated[str, Query(max_length=200)] = "",
    date_from: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    date_to: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    by: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """The same rows as CSV (UTF-8 with a byte-order mark, so spreadsheet programs read the Chinese)."""
    try:
        name, first, last, group = _filters(now, customer, date_from, date_to, by)
        if not name:
            raise FilterError("请选择客户")
        with session_scope() as session:
            facts, rows = kpi_rows(session, name, first=first, last=last, by=group)
    except (FilterError, perf.KpiError) as exc:
        return Response(f"错误：{exc}\n", status_code=422, media_type="text/plain; charset=utf-8")
    filename = f"kpi-{facts.one.code}-{first}-{last}.csv"
    return Response(
        "\ufeff" + to_csv(rows, group),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


# the items of the callback form and of the summary rating, as their forms label them
SCORE_ITEMS_ZH = {**RATING_ITEMS, **CALLBACK_ITEMS}
