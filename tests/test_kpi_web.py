"""The KPI page (web/kpi.py, issue 24) through the FastAPI app: behind the staff login, filters
checked, the figures of tests/test_kpi.py's event log as a table, charts and CSV."""

from __future__ import annotations

import base64
import re

import pytest
from fastapi.testclient import TestClient

from tests.conftest import T0
from tests.staff_login import log_in, make_account
from tests.test_kpi import log  # noqa: F401 - the event log of the KPI tests

PERIOD = {"customer": "BJYH", "from": "2026-10-01", "to": "2026-11-30"}


@pytest.fixture
def client(log: dict) -> TestClient:  # noqa: F811
    from web.app import create_app
    from web.staff import staff_now

    app = create_app()
    app.dependency_overrides[staff_now] = lambda: T0
    client = TestClient(app)
    make_account("director1", roles=("technical_director",))
    assert log_in(client, "director1").status_code == 303
    return client


def test_the_kpi_page_asks_for_a_login(demo: str):
    from web.app import create_app

    page = TestClient(create_app()).get("/kpi", params=PERIOD, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=/kpi")


def test_the_kpi_page_shows_the_figures_and_the_charts(client: TestClient, log: dict):  # noqa: F811
    page = client.get("/kpi", params=PERIOD)
    assert page.status_code == 200, page.text[:2000]
    html = page.text
    assert "服务指标 · 北京某银行数据中心" in html
    assert "平均修复时间(小时)" in html and "99.32%" in html and "达标率·恢复服务" in html
    assert "<script" not in html and "script-src" in page.headers["content-security-policy"]
    images = re.findall(r'<img src="data:image/svg\+xml;base64,([^"]+)" alt="([^"]+)"', html)
    assert {alt for _, alt in images} >= {
        "平均修复时间趋势（小时）",
        "各类设备故障数",
        "客户评分分布（优/良/中/差）",
    }
    assert all(base64.b64decode(data).startswith(b"<svg") for data, _ in images)
    assert "修复时间分布" in html and "响应时间（30分钟内）" in html  # the callback's scores by item
    assert 'href="/kpi.csv?customer=BJYH&amp;from=2026-10-01&amp;to=2026-11-30"' in html

    by_engineer = client.get("/kpi", params={**PERIOD, "by": "engineer"})
    assert by_engineer.status_code == 200 and f"<th>{log['engineer']}</th>" in by_engineer.text


def test_the_kpi_page_names_a_bad_filter(client: TestClient):
    bad_day = client.get("/kpi", params={**PERIOD, "from": "2026-02-30"})
    assert bad_day.status_code == 422 and "开始日期的格式应为 YYYY-MM-DD" in bad_day.text
    backwards = client.get("/kpi", params={**PERIOD, "from": "2026-12-01"})
    assert backwards.status_code == 422 and "早于开始日期" in backwards.text
    nobody = client.get("/kpi", params={**PERIOD, "customer": "NOBODY"})
    assert nobody.status_code == 422 and "没有客户「NOBODY」" in nobody.text
    grouping = client.get("/kpi", params={**PERIOD, "by": "weather"})
    assert grouping.status_code == 422 and "未知的分组" in grouping.text
    empty = client.get("/kpi")
    assert empty.status_code == 200 and "请选择客户和期间后查询" in empty.text


def test_the_kpi_rows_download_as_csv(client: TestClient):
    csv = client.get("/kpi.csv", params={**PERIOD, "by": "month"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv.headers["content-disposition"]
    lines = csv.content.decode("utf-8-sig").strip().splitlines()
    assert lines[0].startswith("月份,故障数") and lines[1].startswith("2026-10,1,1,4,")
    missing = client.get("/kpi.csv", params={"from": "2026-10-01"})
    assert missing.status_code == 422 and "请选择客户" in missing.text
