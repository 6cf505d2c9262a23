"""The back office's commands: `aftercare admin create|password` (staff logins) and
`aftercare import <file>` (reference data from a spreadsheet). Registered on the `aftercare` app by
deployments/cli.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

admin_app = typer.Typer(help="员工登录账号 / staff logins", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"错误 / error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _ready_db() -> None:
    from pydantic import ValidationError

    from models.db import DatabaseError, migrate
    from models.settings import get_settings

    try:
        migrate(get_settings().db_url)
    except (DatabaseError, ValidationError) as exc:
        _fail(str(exc))


def _read_password(password_file: Path | None) -> str:
    """From the file (its first line), else asked twice on the terminal; never a default."""
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            _fail(f"无法读取密码文件 {password_file}: {exc.strerror}")
            raise
        if not lines or not lines[0]:
            _fail(f"密码文件 {password_file} 的第一行为空")
        return lines[0]
    if not sys.stdin.isatty():
        _fail("没有终端可输入密码：请用 --password-file 给出密码文件 / no terminal: use --password-file")
    return str(typer.prompt("密码 / password", hide_input=True, confirmation_prompt=True))


PasswordFile = Annotated[
    Path | None,
    typer.Option(help="读取密码的文件（第一行）；不给则在终端输入 / file whose first line is the password"),
]


@admin_app.command("create")
def admin_create(
    login: Annotated[str, typer.Option(help="登录名 / login name (lowercase letters, digits, . _ -)")],
    name: Annotated[str | None, typer.Option(help="姓名（新建员工）/ the person's name")] = None,
    staff_id: Annotated[int | None, typer.Option(help="已有员工的编号 / an existing staff person")] = None,
    role: Annotated[
        list[str] | None, typer.Option(help="角色（可多次）；默认 administrator / roles, repeatable")
    ] = None,
    password_file: PasswordFile = None,
) -> None:
    """新建登录账号（第一个系统管理员也用它）/ make a staff login (the first administrator too)."""
    from models import wallclock
    from models.db import DatabaseError, session_scope
    from tasks.accounts import AccountError, check_password, create_account

    _ready_db()
    password = _read_password(password_file)
    try:
        check_password(password)
        with session_scope() as session:
            account = create_account(
                session,
                username=login,
                password=password,
                now=wallclock.now(),
                staff_id=staff_id,
                name=name,
                roles=role or ["administrator"],
            )
            shown = f"{account.username}（员工编号 {account.staff_id}）"
    except (AccountError, DatabaseError) as exc:
        _fail(str(exc))
        return
    typer.echo(f"已创建登录账号 / account created: {shown}")


@admin_app.command("password")
def admin_password(
    login: Annotated[str, typer.Option(help="登录名 / login name")],
    password_file: PasswordFile = None,
) -> None:
    """重设密码（该账号的所有会话随之结束）/ set a new password; every session of the account ends."""
    from models import wallclock
    from models.db import DatabaseError, session_scope
    from tasks.accounts import AccountError, check_password, find_account, set_password

    _ready_db()
    password = _read_password(password_file)
    try:
        check_password(password)
        with session_scope() as session:
            account = find_account(session, login)
            if account is None:
                raise AccountError(f"没有登录名 {login}")
            set_password(session, account, password, now=wallclock.now(), actor="命令行")
    except (AccountError, DatabaseError) as exc:
        _fail(str(exc))
        return
    typer.echo(f"已重设 {login} 的密码，原有登录已失效 / password set, old sessions ended")


def _show(value: object) -> str:
    return "（空）" if value in (None, "", [], {}) else str(value)


def import_file(
    file: Annotated[Path, typer.Argument(help="要导入的 .xlsx 或 .csv 文件 / the spreadsheet")],
    kind: Annotated[
        str | None,
        typer.Option(
            help="记录类型；不给则按文件名判断 / customers, sites, contacts, contracts, staff, devices, parts, stock"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="只列出将要做的修改，不写入 / list the changes only")
    ] = False,
    by: Annotated[str, typer.Option("--as", help="操作人姓名（记入变更记录）/ who imports")] = "命令行导入",
) -> None:
    """从表格导入客户、机房、联系人、合同、员工、设备、备件或库存 / import reference data from a spreadsheet.

    第一行为列名（中文列名或字段名）；按编码（或客户+名称、序列号）找到的记录被修改，其余新建。
    任何一行有错时，什么也不写入，并列出每个错误的行与列。"""
    from models import wallclock
    from models.db import DatabaseError, session_scope
    from tasks.importer import ImportError_, apply_import, plan_import

    _ready_db()
    try:
        with session_scope() as session:
            result = plan_import(session, file, kind=kind)
            if result.errors:
                for error in result.errors:
                    typer.secho(str(error), fg=typer.colors.RED, err=True)
                typer.secho(
                    f"{len(result.errors)} 处错误，未写入任何记录 / {len(result.errors)} errors, nothing written",
                    fg=typer.colors.RED,
                    err=True,
                )
                raise typer.Exit(1)
            for change in result.changes:
                if change.action == "create":
                    filled = "，".join(f"{k}={_show(v)}" for k, v in change.values.items())
                    typer.echo(f"第 {change.row} 行 新建 {change.key}：{filled}")
                else:
                    changed = "，".join(
                        f"{k}: {_show(old)} → {_show(new)}" for k, (old, new) in change.values.items()
                    )
                    typer.echo(f"第 {change.row} 行 修改 {change.key}：{changed}")
            if not dry_run:
                apply_import(session, result, now=wallclock.now(), actor=by)
    except (ImportError_, DatabaseError) as exc:
        _fail(str(exc))
        return
    typer.echo(result.summary())
    typer.echo("试运行，未写入 / dry run, nothing written" if dry_run else "已写入 / written")
