"""The Prefect-UI run forms of the deployments a dispatcher starts: `repair`, `accident`, `extra-inspection`,
`drill`, `recovery-plan`, `assurance`, `complaint`, `survey-now`.

Prefect draws a deployment's "Custom run" form from its parameter schema, which `to_deployment`
builds from the flow's signature. The flows' own models (RepairRequest, AccidentRequest,
ExtraInspectionRequest) are what programs send too, so they stay tolerant (a customer code, `None`
for a field not given). The form a dispatcher sees is built here instead, when the deployments are
served:

- every field has a Chinese title and a description that says whether it is required and what to
  enter (Prefect's own "is a required property" comes from its UI and cannot be translated);
- customers and sites are choices, read from the database at serve time (`aftercare up` refreshes
  them on every start; a customer added later is offered after the next start, and can be started
  from the command line meanwhile);
- the severity is a labelled choice ("2 重大故障 / 二级（严重）") instead of a bare number;
- no field is `X | None`: Prefect draws those as a type toggle with "Property is type None". An
  optional field is a text with a default ("" = 不填) whose meaning the description says; the
  flow's model turns "" into None (tasks.cases.blank_none, read_severity, read_case_ref).

The server checks a form's values against this schema (the deployment enforces it, and the UI
validates before it submits). Programs that start runs — `aftercare repair new`, inspections,
5-minute talks, a repair handed over to the accident flow — do not send form values: they start
their runs with `enforce_parameter_schema=False` (tasks.cases.start_deployment_run), and the
flow's own model validates them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from rules.drill import DRILL_KINDS_ZH
from tasks.accident import FOUND_BY_ZH
from tasks.cases import SEVERITY_CHOICES, SEVERITY_HELP, Channel
from tasks.complaints import ABOUT_CHOICES, ComplaintChannel

TIME_HELP = "北京时间，写成 2026-11-23 10:30"


@dataclass(frozen=True)
class Choices:
    """What the forms offer, read from the database when the deployments are served."""

    customers: list[str] = field(default_factory=list)  # "北京某银行数据中心（BJYH）"
    sites: list[str] = field(default_factory=list)  # site names, each once
    sites_by_customer: dict[str, list[str]] = field(default_factory=dict)  # customer name → its sites


def customer_choice(name: str, code: str) -> str:
    """A customer as the form offers it; tasks.cases.find_customer reads the code back."""
    return f"{name}（{code}）"


def read_choices() -> Choices:
    """The customers and their sites in the database; none (free text) when it cannot be read —
    a runner started against an empty or unreachable database still serves its deployments."""
    from sqlalchemy.exc import SQLAlchemyError
    from sqlmodel import col, select

    from models import Customer, Site
    from models.db import session_scope

    try:
        with session_scope() as session:
            customers = list(session.exec(select(Customer).order_by(col(Customer.id))).all())
            sites = list(session.exec(select(Site).order_by(col(Site.customer_id), col(Site.id))).all())
            names = {c.id: c.name for c in customers}
            by_customer: dict[str, list[str]] = {}
            for site in sites:
                by_customer.setdefault(names.get(site.customer_id, "?"), []).append(site.name)
            return Choices(
                customers=[customer_choice(c.name, c.code) for c in customers],
                sites=list(dict.fromkeys(s.name for s in sites)),
                sites_by_customer=by_customer,
            )
    except SQLAlchemyError:
        return Choices()


def _sites_help(choices: Choices) -> str:
    if not choices.sites_by_customer:
        return ""
    return "各客户的站点：" + "；".join(f"{c}：{'、'.join(s)}" for c, s in choices.sites_by_customer.items())


# --- the forms: what the dispatcher fills in ------------------------------------------------------

SEVERITY_FORM_HELP = "从列表中选择级别（按合同约定的分级方案对应）：" + SEVERITY_HELP


class RepairRequestForm(BaseModel):
    """客户来电报修时由客服中心填写；带“必填”的项目须填写，其余可留空。"""

    model_config = ConfigDict(title="故障报修 / repair request")

    customer: str = Field(
        title="客户",
        min_length=1,
        max_length=100,
        description="必填：从列表中选择报修的客户（名称后括号内为客户编码）",
    )
    site: str = Field(
        default="",
        title="机房/站点",
        max_length=100,
        description="可留空：客户只有一个站点或已填设备序列号时不必选择",
    )
    device: str = Field(
        default="",
        title="设备序列号",
        max_length=64,
        description="可留空：故障设备的序列号（设备档案中的序列号）",
    )
    reported_by: str = Field(
        title="报告人",
        min_length=1,
        max_length=100,
        description="必填：报告故障的客户人员姓名与电话，如 王先生 13800000000",
    )
    channel: str = Field(
        default=Channel.HOTLINE.value,
        title="报告渠道",
        description="客户通过哪个渠道报告：热线 / 邮件 / 网站 / 巡检 / 销售 / 现场",
        json_schema_extra={"enum": [c.value for c in Channel]},
    )
    description: str = Field(
        title="故障描述",
        min_length=2,
        max_length=4000,
        description="必填：现象、影响的业务、开始时间（至少 2 个字）",
    )
    severity: str = Field(
        default=SEVERITY_CHOICES[3],
        title="故障级别",
        description=SEVERITY_FORM_HELP,
        json_schema_extra={"enum": list(SEVERITY_CHOICES.values())},
    )
    reported_at: str = Field(
        default="",
        title="报告时间",
        max_length=40,
        description=f"可留空（留空为当前时间）：客户报告故障的时间，{TIME_HELP}；时钟由此开始计时。"
        "不能晚于当前时间，也不能早于 30 天以前",
    )
    parent_case_id: str = Field(
        default="",
        title="关联工单",
        max_length=20,
        description="可留空：由巡检、5分钟交流或其他工单发现时，填来源工单号，如 WX-000123",
    )


class AccidentRequestForm(BaseModel):
    """事故报告单：客户、服务中心或巡检发现的事故；由维修单转入时只需填转入的维修单。"""

    model_config = ConfigDict(title="事故处理 / accident")

    customer: str = Field(
        default="", title="客户", max_length=100, description="由维修单转入时可留空，否则必选：发生事故的客户"
    )
    site: str = Field(
        default="",
        title="机房/站点",
        max_length=100,
        description="可留空：客户只有一个站点、已填设备序列号或由维修单转入时不必选择",
    )
    device: str = Field(default="", title="设备序列号", max_length=64, description="可留空：故障设备的序列号")
    reported_by: str = Field(
        default="",
        title="报告人",
        max_length=100,
        description="由维修单转入时可留空，否则必填：发现事故的人员姓名与电话",
    )
    channel: str = Field(
        default=Channel.HOTLINE.value,
        title="报告渠道",
        description="热线 / 邮件 / 网站 / 巡检 / 销售 / 现场",
        json_schema_extra={"enum": [c.value for c in Channel]},
    )
    description: str = Field(
        default="",
        title="事故描述",
        max_length=4000,
        description="由维修单转入时可留空，否则必填：现象、受影响的业务、开始时间",
    )
    severity: str = Field(
        default="",
        title="事故级别",
        description="可留空：留空为一级；由维修单转入时沿用维修单的级别。" + SEVERITY_HELP,
        json_schema_extra={"enum": ["", *SEVERITY_CHOICES.values()]},
    )
    reported_at: str = Field(
        default="",
        title="报告时间",
        max_length=40,
        description=f"可留空（留空为当前时间）：发现事故的时间，{TIME_HELP}",
    )
    parent_case_id: str = Field(
        default="",
        title="转入的维修单",
        max_length=20,
        description="可留空：维修无法完成而转入事故处理时，填维修单号，如 WX-000123；事故单继承其全部记录",
    )
    handover_reason: str = Field(
        default="",
        title="转入原因",
        max_length=2000,
        description="可留空：维修转事故时技术总监的判断（由维修流程填写）",
    )
    found_by: str = Field(
        default=FOUND_BY_ZH["customer"],
        title="发现方式",
        description="谁发现了事故：客户、服务中心、巡检，或维修中发现",
        json_schema_extra={"enum": list(FOUND_BY_ZH.values())},
    )
    tolerance_hours: float = Field(
        default=0,
        ge=0,
        le=720,
        title="客户可容忍时间（小时）",
        description="0 为按合同约定；此时间内没有可行方案则由技术总监启动原厂商支持",
    )
    lead_on_site: bool = Field(
        default=False, title="技术负责人已在现场", description="已在现场时由技术总监协调公司最优资源"
    )
    team: list[str] = Field(
        default_factory=list,
        max_length=30,
        title="紧急抢修小组成员",
        description="可留空：员工姓名，每行一人；留空则由技术负责人、专家组和一名工程师组成",
    )


class ExtraInspectionForm(BaseModel):
    """加做巡检申请：客户在重要业务操作前要求的巡检；带“必填”的项目须填写。"""

    model_config = ConfigDict(title="加做巡检 / extra inspection")

    customer: str = Field(
        title="客户", min_length=1, max_length=100, description="必填：从列表中选择要求加做巡检的客户"
    )
    site: str = Field(
        default="",
        title="机房/站点",
        max_length=100,
        description="可留空：客户只有一个站点时不必选择；检查表只含该站点的设备",
    )
    reason: str = Field(
        title="加做原因",
        min_length=2,
        max_length=400,
        description="必填：客户为何要求加做巡检，如：5月23日核心系统升级前（至少 2 个字）",
    )
    # text, not Prefect's date picker: a "date" field's empty default would fail its own format check
    day: str = Field(
        default="",
        title="建议巡检日期",
        max_length=20,
        description="可留空（留空为最早可安排的工作日）：写成 2026-12-05；须为工作日，且留出 3 个工作日通知期。"
        "客户仍可确认或改期",
    )
    requested_by: str = Field(
        default="", title="提出人", max_length=100, description="可留空：客户方提出要求的人员姓名与电话"
    )


class DrillRequestForm(BaseModel):
    """应急演练申请：客户要求或按计划安排的应急演练；带“必填”的项目须填写。"""

    model_config = ConfigDict(title="应急演练 / emergency drill")

    customer: str = Field(title="客户", min_length=1, max_length=100, description="必填：从列表中选择客户")
    system: str = Field(
        title="演练系统",
        min_length=2,
        max_length=100,
        description="必填：演练的客户系统，如 核心业务系统、网银系统（应急恢复方案按系统分版本）",
    )
    kind: str = Field(
        title="演练类型",
        description="必填：从列表中选择",
        json_schema_extra={"enum": list(DRILL_KINDS_ZH.values())},
    )
    # text, not Prefect's date picker (as the extra inspection's day)
    wished_day: str = Field(
        title="期望演练日期",
        min_length=10,
        max_length=20,
        description="必填：写成 2026-12-19；须留出 5 个工作日通知期（合同另有约定的从其约定）。客户仍可确认或改期",
    )
    day_off_ok: str = Field(
        default="否",
        title="确认在休息日演练",
        description="期望日期是周末或节假日时选“是”确认（演练常安排在业务低谷）；否则该日期不予受理",
        json_schema_extra={"enum": ["否", "是"]},
    )
    requested_by: str = Field(
        default="", title="提出人", max_length=100, description="可留空：客户方提出要求的人员姓名与电话"
    )


class RecoveryRevisionForm(BaseModel):
    """应急恢复方案修订：两次演练之间修订客户系统的应急恢复方案；带“必填”的项目须填写。"""

    model_config = ConfigDict(title="应急恢复方案修订 / recovery plan revision")

    customer: str = Field(title="客户", min_length=1, max_length=100, description="必填：从列表中选择客户")
    system: str = Field(
        title="系统",
        min_length=2,
        max_length=100,
        description="必填：方案所属的客户系统，如 核心业务系统（与演练时填写的系统名称一致）",
    )
    reason: str = Field(
        title="修订原因",
        min_length=2,
        max_length=300,
        description="必填：为何修订，如 新增存储双活、联系人变更（显示在版本记录中）",
    )
    requested_by: str = Field(
        default="", title="提出人", max_length=100, description="可留空：提出修订的人员姓名与电话"
    )


class ComplaintRequestForm(BaseModel):
    """投诉受理单：客户经投诉渠道（非报修热线）提出的投诉；带“必填”的项目须填写。"""

    model_config = ConfigDict(title="投诉 / complaint")

    customer: str = Field(
        title="客户", min_length=1, max_length=100, description="必填：从列表中选择投诉的客户"
    )
    complainant: str = Field(
        title="投诉人",
        min_length=1,
        max_length=100,
        description="必填：投诉人姓名与电话，如 王先生 13800000000",
    )
    about: str = Field(
        default="服务质量",
        title="投诉对象",
        description="投诉针对什么：工程师、某张工单、响应与时限、服务质量、备件或其他",
        json_schema_extra={"enum": list(ABOUT_CHOICES)},
    )
    case_ref: str = Field(
        default="", title="相关工单", max_length=20, description="可留空：投诉涉及的工单号，如 WX-000123"
    )
    engineer: str = Field(
        default="", title="相关工程师", max_length=100, description="可留空：被投诉的工程师姓名"
    )
    description: str = Field(
        title="投诉内容",
        min_length=2,
        max_length=4000,
        description="必填：发生了什么、何时、影响（至少 2 个字）",
    )
    wish: str = Field(default="", title="投诉诉求", max_length=2000, description="可留空：客户希望如何处理")
    channel: str = Field(
        default=ComplaintChannel.HOTLINE.value,
        title="投诉渠道",
        description="投诉电话 / 邮件 / 信函 / 来访 / 网站",
        json_schema_extra={"enum": [c.value for c in ComplaintChannel]},
    )
    reported_at: str = Field(
        default="",
        title="投诉时间",
        max_length=40,
        description=f"可留空（留空为当前时间）：客户提出投诉的时间，{TIME_HELP}；2 小时答复时限由此开始计时",
    )


class AssuranceRequestForm(BaseModel):
    """重要通信保障申请：客户为重大事件申请保障期（须提前 3 周，不足 3 周由技术总监审批）；带“必填”的项目须填写。"""

    model_config = ConfigDict(title="重要通信保障 / major-event assurance")

    customer: str = Field(
        title="客户", min_length=1, max_length=100, description="必填：从列表中选择申请保障的客户"
    )
    site: str = Field(
        default="", title="机房/站点", max_length=100, description="可留空：留空为该客户的全部站点"
    )
    event: str = Field(
        title="保障事由",
        min_length=2,
        max_length=400,
        description="必填：重大会议、重大节假日、年终结算、重大割接等（至少 2 个字）",
    )
    starts: str = Field(
        title="保障开始",
        min_length=8,
        max_length=40,
        description="必填：北京时间，写成 2026-12-20 或 2026-12-20 08:00（只写日期为当日 00:00）",
    )
    ends: str = Field(
        title="保障结束",
        min_length=8,
        max_length=40,
        description="必填：北京时间，写成 2026-12-27 或 2026-12-27 18:00（只写日期为当日 24:00）",
    )
    requested_by: str = Field(
        title="申请人", min_length=1, max_length=100, description="必填：客户方提出申请的人员姓名与电话"
    )
    requested_at: str = Field(
        default="",
        title="申请时间",
        max_length=40,
        description=f"可留空（留空为当前时间）：客户提出申请的时间，{TIME_HELP}；距保障开始不足 3 周须技术总监批准",
    )
    onsite: bool = Field(default=True, title="需要现场值守", description="不勾选为远程值守（电话即时响应）")
    requirements: str = Field(
        default="", title="客户要求", max_length=4000, description="可留空：保障范围、重点系统、联系人等"
    )


class SurveyRequestForm(BaseModel):
    """立即发起年度客户满意度调查（如年中开始的合同、客户经理提出）：每客户每年一次；带“必填”的项目须填写。"""

    model_config = ConfigDict(title="满意度调查 / satisfaction survey")

    customer: str = Field(
        title="客户",
        min_length=1,
        max_length=100,
        description="必填：从列表中选择要调查的客户（须有有效合同）",
    )
    # text, not a number field: "" is 不填 (a number field's empty value would be Prefect's None toggle)
    year: str = Field(
        default="",
        title="调查年度",
        max_length=10,
        description="可留空（留空为今年，北京时间）：写成 2026；只能为今年或去年。该年度已有调查时不再重复发起",
    )
    requested_by: str = Field(
        default="", title="提出人", max_length=100, description="可留空：提出调查的人员，如 客户经理 沈经理"
    )


def with_choices(form: type[BaseModel], choices: Choices) -> type[BaseModel]:
    """The form with today's customers and sites as choices (free text where there are none)."""
    offered = {"customer": choices.customers, "site": choices.sites}
    fields: dict[str, Any] = {}
    for name, values in offered.items():
        if not values or name not in form.model_fields:
            continue
        info = form.model_fields[name]
        optional = not info.is_required()
        extra = dict(info.json_schema_extra or {}) if isinstance(info.json_schema_extra, dict) else {}
        extra["enum"] = ["", *values] if optional else list(values)  # "" is the empty choice: 不填
        description = info.description or ""
        if name == "site" and (helps := _sites_help(choices)):
            description = f"{description}。{helps}"
        fields[name] = (
            info.annotation,
            FieldInfo.merge_field_infos(info, json_schema_extra=extra, description=description),
        )
    return create_model(form.__name__, __base__=form, __doc__=form.__doc__, **fields)


def form_schema(form: type[BaseModel]) -> Any:
    """The parameter schema Prefect would build for a flow `f(request: form)`: the run form."""
    from prefect.utilities.callables import generate_parameter_schema

    parameter = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=form)
    schema = generate_parameter_schema(inspect.Signature([parameter]), {})
    schema.properties["request"]["title"] = (
        str(form.model_config.get("title", "")).split(" / ")[0] or "request"
    )
    return schema


def use_form(deployment: Any, form: type[BaseModel], choices: Choices | None = None) -> Any:
    """Give a deployment (built by `flow.to_deployment`) the dispatcher's run form; returns it."""
    deployment._parameter_openapi_schema = form_schema(with_choices(form, choices or read_choices()))
    deployment.enforce_parameter_schema = True  # the UI validates the form before it submits
    return deployment
