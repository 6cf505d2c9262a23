"""The `aftercare` command as a user runs it: `up` boots everything and stops cleanly; `check` and
`up` explain bad settings instead of printing tracebacks."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
AFTERCARE = [sys.executable, "-m", "deployments.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFTERCARE_", "PREFECT_"))}
    env.update({"AFTERCARE_HOME": str(home), **extra})
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        AFTERCARE + args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_check_reports_an_unreachable_database_clearly(tmp_path: Path) -> None:
    env = clean_env(tmp_path, AFTERCARE_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = run_cli(["check"], env)
    assert result.returncode == 1
    assert "数据库无法连接 / database unreachable" in result.stdout
    assert "127.0.0.1:1" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_bad_setting_is_named_not_traced(tmp_path: Path) -> None:
    result = run_cli(["check"], clean_env(tmp_path, AFTERCARE_DATABASE_URL="mysql://db/x"))
    assert result.returncode == 2
    assert "database_url" in result.stderr and "unsupported database URL" in result.stderr
    result = run_cli(["up"], clean_env(tmp_path, AFTERCARE_WEB_PORT="not-a-port"))
    assert result.returncode == 2 and "web_port" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_up_names_a_home_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli(["up"], clean_env(blocker / "home"))
    assert result.returncode == 2
    assert "AFTERCARE_HOME" in result.stdout + result.stderr and str(blocker) in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            ["up", "--prefect-port", str(port), "--web-port", str(free_port())], clean_env(tmp_path)
        )
    assert result.returncode == 2
    assert f"port {port} is in use" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def _descendants(pid: int) -> list[psutil.Process]:
    """Every process below `pid`, including those in their own sessions (found by parent links)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.real  # the whole `aftercare up`: the real layer
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_serves_prefect_and_web_then_stops_without_leaving_children(
    tmp_path: Path, stop_signal: int
) -> None:
    prefect_port, web_port = free_port(), free_port()
    env = clean_env(tmp_path / "var")
    proc = subprocess.Popen(
        AFTERCARE + ["up", "--prefect-port", str(prefect_port), "--web-port", str(web_port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        output = "".join(lines)
        assert "Ctrl-C" in output, output
        assert "演示数据已写入" in output  # demo data on first run
        assert f"http://127.0.0.1:{prefect_port}" in output and f"http://127.0.0.1:{web_port}" in output

        assert httpx.get(f"http://127.0.0.1:{prefect_port}/api/health", timeout=10).json() is True
        # the Prefect API answers only with the credential `up` generated (deployments.prefect_env)
        user, _, password = (tmp_path / "var" / "prefect_auth").read_text().partition(":")
        prefect = httpx.Client(auth=httpx.BasicAuth(user, password), timeout=10)
        assert httpx.get(f"http://127.0.0.1:{web_port}/health", timeout=10).json() == {"status": "ok"}
        # every deployment is served: the runner registered them with the server
        from deployments.registry import all_deployments

        expected = {d.name for d in all_deployments()}
        deadline = time.monotonic() + 90
        names: set[str] = set()
        while time.monotonic() < deadline and not expected <= names:
            found = prefect.post(f"http://127.0.0.1:{prefect_port}/api/deployments/filter", json={})
            names = {d["name"] for d in found.json()}
            time.sleep(0.5)
        assert expected <= names

        # a dispatcher takes a request on the command line: it reaches this Prefect (not a temporary
        # one of its own), and the repair runs until it waits for the engineer's diagnosis form
        taken = run_cli(
            [
                "repair",
                "new",
                "--customer",
                "BJYH",
                "--site",
                "亦庄机房",
                "--description",
                "阵列告警",
                "--reported-by",
                "王先生",
            ],
            {**env, "AFTERCARE_PREFECT_PORT": str(prefect_port)},
        )
        assert taken.returncode == 0, taken.stdout + taken.stderr
        run_id = taken.stdout.strip().rsplit(" ", 1)[-1]
        deadline = time.monotonic() + 90
        state = ""
        while time.monotonic() < deadline and state != "PAUSED":
            state = prefect.get(f"http://127.0.0.1:{prefect_port}/api/flow_runs/{run_id}").json()[
                "state_type"
            ]
            time.sleep(0.5)
        assert state == "PAUSED"
        # the clock keeper runs as its own long-lived flow run, started by `up`
        deadline = time.monotonic() + 90
        keepers: list[dict] = []
        while time.monotonic() < deadline and not keepers:
            keepers = prefect.post(
                f"http://127.0.0.1:{prefect_port}/api/flow_runs/filter",
                json={
                    "flows": {"name": {"any_": ["clock-keeper"]}},
                    "flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}},
                },
            ).json()
            time.sleep(0.5)
        assert len(keepers) == 1, keepers

        children = _descendants(proc.pid)
        assert len(children) >= 3  # server, web, runner (and their own children)
        proc.send_signal(stop_signal)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "已停止 / stopped" in rest
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left behind: {[p.cmdline() for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            for child in _descendants(proc.pid):
                child.kill()


def test_entering_an_official_year_clears_the_provisional_flag(tmp_path: Path) -> None:
    """2027 has no official data yet: the operator enters the notice's days, then confirms the year."""
    from datetime import UTC, datetime, timedelta

    env = clean_env(tmp_path)
    shown = run_cli(["calendar", "show", "2027"], env)
    assert shown.returncode == 0 and "暂定" in shown.stdout

    refused = run_cli(["calendar", "confirm", "2027"], env)
    assert refused.returncode == 2 and "请先按国务院通知录入" in refused.stderr
    assert "Traceback" not in refused.stderr

    bad = run_cli(["calendar", "off", "2027-02-30"], env)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr

    assert run_cli(["calendar", "off", "2027-02-08", "--note", "春节"], env).returncode == 0
    assert run_cli(["calendar", "working", "2027-02-20", "--note", "春节调休上班"], env).returncode == 0
    confirmed = run_cli(["calendar", "confirm", "2027", "--note", "国办发明电"], env)
    assert confirmed.returncode == 0, confirmed.stderr
    shown = run_cli(["calendar", "show", "2027"], env)
    assert "已按官方通知录入并确认" in shown.stdout and "2027-02-20 调休上班" in shown.stdout

    # the calendar the clocks load now judges 2027 from the entered data, not provisionally
    from models.db import session_scope
    from rules.calendar import provisional_between
    from tasks.clocks import load_calendar

    with session_scope(f"sqlite:///{tmp_path / 'aftercare.db'}") as session:
        cal = load_calendar(session)
    start = datetime(2027, 2, 1, 2, 0, tzinfo=UTC)
    assert not provisional_between(start, start + timedelta(days=30), cal)
    assert cal.overrides[datetime(2027, 2, 20).date()] is True


def test_dispatcher_registers_and_cancels_an_extra_inspection_on_the_command_line(tmp_path: Path) -> None:
    """`aftercare inspection extra` and `aftercare inspection cancel`: clear refusals, no tracebacks; the
    case is registered even when no Prefect server is up (the daily planner starts its run)."""
    from sqlmodel import select

    from models import Case
    from models.db import session_scope
    from models.outbox import Notification

    env = clean_env(tmp_path, AFTERCARE_PREFECT_PORT=str(free_port()))  # nothing listens there
    assert run_cli(["seed"], env).returncode == 0
    for args, message in [
        (["--customer", "NOPE", "--site", "亦庄机房"], "未知客户"),
        (["--customer", "BJYH", "--site", "火星机房"], "未知站点“火星机房”"),
        (["--customer", "BJYH", "--site", "亦庄机房", "--day", "2026-02-30"], "YYYY-MM-DD"),
    ]:
        refused = run_cli(["inspection", "extra", *args, "--reason", "核心系统升级前"], env)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stdout + refused.stderr

    taken = run_cli(
        [
            "inspection",
            "extra",
            "--customer",
            "BJYH",
            "--site",
            "亦庄机房",
            "--reason",
            "核心系统升级前",
            "--requested-by",
            "王主任",
        ],
        env,
    )
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert "加做巡检已登记" in taken.stdout and "亦庄机房" in taken.stdout
    assert "巡检流程未能启动" in taken.stdout and "Traceback" not in taken.stdout + taken.stderr
    number = re.search(r"XJ-\d{6}", taken.stdout)[0]  # type: ignore[index]

    url = f"sqlite:///{tmp_path / 'aftercare.db'}"
    with session_scope(url) as s:
        case = s.exec(select(Case).where(Case.kind == "inspection")).one()
        assert case.number == number and case.period.startswith("extra-") and case.status == "planned"

    unknown = run_cli(["inspection", "cancel", "XJ-999999", "--reason", "升级推迟"], env)
    assert (
        unknown.returncode == 2
        and "巡检单 999999 不存在" in unknown.stderr
        and "Traceback" not in unknown.stderr
    )
    no_reason = run_cli(["inspection", "cancel", number, "--reason", " "], env)
    assert no_reason.returncode == 2 and "请填写取消原因" in no_reason.stderr
    cancelled = run_cli(
        ["inspection", "cancel", number, "--reason", "客户升级推迟到明年", "--by", "李调度"], env
    )
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert f"{number} 已取消：客户升级推迟到明年" in cancelled.stdout and "尚未启动流程" in cancelled.stdout
    again = run_cli(["inspection", "cancel", number, "--reason", "再取消一次"], env)
    assert again.returncode == 0 and "已是取消状态" in again.stdout
    with session_scope(url) as s:
        case = s.exec(select(Case).where(Case.kind == "inspection")).one()
        assert case.status == "cancelled" and case.data["cancel_reason"] == "客户升级推迟到明年"
        told = {
            n.recipient_name
            for n in s.exec(
                select(Notification).where(
                    Notification.case_id == case.id, Notification.template == "inspection/cancelled"
                )
            )
        }
    assert {"王值班", "李调度", "刘工程师", "北京维护负责人"} <= told


def test_checklists_are_edited_on_the_command_line(tmp_path: Path) -> None:
    from models.db import session_scope
    from models.inspection import checklist_for

    env = clean_env(tmp_path)
    added = run_cli(
        ["checklist", "add", "--kind", "server", "--code", "fan_speed", "--label", "风扇转速与告警"], env
    )
    assert added.returncode == 0, added.stderr
    assert "已增加 server/fan_speed 风扇转速与告警" in added.stdout
    assert run_cli(["checklist", "off", "cleaning", "--kind", "server"], env).returncode == 0
    ambiguous = run_cli(["checklist", "off", "power"], env)
    assert (
        ambiguous.returncode == 2
        and "请用 --kind 指定" in ambiguous.stderr
        and "Traceback" not in ambiguous.stderr
    )
    twice = run_cli(["checklist", "add", "--kind", "server", "--code", "fan_speed", "--label", "又一次"], env)
    assert twice.returncode == 2 and "已有检查项" in twice.stderr
    assert (
        run_cli(
            ["checklist", "edit", "hw_diag", "--kind", "server", "--label", "硬件诊断（含 BMC 日志）"], env
        ).returncode
        == 0
    )
    shown = run_cli(["checklist", "show", "--kind", "server"], env)
    assert shown.returncode == 0 and "[server]" in shown.stdout and "[storage]" not in shown.stdout
    assert "fan_speed" in shown.stdout and "设备清洁  （已停用 / off）" in shown.stdout

    with session_scope(f"sqlite:///{tmp_path / 'aftercare.db'}") as s:
        items = {i.code: i.label for i in checklist_for(s, "server")}
    assert items["fan_speed"] == "风扇转速与告警" and items["hw_diag"] == "硬件诊断（含 BMC 日志）"
    assert "cleaning" not in items and list(items)[-1] == "fan_speed"


def test_a_complaint_is_taken_on_the_command_line_even_without_prefect(tmp_path: Path) -> None:
    """`aftercare complaint new`: each refused value named in Chinese, no traceback; a complaint taken
    gets its TS- number, clocks and acknowledgement although no Prefect server is up (the keeper
    starts its flow later: tasks.complaints.start_unstarted)."""
    from sqlmodel import select

    from models import Case
    from models.db import session_scope
    from models.outbox import Notification

    env = clean_env(tmp_path, AFTERCARE_PREFECT_PORT=str(free_port()))  # nothing listens there
    assert run_cli(["seed"], env).returncode == 0
    base = ["complaint", "new", "--complainant", "王先生 13900000001"]
    for args, message in [
        (["--customer", "NOPE", "--description", "工程师迟到"], "未知客户"),
        (["--customer", "BJYH", "--description", "迟"], "「投诉内容」至少 2 个字"),
        (["--customer", "BJYH", "--description", "工程师迟到", "--about", "天气"], "「投诉对象」只能选择"),
        (["--customer", "BJYH", "--description", "工程师迟到", "--case", "ABC"], "工单号请写成"),
    ]:
        refused = run_cli([*base, *args], env)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stdout + refused.stderr
    taken = run_cli(
        [*base, "--customer", "BJYH", "--description", "工程师迟到三小时", "--about", "服务工程师"], env
    )
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert "已受理投诉" in taken.stdout and "投诉流程未能启动" in taken.stdout
    number = re.search(r"TS-\d{6}", taken.stdout)[0]  # type: ignore[index]
    with session_scope(f"sqlite:///{tmp_path / 'aftercare.db'}") as s:
        case = s.exec(select(Case).where(Case.kind == "complaint")).one()
        assert case.number == number and case.flow_run_id is None
        sent = {n.template for n in s.exec(select(Notification).where(Notification.case_id == case.id))}
    assert {"complaint/received", "complaint/opened"} <= sent
