"""The forms people fill in through their links (表单): pydantic input models, a registry by name,
and the one validation of a person's answer (DESIGN.md §2 "Typed answers").

Every route a person answers through — the link page, the Prefect UI form, the command line —
hands the typed values to `tasks.approvals.decide`, which validates them with the form the
approval row names (`Approval.form_name`) **before** anything is recorded:

- a time is Beijing local `2026-11-23 10:30` (or ISO with an offset); anything else is refused,
  never replaced by "now";
- a time that records something that happened (contact, arrival, repair, restore) may not lie
  more than a few minutes after the moment of the answer, nor before the case was reported;
- every free text has a maximum length; a choice not offered is refused.

The reasons are Chinese and name the field by its title (`explain`). What is recorded is the
validated form (`model_dump(mode="json")`), so the flow reads it back as the same typed model
(`Answer[F].value`), never as a dict of strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args, get_origin
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from models.settings import get_settings
from rules.accident import ExecutionResult
from rules.assurance import AssuranceError, parse_roster

# A clock on a phone or a PC may run a little ahead; more than this in the future is not a record.
FUTURE_SLACK = timedelta(minutes=5)
PLANNED_AHEAD = timedelta(days=366)  # a visit booked further ahead than a year is a typing error
PLANNED_BACK = timedelta(days=30)
TIME_EXAMPLE = "2026-11-23 10:30"


# --- value types ------------------------------------------------------------------------------


def _local(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo(get_settings().timezone)).strftime("%Y-%m-%d %H:%M")


def read_time(value: Any) -> Any:
    """A time as a person types it → aware UTC datetime: `2026-11-23 10:30` is local time in the
    service's time zone; ISO text with an offset (or `Z`) is taken as written; empty → None.
    Anything else is refused with the format to use."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip().replace("：", ":").replace("/", "-")
        if not text:
            return None
        try:
            # the standard library reads ISO 8601 and `YYYY-MM-DD HH:MM`; nothing looser is guessed
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"无法识别的时间，请写成 {TIME_EXAMPLE}（北京时间）") from None
        if "T" not in text and " " not in text:  # a day without its time is not the moment asked for
            raise ValueError(f"请写明日期和时刻，如 {TIME_EXAMPLE}（北京时间）")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(get_settings().timezone))
    return moment.astimezone(UTC)


def _happened(value: datetime | None, info: ValidationInfo) -> datetime | None:
    """A recorded event's time: not after the answer (a few minutes' slack), not before the case.
    Checked when the answer is given (the context carries `now`), not when the flow reads it back."""
    context = info.context or {}
    now, since = context.get("now"), context.get("not_before")
    if value is None:
        return None
    if now is not None and value > now + FUTURE_SLACK:
        raise ValueError(f"不能晚于当前时间（现在是 {_local(now)}）")
    if since is not None and value < since - FUTURE_SLACK:
        raise ValueError(f"不能早于报修时间（{_local(since)}）")
    return value


def _planned(value: datetime | None, info: ValidationInfo) -> datetime | None:
    """A time agreed for later (a visit): within a month back and a year ahead of the answer."""
    now = (info.context or {}).get("now")
    if value is None or now is None:
        return value
    if value > now + PLANNED_AHEAD:
        raise ValueError(f"不能晚于一年以后（现在是 {_local(now)}）")
    if value < now - PLANNED_BACK:
        raise ValueError(f"不能早于 30 天以前（现在是 {_local(now)}）")
    return value


def _yes_no(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"是", "yes", "y", "true", "1", "on"}:
            return True
        if text in {"否", "no", "n", "false", "0", "off"}:
            return False
        raise ValueError("请选择“是”或“否”")
    return value


Happened = Annotated[datetime, BeforeValidator(read_time), AfterValidator(_happened)]
Planned = Annotated[datetime, BeforeValidator(read_time), AfterValidator(_planned)]
YesNo = Annotated[bool, BeforeValidator(_yes_no)]
# Free texts, surrounding blanks dropped, each with its maximum length.
Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)]
Line = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
List = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=20_000)]
# A command log is kept whole in the record (pages and messages fold it: tasks.render.fold).
Log = Annotated[str, StringConstraints(strip_whitespace=False, max_length=200_000)]
Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]

# 业务先恢复 (PROCEDURES.md §1 "temporary workaround issued", §2 step 11; 001 §2.2.5.3): the lead during
# remote diagnosis, or the engineer on site, records the workaround given to the customer and when.
WORKAROUND_TITLE = "临时解决方案（业务先恢复）"
WORKAROUND_HELP = "已给客户、使业务先恢复的临时措施（如 切换到备用链路）；没有则留空"
WORKAROUND_AT_TITLE = "临时方案发出时间"
WORKAROUND_AT_HELP = f"如 {TIME_EXAMPLE}；不填为提交时间"


def _workaround_time(value: datetime | None, info: ValidationInfo) -> datetime | None:
    """A workaround's time without the workaround itself is not a record of one."""
    if value is not None and not (info.data or {}).get("workaround"):
        raise ValueError(f"请同时填写「{WORKAROUND_TITLE}」")
    return value


COMMENT_MAX = 2000  # the comment beside every decision (approve, reject, sign, object)
SIGNER_MAX = 100


# --- the registry -----------------------------------------------------------------------------

F = TypeVar("F", bound=BaseModel)
FORMS: dict[str, type[BaseModel]] = {}


def form(name: str):  # noqa: ANN201 - a class decorator
    """Register a form under the name its approval rows record (stable: waiting rows carry it)."""

    def register(cls: type[F]) -> type[F]:
        if name in FORMS:
            raise ValueError(f"form {name!r} registered twice")
        FORMS[name] = cls
        cls.__form_name__ = name  # type: ignore[attr-defined]
        return cls

    return register


def form_name(model: type[BaseModel]) -> str:
    name = getattr(model, "__form_name__", None)
    if name is None or FORMS.get(name) is not model:
        raise ValueError(f"{model.__name__} is not a registered form (decorate it with @form)")
    return str(name)


# --- the shared steps' forms (flows.steps) ----------------------------------------------------


@form("plan")
class PlanForm(BaseModel):
    """解决方案（修订） — the lead writes or revises the plan."""

    plan: Text = Field(
        title="方案内容", description="措施、步骤、时间安排、所需工具；修订时写明改了什么", min_length=10
    )
    parts: List = Field(
        default="", title="所需备件", description="硬件故障时填写：备件编码 x 数量，如 PSU-900W x1；无则留空"
    )


@form("parts")
class PartsForm(BaseModel):
    """备件清单（更正） — the store could not take the list as written; the lead corrects it."""

    parts: List = Field(
        default="",
        title="所需备件",
        description="备件编码 x 数量，每行或用逗号分隔一项，如 PSU-900W x1；留空表示不需要备件",
    )


@form("five-minute-talk")
class TalkForm(BaseModel):
    """5分钟交流 — other problems the customer mentions or the engineer sees."""

    problems: Text = Field(
        default="",
        title="发现的其他问题",
        description="每行一个问题，可在行首写级别如 [2]；没有则留空。每个问题都会新建一张维修单",
    )


Score = Literal["优", "良", "中", "差"]
CALLBACK_ITEMS: dict[str, str] = {  # PROCEDURES.md §8, per-service scorecard
    "response": "响应时间（30分钟内）",
    "arrival": "到场时间",
    "fix_speed": "故障处理速度",
    "spare_parts": "备件供应",
    "one_visit": "一次修复",
    "follow_up": "跟踪与总结",
    "attitude": "服务态度与沟通",
    "skill": "工程师技术水平",
    "overall": "总体评价",
}


@form("callback")
class CallbackForm(BaseModel):
    """客户回访表 — the centre calls the customer back and records the scores (优/良/中/差)."""

    customer_person: Name = Field(title="受访客户人员", min_length=1)
    centre_confirmed: YesNo = Field(default=True, title="服务中心已确认任务完成")
    response: Score = Field(title=CALLBACK_ITEMS["response"])
    arrival: Score = Field(title=CALLBACK_ITEMS["arrival"])
    fix_speed: Score = Field(title=CALLBACK_ITEMS["fix_speed"])
    spare_parts: Score = Field(title=CALLBACK_ITEMS["spare_parts"])
    one_visit: Score = Field(title=CALLBACK_ITEMS["one_visit"])
    follow_up: Score = Field(title=CALLBACK_ITEMS["follow_up"])
    attitude: Score = Field(title=CALLBACK_ITEMS["attitude"])
    skill: Score = Field(title=CALLBACK_ITEMS["skill"])
    overall: Score = Field(title=CALLBACK_ITEMS["overall"])
    comments: Text = Field(default="", title="客户意见与建议")


# PROCEDURES.md §8, overall scorecard: the annual satisfaction survey (flows.survey) and the monthly
# summary's rating (tasks.summary.RATING_ITEMS) ask the same items
SURVEY_ITEMS: dict[str, str] = {
    "inspection": "月度巡检质量",
    "repair": "维修质量",
    "uptime": "系统不间断运行时间",
    "skill": "工程师技术水平",
    "overall": "总体评价",
}


@form("survey")
class SurveyForm(BaseModel):
    """年度客户满意度调查 — the customer rates the year's service (优/良/中/差 per item)."""

    person: Name = Field(title="填表人姓名", min_length=1)
    inspection: Score = Field(title=SURVEY_ITEMS["inspection"])
    repair: Score = Field(title=SURVEY_ITEMS["repair"])
    uptime: Score = Field(title=SURVEY_ITEMS["uptime"])
    skill: Score = Field(title=SURVEY_ITEMS["skill"])
    overall: Score = Field(title=SURVEY_ITEMS["overall"])
    comments: Text = Field(default="", title="意见与建议")


@form("survey_follow_up")
class SurveyFollowUpForm(BaseModel):
    """满意度调查跟进 — the account manager talks to the customer about an item rated 中 or 差."""

    contacted: Name = Field(title="沟通的客户人员", min_length=1)
    findings: Text = Field(title="客户反映的问题", min_length=2)
    actions: Text = Field(title="改进措施与完成时间", min_length=2)


@form("correction")
class CorrectionForm(BaseModel):
    """报告更正 — the engineer answers the customer's objection to a report."""

    correction: Text = Field(title="更正说明", description="根据客户意见所做的更正", min_length=2)


@form("account")
class AccountForm(BaseModel):
    """书面说明 — the engineer's written account of the work, within a week."""

    account: LongText = Field(
        title="书面说明", description="经过、所用方案、遇到的问题与处理、遗留事项", min_length=10
    )


# --- the repair flow's forms (flows.repair, PROCEDURES.md §2) ----------------------------------


@form("diagnosis")
class DiagnosisForm(BaseModel):
    """远程诊断 — the technical lead calls the customer and logs in remotely."""

    contacted_at: Happened = Field(
        title="首次联系客户时间", description=f"电话联系客户并确认故障的时间，如 {TIME_EXAMPLE}"
    )
    fault_confirmed: YesNo = Field(default=True, title="已与客户确认故障")
    result: Text = Field(title="诊断结论", min_length=2)
    command_log: Log = Field(
        default="", title="远程操作命令记录", description="远程登录执行的命令与输出，随报告提交"
    )
    solved_remotely: YesNo = Field(default=False, title="已远程解决")
    plan: Text = Field(
        default="", title="解决方案", description="未远程解决时填写：措施、步骤、时间安排（由技术总监审批）"
    )
    parts: List = Field(default="", title="所需备件", description="硬件故障：备件编码 x 数量，如 PSU-900W x1")
    workaround: Text = Field(default="", title=WORKAROUND_TITLE, description=WORKAROUND_HELP)
    workaround_at: Happened | None = Field(
        default=None, title=WORKAROUND_AT_TITLE, description=WORKAROUND_AT_HELP
    )

    _check_workaround_at = field_validator("workaround_at")(_workaround_time)


@form("visit")
class VisitForm(BaseModel):
    """预约上门 — the centre books the visit with the customer and tells the coordinator."""

    visit_at: Planned = Field(title="预约上门时间", description=f"与客户约定的时间，如 {TIME_EXAMPLE}")
    coordinator_joins: YesNo = Field(default=False, title="项目总协调人随同前往")
    # not "备注": every form page ends with its own 备注 box (web/templates/approvals/page.html.j2)
    note: Text = Field(
        default="", title="准备情况", description="可不填：如 已准备维修服务报告单、工具和备件"
    )


@form("onsite")
class OnsiteForm(BaseModel):
    """到场与现场再分析 — the engineer arrives, re-confirms with the customer and re-analyses."""

    arrived_at: Happened = Field(title="到场时间", description=f"如 {TIME_EXAMPLE}")
    room_rules_followed: YesNo = Field(default=True, title="已按机房规定进入（鞋套、防静电垫）")
    findings: Text = Field(title="现场再分析结论", min_length=2)
    revised_plan: Text = Field(default="", title="修订后的方案", description="方案需要修改时填写；不改则留空")
    workaround: Text = Field(default="", title=WORKAROUND_TITLE, description=WORKAROUND_HELP)
    workaround_at: Happened | None = Field(
        default=None, title=WORKAROUND_AT_TITLE, description=WORKAROUND_AT_HELP
    )
    # 001 §2.2.5.2: the fault re-confirmed with the customer on arrival; the customer then signs the
    # 技术服务申请 that states it (flows.repair)
    fault_reconfirmed: YesNo = Field(
        default=True,
        title="已与客户再次确认故障现象",
        description="到场后与客户再次确认故障；客户随后在《技术服务申请》上签字",
    )
    # 001 §2.2.5.4: an operation with data risk needs the customer's approval on a link first
    risky_operations: Text = Field(
        default="",
        title="需客户批准的操作",
        description="重启、重装系统或任何有数据风险的操作，逐项写明；填写后须客户在链接上批准才能实施；没有则留空",
    )

    _check_workaround_at = field_validator("workaround_at")(_workaround_time)


@form("risky-operations-refused")
class RiskyRefusedForm(BaseModel):
    """客户未批准有数据风险的操作 — the technical lead decides how the repair goes on."""

    instruction: Text = Field(
        title="技术负责人处理意见",
        min_length=2,
        description="客户未批准时如何继续：替代做法、先备份后再申请，或暂停维修",
    )


@form("repair")
class RepairForm(BaseModel):
    """维修记录 — repair, preventive maintenance, the 5-minute talk and the restore, as done on site."""

    completed: YesNo = Field(title="已按方案修复")
    work_done: Text = Field(title="维修内容", min_length=2)
    anomaly: Text = Field(
        default="", title="异常情况", description="未能修复时说明现象，技术负责人将给予指导"
    )
    repaired_at: Happened | None = Field(default=None, title="修复时间", description="不填为提交时间")
    maintenance: Text = Field(default="", title="预防性维护", description="对所修设备做的预防性维护")
    problems: Text = Field(
        default="",
        title="5分钟交流发现的其他问题",
        description="每行一个，可写 [级别] 开头；每个问题都会新建维修单",
    )
    restored_at: Happened | None = Field(default=None, title="业务恢复时间", description="不填为修复时间")


@form("guidance")
class GuidanceForm(BaseModel):
    """技术指导 — the lead guides the engineer on an anomaly."""

    guidance: Text = Field(title="指导意见", min_length=2)
    solvable: YesNo = Field(title="按指导可以继续维修", description="否：请技术总监决定是否转入事故处理流程")


@form("fault-report")
class FaultReportForm(BaseModel):
    """故障处理报告 — the parts PROCEDURES.md §2 step 15 requires (times come from the record)."""

    customer_engineer: Name = Field(title="客户工程师", min_length=1)
    symptoms: Text = Field(title="故障现象", min_length=2)
    business_impact: Text = Field(title="业务影响", min_length=2)
    process: Text = Field(title="处理过程", min_length=2)
    cause: Text = Field(title="原因分析", min_length=2)
    solution: Text = Field(title="解决方案", min_length=2)
    advice: Text = Field(title="预防建议", min_length=2)


# --- the accident flow's forms (flows.accident, PROCEDURES.md §3) -------------------------------


@form("accident-plan")
class AccidentPlanForm(BaseModel):
    """事故处理方案 — the emergency team's plan, one version per form."""

    measures: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] = Field(
        min_length=1, title="处理措施", description="采取哪些措施恢复业务"
    )
    steps: Text = Field(
        min_length=1,
        title="实施步骤与时间",
        description="每行一步：操作 | 预计分钟数，如：切换备用控制器 | 30",
    )
    expected_effect: List = Field(min_length=1, title="预期效果")
    fallback: List = Field(min_length=1, title="回退方案", description="方案失败时如何回退")
    executor: Line = Field(min_length=1, title="实施人")
    tools: List = Field(default="", title="所需工具", description="以逗号或顿号分隔")
    spare_parts: List = Field(
        default="",
        title="所需备件",
        description="备件编码 x 数量，以逗号或顿号分隔，如 CTRL-5000 x1；方案批准后从备件库出库"
        "（新版方案只写尚需出库的备件）；无则留空",
    )
    needs_testing: YesNo = Field(default=False, title="需要先测试", description="勾选后由技术总监安排测试")


@form("plan-test")
class PlanTestForm(BaseModel):
    """方案测试结果 — the director records the test he arranged."""

    passed: YesNo = Field(title="测试通过")
    note: Text = Field(default="", title="测试情况", description="测试内容与结果；失败时写明原因")


@form("plan-execution")
class ExecutionForm(BaseModel):
    """方案实施结果 — restored, partly restored, or failed."""

    result: ExecutionResult = Field(
        title="实施结果", description="restored = 已恢复，partial = 部分恢复，failed = 失败"
    )
    note: Text = Field(default="", title="说明")
    standby_needed: YesNo = Field(
        default=False, title="需要备机", description="无法按时恢复时以同档次备机替代"
    )
    parts_arrived_at: Happened | None = Field(
        default=None, title="备件到场时间", description="方案从备件库领用了备件时填写；不填为提交时间"
    )


@form("accident-maintenance")
class AccidentMaintenanceForm(BaseModel):
    """事故后预防性维护 — what the team maintained once the service was restored (PROCEDURES.md §3 step 7)."""

    devices: Line = Field(min_length=1, title="维护的设备", description="设备名称或序列号，以逗号或顿号分隔")
    maintenance: Text = Field(
        min_length=2, title="维护内容", description="检查、清洁、固件/配置调整等，逐项写明"
    )
    findings: Text = Field(
        default="", title="维护中发现的情况", description="没有则留空；需要处理的问题请在5分钟交流中写明"
    )
    done_at: Happened | None = Field(
        default=None, title="维护完成时间", description=f"如 {TIME_EXAMPLE}；不填为提交时间"
    )


@form("review")
class ReviewForm(BaseModel):
    """技术评审会议记录 — the director's record, the written report to the general manager."""

    participants: List = Field(min_length=1, title="参会人员", description="以逗号或顿号分隔")
    conclusion: Text = Field(min_length=1, title="评审结论", description="事故原因、处理评价")
    actions: Text = Field(default="", title="整改措施")


# --- the inspection's forms (flows.inspection, PROCEDURES.md §4) --------------------------------

Day = Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)]
ClockTime = Annotated[str, StringConstraints(strip_whitespace=True, max_length=10)]


@form("inspection-date")
class DateForm(BaseModel):
    """巡检日期确认 — the customer confirms the proposed day, proposes another, or cancels."""

    action: Literal["确认", "改期", "取消"] = Field(
        title="操作", description="确认建议日期 / 改到另一天 / 取消本次巡检"
    )
    day: Day = Field(
        default="",
        title="新的巡检日期",
        description="改期时填写，如 2026-10-20（须为工作日，且留出 3 个工作日通知期）",
    )
    start: ClockTime = Field(default="09:30", title="开始时间", description="如 09:30")
    reason: List = Field(default="", title="原因", description="改期或取消的原因")


@form("inspection-proposal")
class ProposalForm(BaseModel):
    """巡检日期建议 — the dispatcher agrees a day with the customer by phone and proposes it."""

    day: Day = Field(
        default="",
        title="建议巡检日期",
        description="电话与客户商定的日期，如 2026-10-20（须为工作日，且留出 3 个工作日通知期）；留空即采用系统建议的日期",
    )
    start: ClockTime = Field(default="09:30", title="开始时间", description="如 09:30")
    note: List = Field(default="", title="沟通情况", description="与客户电话沟通的要点，可不填")


@form("inspection-reconfirm")
class ReconfirmForm(BaseModel):
    """巡检时间再确认 — two days before: the exact time, or a cancellation."""

    action: Literal["确认", "取消"] = Field(title="操作")
    start: ClockTime = Field(default="09:30", title="到场时间", description="如 09:30")
    reason: List = Field(default="", title="取消原因")


@form("inspection-unsigned")
class UnsignedForm(BaseModel):
    """报告未签字说明 — why the customer did not sign, signed off by the department manager."""

    reason: Text = Field(title="未签字原因", min_length=2)


# --- the emergency drill's forms (flows.drill, PROCEDURES.md §5) ---------------------------------

StepTable = Annotated[str, StringConstraints(strip_whitespace=True, max_length=6000)]
STEPS_HELP = "每行一步：操作 | 负责人 | 预计分钟，如：切换到备用数据库 | 张工 | 30"


def _minutes(value: int) -> int:
    if value <= 0:
        raise ValueError("须大于 0 分钟")
    if value > 7 * 24 * 60:
        raise ValueError("不能超过 10080 分钟（一周）")
    return value


def _not_negative(value: int) -> int:
    if value < 0:
        raise ValueError("不能小于 0")
    if value > 7 * 24 * 60:
        raise ValueError("不能超过 10080 分钟（一周）")
    return value


PositiveMinutes = Annotated[int, AfterValidator(_minutes)]
Minutes = Annotated[int, AfterValidator(_not_negative)]


def _step_table(value: str) -> str:
    from rules.drill import DrillRuleError, parse_steps

    try:
        parse_steps(value)
    except DrillRuleError as exc:
        raise ValueError(str(exc)) from None
    return value


@form("recovery-plan")
class RecoveryPlanForm(BaseModel):
    """应急恢复方案 — scope, systems and devices, recovery objectives, steps, contacts (one version)."""

    scope: Text = Field(min_length=2, title="适用范围", description="本方案覆盖的业务与故障场景")
    devices: Text = Field(min_length=2, title="涉及系统与设备", description="系统、主机、存储、网络设备等")
    rto_minutes: PositiveMinutes = Field(
        title="恢复时间目标 RTO（分钟）", description="业务须在多少分钟内恢复，须大于 0"
    )
    rpo_minutes: Minutes = Field(
        title="恢复点目标 RPO（分钟）", description="最多允许丢失多少分钟的数据；0 表示不允许丢失"
    )
    steps: Annotated[StepTable, AfterValidator(_step_table)] = Field(
        min_length=3, title="恢复步骤", description=STEPS_HELP
    )
    contacts: List = Field(min_length=2, title="联系人", description="双方应急联系人及电话")
    note: List = Field(default="", title="修订说明", description="修订时写明改了什么、为何修改")


@form("drill-plan")
class DrillPlanForm(BaseModel):
    """演练方案 — the simulated failure, the failover, the restore, each step's time, the roll-back."""

    scenario: Text = Field(min_length=2, title="模拟故障", description="演练模拟的故障场景")
    failover: Text = Field(min_length=2, title="切换过程", description="如何切换到备用系统")
    restore: Text = Field(min_length=2, title="恢复（回切）过程", description="演练结束后如何恢复到原系统")
    steps: Annotated[StepTable, AfterValidator(_step_table)] = Field(
        min_length=3, title="演练步骤与预计时间", description=STEPS_HELP
    )
    rollback: Text = Field(min_length=2, title="回退方案", description="演练本身出问题时如何回退、由谁决定")
    business_window: Line = Field(
        min_length=2, title="客户业务窗口", description="允许演练的时间段，如 周六 22:00 至 次日 04:00"
    )
    participants: List = Field(min_length=2, title="参演人员（双方）", description="双方参演人员姓名与职责")


def _needs_reason(value: str, info: ValidationInfo) -> str:
    if (info.data or {}).get("action") in ("改期", "取消") and not value:
        raise ValueError("改期或取消时必填")
    return value


def _needs_day(value: str, info: ValidationInfo) -> str:
    if (info.data or {}).get("action") == "改期" and not value:
        raise ValueError("改期时必填，如 2026-12-05")
    return value


@form("drill-date")
class DrillDateForm(BaseModel):
    """演练日期确认 — the customer confirms the drill day, moves it, or cancels (with a reason)."""

    action: Literal["确认", "改期", "取消"] = Field(
        title="操作", description="确认演练日期 / 改到另一天 / 取消本次演练"
    )
    day: Annotated[Day, AfterValidator(_needs_day)] = Field(
        default="",
        title="新的演练日期",
        description="改期时填写，如 2026-12-05（须留出通知期；休息日须勾选下一项确认）",
        validate_default=True,
    )
    start: ClockTime = Field(default="", title="开始时间", description="如 22:00；不填为原定时间")
    day_off_ok: YesNo = Field(
        default=False, title="确认在休息日演练", description="新的日期是周末或节假日时，选“是”确认"
    )
    reason: Annotated[List, AfterValidator(_needs_reason)] = Field(
        default="", title="原因", description="改期或取消的原因（必填）", validate_default=True
    )


def _ends_after_start(value: datetime | None, info: ValidationInfo) -> datetime | None:
    started = (info.data or {}).get("started_at")
    if value is not None and started is not None and value < started:
        raise ValueError(f"不能早于实际开始时间（{_local(started)}）")
    return value


def _rollback_when_aborted(value: str, info: ValidationInfo) -> str:
    if (info.data or {}).get("abort") and not value:
        raise ValueError("中止演练时必填：写明回退了哪些操作、系统是否已恢复原状")
    return value


@form("drill-step")
class DrillStepForm(BaseModel):
    """演练步骤记录 — the drill lead records one step as it happens: actual start, end, result."""

    started_at: Happened = Field(title="实际开始时间")
    ended_at: Annotated[Happened, AfterValidator(_ends_after_start)] = Field(title="实际结束时间")
    result: Literal["成功", "失败"] = Field(title="结果")
    note: Text = Field(default="", title="情况说明", description="异常、偏差、现场处置")
    abort: YesNo = Field(default=False, title="中止演练", description="本步失败且须中止演练时选“是”")
    rollback: Annotated[Text, AfterValidator(_rollback_when_aborted)] = Field(
        default="",
        title="回退情况",
        description="中止时填写：回退了哪些操作、系统是否已恢复",
        validate_default=True,
    )


def _training_lines(value: str, info: ValidationInfo) -> str:
    from rules.drill import DrillRuleError, parse_training

    now = (info.context or {}).get("now")
    if value and now is not None:
        try:
            parse_training(value, today=now.astimezone(ZoneInfo(get_settings().timezone)).date())
        except DrillRuleError as exc:
            raise ValueError(str(exc)) from None
    return value


@form("drill-evaluation")
class DrillEvaluationForm(BaseModel):
    """演练评估 — the drill lead's evaluation for the 演练报告: data lost, gaps, the decision, improvements."""

    data_loss_minutes: Minutes = Field(
        title="实际数据丢失（分钟）", description="与 RPO 比较；未丢失数据填 0"
    )
    gaps: Text = Field(default="", title="发现的差距", description="每行一条；每条差距将修订应急恢复方案")
    meets_need: YesNo = Field(
        title="方案满足业务需要", description="演练结果表明应急方案能否满足客户业务需要"
    )
    improvements: Text = Field(default="", title="改进措施")
    training: Annotated[List, AfterValidator(_training_lines)] = Field(
        default="",
        title="客户人员培训",
        description="需要培训时每行一项：培训内容 | 截止日期，如：备份恢复操作 | 2027-01-15；不需要则留空",
    )


# --- the renewal's forms (flows.renewal, PROCEDURES.md §6) --------------------------------------

RENEWAL_NOTICE_DAYS = 60  # 000 §8.3: ending the contract needs 60 days' written notice (rules.renewal)


def _read_day(value: Any) -> Any:
    """A day as a person types it (2027-01-01, 2027/1/1) → date; anything else refused."""
    if value is None or isinstance(value, date):
        return value
    text = str(value).strip().replace("/", "-").replace(".", "-")
    try:
        y, m, d = (int(part) for part in text.split("-"))
        return date(y, m, d)
    except (ValueError, TypeError):
        raise ValueError("无法识别的日期，请写成 2027-01-01") from None


def _read_money(value: Any) -> Any:
    """An amount in yuan (360000, 360,000.00, ¥360000 元) → Decimal, more than 0."""
    if value is None or isinstance(value, Decimal):
        return value
    text = str(value).strip().replace(",", "").replace("，", "").replace("¥", "").replace("元", "")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError("请填写金额（元），如 360000") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError("金额须大于 0")
    if amount >= Decimal("1e12"):
        raise ValueError("金额过大，请检查")
    return amount.quantize(Decimal("0.01"))


LocalDay = Annotated[date, BeforeValidator(_read_day)]
Money = Annotated[Decimal, BeforeValidator(_read_money)]
SLA_LEVELS = ("标准", "增强", "高级")
FREQUENCY_ZH = {"monthly": "每月", "quarterly": "每季度", "none": "不巡检", "custom": "每月"}


@form("renewal-quote")
class QuoteForm(BaseModel):
    """续约报价 — the account manager's quote at current rates, the previous fee beside it."""

    scope: Text = Field(
        min_length=2, title="服务范围", description="所含设备与服务；与原合同相同时保留原内容，变更处写明"
    )
    sla_level: Literal["标准", "增强", "高级"] = Field(title="SLA 等级")
    service_hours: Literal["7x24", "5x8"] = Field(title="服务时间", description="7x24 全天候 / 5x8 工作日")
    inspection_frequency: Literal["每月", "每季度", "不巡检"] = Field(title="巡检频率")
    start_date: LocalDay = Field(title="新合同开始日期", description="如 2027-01-01（原合同到期次日）")
    end_date: LocalDay = Field(title="新合同结束日期", description="如 2027-12-31")
    fee: Money = Field(title="续约费用（元，按现行价格）", description="如 360000；原合同费用见上")
    note: Text = Field(default="", title="报价说明", description="价格依据、与原合同的差异，可不填")

    @field_validator("start_date")
    @classmethod
    def _after_the_old_term(cls, value: date, info: ValidationInfo) -> date:
        end = ((info.context or {}).get("case_data") or {}).get("contract_end")
        if end and value <= date.fromisoformat(end):
            raise ValueError(f"应晚于原合同到期日 {end}（新合同从到期次日起）")
        return value

    @field_validator("end_date")
    @classmethod
    def _after_start(cls, value: date, info: ValidationInfo) -> date:
        start = (info.data or {}).get("start_date")
        if isinstance(start, date) and value < start:
            raise ValueError(f"早于开始日期 {start}")
        if isinstance(start, date) and (value - start).days > 3700:
            raise ValueError("合同期限不能超过 10 年")
        return value


@form("renewal-answer")
class RenewalAnswerForm(BaseModel):
    """续约答复 — the customer renews as quoted, asks for a change, or ends the contract."""

    choice: Literal["续约", "变更", "终止"] = Field(
        title="您的决定", description="按报价续约 / 申请变更（写明变更内容）/ 不再续约（写明终止原因）"
    )
    change: Text = Field(
        default="",
        title="变更内容",
        description="申请变更时填写：设备、SLA 等级、服务时间、巡检频率或期限",
        validate_default=True,
    )
    reason: Text = Field(
        default="", title="终止原因", description="终止时必填：书面通知的理由", validate_default=True
    )

    @field_validator("change")
    @classmethod
    def _change_named(cls, value: str, info: ValidationInfo) -> str:
        if (info.data or {}).get("choice") == "变更" and not value:
            raise ValueError("申请变更时请写明要变更的内容")
        return value

    @field_validator("reason")
    @classmethod
    def _written_notice(cls, value: str, info: ValidationInfo) -> str:
        data, context = info.data or {}, info.context or {}
        if data.get("choice") != "终止":
            return value
        if not value:
            raise ValueError("终止合同须写明原因（书面通知）")
        end = (context.get("case_data") or {}).get("contract_end")
        now = context.get("now")
        if end and now is not None:
            end_day = date.fromisoformat(end)
            local = now.astimezone(ZoneInfo(get_settings().timezone)).date()
            deadline = end_day - timedelta(days=RENEWAL_NOTICE_DAYS)
            if local > deadline:
                raise ValueError(
                    f"终止合同须提前 {RENEWAL_NOTICE_DAYS} 天书面通知：合同 {end_day} 到期，"
                    f"通知最迟应于 {deadline} 送达，今天（{local}）已逾期，未记录。"
                    "如需商议请选择「变更」或联系客户经理"
                )
        return value


@form("renewal-handover")
class HandoverForm(BaseModel):
    """合同终止移交清单 — documents, passwords, spare parts and open cases handed over."""

    documents: Text = Field(
        min_length=2, title="移交文档", description="设备档案、配置文档、巡检与维修报告等"
    )
    passwords: Text = Field(
        min_length=2,
        title="账号与密码移交",
        description="已移交或已由客户修改的账号清单（请勿在此填写密码本身）",
    )
    spare_parts: Text = Field(min_length=1, title="备件", description="现场备件的移交或收回；没有写“无”")
    open_cases: Text = Field(
        min_length=1, title="未结工单", description="每张未结工单的处理：完成、移交或关闭"
    )


# --- major-event assurance (flows.assurance; 001 §2.3.7, 002, 004 §四(4)) ---------------------------


def _roster(value: str) -> str:
    """Each line a shift the roster can show: name, a phone that can be dialled, start before end
    (rules.assurance.parse_roster says which line is wrong); the period and the names are checked
    by the flow against the case (tasks.assurance.check_roster)."""
    try:
        parse_roster(value, get_settings().timezone)
    except AssuranceError as exc:
        raise ValueError(str(exc)) from None
    return value


@form("duty-roster")
class DutyRosterForm(BaseModel):
    """值班表 — the engineers on duty during the assurance period, with their phones and shifts."""

    shifts: Annotated[Text, AfterValidator(_roster)] = Field(
        title="值班安排",
        min_length=10,
        description="每行一个班次：姓名 | 电话 | 开始时间 | 结束时间，如 "
        "张技术 | 13800000000 | 2026-12-20 08:00 | 2026-12-20 20:00（北京时间；须在保障期内）",
    )
    hotline: Line = Field(
        default="", title="保障期间值班电话", description="客户呼叫的总值班电话；不填为客户服务中心热线"
    )
    note: Text = Field(default="", title="值班说明", description="驻场位置、交接班方式、升级联系人等；可不填")


@form("assurance-report")
class AssuranceReportForm(BaseModel):
    """重要通信保障报告 — what the period was like, written by the technical lead afterwards."""

    summary: Text = Field(title="保障情况综述", min_length=2, description="保障期间系统运行与值守情况")
    events: Text = Field(
        default="", title="保障期间的事件与处理", description="期间报修已自动列入报告；此处补充其他情况"
    )
    advice: Text = Field(default="", title="建议", description="后续保障与系统优化建议；可不填")
    extra_effort: Text = Field(
        default="",
        title="超出合同约定的工作",
        description="超出合同约定范围的值守（人员、时段、差旅），按有偿服务另行结算；没有则留空",
    )
    extra_hours: float = Field(
        default=0, ge=0, le=5000, title="超出约定的工时（小时）", description="没有则填 0"
    )

    @field_validator("extra_hours")
    @classmethod
    def _hours_need_work(cls, value: float, info: ValidationInfo) -> float:
        if value and not (info.data or {}).get("extra_effort"):
            raise ValueError("请同时填写「超出合同约定的工作」")
        return value


# --- the complaint's forms (flows.complaint, PROCEDURES.md §7) ---------------------------------

Responsibility = Literal["服务工程师", "服务流程", "备件", "客户方", "无责任", "尚未查明"]
_CASE_NUMBER = r"(?:[A-Za-z]{2}-?)?\d{1,9}"


def _case_numbers(value: str) -> str:
    """Linked cases as people write them ("WX-000123, SG-000004"); each one must look like a number."""
    import re

    parts = [p for p in re.split(r"[\s,，、;；]+", value or "") if p]
    bad = [p for p in parts if re.fullmatch(_CASE_NUMBER, p) is None]
    if bad:
        raise ValueError(f"工单号请写成 WX-000123，多个用逗号分隔：{'、'.join(bad)}")
    return "、".join(p.upper() for p in parts)


def _resolution_needed(value: str, info: ValidationInfo) -> str:
    if (info.data or {}).get("complete", True) and not value:
        raise ValueError("调查完成时必填：发给客户的处理结果")
    return value


@form("complaint-answer")
class ComplaintAnswerForm(BaseModel):
    """投诉首次答复 — what will be done and by when; sent to the customer (within 2 hours)."""

    answer: Text = Field(
        min_length=2, title="答复内容", description="向客户说明已收到投诉、将采取的措施和负责人"
    )
    done_by: Planned = Field(
        title="预计处理完毕时间", description=f"如 {TIME_EXAMPLE}（北京时间）；应在受理后 15 天内"
    )
    contacted_at: Happened | None = Field(
        default=None,
        title="联系客户时间",
        description=f"电话答复客户的时间，如 {TIME_EXAMPLE}；不填为提交时间",
    )

    @field_validator("done_by")
    @classmethod
    def _within_close_deadline(cls, value: datetime, info: ValidationInfo) -> datetime:
        """Refused past the complaint's close deadline (受理后 15 天, PROCEDURES.md §7, 001 §2.4): the
        first answer is the promise the customer holds the provider to; a date beyond the deadline
        would promise a breach, so the manager corrects it (the deadline is named) instead."""
        due = ((info.context or {}).get("case_data") or {}).get("close_due")
        if not due:
            return value
        deadline = datetime.fromisoformat(due)
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=UTC)
        if value > deadline:
            raise ValueError(f"不能晚于投诉关闭期限 {_local(deadline)}（受理后 15 天内处理完毕）")
        return value


@form("complaint-investigation")
class InvestigationForm(BaseModel):
    """投诉调查 — facts, cause, responsibility, linked cases and the resolution proposed to the customer."""

    facts: Text = Field(min_length=2, title="调查事实", description="经过、时间、涉及人员")
    cause: Text = Field(min_length=2, title="原因分析")
    responsibility: Responsibility = Field(title="责任归属")
    responsible: Name = Field(default="", title="责任人", description="责任在工程师时填写姓名；可留空")
    linked_cases: Annotated[List, AfterValidator(_case_numbers)] = Field(
        default="", title="关联工单", description="如 WX-000123，多个用逗号分隔；可留空"
    )
    complete: YesNo = Field(default=True, title="调查已完成", description="选“否”则再进行一轮调查")
    resolution: Annotated[Text, AfterValidator(_resolution_needed)] = Field(
        default="",
        validate_default=True,
        title="处理结果",
        description="发给客户的处理结果与整改措施（调查完成时必填）",
    )
    compensation: YesNo = Field(default=False, title="涉及赔偿", description="是：须技术总监审批")
    engineer_change: YesNo = Field(default=False, title="更换服务工程师", description="是：须技术总监审批")
    process_change: YesNo = Field(default=False, title="流程变更", description="是：须技术总监审批")

    @property
    def needs_director(self) -> bool:
        """Compensation, a change of engineer or a process change: the director approves [§7]."""
        return self.compensation or self.engineer_change or self.process_change


@form("complaint-call")
class ComplaintCallForm(BaseModel):
    """投诉回访电话记录 — the customer did not answer the resolution in 3 working days: the manager calls."""

    called_at: Happened = Field(title="通话时间", description=f"如 {TIME_EXAMPLE}（北京时间）")
    person: Name = Field(min_length=1, title="通话的客户人员")
    satisfied: YesNo = Field(title="客户是否满意")
    notes: Text = Field(min_length=2, title="通话记录", description="客户的原话要点")


# --- validating an answer ---------------------------------------------------------------------


class AnswerError(ValueError):
    """An answer refused: `errors` maps each field to its Chinese reason; `message` names them."""

    def __init__(self, errors: dict[str, str], labels: dict[str, str]) -> None:
        self.errors = errors
        self.labels = labels
        super().__init__("；".join(f"「{labels.get(k, k)}」{v}" for k, v in errors.items()))


def _reason(err: Any) -> str:
    """One pydantic error → a Chinese reason a person can act on."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "missing":
        return "必填"
    if kind == "string_too_long":
        return f"不能超过 {ctx.get('max_length')} 个字"
    if kind == "string_too_short":
        return "必填" if ctx.get("min_length") == 1 else f"至少 {ctx.get('min_length')} 个字"
    if kind == "literal_error":
        return "只能选择：" + str(ctx.get("expected", "")).replace("'", "").replace(" or ", "、").replace(
            ", ", "、"
        )
    if kind in ("bool_type", "bool_parsing"):
        return "请选择“是”或“否”"
    if kind.startswith(("datetime", "date")):
        return f"无法识别的时间，请写成 {TIME_EXAMPLE}（北京时间）"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind in ("string_type", "int_type", "int_parsing", "float_parsing"):
        return "格式不对"
    return str(err.get("msg", "无效"))


def labels_of(model: type[BaseModel]) -> dict[str, str]:
    return {name: (field.title or name) for name, field in model.model_fields.items()}


def explain(exc: ValidationError, model: type[BaseModel]) -> AnswerError:
    """A ValidationError as field → Chinese reason (the first reason per field)."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "__all__"
        errors.setdefault(field, _reason(err))
    return AnswerError(errors, labels_of(model))


def validate_answer(
    model: type[F],
    values: dict[str, Any],
    *,
    now: datetime,
    not_before: datetime | None = None,
    case_data: dict[str, Any] | None = None,
) -> F:
    """The person's values as the form, or AnswerError naming each refused field.

    An empty text counts as "not filled in" (the form's default, or refused when required);
    fields the form does not have are dropped. `now` is the moment of the answer (the future
    check of times that record what happened); `not_before` the case's report time; `case_data`
    the case's recorded facts (a renewal's contract end: the 60 days' notice)."""
    clean: dict[str, Any] = {}
    for name in model.model_fields:
        if name not in values:
            continue
        value = values[name]
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        clean[name] = value
    try:
        return model.model_validate(
            clean, context={"now": now, "not_before": not_before, "case_data": case_data or {}}
        )
    except ValidationError as exc:
        raise explain(exc, model) from None


# --- the page's field list --------------------------------------------------------------------

SHORT_TEXT = {"customer_person", "customer_engineer", "executor", "participants", "day", "start"}
SHORT_TEXT |= {"start_date", "end_date", "fee"}  # the renewal quote


def _field_kind(annotation: Any) -> tuple[str, list[str] | None]:
    if get_origin(annotation) is not Literal:  # `X | None` → X; `Annotated[X, ...]` → X
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and get_origin(annotation) is not Annotated:
            annotation = args[0]
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
    if annotation is bool:
        return "choice", ["是", "否"]
    if get_origin(annotation) is Literal:
        return "choice", [str(a) for a in get_args(annotation)]
    if annotation is datetime:
        return "datetime", None
    return "textarea", None


def _max_length(field: Any) -> int | None:
    for meta in field.metadata:
        limit = getattr(meta, "max_length", None)
        if limit is not None:
            return int(limit)
    return None


def form_spec(model: type[BaseModel]) -> dict[str, Any]:
    """What the link page draws for a form: name, label, type, options, required, help, max length."""
    fields = []
    for name, field in model.model_fields.items():
        kind, options = _field_kind(field.annotation)
        label = field.title or name
        if kind == "datetime":
            label += f"（如 {TIME_EXAMPLE}，北京时间）"
        elif kind == "textarea" and name in SHORT_TEXT:
            kind = "text"
        spec: dict[str, Any] = {
            "name": name,
            "label": label,
            "type": "text" if kind == "datetime" else kind,
            "required": field.is_required(),
            "help": field.description or "",
        }
        if options:
            spec["options"] = options
        limit = _max_length(field)
        if limit is not None:
            spec["max_length"] = limit
        fields.append(spec)
    title = model.__doc__.strip().splitlines()[0] if model.__doc__ else ""
    return {"title": title, "fields": fields}


# --- what a flow gets back ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer(Generic[F]):
    """A person's validated answer to a form: the form itself (`value`), who gave it and when."""

    value: F
    by: str
    at: datetime
    comment: str = ""
