"""Reference seeds of the printed documents (issue 22 item 9): each template rendered once from a
fixed, realistic example, kept in `docs/reference/<name>.zh.html` so a reader (and a customer asked
to approve the paper format) sees the document without running a case.

`scripts/render_reference.py` writes them; tests/test_reference_documents.py renders them again and
fails when a template changed and its seed was not written again (as the migration test does for
the schema). The examples go through the same `tasks.render.render` as an issued report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.reports import REPORT_TITLES_ZH
from tasks.render import render

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "docs" / "reference"

T = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 2026-12-01 10:00 Beijing time


def _case(number: str, severity_text: str = "三级") -> dict[str, Any]:
    return {
        "id": 1,
        "number": number,
        "kind": "",
        "customer": "北京某银行数据中心",
        "customer_code": "BJYH",
        "site": "亦庄机房",
        "site_distance_km": 5.0,
        "device": "华为 OceanStor 5310（SN2102350001）",
        "severity": 3,
        "severity_label": "严重",
        "severity_text": severity_text,
        "description": "存储阵列告警，部分 LUN 读写变慢",
        "reported_by": "王先生 13900000000",
        "reported_at": T,
        "channel": "热线",
        "out_of_contract": False,
        "paid_service_reason": "",
        "contract_code": "HT-2026-BJYH",
        "contact_name": "北京维护负责人",
    }


ASSURANCE = {
    "event": "年终结算通信保障",
    "period": "2026-12-20 00:00 至 2026-12-28 00:00（北京时间）",
    "sites": "亦庄机房",
    "onsite": True,
    "requirements": "核心交易系统、存储阵列",
    "start": datetime(2026, 12, 19, 16, 0, tzinfo=UTC),
    "end": datetime(2026, 12, 27, 16, 0, tzinfo=UTC),
}
ROSTER = {
    "shifts": [
        {
            "name": "刘工程师",
            "phone": "13800000004",
            "start": datetime(2026, 12, 19, 16, 0, tzinfo=UTC),
            "end": datetime(2026, 12, 23, 12, 0, tzinfo=UTC),
            "hours": 92.0,
        },
        {
            "name": "陈工程师",
            "phone": "13800000005",
            "start": datetime(2026, 12, 23, 12, 0, tzinfo=UTC),
            "end": datetime(2026, 12, 27, 12, 0, tzinfo=UTC),
            "hours": 96.0,
        },
    ],
    "gaps": [
        {"start": datetime(2026, 12, 27, 12, 0, tzinfo=UTC), "end": datetime(2026, 12, 27, 16, 0, tzinfo=UTC)}
    ],
    "hours": 188.0,
    "hotline": "010-88886666",
    "note": "值班工程师驻亦庄机房二层值班室；交接班时当面交接并记录值班日志。",
    "by": "郑协调",
}


@dataclass(frozen=True)
class Sample:
    template: str
    kind: str  # the report kind (its title)
    number: str
    context: dict[str, Any]
    case: dict[str, Any] | None = None  # what differs from the example case


SAMPLES: dict[str, Sample] = {
    "service_request": Sample(
        "repair/service_request",
        "service_request",
        "WX-000123",
        {
            "arrived_at": datetime(2026, 12, 1, 3, 0, tzinfo=UTC),
            "engineer": "刘工程师",
            "fault_reconfirmed": True,
            "findings": "控制器 A 缓存电池老化，写缓存被关闭导致读写变慢",
            "plan": {"version": 1, "text": "更换控制器 A 缓存电池，恢复写缓存策略，观察 30 分钟"},
            "risky_operations": "重启控制器 A（业务切换到控制器 B，约 5 分钟）",
            "corrections": [],
        },
    ),
    "assurance_plan": Sample(
        "assurance/plan",
        "assurance_plan",
        "BZ-000012",
        {
            "plan": {
                "version": 1,
                "text": "1. 12 月 17 日保障前巡检（存储、网络、电源）\n2. 保障期间亦庄机房双人驻场值守\n"
                "3. 备件：控制器电池、硬盘各 1 块放置现场",
                "author": "张技术",
                "note": "",
            },
            "plan_reason": "初始方案",
            "parts": "",
        },
        case={"description": "年终结算通信保障\n核心交易系统、存储阵列"},
    ),
    "duty_roster": Sample(
        "assurance/duty_roster", "duty_roster", "BZ-000012", {"assurance": ASSURANCE, "roster": ROSTER}
    ),
    "assurance_report": Sample(
        "assurance/report",
        "assurance_report",
        "BZ-000012",
        {
            "assurance": ASSURANCE,
            "plan": {"version": 2, "text": "保障方案 v2"},
            "pre_inspection": {"error": "", "number": "XJ-000045", "day": "2026-12-17"},
            "roster": ROSTER,
            "requests": [
                {
                    "number": "WX-000130",
                    "at": datetime(2026, 12, 24, 1, 20, tzinfo=UTC),
                    "title": "核心交易系统响应变慢",
                    "reported": 3,
                    "raised": 2,
                    "status": "archived",
                }
            ],
            "report": {
                "summary": "保障期间系统运行平稳，值班工程师驻场值守，12 月 24 日处理一起存储告警，未影响业务。",
                "events": "12 月 26 日应客户要求协助检查备份作业。",
                "advice": "建议年后更换控制器 B 的缓存电池。",
                "extra_effort": "客户要求 12 月 27 日夜间增派一名工程师驻场",
                "extra_hours": 8.0,
            },
            "author": "张技术",
            "corrections": [],
        },
    ),
}


def render_sample(name: str) -> str:
    """The reference document `name` as an issued report of the example case would read."""
    sample = SAMPLES[name]
    return render(
        sample.template,
        case={**_case(sample.number), **(sample.case or {})},
        title=REPORT_TITLES_ZH[sample.kind],
        version=1,
        issued_at=T,
        issued_by=sample.context.get("engineer") or sample.context.get("author") or "郑协调",
        times={},
        clocks=[],
        **sample.context,
    )


def seed_path(name: str) -> Path:
    return REFERENCE_DIR / f"{name}.zh.html"


def write_seeds() -> list[Path]:
    """Write every reference document; returns the files written."""
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SAMPLES:
        path = seed_path(name)
        path.write_text(render_sample(name), encoding="utf-8")
        written.append(path)
    return written
