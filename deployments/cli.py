"""The `aftercare` command: up (the main job), seed, check, migrate, and the dispatcher's commands
(repair, inspection, checklist, calendar, outbox, board-link)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from deployments import cli_backoffice
from models.db import DatabaseError

app = typer.Typer(
    name="aftercare",
    help="aftercare: 售后服务流程 — after-sales service procedures run as durable flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"错误 / error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def load_settings():  # noqa: ANN201 - Settings, imported lazily so that `--help` stays fast
    from models.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'setting'}: {e['msg']}" for e in exc.errors()]
        fail("bad setting / 配置有误:\n" + "\n".join(lines))
        raise  # unreachable


def use_prefect_of(settings) -> None:  # noqa: ANN001 - Settings
    """Point this process at the Prefect server `aftercare up` runs (unless PREFECT_API_URL names one),
    with the same result storage — never at a throw-away temporary server."""
    import os

    from deployments.prefect_env import prefect_env

    for key, value in prefect_env(settings).items():
        if key.startswith("PREFECT_"):
            os.environ.setdefault(key, value)


def ready_db() -> None:
    """Settings checked and the schema up to date (a command may be the first one run)."""
    from models.db import migrate as do_migrate

    settings = load_settings()
    try:
        do_migrate(settings.db_url)
    except DatabaseError as exc:
        fail(str(exc))


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (建库/升级)."""
    ready_db()
    typer.echo("数据库已是最新 / database is up to date")


@app.command()
def seed(
    force: Annotated[bool, typer.Option(help="seed even when customers exist")] = False,
) -> None:
    """Load demo reference data when the database is empty (演示数据)."""
    from deployments.seed import is_empty, seed_demo
    from models.db import migrate as do_migrate
    from models.db import session_scope
    from models.wallclock import now

    settings = load_settings()
    try:
        do_migrate(settings.db_url)
    except DatabaseError as exc:
        fail(str(exc))
    with session_scope(settings.db_url) as session:
        if not force and not is_empty(session):
            typer.echo("已有数据，未写入演示数据 / data present, demo data not loaded")
            return
        moment = now()
        counts = seed_demo(session, today=moment.date(), now=moment)
    typer.echo("演示数据已写入 / demo data loaded: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@app.command()
def check() -> None:
    """Check the database, Prefect and the notification channels (自检)."""
    from deployments.checks import run_checks

    settings = load_settings()
    use_prefect_of(settings)  # the scheduled deployments are read from the registry, which imports Prefect
    ok = run_checks(settings, echo=typer.echo)
    raise typer.Exit(0 if ok else 1)


@app.command()
def up(
    web_port: Annotated[int | None, typer.Option(help="port of the approval web")] = None,
    prefect_port: Annotated[int | None, typer.Option(help="port of the local Prefect server")] = None,
    no_seed: Annotated[bool, typer.Option("--no-seed", help="do not load demo data")] = False,
) -> None:
    """Run everything: database, Prefect server, deployments, web, clock keeper (一键启动)."""
    from deployments.up import StartupError, run_up

    settings = load_settings()
    updates = {}
    if web_port:
        updates["web_port"] = web_port
    if prefect_port:
        updates["prefect_port"] = prefect_port
    if updates:
        settings = settings.model_copy(update=updates)
    try:
        code = run_up(settings, seed=not no_seed, echo=typer.echo)
    except (StartupError, DatabaseError) as exc:
        fail(str(exc))
        return
    # Everything is stopped and closed: leave now. Tearing the interpreter down would only free
    # memory, and took 1–2.5 s of CPU on a busy 2-core machine — time a Ctrl-C should not wait.
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@app.command()
def deploy(
    pool: Annotated[str, typer.Option(help="Prefect 进程工作池名称 / the process work pool, e.g. aftercare")],
) -> None:
    """把全部流程部署注册到工作池，由 worker 运行 / register every deployment to a work pool (workers run them)."""
    use_prefect_of(load_settings())  # before Prefect is imported: it reads its settings once
    from deployments.pool import PoolError, check_pool_name, deploy_to_pool

    try:
        name = check_pool_name(pool)
        names = deploy_to_pool(name)
    except PoolError as exc:
        fail(str(exc))
        return
    except Exception as exc:  # Prefect unreachable or refused: say so, no traceback
        fail(
            f"无法注册部署（Prefect 是否在运行？）/ cannot register the deployments: {type(exc).__name__}: {exc}"
        )
        return
    typer.echo(f"已注册到工作池 {name} / registered to pool {name}: " + ", ".join(names))
    typer.echo(f"启动 worker / start workers with: prefect worker start --pool {name} --type process")


cluster_app = typer.Typer(
    help="Prefect 生产架构（PostgreSQL、Redis、多个 API 服务与 worker） / Prefect's production architecture",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("up")
def cluster_up(
    base_port: Annotated[
        int, typer.Option(min=1024, max=65000, help="负载均衡端口；API 服务 +1…，网页 +51… / balancer port")
    ] = 4300,
    api_servers: Annotated[int, typer.Option(min=1, max=8, help="Prefect API 服务数 / API servers")] = 2,
    workers: Annotated[int, typer.Option(min=1, max=16, help="worker 数 / workers")] = 2,
    webs: Annotated[int, typer.Option(min=1, max=8, help="审批网页进程数 / approval webs")] = 2,
    keepers: Annotated[int, typer.Option(min=1, max=4, help="时钟守护进程数（租约保证只有一个在工作）")] = 2,
    notifiers: Annotated[
        int, typer.Option(min=0, max=16, help="通知发送进程数，每节点一个（0：由时钟守护发送）/ notifiers")
    ] = 2,
    pool: Annotated[str, typer.Option(help="工作池名称 / work pool")] = "aftercare",
    pg_port: Annotated[int, typer.Option(min=1024, max=65535, help="本机 PostgreSQL 端口")] = 55500,
    redis_port: Annotated[int, typer.Option(min=1024, max=65535, help="本机 Redis 端口")] = 6390,
    postgres_url: Annotated[
        str, typer.Option(help="已有 PostgreSQL，如 postgresql://user:pw@host:5432（不含库名）")
    ] = "",
    redis_url: Annotated[str, typer.Option(help="已有 Redis，如 redis://host:6379")] = "",
    no_seed: Annotated[bool, typer.Option("--no-seed", help="do not load demo data")] = False,
) -> None:
    """在本机启动完整集群并打印各部分地址 / start the whole cluster on this machine and say where each piece is."""
    from deployments.cluster import Cluster, ClusterError, Layout
    from deployments.pool import PoolError, check_pool_name
    from deployments.supervisor import Stop

    settings = load_settings()
    try:
        pool = check_pool_name(pool)
    except PoolError as exc:
        fail(str(exc))
    if postgres_url and not postgres_url.startswith(("postgresql://", "postgres://")):
        fail(f"--postgres-url 应以 postgresql:// 开头 / must start with postgresql://: {postgres_url[:60]!r}")
    if redis_url and not redis_url.startswith("redis://"):
        fail(f"--redis-url 应以 redis:// 开头 / must start with redis://: {redis_url[:60]!r}")
    layout = Layout(
        home=settings.home,
        base_port=base_port,
        api_servers=api_servers,
        workers=workers,
        webs=webs,
        keepers=keepers,
        notifiers=notifiers,
        pool=pool,
        pg_port=pg_port,
        redis_port=redis_port,
        postgres_url=postgres_url.replace("postgres://", "postgresql://", 1),
        redis_url=redis_url,
    )
    settings = settings.model_copy(
        update={
            "database_url": layout.pg_url("aftercare", "psycopg"),
            "prefect_api_url": "",
            "prefect_port": base_port,
            "web_port": layout.web_port(1),
        }
    )
    cluster = Cluster(layout, settings, echo=typer.echo)
    cluster.sup.install_signals()
    code = 0
    try:
        typer.echo("• 启动集群 / starting the cluster …")
        cluster.start(seed=not no_seed)
        typer.echo("")
        for line in cluster.where():
            typer.echo(line)
        typer.echo("  按 Ctrl-C 停止 / press Ctrl-C to stop")
        import time

        while True:
            cluster.sup.poll()
            time.sleep(0.5)
    except Stop:
        typer.echo("正在停止 / stopping …")
    except ClusterError as exc:
        typer.secho(f"错误 / error: {exc}", fg=typer.colors.RED, err=True)
        code = 2
    finally:
        cluster.sup.stopping = True
        cluster.stop()
        cluster.sup.restore_signals()
        typer.echo("已停止 / stopped")
    raise typer.Exit(code)


@app.command("notify-test")
def notify_test(
    url: Annotated[str, typer.Argument(help="Apprise URL, e.g. dingtalk://TOKEN or mailto://…")],
) -> None:
    """Send a test message to one notification address now (通知渠道测试)."""
    from models.wallclock import now
    from tasks.channels import ChannelError, deliver, validate_url
    from tasks.notify import render_message

    load_settings()
    try:
        validate_url(url)
    except ChannelError as exc:
        fail(str(exc))
    subject, body = render_message("outbox/test", {"now": now()})
    error = deliver(url, title=subject, body=body)
    if error:
        fail(f"发送失败 / not sent: {error}", code=1)
    typer.echo("已发送 / sent")


@app.command()
def outbox(
    send: Annotated[bool, typer.Option("--send", help="send what is due now, then report")] = False,
) -> None:
    """Outbox status and open incidents, with the dispatcher's incidents link (发件箱与待处理事件)."""
    from models.db import session_scope
    from models.wallclock import now
    from tasks.notify import open_incidents, outbox_counts, run_notifier, worker_name

    settings = load_settings()
    try:
        if send:
            report = run_notifier(now(), worker=f"cli@{worker_name()}")
            typer.echo(
                f"发送 / sent {report.sent}, 重试 / retrying {report.retrying}, 失败 / failed {report.failed}, 暂缓 / held {report.held}"
            )
        with session_scope(settings.db_url) as session:
            counts = outbox_counts(session)
            incidents = open_incidents(session)
    except DatabaseError as exc:
        fail(str(exc))
        return
    typer.echo("发件箱 / outbox: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "empty"))
    typer.echo(f"待处理事件 / open incidents: {len(incidents)}")
    for inc in incidents[:20]:
        typer.echo(f"  #{inc.id} {inc.kind}: {inc.message}")
    from web.incidents import incidents_link

    typer.echo(f"事件页面（30 天有效）/ incidents page: {incidents_link()}")


@app.command()
def notifier(
    every: Annotated[
        str,
        typer.Option(
            metavar="SECONDS", help="两轮之间的秒数（0.1–3600）/ seconds between passes when nothing is due"
        ),
    ] = "1.5",
) -> None:
    """发送通知的常驻进程（集群每个节点一个）/ send the outbox until stopped (one per cluster node)."""
    from deployments.notifier import NotifierError, parse_every, run

    try:
        seconds = parse_every(every)
    except NotifierError as exc:
        fail(str(exc))
        return
    settings = load_settings()
    from models.db import migrate as do_migrate

    try:  # normally done by `up` / `cluster up` already; a database down now is retried by each pass
        do_migrate(settings.db_url)
    except Exception as exc:  # noqa: BLE001 - said in one line, the loop goes on
        typer.echo(f"数据库暂不可用 / database not ready yet: {type(exc).__name__}: {str(exc)[:200]}")
    run(seconds, echo=typer.echo)
    # every outcome is committed: leave now, as `up` does (tearing the interpreter down only frees
    # memory, and takes seconds of CPU on a busy machine — time a SIGTERM should not wait)
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command("board-link")
def board_link_command(
    days: Annotated[int, typer.Option(min=1, max=365, help="有效天数 / days the link stays valid")] = 30,
) -> None:
    """调度看板链接 / a staff link to the dispatcher's board (the web root opens with a staff login)."""
    from web.board import board_link

    settings = load_settings()
    typer.echo(f"调度看板（{days} 天有效，请勿外传）/ board link, valid {days} days: {board_link(days=days)}")
    typer.echo(f"或打开 / or open {settings.web_base_url}/ 用员工账号登录 / with a staff login")


# --- aftercare repair ... (故障维修) -----------------------------------------------------------

repair_app = typer.Typer(help="故障维修服务流程 / the repair flow", no_args_is_help=True)
app.add_typer(repair_app, name="repair")


@repair_app.command("new")
def repair_new(
    customer: Annotated[str, typer.Option(help="客户名称或编码 / customer name or code")],
    description: Annotated[str, typer.Option(help="故障描述 / what is wrong")],
    reported_by: Annotated[str, typer.Option(help="报告人 / who reported it")],
    site: Annotated[str | None, typer.Option(help="机房/站点 / site name")] = None,
    device: Annotated[str | None, typer.Option(help="设备序列号 / device serial")] = None,
    channel: Annotated[str, typer.Option(help="热线/邮件/网站/巡检/销售/现场")] = "热线",
    severity: Annotated[int, typer.Option(min=1, max=4, help="故障级别 1–4")] = 3,
    reported_at: Annotated[str | None, typer.Option(help="报告时间 (ISO, 默认现在)")] = None,
    parent: Annotated[int | None, typer.Option(help="关联工单号 / parent case id")] = None,
) -> None:
    """受理一张故障报修并启动维修流程 / take a repair request and start its flow."""
    use_prefect_of(load_settings())  # before Prefect is imported: it reads its settings once
    from models.db import session_scope
    from models.forms import explain
    from models.wallclock import now
    from tasks.cases import IntakeError, RepairRequest, check_report_time, resolve_request, start_repair

    # everything is checked before anything is written or started: one line says what to correct
    try:
        request = RepairRequest(
            customer=customer,
            site=site,
            device=device,
            reported_by=reported_by,
            channel=channel,
            description=description,
            severity=severity,
            reported_at=reported_at,
            parent_case_id=parent,
        )
    except ValidationError as exc:
        fail(str(explain(exc, RepairRequest)))
        return
    moment = now()
    try:
        check_report_time(request.reported_at, moment)
        with session_scope() as session:
            resolved = resolve_request(session, request, today=request.reported_at or moment)
    except (IntakeError, DatabaseError) as exc:
        fail(str(exc))
        return
    if resolved.out_of_contract:
        typer.secho(f"注意：合同外 / 有偿服务 —— {resolved.reason}", fg=typer.colors.YELLOW)
    try:
        run_id = start_repair(request)
    except Exception as exc:  # Prefect unreachable or the deployment not served: say so, no traceback
        fail(
            f"无法启动维修流程（Prefect 是否在运行？先执行 aftercare up） / cannot start the repair flow: "
            f"{type(exc).__name__}: {exc}"
        )
        return
    number, problem = _wait_for_case(run_id)
    if problem:
        fail(f"未受理 / not taken: {problem}（流程 {run_id}）", code=1)
    typer.echo(
        f"已受理：{number} {resolved.customer.name} · {resolved.site.name}；维修流程已启动 / flow run {run_id}"
    )


# --- aftercare complaint ... (投诉) ---------------------------------------------------------------

complaint_app = typer.Typer(help="投诉处理流程 / complaints", no_args_is_help=True)
app.add_typer(complaint_app, name="complaint")


@complaint_app.command("new")
def complaint_new(
    customer: Annotated[str, typer.Option(help="客户名称或编码 / customer name or code")],
    complainant: Annotated[str, typer.Option(help="投诉人姓名与电话 / who complains")],
    description: Annotated[str, typer.Option(help="投诉内容 / what happened")],
    about: Annotated[
        str, typer.Option(help="服务工程师/维修/事故工单/响应与时限/服务质量/备件/其他")
    ] = "服务质量",
    case: Annotated[str | None, typer.Option(help="相关工单号，如 WX-000123")] = None,
    engineer: Annotated[str, typer.Option(help="相关工程师 / engineer")] = "",
    wish: Annotated[str, typer.Option(help="投诉诉求 / what they want")] = "",
    channel: Annotated[str, typer.Option(help="投诉电话/邮件/信函/来访/网站")] = "投诉电话",
    reported_at: Annotated[str | None, typer.Option(help="投诉时间（北京时间，默认现在）")] = None,
) -> None:
    """受理一件投诉（编号 TS-…，向客户发送受理回执）并启动投诉处理流程 / take a complaint and start its flow."""
    use_prefect_of(load_settings())
    ready_db()
    from models.db import session_scope
    from models.forms import explain
    from models.wallclock import now
    from tasks.cases import IntakeError
    from tasks.complaints import ComplaintRequest, open_complaint, start_complaint_run

    try:
        request = ComplaintRequest.model_validate(
            {
                "customer": customer,
                "complainant": complainant,
                "about": about,
                "case_ref": case,
                "engineer": engineer,
                "description": description,
                "wish": wish,
                "channel": channel,
                "reported_at": reported_at,
            }
        )
    except ValidationError as exc:
        fail(str(explain(exc, ComplaintRequest)))
        return
    try:  # taken (number, clocks, acknowledgement) before the flow starts: nothing is lost if Prefect is down
        with session_scope() as session:
            taken = open_complaint(session, request, now=now())
            case_id, number = int(taken.id), taken.number  # type: ignore[arg-type]
    except (IntakeError, DatabaseError) as exc:
        fail(str(exc))
        return
    typer.echo(f"已受理投诉 / complaint taken: {number}（受理回执将发送给客户 / acknowledgement queued）")
    try:
        run_id = start_complaint_run(case_id, request)
    except Exception as exc:  # Prefect unreachable: the complaint is recorded; the keeper starts its flow
        typer.echo(
            f"投诉流程未能启动（{type(exc).__name__}），时钟守护进程将在 Prefect 可用时自动启动 / "
            "the flow starts once Prefect is reachable"
        )
        return
    typer.echo(f"投诉流程已启动 / flow run {run_id}")


def _wait_for_case(run_id: str, timeout: float = 90.0) -> tuple[str, str]:
    """(case number, "") once the run has opened its case; ("", why not) when the run ended without
    one or did not open it in time — "已受理" is printed only for a case that exists."""
    import time
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from sqlmodel import select

    from models import Case
    from models.db import session_scope

    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as session:
            case = session.exec(select(Case).where(Case.flow_run_id == run_id)).first()
            if case is not None:
                return case.number, ""
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(run_id)).state
        if state is not None and state.is_final():
            return "", state.message or state.name or "已结束"
        if time.monotonic() > deadline:
            return (
                "",
                f"{timeout:.0f} 秒内流程未开单（状态 {state.name if state else '未知'}），请稍后用 Prefect 界面查看",
            )
        time.sleep(0.3)


# --- aftercare answer ... (代录入) ----------------------------------------------------------------


@app.command()
def answer(
    approval: Annotated[
        int, typer.Argument(help="审批/表单编号（审批页面与 Prefect 界面上显示） / approval id")
    ],
    by: Annotated[str, typer.Option("--as", help="代谁录入：审批人、签字人或填写人的姓名 / on behalf of")],
    decision: Annotated[str, typer.Option(help="批准/驳回/要求修改/签字确认/提出异议/提交")] = "提交",
    field: Annotated[
        list[str] | None,
        typer.Option(help="表单字段 名称=内容，可多次，如 --field contacted_at='2026-11-23 10:30'"),
    ] = None,
    comment: Annotated[str, typer.Option(help="说明 / 意见")] = "",
) -> None:
    """代人录入一项审批、签字或表单（记为“在命令行代 X 录入”并通知本人） / enter an answer on someone's behalf.

    The same validation as the link page and the Prefect UI (tasks.approvals.decide): a refused
    answer records nothing and says why in one line."""
    use_prefect_of(load_settings())  # the run is woken through Prefect (the keeper retries if it is down)
    from models.approvals import Channel
    from models.wallclock import now
    from tasks.approvals import ZH_TO_DECISION, decide

    values: dict[str, str] = {}
    for item in field or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            fail(f"--field 应写成 名称=内容 / --field name=value, not {item[:40]!r}")
        values[name.strip()] = value
    ready_db()
    try:
        result = decide(
            approval,
            ZH_TO_DECISION.get(decision.strip(), decision.strip()),
            by=by,
            comment=comment,
            payload=values or None,
            channel=Channel.CLI,
            now=now(),
        )
    except DatabaseError as exc:
        fail(str(exc))
        return
    if not result.recorded:
        fail(" ".join(result.message.split()), code=1)
    typer.echo(f"{result.message}（在命令行代 {by.strip()} 录入，已通知本人）")


# --- aftercare calendar ... (节假日与调休) --------------------------------------------------------

calendar_app = typer.Typer(
    help="工作日历：节假日、调休与年度确认 / the working-day calendar", no_args_is_help=True
)
app.add_typer(calendar_app, name="calendar")


def _day(value: str):  # noqa: ANN202 - date
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"日期格式应为 YYYY-MM-DD / a date like 2027-02-07, not {value!r}")
        raise  # unreachable


def _set_day(day: str, working: bool, note: str) -> None:
    from models.db import session_scope
    from models.wallclock import now
    from tasks.clocks import set_calendar_day

    parsed = _day(day)
    ready_db()
    try:
        with session_scope() as session:
            set_calendar_day(session, parsed, working, note=note, now=now())
    except DatabaseError as exc:
        fail(str(exc))
    typer.echo(
        f"{parsed.isoformat()}：{'调休上班' if working else '放假'}{'（' + note + '）' if note else ''}"
    )


@calendar_app.command("off")
def calendar_off(
    day: Annotated[str, typer.Argument(help="YYYY-MM-DD")],
    note: Annotated[str, typer.Option(help="说明，如 春节")] = "",
) -> None:
    """录入放假日 / enter a day off."""
    _set_day(day, False, note)


@calendar_app.command("working")
def calendar_working(
    day: Annotated[str, typer.Argument(help="YYYY-MM-DD")],
    note: Annotated[str, typer.Option(help="说明，如 春节调休上班")] = "",
) -> None:
    """录入调休上班日 / enter a make-up working day."""
    _set_day(day, True, note)


@calendar_app.command("confirm")
def calendar_confirm(
    year: Annotated[int, typer.Argument(min=2000, max=2100)],
    note: Annotated[str, typer.Option(help="通知文号 / the notice")] = "",
) -> None:
    """确认某年已按官方通知录入：该年期限不再标“暂定” / the year's official days are entered."""
    from models.db import session_scope
    from models.wallclock import now
    from tasks.clocks import ClockError, confirm_year

    ready_db()
    try:
        with session_scope() as session:
            confirm_year(session, year, note=note, now=now())
    except (ClockError, DatabaseError) as exc:
        fail(str(exc))
    typer.echo(f"{year} 年工作日历已确认，期限不再为暂定 / {year} confirmed")


@calendar_app.command("show")
def calendar_show(year: Annotated[int, typer.Argument(min=2000, max=2100)]) -> None:
    """显示某年的数据来源与录入的日期 / where a year's calendar comes from."""
    from models.db import session_scope
    from rules.calendar import covered_by_official_data
    from tasks.clocks import load_calendar

    ready_db()
    try:
        with session_scope() as session:
            cal = load_calendar(session)
    except DatabaseError as exc:
        fail(str(exc))
        return
    if covered_by_official_data(year):
        source = "官方数据（chinese-calendar）/ official data"
    elif year in cal.confirmed_years:
        source = "已按官方通知录入并确认 / entered and confirmed"
    else:
        source = "暂定：按法定节假日推算 / provisional (statutory holidays only)"
    typer.echo(f"{year}：{source}")
    for day, working in sorted((d, w) for d, w in cal.overrides.items() if d.year == year):
        typer.echo(f"  {day.isoformat()} {'调休上班' if working else '放假'}")


# --- aftercare inspection ... (巡检) ------------------------------------------------------------

drill_app = typer.Typer(
    help="应急演练：应急恢复方案各版本与取消 / drills: recovery plan versions, cancellations",
    no_args_is_help=True,
)
app.add_typer(drill_app, name="drill")


@drill_app.command("plans")
def drill_plans(
    customer: Annotated[str, typer.Argument(help="客户名称或编码 / customer name or code")],
    system: Annotated[str | None, typer.Option(help="只看该系统 / one system only")] = None,
) -> None:
    """列出客户应急恢复方案的每个版本 / every version of a customer's recovery plans."""
    load_settings()
    from models.db import session_scope
    from tasks.drill import DrillError, recovery_plan_listing

    ready_db()
    try:
        with session_scope() as session:
            lines = recovery_plan_listing(session, customer, system)
    except (DrillError, DatabaseError) as exc:
        fail(str(exc))
        return
    typer.echo("\n".join(lines))


@drill_app.command("revise-plan")
def drill_revise_plan(
    customer: Annotated[str, typer.Option(help="客户名称或编码 / customer name or code")],
    system: Annotated[str, typer.Option(help="方案所属系统，如 核心业务系统 / the system")],
    reason: Annotated[str, typer.Option(help="修订原因，显示在版本记录中 / why")],
    requested_by: Annotated[str, typer.Option(help="提出修订的人 / who asks")] = "",
) -> None:
    """两次演练之间修订应急恢复方案：负责人在现行版本上修订，技术总监批准 / revise a recovery plan."""
    use_prefect_of(load_settings())  # before Prefect is imported: it reads its settings once
    from models.db import session_scope
    from tasks.cases import IntakeError, find_customer, start_deployment_run
    from tasks.drill import RecoveryRevisionRequest, open_revision_of, revision_in_progress

    if not system.strip():
        fail("请填写系统（--system） / the system is required")
    if not reason.strip():
        fail("请填写修订原因（--reason） / the reason for the revision is required")
    ready_db()
    try:  # an unknown customer is named here, not by a run that fails
        with session_scope() as session:
            found = find_customer(session, customer)
            code = found.code
            busy = open_revision_of(session, int(found.id), system.strip())  # type: ignore[arg-type]
            busy_message = revision_in_progress(busy, system.strip()) if busy is not None else ""
    except (IntakeError, DatabaseError) as exc:
        fail(str(exc))
        return
    if busy_message:  # a second revision of the same plan is refused before any run starts
        fail(busy_message)
    request = RecoveryRevisionRequest(customer=code, system=system, reason=reason, requested_by=requested_by)
    try:
        run_id = start_deployment_run(
            "recovery-plan/recovery-plan", {"request": request.model_dump(mode="json")}
        )
    except Exception as exc:  # Prefect unreachable or the deployment not served: say so, no traceback
        fail(
            f"无法启动修订流程（Prefect 是否在运行？先执行 aftercare up） / cannot start the revision: "
            f"{type(exc).__name__}: {exc}"
        )
        return
    number, problem = _wait_for_case(run_id)
    if problem:
        fail(f"未受理 / not taken: {problem}（流程 {run_id}）", code=1)
    typer.echo(f"已受理：{number} {system} 应急恢复方案修订；修订流程已启动 / flow run {run_id}")


@drill_app.command("training-done")
def drill_training_done(
    task_id: Annotated[int, typer.Argument(help="培训任务编号 / training task id")],
    by: Annotated[str, typer.Option(help="培训负责人 / who held the training")],
) -> None:
    """登记演练后的客户人员培训已完成 / record a drill's training as held."""
    load_settings()
    from models.wallclock import now
    from tasks.drill import DrillError, training_done

    ready_db()
    try:
        done = training_done(task_id, by=by, now=now())
    except (DrillError, DatabaseError) as exc:
        fail(str(exc))
        return
    typer.echo("已登记完成 / recorded" if done else "此前已登记完成，未作更改 / already recorded")


def _cancel_case(
    number: str,
    reason: str,
    by: str,
    find: Callable[[Any, str], Any],
    cancel: Callable[..., bool],
    refused: type[Exception],
    told: str,
) -> None:
    """Cancel a dated case (a drill, an assurance, an inspection) by its number: `find` it, `cancel`
    it (False: it already was), say who was `told`, and end the run that waited for it."""
    from models.db import session_scope
    from models.wallclock import now
    from tasks.inspection import end_waiting_run

    ready_db()
    moment = now()
    try:
        with session_scope() as session:
            case = find(session, number)
            case_id, case_number = int(case.id), case.number
        done = cancel(case_id, reason, by=by, now=moment)
    except (refused, DatabaseError) as exc:
        fail(str(exc))
        return
    if not done:
        typer.echo(f"{case_number} 已是取消状态，未作更改 / already cancelled")
        return
    typer.echo(f"{case_number} 已取消：{reason.strip()}；{told}")
    typer.echo(end_waiting_run(case_id, moment))


@drill_app.command("cancel")
def drill_cancel(
    number: Annotated[str, typer.Argument(help="演练单号，如 YL-000123 / drill number")],
    reason: Annotated[str, typer.Option(help="取消原因 / why")],
    by: Annotated[
        str, typer.Option(help="提出取消的人，如 客户张先生（电话） / who cancelled")
    ] = "客户服务中心",
) -> None:
    """取消一次应急演练：记录原因，通知双方参演人员，结束等待中的流程 / cancel a drill."""
    settings = load_settings()
    use_prefect_of(settings)
    from tasks.drill import DrillError, cancel_drill, find_drill

    _cancel_case(
        number,
        reason,
        by,
        find_drill,
        cancel_drill,
        DrillError,
        "已通知双方参演人员 / cancelled, everyone told",
    )


assurance_app = typer.Typer(
    help="重要通信保障：申请与取消 / major-event assurance: request and cancel", no_args_is_help=True
)
app.add_typer(assurance_app, name="assurance")


@assurance_app.command("new")
def assurance_new(
    customer: Annotated[str, typer.Option(help="客户名称或编码 / customer name or code")],
    event: Annotated[str, typer.Option(help="保障事由，如 年终结算保障 / the event")],
    starts: Annotated[str, typer.Option(help="保障开始（北京时间）YYYY-MM-DD 或 YYYY-MM-DD HH:MM")],
    ends: Annotated[str, typer.Option(help="保障结束（北京时间）；只写日期为该日 24:00")],
    requested_by: Annotated[str, typer.Option(help="客户方申请人姓名与电话 / who asks")],
    site: Annotated[str | None, typer.Option(help="机房/站点；不填为全部站点 / site name")] = None,
    requested_at: Annotated[str | None, typer.Option(help="申请时间（北京时间，默认现在）")] = None,
    remote: Annotated[bool, typer.Option("--remote", help="远程值守（默认现场值守）")] = False,
    requirements: Annotated[str, typer.Option(help="客户要求：保障范围、重点系统等")] = "",
) -> None:
    """受理重要通信保障申请并启动保障流程（不足 3 周须技术总监批准）/ take an assurance request."""
    use_prefect_of(load_settings())  # before Prefect is imported: it reads its settings once
    from models.forms import explain
    from tasks.assurance import AssuranceRequest
    from tasks.cases import start_deployment_run

    try:
        request = AssuranceRequest.model_validate(
            {
                "customer": customer,
                "site": site,
                "event": event,
                "starts": starts,
                "ends": ends,
                "requested_by": requested_by,
                "requested_at": requested_at,
                "onsite": not remote,
                "requirements": requirements,
            }
        )
    except ValidationError as exc:
        fail(str(explain(exc, AssuranceRequest)))
        return
    from rules.assurance import AssuranceError, period_bounds

    try:  # the period as the flow reads it: a date that does not exist is named here, not as "Prefect down"
        period_bounds(request.starts, request.ends, load_settings().timezone)
    except AssuranceError as exc:
        fail(f"保障期 / period: {exc}")
        return
    ready_db()
    try:
        run_id = start_deployment_run("assurance/assurance", {"request": request.model_dump(mode="json")})
    except Exception as exc:  # Prefect unreachable or the deployment not served: say so, no traceback
        fail(
            f"无法启动保障流程（Prefect 是否在运行？先执行 aftercare up） / cannot start the assurance flow: "
            f"{type(exc).__name__}: {exc}"
        )
        return
    number, problem = _wait_for_case(run_id)  # the run checks the request: its message if refused
    if problem:
        fail(f"未受理 / not taken: {problem}（流程 {run_id}）", code=1)
    typer.echo(f"已受理：{number} {request.event}；保障流程已启动 / flow run {run_id}")


@assurance_app.command("cancel")
def assurance_cancel(
    number: Annotated[str, typer.Argument(help="保障单号，如 BZ-000012 / assurance number")],
    reason: Annotated[str, typer.Option(help="取消原因 / why")],
    by: Annotated[
        str, typer.Option(help="提出取消的人，如 客户张先生（电话） / who cancelled")
    ] = "客户服务中心",
) -> None:
    """取消一次重要通信保障（已约定的亦可）：不再提升报修级别，通知客户与值班人员，结束流程 / cancel."""
    settings = load_settings()
    use_prefect_of(settings)
    from tasks.assurance import cancel_assurance, find_assurance
    from tasks.cases import IntakeError

    _cancel_case(
        number,
        reason,
        by,
        find_assurance,
        cancel_assurance,
        IntakeError,
        "保障期内的报修不再提升级别，已通知客户与值班人员 / cancelled",
    )


inspection_app = typer.Typer(
    help="巡检：加做巡检与取消 / inspections: extra ones and cancellations", no_args_is_help=True
)
app.add_typer(inspection_app, name="inspection")


@inspection_app.command("extra")
def inspection_extra(
    customer: Annotated[str, typer.Option(help="客户名称或编码 / customer name or code")],
    reason: Annotated[str, typer.Option(help="加做原因，如 核心系统升级前 / why the customer asks")],
    site: Annotated[str | None, typer.Option(help="机房/站点；客户只有一个站点时可不填 / site name")] = None,
    day: Annotated[str | None, typer.Option(help="建议巡检日期 YYYY-MM-DD（默认最早可安排的工作日）")] = None,
    requested_by: Annotated[str, typer.Option(help="客户方提出人 / who asked")] = "",
) -> None:
    """登记客户要求的加做巡检并启动巡检流程 / register an extra inspection and start its flow."""
    settings = load_settings()
    use_prefect_of(settings)  # before Prefect is imported: it reads its settings once
    from models.wallclock import now
    from tasks.inspection import (
        ExtraInspectionRequest,
        InspectionError,
        open_extra_inspection,
        start_inspection_run,
    )

    try:
        request = ExtraInspectionRequest(
            customer=customer,
            site=site,
            reason=reason,
            day=_day(day) if day else None,
            requested_by=requested_by,
        )
    except ValidationError as exc:
        from models.forms import explain

        fail(str(explain(exc, ExtraInspectionRequest)))
        return
    ready_db()
    moment = now()
    try:
        opened = open_extra_inspection(request, now=moment)
    except (InspectionError, DatabaseError) as exc:
        fail(str(exc))
        return
    again = "" if opened.created else "（该合同当天已有加做巡检，未重复登记）"
    typer.echo(
        f"{opened.number} 加做巡检已登记{again}：{opened.customer} · {opened.site}（合同 {opened.contract}），"
        f"建议日期 {opened.day.isoformat()} / extra inspection registered"
    )
    try:
        run_id = start_inspection_run(opened.case_id, now=moment)
    except (
        Exception
    ) as exc:  # Prefect unreachable or not served: the daily planner starts it (status planned)
        typer.secho(
            f"注意：巡检流程未能启动（{type(exc).__name__}），每日巡检计划将启动它；或先执行 aftercare up "
            f"/ the flow was not started, plan-inspections will start it",
            fg=typer.colors.YELLOW,
        )
        return
    typer.echo(f"巡检流程已启动 / flow run {run_id}")


@inspection_app.command("cancel")
def inspection_cancel(
    number: Annotated[str, typer.Argument(help="巡检单号，如 XJ-000123 / inspection number")],
    reason: Annotated[str, typer.Option(help="取消原因 / why")],
    by: Annotated[
        str, typer.Option(help="提出取消的人，如 客户张先生（电话） / who cancelled")
    ] = "客户服务中心",
) -> None:
    """取消一次巡检：记录原因，通知相关人员，结束等待中的流程 / cancel an inspection."""
    settings = load_settings()
    use_prefect_of(settings)
    from tasks.inspection import InspectionError, cancel_inspection, find_inspection

    _cancel_case(
        number,
        reason,
        by,
        find_inspection,
        cancel_inspection,
        InspectionError,
        "已通知调度、工程师、技术负责人与客户 / cancelled, everyone told",
    )


# --- aftercare survey ... (满意度调查) ---------------------------------------------------------------

survey_app = typer.Typer(help="年度客户满意度调查 / the annual satisfaction survey", no_args_is_help=True)
app.add_typer(survey_app, name="survey")


@survey_app.command("new")
def survey_new(
    customer: Annotated[str, typer.Option(help="客户名称或编码 / customer name or code")],
    year: Annotated[str, typer.Option(help="调查年度，默认今年；只能为今年或去年 / year")] = "",
    requested_by: Annotated[str, typer.Option(help="提出调查的人 / who asks")] = "",
) -> None:
    """立即发起客户的年度满意度调查（每客户每年一次），如运行表单 survey-now / open a survey now."""
    use_prefect_of(load_settings())  # before Prefect is imported: it reads its settings once
    from models.wallclock import now
    from tasks.survey import SurveyError, request_survey, start_survey_run

    ready_db()
    moment = now()
    try:  # the run form's own function: the same checks, the same refusals
        case_id, number = request_survey(
            {"customer": customer, "year": year, "requested_by": requested_by}, now=moment
        )
    except (SurveyError, DatabaseError) as exc:
        fail(str(exc))
        return
    try:
        run_id = start_survey_run(case_id, moment)
    except Exception as exc:  # Prefect unreachable: the case stands, the daily plan-surveys starts its run
        fail(
            f"{number} 已创建，但调查流程未能启动（Prefect 是否在运行？），将由每日 plan-surveys 启动"
            f" / survey opened, run not started: {type(exc).__name__}: {exc}",
            code=1,
        )
        return
    typer.echo(f"已发起：{number} 年度客户满意度调查；调查流程已启动 / flow run {run_id}")


# --- aftercare checklist ... (巡检检查表) ---------------------------------------------------------

checklist_app = typer.Typer(
    help="巡检检查表：查看、增加、停用、修改检查项 / the inspection checklists", no_args_is_help=True
)
app.add_typer(checklist_app, name="checklist")

APPLIES = "之后发出的检查表生效；已发出的检查表不变 / applies to checklists sent from now on"


def _checklist_change(code: str, kind: str | None, **change: object) -> None:
    from models.db import session_scope
    from tasks.inspection import InspectionError, change_checklist_item

    ready_db()
    try:
        with session_scope() as session:
            items = change_checklist_item(session, code, kind=kind, **change)  # type: ignore[arg-type]
            shown = [f"{i.device_class}/{i.code} {i.label}{'' if i.active else '（已停用）'}" for i in items]
    except (InspectionError, DatabaseError) as exc:
        fail(str(exc))
        return
    typer.echo("；".join(shown) + f"。{APPLIES}")


@checklist_app.command("show")
def checklist_show(
    kind: Annotated[
        str | None, typer.Option(help="设备类别，如 server、storage、common（机房与管理）")
    ] = None,
) -> None:
    """列出检查项（含已停用的）/ list the checklist items."""
    from models.db import session_scope
    from tasks.inspection import checklist_items

    ready_db()
    try:
        with session_scope() as session:
            rows = [
                (i.device_class, i.position, i.code, i.label, i.active)
                for i in checklist_items(session, kind)
            ]
    except DatabaseError as exc:
        fail(str(exc))
        return
    if not rows:
        typer.echo(f"没有设备类别 {kind} 的检查项 / no items")
        return
    current = None
    for device_class, position, code, label, active in rows:
        if device_class != current:
            current = device_class
            typer.echo(f"[{device_class}]")
        typer.echo(f"  {position:>3}  {code:<16} {label}{'' if active else '  （已停用 / off）'}")


@checklist_app.command("add")
def checklist_add(
    kind: Annotated[str, typer.Option(help="设备类别，如 server、storage、network、common")],
    code: Annotated[str, typer.Option(help="编码：小写字母、数字、下划线，如 fan_speed")],
    label: Annotated[str, typer.Option(help="检查项名称，如 风扇转速与告警")],
    position: Annotated[int | None, typer.Option(help="排序位置（默认排在最后）")] = None,
) -> None:
    """增加一个检查项 / add a checklist item."""
    from sqlmodel import select

    from models.assets import Device
    from models.db import session_scope
    from tasks.inspection import InspectionError, add_checklist_item

    ready_db()
    try:
        with session_scope() as session:
            item = add_checklist_item(session, kind, code, label, position=position)
            text = f"已增加 {item.device_class}/{item.code} {item.label}（位置 {item.position}）"
            devices = session.exec(select(Device.id).where(Device.device_class == item.device_class)).first()
    except (InspectionError, DatabaseError) as exc:
        fail(str(exc))
        return
    typer.echo(f"{text}。{APPLIES}")
    if devices is None and kind != "common":
        typer.secho(
            f"注意：目前没有类别为 {kind} 的设备 / no device of this kind yet", fg=typer.colors.YELLOW
        )


@checklist_app.command("off")
def checklist_off(
    code: Annotated[str, typer.Argument(help="检查项编码 / item code")],
    kind: Annotated[str | None, typer.Option(help="设备类别（编码在多个类别中时必填）")] = None,
) -> None:
    """停用一个检查项（保留历史记录）/ switch an item off."""
    _checklist_change(code, kind, active=False)


@checklist_app.command("on")
def checklist_on(
    code: Annotated[str, typer.Argument(help="检查项编码 / item code")],
    kind: Annotated[str | None, typer.Option(help="设备类别（编码在多个类别中时必填）")] = None,
) -> None:
    """重新启用一个检查项 / switch an item on again."""
    _checklist_change(code, kind, active=True)


@checklist_app.command("edit")
def checklist_edit(
    code: Annotated[str, typer.Argument(help="检查项编码 / item code")],
    kind: Annotated[str | None, typer.Option(help="设备类别（编码在多个类别中时必填）")] = None,
    label: Annotated[str | None, typer.Option(help="新名称 / new label")] = None,
    position: Annotated[int | None, typer.Option(help="新位置 / new position")] = None,
) -> None:
    """修改检查项的名称或位置 / rename or move an item."""
    if label is None and position is None:
        fail("请给出 --label 或 --position / nothing to change")
    _checklist_change(code, kind, label=label, position=position)


# --- aftercare admin ... / aftercare import (the back office, deployments/cli_backoffice.py) ----------
app.add_typer(cli_backoffice.admin_app, name="admin")
app.command("import")(cli_backoffice.import_file)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())


# --- aftercare kpi (服务指标) ------------------------------------------------------------------------


@app.command("kpi")
def kpi_command(
    customer: Annotated[str, typer.Option(help="客户名称或编码 / customer name or code")],
    date_from: Annotated[str, typer.Option("--from", help="开始日期 YYYY-MM-DD（含）/ first day")],
    date_to: Annotated[str, typer.Option("--to", help="结束日期 YYYY-MM-DD（含）/ last day")],
    by: Annotated[
        str | None,
        typer.Option(help="分组：engineer 工程师 / device 设备 / month 月份 / site / device_class"),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="输出格式：table / csv / json")] = "table",
) -> None:
    """服务指标 / KPIs of a customer over a period, from the event log (PROCEDURES.md §8)."""
    from datetime import date

    from rules.performance import BY_CHOICES, BY_ZH, KpiError, columns, flat, shown
    from tasks.kpi import FORMATS, kpi_rows, to_csv, to_json

    days = []
    for name, value in (("--from", date_from), ("--to", date_to)):
        try:
            days.append(date.fromisoformat(value.strip()))
        except ValueError:
            fail(f"{name} 日期格式应为 YYYY-MM-DD，收到「{value}」/ {name} must be a date like 2026-11-01")
    first, last = days
    if last < first:
        fail(f"结束日期 {last} 早于开始日期 {first} / --to is before --from")
    if (last - first).days > 3 * 366:
        fail("查询期间最长三年 / the period may span at most three years")
    if by is not None and by not in BY_CHOICES:
        fail(
            f"未知的分组「{by}」，可选：{'、'.join(f'{b}（{BY_ZH[b]}）' for b in BY_CHOICES)} / unknown --by"
        )
    if fmt not in FORMATS:
        fail(f"未知的输出格式「{fmt}」，可选：{'、'.join(FORMATS)} / unknown --format")
    ready_db()
    from models.db import session_scope

    try:
        with session_scope() as session:
            facts, rows = kpi_rows(session, customer, first=first, last=last, by=by)
    except KpiError as exc:
        fail(str(exc))
        return
    if fmt == "csv":
        sys.stdout.write(to_csv(rows, by))
        return
    if fmt == "json":
        sys.stdout.write(to_json(facts, rows, by) + "\n")
        return
    # rich measures Chinese characters as two columns wide: the table stays aligned
    from rich.console import Console
    from rich.table import Table

    cols = columns(rows)
    title = f"{facts.one.name} 服务指标 {first} 至 {last}"
    if not rows:
        typer.echo(f"{title}：该期间没有可统计的记录 / nothing to count in the period")
        return
    # one column per row, one line per figure: a dozen figures read down better than across
    table = Table(title=title)
    table.add_column("指标")
    for row in rows:
        table.add_column(row.group or "全部", justify="right")
    values = [flat(r.kpis) for r in rows]
    for key, label in cols:
        table.add_row(label, *[shown(key, v.get(key)) for v in values])
    Console(width=max(100, 24 + 16 * len(rows))).print(table)
