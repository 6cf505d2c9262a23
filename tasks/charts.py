"""KPI charts (issue 24): trend lines, bars and the score distribution, drawn server-side as SVG.

Why matplotlib: the maintained plotting library that writes SVG with its text turned into paths
(`svg.fonttype = "path"`), so a chart shows its Chinese labels in any browser and in WeasyPrint's PDF
without the viewer having a Chinese font; it draws them with the Noto Sans CJK file of the font wheel
the PDFs use (tasks/pdf.py `packaged_font`). Only the object-oriented API is used (no pyplot and its
global figure state); the style is matplotlib's global rcParams, set for each chart under a lock, so
charts may be drawn from several threads of the web app, one at a time.

A chart is returned as SVG text; `data_uri` makes it an <img src> (the pages' CSP allows `data:`
images and no inline script: a chart carries none). The output is the same for the same figures
(fixed hash salt, no date), so a summary that embeds charts keeps its content hash.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import TYPE_CHECKING, Any

from rules import performance as perf
from tasks import kpi as kpi_facts
from tasks.pdf import packaged_font, system_font_covering

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# matplotlib (with numpy, ~40 MB PSS) is imported when the first chart is drawn, not with this
# module: the approval web and the runner import it for the summary and KPI pages but draw charts
# rarely, and each would otherwise hold it from start-up (issue 26, the footprint of the processes).

GRADE_COLOURS = {"优": "#2e7d32", "良": "#8bc34a", "中": "#f9a825", "差": "#c62828"}
LINE_COLOURS = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a")
BAR_COLOUR = "#1565c0"
_DRAWING = threading.Lock()  # rc_context changes matplotlib's global rcParams while a chart is drawn


@dataclass(frozen=True)
class Chart:
    key: str  # mttr_trend / compliance_trend / faults_by_class / scores
    title: str
    svg: str

    @property
    def data_uri(self) -> str:
        return data_uri(self.svg)


def data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


@cache
def chart_font() -> str | None:
    """The family name of the Chinese font the charts draw with (registered with matplotlib once)."""
    path = packaged_font()
    if path is None:
        found = system_font_covering()
        if found is None:
            return None
        path = found  # type: ignore[assignment]
    from matplotlib import font_manager

    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


def _style() -> Any:  # matplotlib types the rc keys as literals
    family = chart_font()
    return {
        # one family: the CJK font has the Latin letters and digits too, and a fallback list costs a
        # font lookup per text drawn
        "font.family": [family] if family else ["DejaVu Sans"],
        "font.size": 9,
        "axes.unicode_minus": False,  # the CJK font has no U+2212
        "svg.fonttype": "path",
        "svg.hashsalt": "aftercare-kpi",
        "axes.spines.top": False,
        "axes.spines.right": False,
    }


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    # fixed margins, not bbox_inches="tight": that lays the figure out twice (a third of the time)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.88, bottom=0.12)
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    # the XML prologue and DOCTYPE are dropped: the SVG may be put inline in a page as well
    return text[text.index("<svg") :]


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    percent: bool = False,
    unit: str = "",
) -> str:
    """Lines over the labels (months), a gap where a value is None."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    with _DRAWING, rc_context(_style()):
        fig = Figure(figsize=(6.4, 2.8))
        ax = fig.subplots()
        x = list(range(len(labels)))
        for (name, values), colour in zip(series.items(), LINE_COLOURS, strict=False):
            ys = [float("nan") if v is None else (v * 100 if percent else v) for v in values]
            ax.plot(x, ys, marker="o", color=colour, label=name)
            for xi, yi in zip(x, ys, strict=True):
                if yi == yi and not percent:  # not NaN; per cent lines read off their axis
                    ax.annotate(
                        f"{yi:.1f}{'%' if percent else ''}",
                        (xi, yi),
                        textcoords="offset points",
                        xytext=(0, 5),
                        ha="center",
                        fontsize=7,
                    )
        ax.set_xticks(x, list(labels))
        ax.set_title(title)
        if percent:
            ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
            ax.set_ylim(0, 105)
        elif unit:
            ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        if len(series) > 1:
            ax.legend(loc="best", frameon=False)
        return _svg(fig)


def bar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    colours: Sequence[str] | None = None,
    unit: str = "",
) -> str:
    """Vertical bars with their values written on top."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    with _DRAWING, rc_context(_style()):
        fig = Figure(figsize=(6.4, 2.8))
        ax = fig.subplots()
        bars = ax.bar(list(labels), list(values), color=list(colours) if colours else BAR_COLOUR)
        ax.bar_label(bars, fmt="%g", fontsize=8)
        ax.set_title(title)
        if unit:
            ax.set_ylabel(unit)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0, top=max([*values, 1]) * 1.2)
        ax.grid(axis="y", alpha=0.3)
        return _svg(fig)


def kpi_charts(
    months: Sequence[perf.KpiRow],
    whole: perf.Kpis,
    faults_by_class: Sequence[tuple[str, int]],
) -> list[Chart]:
    """The charts of a KPI page or a summary: MTTR and compliance by month (when there are months),
    faults by device class and the score distribution (when there is something to show)."""
    out = []
    if any(r.kpis.mttr_hours is not None for r in months):
        labels = [r.group for r in months]
        out.append(
            Chart(
                "mttr_trend",
                "平均修复时间趋势（小时）",
                line_chart(
                    "平均修复时间趋势（小时）",
                    labels,
                    {"平均修复时间": [r.kpis.mttr_hours for r in months]},
                    unit="小时",
                ),
            )
        )
    if any(r.kpis.sla_compliance is not None or r.kpis.outage_hours for r in months):
        labels = [r.group for r in months]
        out.append(
            Chart(
                "compliance_trend",
                "SLA 达标率与可用率趋势",
                line_chart(
                    "SLA 达标率与可用率趋势",
                    labels,
                    {
                        "SLA 达标率": [r.kpis.sla_compliance for r in months],
                        "可用率": [r.kpis.uptime for r in months],
                    },
                    percent=True,
                ),
            )
        )
    if any(n for _, n in faults_by_class):
        out.append(
            Chart(
                "faults_by_class",
                "各类设备故障数",
                bar_chart("各类设备故障数", [c for c, _ in faults_by_class], [n for _, n in faults_by_class]),
            )
        )
    grades = perf.grade_distribution(whole.scores)
    if any(grades.values()):
        out.append(
            Chart(
                "scores",
                "客户评分分布（优/良/中/差）",
                bar_chart(
                    "客户评分分布（优/良/中/差）",
                    list(grades),
                    list(grades.values()),
                    colours=[GRADE_COLOURS[g] for g in grades],
                ),
            )
        )
    return out


def customer_charts(
    session: Any, customer: Any, *, first: date, last: date, trend_first: date, tz: str | None = None
) -> list[Chart]:
    """The charts of one customer's period first..last, the trends from `trend_first` by month.
    Nothing is drawn where there is nothing to show (a quiet month costs no drawing)."""
    facts = kpi_facts.gather(session, customer, first=min(first, trend_first), last=last, tz=tz)
    start, end = kpi_facts.window(first, last, facts.tz)
    trend_start, _ = kpi_facts.window(trend_first, last, facts.tz)
    common: dict[str, Any] = {
        "due": facts.due,
        "cards": facts.cards,
        "renewals": facts.renewals,
        "calendar": facts.calendar,
        "tz": facts.tz,
    }
    months = perf.table(facts.logs, start=trend_start, end=end, by="month", **common)
    [whole] = perf.table(facts.logs, start=start, end=end, **common)
    classes = perf.table(facts.logs, start=start, end=end, by="device_class", **common)
    by_class = sorted(((r.group, r.kpis.faults) for r in classes if r.kpis.faults), key=lambda x: -x[1])
    return kpi_charts(months, whole.kpis, by_class)
