"""The path a person takes, in a real browser: Debian's Chromium at a phone's 390×844 viewport against
a real `aftercare up` (its own AFTERCARE_HOME, free ports).

The dispatcher starts a repair from the Prefect UI's custom run form; the technical lead opens the
link the notification carried and fills the diagnosis form (not solved remotely, a plan); the
technical director approves the plan from his link; the dispatcher books the visit; the engineer
fills the on-site record; the customer opens the plan, draws a signature on the signature pad and
signs; the engineer's next notification (the repair record) appears. No JavaScript dialog and no
console error may fire on aftercare's pages. Each step is saved as a PNG under
test-artifacts/browser/ (git-ignored; CI keeps it as an artifact).

Slow (`aftercare up` boots Prefect; each step is a resumed flow run): only with `pytest -m browser`.

Driver: the `playwright` package (maintained by Microsoft; its wheel carries its own driver, no
browser download) launches Debian's `chromium` through `executable_path` — `playwright install`
is never run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "browser"
PHONE: Any = {"width": 390, "height": 844}  # playwright's ViewportSize
LOCAL = ZoneInfo("Asia/Shanghai")
# the operator's Prefect login (`aftercare up` protects the Prefect API and UI with it)
PREFECT_AUTH = "admin:browser-test-login"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_minute() -> str:
    """What a person types into a time field: the current minute, Beijing time."""
    return datetime.now(LOCAL).strftime("%Y-%m-%d %H:%M")


@dataclass
class Up:
    """A running `aftercare up`: its home, its URLs, the notifications it sent."""

    home: Path
    ui: str
    web: str
    proc: subprocess.Popen[str]

    @property
    def notifications(self) -> list[dict[str, Any]]:
        log = self.home / "notifications.log"  # the demo channel log:// appends one JSON line per message
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]

    def addresses(self, role: str) -> set[str]:
        """Where the staff holding `role` are notified (the demo data's log:// addresses)."""
        from models.db import session_scope
        from tasks.people import staff_with_role

        with session_scope(f"sqlite:///{self.home / 'aftercare.db'}") as session:
            return {url for person in staff_with_role(session, role) for url in person.notify_urls}

    def message_after(self, mark: int, *, to: set[str], title: str, timeout: float = 240) -> dict[str, Any]:
        """The first message after the first `mark` ones, to one of `to`, whose title has `title`
        (a real process writes it: poll, bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.notifications[mark:]:
                if message["to"] in to and title in message["title"]:
                    return message
            if self.proc.poll() is not None:
                raise AssertionError(f"aftercare up exited ({self.proc.returncode})")
            time.sleep(0.5)
        sent = [f"{m['to']} {m['title']}" for m in self.notifications[mark:]]
        raise AssertionError(f"no message to {to} with {title!r} within {timeout:.0f} s; sent since: {sent}")

    def event_of(self, number_prefix: str, kind: str, timeout: float = 120) -> dict[str, Any] | None:
        """The data of the first `kind` event of a case whose number starts with `number_prefix`, once a
        real process has recorded it (poll, bounded); None when none came."""
        from sqlmodel import select

        from models import Case, Event
        from models.db import session_scope

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with session_scope(f"sqlite:///{self.home / 'aftercare.db'}") as session:
                for event, case in session.exec(
                    select(Event, Case).where(Event.case_id == Case.id, Event.kind == kind)
                ).all():
                    if str(case.number or "").startswith(number_prefix):
                        return dict(event.data or {})
            time.sleep(0.5)
        return None


def link_in(message: dict[str, Any]) -> str:
    found = re.search(r"https?://\S+", message["body"])
    assert found, message
    return found[0]


@pytest.fixture
def aftercare_up(tmp_path: Path) -> Iterator[Up]:
    home = tmp_path / "var"
    prefect_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFTERCARE_", "PREFECT_"))}
    env.update({"AFTERCARE_HOME": str(home), "PREFECT_API_AUTH_STRING": PREFECT_AUTH})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deployments.cli",
            "up",
            "--prefect-port",
            str(prefect_port),
            "--web-port",
            str(web_port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    up = Up(home, f"http://127.0.0.1:{prefect_port}", f"http://127.0.0.1:{web_port}", proc)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any("Ctrl-C" in line for line in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert any("Ctrl-C" in line for line in lines), "".join(lines)
        # the dispatcher's form exists once the runner has registered the repair deployment
        user, password = PREFECT_AUTH.split(":", 1)
        deadline, names = time.monotonic() + 180, set()
        while time.monotonic() < deadline and "repair" not in names:
            answer = httpx.post(f"{up.ui}/api/deployments/filter", json={}, auth=(user, password), timeout=10)
            names = {d["name"] for d in answer.json()} if answer.status_code == 200 else set()
            time.sleep(0.5)
        assert "repair" in names, names
        yield up
    finally:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        _, alive = psutil.wait_procs(children, timeout=10)
        for leftover in alive:
            leftover.kill()


@dataclass
class Watch:
    """What a person would see go wrong: JavaScript dialogs anywhere, console errors and uncaught
    exceptions on aftercare's pages (the Prefect UI's own console is Prefect's business)."""

    web: str
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message} on {page.url}")
            dialog.dismiss()

        def on_console(message: Any) -> None:
            where = (message.location or {}).get("url", "") or page.url
            if message.type == "error" and (where.startswith(self.web) or page.url.startswith(self.web)):
                self.errors.append(f"{message.text} ({where})")

        def on_page_error(error: Any) -> None:
            if page.url.startswith(self.web):
                self.errors.append(f"uncaught: {error} on {page.url}")

        page.on("dialog", on_dialog)
        page.on("console", on_console)
        page.on("pageerror", on_page_error)


@dataclass
class Shots:
    n: int = 0

    def take(self, page: Any, name: str, *, full_page: bool = True) -> None:
        self.n += 1
        # animations finished: a toast is shown where it comes to rest, not halfway in
        page.screenshot(
            path=str(SCREENSHOTS / f"{self.n:02d}-{name}.png"), full_page=full_page, animations="disabled"
        )


def prefect_login(page: Any, shots: Shots) -> None:
    """The Prefect UI asks for the API login when the server requires one (`aftercare up` sets it)."""
    login = page.locator("input[type=password]")
    try:
        login.wait_for(timeout=5000)
    except Exception:  # no login asked: the server runs without basic auth
        return
    login.fill(PREFECT_AUTH)
    shots.take(page, "prefect-login", full_page=False)
    login.press("Enter")
    login.wait_for(state="detached")


def open_deployment(page: Any, name: str) -> None:
    """From the Prefect UI's deployment list to one deployment, as a dispatcher finds it: the list
    shows 10 a page (aftercare serves more), so its search box narrows it to the name first."""
    page.get_by_placeholder(re.compile("search", re.IGNORECASE)).first.fill(name)
    page.get_by_role("link", name=name, exact=True).first.click()


def run_field(page: Any, title: str) -> Any:
    """One field of the Prefect UI's run form, found by the title aftercare gave it (Prefect adds
    " (Optional)" to the title of a field that has a default)."""
    label = f"normalize-space()='{title}' or normalize-space()='{title} (Optional)'"
    return page.locator(f"xpath=//label[.//span[{label}]]/../..")


def choose(page: Any, title: str, option: str) -> None:
    """Pick a choice of a run-form field. Prefect draws a list of choices as a combobox whose list
    opens from the keyboard (a tap on it in a phone-sized window toggles it shut again at once)."""
    control = run_field(page, title).locator("button.p-select-button__control").first
    control.focus()
    page.keyboard.press("ArrowDown")
    page.get_by_role("option", name=option, exact=True).first.click()


def fill_form(page: Any, values: dict[str, str]) -> None:
    """An aftercare form page: each field is `#f_<name>`; yes/no questions are selects."""
    for name, value in values.items():
        control = page.locator(f"#f_{name}")
        if control.evaluate("e => e.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)


def submit(page: Any, button: str) -> str:
    page.get_by_role("button", name=button, exact=True).click()
    page.wait_for_load_state()
    return str(page.locator("main").inner_text())


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium; asked for before `aftercare up` starts, so a machine without it skips at once."""
    found = chromium_path()
    if found is None:
        pytest.skip("no Chromium: `apt-get install chromium` (Debian's package; .ci/run installs it)")
    return found


def test_a_repair_from_the_prefect_run_form_to_the_customers_drawn_signature(
    chromium: str, aftercare_up: Up
) -> None:
    from playwright.sync_api import sync_playwright

    from models import Role

    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    up, shots, watch = aftercare_up, Shots(), Watch(aftercare_up.web)
    assert not any("远程诊断" in m["title"] for m in up.notifications)

    with sync_playwright() as pw:
        # Chromium refuses to run as root with its sandbox on (CI runs as root);
        # /dev/shm is small in containers: Chromium keeps its shared memory in /tmp instead
        args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
        browser = pw.chromium.launch(executable_path=chromium, args=args)

        def phone() -> Any:  # each person has a phone of their own
            context = browser.new_context(viewport=PHONE, locale="zh-CN", timezone_id="Asia/Shanghai")
            page = context.new_page()
            watch.attach(page)
            return page

        # 1. The dispatcher: Prefect UI → deployment repair → ⋮ → Custom run → fill → Submit.
        dispatcher = phone()
        dispatcher.goto(f"{up.ui}/deployments")
        prefect_login(dispatcher, shots)
        open_deployment(dispatcher, "repair")
        # at a phone's width the deployment's Run actions sit in the page heading's ⋮ menu
        dispatcher.locator(".page-heading__trailing .p-icon-button-menu button").click()
        dispatcher.get_by_text("Custom run", exact=True).click()
        # customers, sites and severities are choices (deployments.run_forms); no "None" toggle
        assert dispatcher.get_by_text('Property is type "None"').count() == 0
        choose(dispatcher, "客户", "北京某银行数据中心（BJYH）")
        choose(dispatcher, "机房/站点 (Optional)", "亦庄机房")
        run_field(dispatcher, "报告人").locator("textarea").fill("王先生 13800000000")
        run_field(dispatcher, "故障描述").locator("textarea").fill("存储阵列告警，第3槽硬盘故障灯亮")
        choose(dispatcher, "故障级别 (Optional)", "2 重大故障 / 二级（严重）")
        run_field(dispatcher, "客户").scroll_into_view_if_needed()
        shots.take(dispatcher, "prefect-custom-run-form", full_page=False)
        mark = len(up.notifications)
        dispatcher.get_by_role("button", name="Submit", exact=True).click()
        dispatcher.get_by_text("scheduled to start").first.wait_for()
        shots.take(dispatcher, "prefect-run-submitted", full_page=False)

        # 2. The technical lead opens the link the notification carried: the diagnosis form.
        ask = up.message_after(mark, to=up.addresses(Role.TECHNICAL_LEAD), title="请联系客户并远程诊断")
        assert "WX-" in ask["title"] and "存储阵列告警" in ask["body"]
        lead = phone()
        lead.goto(link_in(ask))
        assert lead.get_by_text("诊断结论").count() == 1
        fill_form(
            lead,
            {
                "contacted_at": local_minute(),
                "fault_confirmed": "是",
                "result": "阵列第3槽硬盘故障",
                "command_log": "show disk 3 → FAILED",
                "solved_remotely": "否",
                "plan": "1. 上门更换第3槽硬盘\n2. 重建 RAID 并校验",
            },
        )
        shots.take(lead, "diagnosis-form-filled")
        mark = len(up.notifications)
        assert "已记录：提交" in submit(lead, "提交")
        shots.take(lead, "diagnosis-submitted")

        # 3. The technical director approves the plan from his link.
        ask = up.message_after(mark, to=up.addresses(Role.TECHNICAL_DIRECTOR), title="待技术总监审批")
        director = phone()
        director.goto(link_in(ask))
        assert director.get_by_text("上门更换第3槽硬盘").count() >= 1  # the plan he approves is on the page
        shots.take(director, "director-approval")
        mark = len(up.notifications)
        assert "已记录：批准" in submit(director, "批准")
        shots.take(director, "director-approved")

        # 4. The dispatcher books the visit with the customer.
        ask = up.message_after(mark, to=up.addresses(Role.DISPATCHER), title="请与客户预约上门时间")
        dispatcher.goto(link_in(ask))
        fill_form(
            dispatcher, {"visit_at": local_minute(), "coordinator_joins": "否", "note": "已准备报告单和工具"}
        )
        shots.take(dispatcher, "visit-form-filled")
        mark = len(up.notifications)
        assert "已记录：提交" in submit(dispatcher, "提交")

        # 5. The engineer arrives and records the on-site re-analysis (the plan stays as approved).
        ask = up.message_after(mark, to=up.addresses(Role.ENGINEER), title="到场后请填写现场记录")
        engineer = phone()
        engineer.goto(link_in(ask))
        fill_form(
            engineer,
            {
                "arrived_at": local_minute(),
                "room_rules_followed": "是",
                "findings": "确认第3槽硬盘故障，方案不变",
            },
        )
        shots.take(engineer, "onsite-form-filled")
        mark = len(up.notifications)
        assert "已记录：提交" in submit(engineer, "提交")

        def draw_signature(customer: Any, name: str) -> None:
            """The customer taps the page's link to its signing page and signs on the pad."""
            customer.locator(".content a[href*='/reports/sign/']").click()
            customer.wait_for_load_state()
            pad = customer.locator("canvas#pad")
            pad.scroll_into_view_if_needed()
            box = pad.bounding_box()
            assert box and box["width"] <= PHONE["width"]  # the pad fits the phone's screen
            customer.mouse.move(box["x"] + 30, box["y"] + box["height"] * 0.7)
            customer.mouse.down()
            for i in range(1, 28):  # a zig-zag stroke, as a finger or a mouse draws it
                customer.mouse.move(
                    box["x"] + 30 + i * 10, box["y"] + box["height"] * (0.7 - 0.4 * (i % 4) / 4), steps=3
                )
            customer.mouse.up()
            drawn = customer.locator("#image").input_value()
            assert (
                drawn.startswith("data:image/png;base64,") and len(drawn) > 1000
            )  # the stroke, not an empty pad
            shots.take(customer, f"{name}-drawn", full_page=False)

        # 5b. On arrival the customer signs the 技术服务申请 (001 §2.2.5.2) from the link.
        ask = up.message_after(mark, to={"log://contact/BJYH"}, title="请签收技术服务申请")
        customer = phone()
        customer.goto(link_in(ask))
        draw_signature(customer, "service-request")
        mark = len(up.notifications)
        answer = submit(customer, "确认并签字")
        assert "签字成功" in answer, answer

        # 6. The customer opens the plan from the link and signs it on the signature pad.
        ask = up.message_after(mark, to={"log://contact/BJYH"}, title="请确认解决方案 v1")
        customer = phone()
        customer.goto(link_in(ask))
        shots.take(customer, "customer-plan-link")
        # the plan's page links its signing page: the customer taps it
        draw_signature(customer, "signature")
        mark = len(up.notifications)
        answer = submit(customer, "确认并签字")
        shots.take(customer, "signed")
        assert "签字成功" in answer, answer

        # 7. The next notification appears: the engineer is asked for the repair record.
        ask = up.message_after(mark, to=up.addresses(Role.ENGINEER), title="请按方案维修并填写维修记录")
        assert link_in(ask).startswith(up.web)
        engineer.goto(link_in(ask))
        assert engineer.get_by_text("维修内容").count() >= 1
        shots.take(engineer, "next-step-repair-form")
        browser.close()

    assert watch.dialogs == [], watch.dialogs
    assert watch.errors == [], watch.errors
    assert len(list(SCREENSHOTS.glob("*.png"))) == shots.n


def test_a_report_table_on_a_phone_keeps_its_labels_whole(chromium: str, demo: str, session: Any) -> None:
    """Issue 18: at a phone's width the report tables wrapped their labels one character per line.
    The fault report's page in Chromium at 390 px: every label (th) on one line, nothing wider than
    the screen."""
    from datetime import timedelta

    from playwright.sync_api import sync_playwright

    from tests.conftest import T0
    from tests.test_form_fixes import _fault_report

    clocks = [
        {
            "label": label,
            "started_at": T0,
            "due_at": T0 + timedelta(hours=4),
            "provisional": True,
            "breached_at": T0 + timedelta(hours=5),
            "met_at": None,
            "stopped": False,
        }
        for label in ("首次联系客户", "电话/远程响应", "到达现场（≤100 公里）", "业务恢复")
    ]
    content = _fault_report(
        session,
        engineer="刘工程师",
        engineer_role="服务工程师",
        lead="张技术",
        clocks=clocks,
        customer_engineer="李工（客户方数据中心运维部系统管理员，负责存储与备份，电话 13900000000）",
    )
    with sync_playwright() as pw:
        args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
        browser = pw.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page(viewport=PHONE)
        page.set_content(content)
        lines = page.eval_on_selector_all(
            "th",
            """cells => cells.map(cell => {
            const range = document.createRange(); range.selectNodeContents(cell);
            return [cell.textContent, new Set([...range.getClientRects()].map(r => Math.round(r.top))).size];
        })""",
        )
        assert len(lines) > 10
        assert [label for label, count in lines if count != 1] == []
        # a label/value row stacks: the label above its value (a header-row table stays a table)
        beside = page.eval_on_selector_all(
            "th + td",
            """cells => cells.map(td => {
            const th = td.previousElementSibling;
            return [th.textContent, th.getBoundingClientRect().bottom <= td.getBoundingClientRect().top + 1];
        })""",
        )
        assert beside and [label for label, above in beside if not above] == []
        header = page.locator("th", has_text="服务时限").bounding_box()
        assert header is not None and header["y"] == page.locator("th", has_text="期限").bounding_box()["y"]
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        browser.close()


def test_staff_log_in_and_change_a_contract_in_the_back_office(
    chromium: str, aftercare_up: Up, tmp_path: Path
) -> None:
    """Issue 23 in a real browser against `aftercare up`: the first administrator made with
    `aftercare admin create`, the login page, the back office's contract form saved (its CSRF token
    put in by /static/admin.js, no inline script: a CSP violation would be a console error), the
    change in the audit history, and the board behind the same login."""
    from playwright.sync_api import sync_playwright

    up = aftercare_up
    secret = tmp_path / "admin-password"
    secret.write_text("browser test password\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFTERCARE_", "PREFECT_"))}
    env["AFTERCARE_HOME"] = str(up.home)
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "deployments.cli",
            "admin",
            "create",
            "--login",
            "admin",
            "--name",
            "系统管理员甲",
        ]
        + ["--password-file", str(secret)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    watch, shots = Watch(up.web), Shots(100)
    with sync_playwright() as pw:
        args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
        browser = pw.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        watch.attach(page)
        page.goto(f"{up.web}/admin/contract/list")
        assert "/login?next=" in page.url and page.get_by_text("员工登录").count() >= 1
        page.fill("#username", "admin")
        page.fill("#password", "browser test password")
        page.click("button[type=submit]")
        page.wait_for_url(f"{up.web}/admin/contract/list")
        shots.take(page, "admin-contracts")
        page.locator("a[href*='/admin/contract/edit/']").first.click()
        page.wait_for_load_state("networkidle")
        page.fill("#restore_tolerance_hours", "7.5")
        page.click("button[value='Save']")
        page.wait_for_url(f"{up.web}/admin/contract/list")
        page.goto(f"{up.web}/admin/audit-entry/list")
        shots.take(page, "admin-audit")
        row = page.locator("tbody tr").first.inner_text()
        assert "系统管理员甲" in row and "修改" in row and "7.5" in row, row
        page.goto(f"{up.web}/")
        assert page.get_by_text("调度看板").count() >= 1 and page.get_by_text("退出登录").count() >= 1
        page.click("text=退出登录")
        page.wait_for_url(f"{up.web}/login")
        page.goto(f"{up.web}/")
        assert "/login" in page.url
        browser.close()
    assert watch.dialogs == [], watch.dialogs
    assert watch.errors == [], watch.errors


def _a_restored_repair_last_month(up: Up) -> date:
    """History for the KPI page of a fresh `aftercare up`: one repair of BJYH's storage restored last
    month and its callback, written as the flows write them (clock rows and events, the KPIs' only
    source). Returns the first day of last month."""
    from sqlmodel import select

    from models import Case, Contract, Customer, Device
    from models.cases import append_event
    from models.db import session_scope
    from tasks.clocks import start_clock, stop_clock

    today = datetime.now(LOCAL).date()
    first = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    reported = datetime(first.year, first.month, 10, 1, 0, tzinfo=ZoneInfo("UTC"))
    with session_scope(f"sqlite:///{up.home / 'aftercare.db'}") as session:
        customer = session.exec(select(Customer).where(Customer.code == "BJYH")).one()
        contract = session.exec(select(Contract).where(Contract.customer_id == customer.id)).first()
        device = session.exec(
            select(Device).where(Device.customer_id == customer.id, Device.device_class == "storage")
        ).first()
        assert contract is not None and device is not None
        case = Case(
            kind="repair",
            customer_id=int(customer.id or 0),
            contract_id=contract.id,
            device_id=device.id,
            site_id=device.site_id,
            severity=2,
            reported_at=reported,
            created_at=reported,
            updated_at=reported,
        )
        session.add(case)
        session.flush()
        case_id = int(case.id or 0)
        start_clock(session, case_id, "restore", started_at=reported, severity=2)
        append_event(session, case_id, "restored", at=reported + timedelta(hours=3))
        stop_clock(session, case_id, "restore", at=reported + timedelta(hours=3))
        append_event(
            session,
            case_id,
            "callback_done",
            at=reported + timedelta(days=2),
            data={"scores": {"response": "优", "overall": "良"}},
        )
        session.commit()
    return first


def test_an_assurance_from_the_run_form_to_the_customers_signature_and_the_kpi_page(
    chromium: str, aftercare_up: Up, tmp_path: Path
) -> None:
    """A new procedure the way people take it, in Chromium at a phone's width against `aftercare up`:
    the drill's, the complaint's and the survey's run forms open with their Chinese field titles; the dispatcher starts a major-event assurance from the Prefect UI's run form (Chinese titles,
    customers as choices); the technical lead opens the form from the notification's link, types a
    plan too short (the 422 page names 方案内容 in Chinese and keeps what was typed) and then a real
    one; the technical director approves the 重要通信保障方案 from his link; the customer opens the plan,
    draws a signature and signs; the next notification (the director told the plan is in force, or the
    pre-inspection) follows. Then the service manager logs in and finds the KPI page with its SVG charts
    (a repair restored last month is the history it shows). No dialog, no console error."""
    from playwright.sync_api import sync_playwright

    from models import Role

    up = aftercare_up
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    watch, shots = Watch(up.web), Shots(200)
    today = datetime.now(LOCAL).date()
    starts, ends = today + timedelta(days=30), today + timedelta(days=31)  # ≥ 3 weeks ahead: no late approval

    with sync_playwright() as pw:
        args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
        browser = pw.chromium.launch(executable_path=chromium, args=args)

        def phone() -> Any:
            context = browser.new_context(viewport=PHONE, locale="zh-CN", timezone_id="Asia/Shanghai")
            page = context.new_page()
            watch.attach(page)
            return page

        # 1. The dispatcher: Prefect UI → deployment → ⋮ → Custom run, in Chinese. The other new
        # procedures' forms first (drill, complaint, survey-now): opened, their fields under their Chinese titles.
        dispatcher = phone()
        dispatcher.goto(f"{up.ui}/deployments")
        prefect_login(dispatcher, shots)
        for name, titles in {
            "drill": ["客户", "演练系统", "演练类型", "期望演练日期"],
            "complaint": ["客户", "投诉人", "投诉内容"],
            "survey-now": ["客户", "调查年度", "提出人"],
            "assurance": ["客户", "保障事由", "保障开始", "保障结束", "申请人"],
        }.items():
            dispatcher.goto(f"{up.ui}/deployments")
            open_deployment(dispatcher, name)
            dispatcher.locator(".page-heading__trailing .p-icon-button-menu button").click()
            dispatcher.get_by_text("Custom run", exact=True).click()
            run_field(dispatcher, titles[-1]).first.wait_for()
            assert [t for t in titles if run_field(dispatcher, t).count() != 1] == [], name
            assert dispatcher.get_by_text('Property is type "None"').count() == 0
        choose(dispatcher, "客户", "北京某银行数据中心（BJYH）")
        run_field(dispatcher, "保障事由").locator("textarea").fill("年终结算通信保障")
        run_field(dispatcher, "保障开始").locator("textarea").fill(starts.isoformat())
        run_field(dispatcher, "保障结束").locator("textarea").fill(ends.isoformat())
        run_field(dispatcher, "申请人").locator("textarea").fill("王先生 13800000000")
        run_field(dispatcher, "客户").scroll_into_view_if_needed()
        shots.take(dispatcher, "assurance-run-form", full_page=False)
        mark = len(up.notifications)
        dispatcher.get_by_role("button", name="Submit", exact=True).click()
        dispatcher.get_by_text("scheduled to start").first.wait_for()

        # 2. The technical lead writes the plan on the form his link opens; too short first.
        ask = up.message_after(
            mark, to=up.addresses(Role.TECHNICAL_LEAD), title="请与客户制定重要通信保障方案"
        )
        assert ask["title"].startswith("【请填写】BZ-")
        lead = phone()
        lead.goto(link_in(ask))
        assert lead.get_by_text(f"保障期：{starts.isoformat()} 00:00").count() == 1
        fill_form(lead, {"plan": "双人值守"})
        lead.get_by_role("button", name="提交", exact=True).click()
        lead.wait_for_load_state()
        refused = str(lead.locator("main").inner_text())
        assert "未记录，请更正：「方案内容」" in refused, refused
        assert lead.locator("#f_plan").input_value() == "双人值守"  # what was typed is kept
        shots.take(lead, "assurance-plan-refused")
        # Chromium logs the refusal's HTTP status as a console error: the one error this step expects
        refusals = [e for e in watch.errors if "status of 422" in e and e.endswith(f"({link_in(ask)})")]
        assert len(refusals) == 1, watch.errors
        watch.errors.remove(refusals[0])
        fill_form(
            lead,
            {"plan": "1. 保障前巡检存储、网络与电源\n2. 保障期间亦庄机房双人驻场值守\n3. 现场备用硬盘 1 块"},
        )
        mark = len(up.notifications)
        assert "已记录：提交" in submit(lead, "提交")

        # 3. The technical director approves the 重要通信保障方案 from his link.
        ask = up.message_after(
            mark, to=up.addresses(Role.TECHNICAL_DIRECTOR), title="重要通信保障方案 v1 待技术总监审批"
        )
        director = phone()
        director.goto(link_in(ask))
        assert director.get_by_text("双人驻场值守").count() >= 1
        shots.take(director, "assurance-director-approval")
        mark = len(up.notifications)
        assert "已记录：批准" in submit(director, "批准")

        # 4. The customer opens the plan from the link, draws a signature and signs.
        ask = up.message_after(mark, to={"log://contact/BJYH"}, title="请确认重要通信保障方案 v1")
        customer = phone()
        customer.goto(link_in(ask))
        shots.take(customer, "assurance-customer-plan")
        customer.locator(".content a[href*='/reports/sign/']").click()
        customer.wait_for_load_state()
        pad = customer.locator("canvas#pad")
        pad.scroll_into_view_if_needed()
        box = pad.bounding_box()
        assert box and box["width"] <= PHONE["width"]
        customer.mouse.move(box["x"] + 30, box["y"] + box["height"] * 0.6)
        customer.mouse.down()
        for i in range(1, 25):
            customer.mouse.move(
                box["x"] + 30 + i * 10, box["y"] + box["height"] * (0.6 - 0.3 * (i % 3) / 3), steps=3
            )
        customer.mouse.up()
        assert len(customer.locator("#image").input_value()) > 1000
        mark = len(up.notifications)
        signed = submit(customer, "确认并签字")
        shots.take(customer, "assurance-signed")
        assert "签字成功" in signed, signed
        # the flow went on: both sides agreed the plan, the assurance is in force (its run resumed)
        assert up.event_of("BZ-", "assurance_in_force") is not None

        # 5. Staff: the KPI page is behind the login; after it, the figures and the SVG charts.
        first = _a_restored_repair_last_month(up)
        secret = tmp_path / "manager-password"
        secret.write_text("kpi browser password\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AFTERCARE_", "PREFECT_"))}
        env["AFTERCARE_HOME"] = str(up.home)
        made = subprocess.run(
            [sys.executable, "-m", "deployments.cli", "admin", "create", "--login", "kpiadmin"]
            + ["--name", "指标管理员", "--password-file", str(secret)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        staff = phone()
        staff.goto(f"{up.web}/kpi")
        assert "/login?next=" in staff.url
        staff.fill("#username", "kpiadmin")
        staff.fill("#password", "kpi browser password")
        staff.click("button[type=submit]")
        staff.wait_for_url(f"{up.web}/kpi")
        staff.select_option("#customer", "BJYH")
        staff.fill("#from", first.isoformat())
        staff.fill("#to", today.isoformat())
        staff.get_by_role("button", name="查询", exact=True).click()
        staff.wait_for_load_state()
        assert staff.get_by_text("服务指标 · 北京某银行数据中心").count() == 1
        charts = staff.locator("figure.chart img")
        titles = [charts.nth(i).get_attribute("alt") for i in range(charts.count())]
        assert {"平均修复时间趋势（小时）", "各类设备故障数", "客户评分分布（优/良/中/差）"} <= set(titles), (
            titles
        )
        for i in range(charts.count()):  # each chart is an SVG the browser drew, at the phone's width
            chart = charts.nth(i)
            chart.scroll_into_view_if_needed()
            assert str(chart.get_attribute("src")).startswith("data:image/svg+xml;base64,")
            assert chart.evaluate("img => img.complete && img.naturalWidth > 0")
            box = chart.bounding_box()
            assert box and 0 < box["width"] <= PHONE["width"]
        shots.take(staff, "kpi-page")
        browser.close()

    assert watch.dialogs == [], watch.dialogs
    assert watch.errors == [], watch.errors
