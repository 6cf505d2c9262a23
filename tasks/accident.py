"""The accident-only steps of 事故处理服务流程 (PROCEDURES.md §3): opening the case (also by hand-over
from a repair), the emergency accident team, plan versions and their tests, the customer's
tolerated window and vendor support, the standby machine, execution results, the hourly progress
updates and the vendor's daily report (keeper steps), the review meeting and the GM's sign-off.

The steps shared with the repair flow (director approval, customer objection loop, 5-minute talk,
service report and signature, SMS, callback, written account) live in `flows.steps`; this module
does not repeat them.

Who writes what: the flow's tasks write the case row (status, stage, `data`); the keeper steps
(`send_progress_updates`, `send_vendor_daily_reports`, `send_due_standby`) only read cases and
append events and notifications, so the two never overwrite each other's changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator
from sqlmodel import Session, col, func, select

from models import Case, CaseKind, CaseStatus, Contract, Device, Event, Role, Site, Staff, append_event
from models.approvals import DECISION_ZH
from models.db import session_scope
from models.parties import ROLE_LABELS_ZH, Customer
from models.reports import REPORT_TITLES_ZH
from rules import accident as rules
from rules.sla import CLOCK_LABELS_ZH
from tasks.cases import SEVERITY_HELP, IntakeError, RepairRequest, blank_none, case_facts, open_case
from tasks.clocks import start_clock, stop_clock
from tasks.ledger import step
from tasks.notify import queue
from tasks.people import customer_contacts, first_with_role, staff_with_role
from tasks.render import render
from tasks.reports import issue_report

FoundBy = Literal["customer", "service_centre", "inspection", "repair"]

# Statuses of an accident whose service is not restored yet: the hourly updates run while in them.
ACTIVE = (CaseStatus.OPEN, CaseStatus.HANDLING)
# Stages in which the accident has a working plan: the keeper does not call the vendor for lack of one.
WORKING_PLAN_STAGES = ("customer", "executing")
FOUND_BY_ZH = {
    "customer": "客户发现",
    "service_centre": "服务中心发现",
    "inspection": "巡检发现",
    "repair": "维修中发现",
}
STAGE_ZH = {
    "team": "组建紧急抢修小组",
    "plan": "编写事故处理方案",
    "approval": "技术总监审批方案",
    "testing": "方案测试",
    "customer": "客户确认方案",
    "executing": "实施方案",
    "restored": "业务已恢复",
}

# History lines of the accident report: event kind → Chinese text (data fields formatted in). Every
# kind a case can record is here — the accident's own and those a repair hands over with its history
# (tasks.cases, flows.steps, flows.repair, tasks.clocks, tasks.approvals, tasks.reports, tasks.parts…);
# derived fields (`clock_zh`, `report_zh`, `decision_zh`, `kind_zh`) are added by `event_text`. A field
# that is missing or empty leaves the text before its "：" (or "—" in its place).
VERDICT_ZH = {"met": "按时完成", "breached": "超时", "stopped": "未超时（已停止计时）"}
EVENT_TEXT_ZH = {
    # accident handling (§3)
    "accident_opened": "事故立案",
    "handed_over_from_repair": "由维修单 {repair} 转入事故处理",
    "team_formed": "紧急抢修小组组建（{size} 人），总协调人 {coordinator} 为客户唯一联系人",
    "plan_submitted": "提交事故处理方案第 {version} 版",
    "plan_test_passed": "第 {version} 版方案测试通过",
    "plan_test_failed": "第 {version} 版方案测试失败：{note}",
    "vendor_support_started": "技术总监启动原厂商支持（第 {attempt} 次）：{reason}",
    "execution_result": "第 {version} 版方案实施结果：{result_zh}",
    "director_on_site": "技术总监到场协调（第 {attempt} 次）",
    "standby_machine_requested": "启用备机：{reason}",
    "restored": "业务恢复",
    "progress_update": "第 {n} 次进展通报",
    "vendor_daily_report": "第 {day} 天向原厂商报告进展",
    "review_meeting_held": "召开技术评审会议（第 {version} 版评审报告）：{conclusion}",
    "gm_rejected": "总经理退回第 {version} 版评审报告：{comment}",
    "gm_signed_off": "总经理签批第 {version} 版评审报告",
    # intake, links, hand-over
    "opened": "工单受理（{channel}，{severity} 级）",
    "severity_raised_for_assurance": "重要保障期（{assurance}）内报修：级别由 {severity_reported} 级提升为 {severity_raised} 级",
    "problem_fixed_fed_back": "巡检发现的问题已修复并反馈客户（维修单 {repair_number}）",
    "assurance_request": "保障期内受理报修：级别由 {severity_reported} 级提升为 {severity_raised} 级",
    "linked_case_opened": "开立关联{kind_zh}",
    "handed_over": "技术总监决定转入事故处理流程：{reason}",
    "handed_over_to_accident": "转入事故单 {accident}：{reason}",
    "handover_declined": "技术总监决定继续维修，不转事故处理：{comment}",
    # repair steps (§2)
    "first_contact": "首次联系客户",
    "remote_diagnosis": "远程诊断：{result}",
    "plan_written": "编写解决方案第 {version} 版",
    "plan_approved": "技术总监批准方案第 {version} 版",
    "plan_returned": "方案第 {version} 版被退回：{comment}",
    "plan_revised": "方案修订为第 {version} 版：{note}",
    "plan_objected": "客户对方案第 {version} 版提出异议：{comment}",
    "plan_signed": "客户签字确认方案第 {version} 版",
    "parts_issued": "备件出库",
    "parts_procurement": "备件管理员紧急采购：{parts}（{vendor}），预计 {eta_zh} 到场{late_zh}",
    "parts_shortage": "备件缺货，已升级协调",
    "visit_booked": "与客户预约上门时间",
    "arrived": "工程师到达现场",
    "service_request_signed": "客户到场确认故障并签署技术服务申请（第 {version} 版）",
    "service_request_objected": "客户对技术服务申请第 {version} 版提出异议：{comment}",
    "risky_operations_approved": "客户批准有数据风险的操作：{operations}",
    "risky_operations_refused": "客户未批准有数据风险的操作：{operations}",
    "risky_operations_decided": "技术负责人决定（客户未批准操作后）：{instruction}",
    "onsite_analysis": "现场再分析：{findings}",
    "workaround": "发出临时解决方案（业务先恢复）：{workaround}",
    "customer_agreed": "客户维护人员同意巡检操作：{agreed_by}",
    "problem_feedback_sent": "巡检发现的问题已反馈客户，维修单 {repair_number}",
    "repair_anomaly": "维修遇到异常（第 {attempt} 次）：{anomaly}",
    "lead_guidance": "技术负责人指导：{guidance}",
    "repaired": "维修完成：{work_done}",
    "preventive_maintenance": "预防性维护：{done}",
    "five_minute_talk": "5分钟交流",
    "service_report_signed": "客户签署维修服务报告（第 {version} 版）",
    "service_report_objected": "客户对维修服务报告第 {version} 版提出异议：{comment}",
    "accident_report_signed": "客户签署事故处理服务报告（第 {version} 版）",
    "accident_report_objected": "客户对事故处理服务报告第 {version} 版提出异议：{comment}",
    "sms_to_centre": "短信通知服务中心任务完成",
    "callback_done": "完成客户回访",
    "final_approved": "技术总监审批通过报告",
    "final_returned": "技术总监退回报告：{comment}",
    "archived": "归档",
    # complaints (§7): the complaint's own history, and the line a complained-about case shows
    "complaint_received": "受理投诉（{channel}）：{about}",
    "complaint_linked": "客户就此工单提出投诉 {number}",
    "complaint_answered": "首次答复客户：{answer}",
    "complaint_investigated": "第 {round} 轮投诉调查：责任归属 {responsibility}",
    "complaint_cases_linked": "关联工单：{cases}",
    "complaint_director_approved": "技术总监批准第 {round} 轮处理结果",
    "complaint_director_returned": "技术总监退回第 {round} 轮处理结果：{comment}",
    "complaint_reply_signed": "客户签字确认投诉处理回复函（第 {version} 版），表示满意",
    "complaint_not_satisfied": "客户对第 {reply} 版处理结果不满意：{comment}",
    "complaint_escalated": "投诉升级至上一级负责人 {manager}",
    "complaint_call": "客服经理电话回访客户 {person}：{notes}",
    "complaint_answered_before_call": "客户在电话回访记录前自行答复了第 {reply} 版处理结果，回访已撤回",
    "complaint_to_managers": "客户因超时未获答复，将投诉直接提交管理层",
    "request_to_managers": "客户因超时未获答复，经投诉渠道将此工单直接提交管理层",
    "complaint_closed": "投诉处理完毕并关闭",
    "complaint_late_answer": "客户在 {call_by} 电话回访后对第 {reply} 版处理结果答复{satisfied_zh}：{comment}",
    "complaint_reopened": "客户书面答复不满意，投诉重新打开（第 {times} 次），升级至 {manager} 重新调查",
    "report_answer_kept": "客户对{title}（第 {version} 版）的{answer_zh}未能计入流程（{why}），已记录并告知负责人",
    # approvals, signatures, forms
    "approval_requested": "发出审批请求：{subject}",
    "signature_requested": "请客户签字确认：{subject}",
    "form_requested": "请求填写表单：{subject}",
    "approval_decided": "审批结果：{decision_zh}",
    "signature_decided": "客户答复：{decision_zh}",
    "form_decided": "表单已提交",
    "approval_link_renewed": "审批链接已续期",
    # reports
    "report_issued": "出具{report_zh}（第 {version} 版）",
    "report_edited": "报告内容已修改，须重新签字",
    "report_signed": "报告已签字",
    # SLA clocks, escalation, the machinery
    "clock.started": "{clock_zh}开始计时",
    "clock.paused": "{clock_zh}暂停计时：{reason}",
    "clock.resumed": "{clock_zh}恢复计时",
    "clock.met": "{clock_zh}按时完成",
    "clock.breached": "{clock_zh}超时完成",
    "clock.breach": "{clock_zh}超时未完成",
    "clock.escalated": "{clock_zh}未完成，第 {level} 级升级",
    "clock.closed": "{clock_zh}停止计时（工单关闭或转交）",
    "clock.relaid": "{clock_zh}按正式节假日安排重新计算期限",
    "severity.raised": "故障级别由 {from} 级提升为 {to} 级：{reason}",
    "case.stale_escalated": "工单长时间未更新，升级至第 {level} 级负责人",
    "notification_failed": "通知发送失败：{recipient}",
    "run.rescheduled": "流程进程中断，已重新调度",
}
# A kind not listed above (a step added later) still reads as Chinese in a customer's report.
EVENT_TEXT_FALLBACK_ZH = "其他处理记录"
CASE_KIND_ZH = {"repair": "维修单", "accident": "事故单", "inspection": "巡检单"}


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _case(session: Session, case_id: int) -> Case:
    case = session.get(Case, case_id)
    if case is None or case.kind != CaseKind.ACCIDENT:
        raise LookupError(f"没有事故单 {case_id} / no accident case {case_id}")
    return case


def _set(case: Case, now: datetime, **changes: Any) -> None:
    # JSON columns change only when reassigned: copy, update, put back.
    data = dict(case.data)
    data.update(changes)
    case.data = data
    case.updated_at = now


def case_context(session: Session, case: Case) -> dict[str, Any]:
    """What every accident text shows about the case: the shared case facts plus the window."""
    facts = case_facts(session, int(case.id)).as_dict()  # type: ignore[arg-type]
    parent = session.get(Case, case.parent_id) if case.parent_id else None
    started = _parse(case.data.get("started_at")) or case.reported_at
    hours = float(case.data.get("tolerance_hours") or rules.DEFAULT_TOLERANCE_HOURS)
    return {
        **facts,
        "title": case.title,
        "found_by_zh": FOUND_BY_ZH.get(case.data.get("found_by", ""), case.data.get("found_by", "")),
        "started_at": started,
        "tolerance_hours": f"{hours:g}",
        "window_closes_at": rules.window_closes_at(started, hours),
        "parent": parent.number if parent else "",
    }


def _queue(
    session: Session,
    case: Case,
    recipients: Sequence[Any],
    template: str,
    key: str,
    now: datetime,
    urgent: bool | None = None,
    **context: Any,
) -> None:
    if not recipients:
        return
    queue(
        session,
        recipients=list(recipients),
        template=template,
        context={"case": case_context(session, case), **context},
        key=f"accident:{case.id}:{key}",  # outbox keys are global: the case id keeps two accidents apart
        case_id=case.id,
        now=now,
        urgent=(case.severity or 4) <= 2 if urgent is None else urgent,
    )


def _staff_named(session: Session, names: Sequence[str]) -> list[Staff]:
    found = []
    for name in names:
        person = session.exec(select(Staff).where(Staff.name == name, Staff.active == True)).first()  # noqa: E712
        if person is None:
            raise IntakeError(f"紧急抢修小组成员“{name}”不是在岗员工 / no active staff named {name!r}")
        found.append(person)
    return found


# --- step 1: open the case -------------------------------------------------------------------


class AccidentRequest(RepairRequest):
    """事故报告单 — the `accident` deployment's form; by hand-over only `parent_case_id` is needed."""

    model_config = ConfigDict(title="事故处理 / accident")

    customer: str | None = Field(  # type: ignore[assignment]
        default=None,
        title="客户",
        description="客户名称或客户编码，如 BJYH；由维修单转入时可不填",
        max_length=100,
    )
    reported_by: str | None = Field(  # type: ignore[assignment]
        default=None,
        title="报告人",
        description="发现事故的人员姓名与电话；由维修单转入时可不填",
        max_length=100,
    )
    description: str | None = Field(  # type: ignore[assignment]
        default=None,
        title="事故描述",
        description="现象、受影响的业务、开始时间；由维修单转入时可不填",
        max_length=4000,
    )
    severity: int | None = Field(  # type: ignore[assignment]
        default=None,
        ge=1,
        le=4,
        title="事故级别 (1–4)",
        description="不填：一级；由维修单转入时沿用维修单的级别。" + SEVERITY_HELP,
    )
    parent_case_id: int | None = Field(
        default=None,
        ge=1,
        title="转入的维修单",
        description="维修无法完成而转入事故处理时，填维修单号（数字）；事故单继承其全部记录",
    )
    handover_reason: str | None = Field(
        default=None,
        title="转入原因",
        description="维修转事故时技术总监的判断（由维修流程填写）",
        max_length=2000,
    )
    found_by: FoundBy = Field(
        default="customer", title="发现方式", description="客户 / 服务中心 / 巡检 / 维修中"
    )
    tolerance_hours: float | None = Field(
        default=None,
        gt=0,
        le=720,
        title="客户可容忍时间（小时）",
        description="此时间内没有可行方案则由技术总监启动原厂商支持；不填按合同约定",
    )
    lead_on_site: bool = Field(
        default=False, title="技术负责人已在现场", description="已在现场时由技术总监协调公司最优资源"
    )
    team: list[Annotated[str, StringConstraints(max_length=100)]] = Field(
        default_factory=list,
        max_length=30,
        title="紧急抢修小组成员",
        description="员工姓名；不填则由技术负责人、专家组和一名工程师组成",
    )

    _blank_reason = field_validator("handover_reason", mode="before")(blank_none)

    @field_validator("found_by", mode="before")
    @classmethod
    def _found_by(cls, value: Any) -> Any:
        # the run form (deployments.run_forms) offers the Chinese words; the flow keeps the keys
        return next((key for key, words in FOUND_BY_ZH.items() if words == value), value)

    @field_validator("tolerance_hours", mode="before")
    @classmethod
    def _tolerance(cls, value: Any) -> Any:
        # the run form's 0 (or nothing) means: as the contract says
        return None if value in (0, "", None) else value

    @field_validator("customer", "reported_by", "description")
    @classmethod
    def _stripped(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _from_form_or_repair(self) -> AccidentRequest:
        if self.parent_case_id is None:
            missing = [
                label
                for label, value in (
                    ("客户", self.customer),
                    ("报告人", self.reported_by),
                    ("事故描述", self.description),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    "请填写：" + "、".join(missing) + " / required unless handed over from a repair"
                )
        return self


def _fill_from_repair(session: Session, request: AccidentRequest) -> tuple[AccidentRequest, Case | None]:
    """A hand-over names only the repair: the accident takes its customer, site, device and text."""
    if request.parent_case_id is None:
        return request.model_copy(update={"severity": request.severity or 1}), None
    parent = session.get(Case, request.parent_case_id)
    if parent is None:
        raise IntakeError(f"维修单 {request.parent_case_id} 不存在 / no repair case {request.parent_case_id}")
    customer = session.get(Customer, parent.customer_id)
    site = session.get(Site, parent.site_id) if parent.site_id else None
    device = session.get(Device, parent.device_id) if parent.device_id else None
    filled = request.model_copy(
        update={
            "customer": request.customer or (customer.code if customer else None),
            "site": request.site or (site.name if site else None),
            "device": request.device or (device.serial if device else None),
            "reported_by": request.reported_by or parent.reported_by or "维修转入",
            "description": request.description or parent.description,
            "severity": request.severity or parent.severity or 1,
            "found_by": "repair",
            "lead_on_site": True,  # the repair's engineers are on site already
        }
    )
    return filled, parent


# The roles an accident needs at intake (the shared steps look them up in case.data["team"]).
ACCIDENT_ROLES = (
    Role.DISPATCHER,
    Role.TECHNICAL_LEAD,
    Role.ENGINEER,
    Role.TECHNICAL_DIRECTOR,
    Role.COORDINATOR,
    Role.GENERAL_MANAGER,
    Role.PARTS_KEEPER,
)


@step("open-accident", title="事故立案 / open the accident")
def open_accident(
    request: AccidentRequest,
    now: datetime,
    flow_run_id: str | None = None,
    entered_at: datetime | None = None,
) -> int:
    """Open the accident case (from the form or by hand-over from a repair); idempotent per run.
    Raises IntakeError (nothing written) for a request that cannot be taken."""
    with session_scope() as session:
        request, parent = _fill_from_repair(session, request)
        _staff_named(session, request.team)  # a misspelt team member is an intake error, not a later failure
        case = open_case(
            session,
            request,
            kind=CaseKind.ACCIDENT,
            now=now,
            flow_run_id=flow_run_id,
            team_roles=ACCIDENT_ROLES,
            entered_at=entered_at,
        )
        assert case.id is not None
        if case.data.get("started_at"):  # this run opened it already (a replay)
            return case.id
        contract = session.get(Contract, case.contract_id) if case.contract_id else None
        hours = rules.tolerance_hours(
            request.tolerance_hours, contract.restore_tolerance_hours if contract else None
        )
        _set(
            case,
            now,
            found_by=request.found_by,
            started_at=case.reported_at.isoformat(),
            tolerance_hours=hours,
            lead_on_site=request.lead_on_site,
            stage="team",
            team_names=list(request.team),
        )
        append_event(
            session,
            case.id,
            "accident_opened",
            at=case.reported_at,
            actor=case.reported_by,
            data={"severity": case.severity, "tolerance_hours": hours, "found_by": request.found_by},
            key="accident-opened",
        )
        if parent is not None:
            _take_over_history(session, parent, case, now, request.handover_reason)
        _start_restore_clock(session, case, case.reported_at)
        _announce(session, case, now)
        return case.id


def _take_over_history(session: Session, parent: Case, case: Case, now: datetime, reason: str | None) -> None:
    """The accident carries the repair's history: a copy of its events, and links both ways."""
    history = session.exec(
        select(Event).where(Event.case_id == parent.id).order_by(col(Event.at), col(Event.id))
    ).all()
    # the repair's history up to the hand-over (its "linked case opened" entry is this accident itself)
    lines = [
        {"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "data": e.data}
        for e in history
        if e.key != f"linked:{case.id}"
    ]
    append_event(
        session,
        case.id,  # type: ignore[arg-type]
        "handed_over_from_repair",
        at=now,
        actor="技术总监",
        data={"repair": parent.number, "repair_id": parent.id, "reason": reason or "", "history": lines},
        key="handover",
    )
    append_event(
        session,
        parent.id,  # type: ignore[arg-type]
        "handed_over_to_accident",
        at=now,
        actor="技术总监",
        data={"accident": case.number, "accident_id": case.id, "reason": reason or ""},
        key=f"handover-to-accident-{case.id}",
    )


def _start_restore_clock(session: Session, case: Case, started_at: datetime) -> None:
    """Start the restore clock; its due time also fixes when a standby machine must go out."""
    contract = session.get(Contract, case.contract_id) if case.contract_id else None
    site = session.get(Site, case.site_id) if case.site_id else None
    clock = start_clock(
        session,
        case.id,  # type: ignore[arg-type]
        "restore",
        started_at=started_at,
        severity=case.severity or 1,
        contract=contract,
        site=site,
    )
    if clock.due_at is not None:
        _set(case, case.updated_at, restore_due_at=clock.due_at.isoformat())


def _announce(session: Session, case: Case, now: datetime) -> None:
    """Step 1: the lead goes at once (the director coordinates if already on site); the centre
    informs the coordinator, who lines up business resources."""
    lead = first_with_role(session, Role.TECHNICAL_LEAD)
    director = first_with_role(session, Role.TECHNICAL_DIRECTOR)
    coordinator = first_with_role(session, Role.COORDINATOR)
    if case.data.get("lead_on_site"):
        _queue(
            session,
            case,
            [director],
            "accident_opened",
            "opened:director",
            now,
            recipient_role="技术总监",
            instruction="技术负责人已在现场，请协调公司最优资源支援。",
        )
        _queue(
            session,
            case,
            [lead],
            "accident_opened",
            "opened:lead",
            now,
            recipient_role="项目技术负责人",
            instruction="请留在现场，组建紧急抢修小组。",
        )
    else:
        _queue(
            session,
            case,
            [lead],
            "accident_opened",
            "opened:lead",
            now,
            recipient_role="项目技术负责人",
            instruction="请立即赶赴现场，组建紧急抢修小组。",
        )
        _queue(
            session,
            case,
            [director],
            "accident_opened",
            "opened:director",
            now,
            recipient_role="技术总监",
            instruction="技术负责人正赶赴现场，请关注并准备审批事故处理方案。",
        )
    _queue(
        session,
        case,
        [coordinator],
        "accident_opened",
        "opened:coordinator",
        now,
        recipient_role="项目总协调人",
        instruction="您是本次事故与客户的唯一联系人，请协调业务资源并联系客户。",
    )


# --- step 2: the emergency accident team ----------------------------------------------------


@step("form-team", title="组建紧急抢修小组")
def form_team(case_id: int, now: datetime) -> dict[str, Any]:
    """Form the emergency accident team (named people and roles); the coordinator is the customer's one contact."""
    with session_scope() as session:
        case = _case(session, case_id)
        formed = form_expert_team(session, case, now)
        if formed is None:
            return {"team": case.data["accident_team"], "coordinator": case.data["coordinator"]}
        _set(case, now, stage="plan")
        case.move_to(CaseStatus.HANDLING, now)
        return formed


def form_expert_team(session: Session, case: Case, now: datetime) -> dict[str, Any] | None:
    """The emergency team (紧急抢修小组) formed and named on the case: the accident's step 2, and the
    escalation's level 3 on any case (tasks.escalation). None when the case has its team already."""
    if case.data.get("accident_team"):
        return None
    lead = first_with_role(session, Role.TECHNICAL_LEAD)
    coordinator = first_with_role(session, Role.COORDINATOR)
    named = _staff_named(session, case.data.get("team_names") or [])
    members = [(lead, "组长（项目技术负责人）")]
    if named:
        members += [(p, _team_role(p)) for p in named if p.id != lead.id]
    else:
        members += [(p, "专家（紧急抢修小组）") for p in staff_with_role(session, Role.EXPERT)]
        members += [(p, "服务工程师") for p in staff_with_role(session, Role.ENGINEER)[:1]]
    team = [
        rules.TeamMember(staff_id=int(p.id), name=p.name, role=r).model_dump()  # type: ignore[arg-type]
        for p, r in members
    ]
    coord = {"staff_id": coordinator.id, "name": coordinator.name}
    # "team" (role → staff id) belongs to the shared steps; the named accident team is kept apart.
    _set(case, now, accident_team=team, coordinator=coord)
    append_event(
        session,
        int(case.id),  # type: ignore[arg-type]
        "team_formed",
        at=now,
        actor=lead.name,
        data={"team": team, "coordinator": coordinator.name, "size": len(team)},
        key="team",
    )
    for member, (person, _role) in zip(team, members, strict=True):
        _queue(
            session,
            case,
            [person],
            "accident_team",
            f"team:{person.id}",
            now,
            member=member,
            team=team,
            coordinator=coordinator.name,
        )
    return {"team": team, "coordinator": coord}


def _team_role(person: Staff) -> str:
    return (
        "、".join(ROLE_LABELS_ZH.get(Role(r), r) for r in person.roles if r in Role.__members__.values())
        or "成员"
    )


# --- plans and their tests --------------------------------------------------------------------


@step("record-plan", title="登记事故处理方案", key="v{version}")
def record_plan(
    case_id: int, version: int, payload: dict[str, Any], by: str, at: datetime, reason: str = ""
) -> dict[str, Any]:
    """Validate and store plan version `version`; returns the plan and its rendered text, or
    `{"error": ...}` naming what is missing (nothing stored: the lead is asked again)."""
    try:
        plan = rules.plan_from_form(payload)
    except rules.PlanError as exc:
        return {"version": version, "error": str(exc)}
    with session_scope() as session:
        case = _case(session, case_id)
        ctx: dict[str, Any] = {
            "version": version,
            "plan": plan.model_dump(),
            "total_minutes": plan.total_minutes,
            "reason": reason,
            "case": case_context(session, case),
        }
        text = render("accident/plan", fmt="txt", **ctx)
        html = render("accident/plan", fmt="html", **ctx)
        plans = dict(case.data.get("plans") or {})
        plans[str(version)] = {"plan": plan.model_dump(), "by": by, "at": at.isoformat(), "reason": reason}
        _set(case, at, plans=plans, plan_version=version, stage="approval")
        append_event(
            session,
            case_id,
            "plan_submitted",
            at=at,
            actor=by,
            data={"version": version, "reason": reason, "needs_testing": plan.needs_testing},
            key=f"plan-v{version}",
        )
        return {
            "version": version,
            "plan": plan.model_dump(),
            "text": text,
            "html": html,
            "needs_testing": plan.needs_testing,
        }


@step("set-stage", title="事故处理阶段 / accident stage", key="{stage}")
def set_stage(case_id: int, stage: str, at: datetime) -> str:
    """Where the accident stands (shown in the hourly updates): one of STAGE_ZH."""
    if stage not in STAGE_ZH:
        raise ValueError(f"unknown accident stage {stage!r}")
    with session_scope() as session:
        _set(_case(session, case_id), at, stage=stage)
    return stage


@step("record-test-result", title="登记方案测试结果", key="v{version}")
def record_test_result(case_id: int, version: int, passed: bool, note: str, by: str, at: datetime) -> bool:
    """Record the director-arranged test of plan `version`."""
    with session_scope() as session:
        case = _case(session, case_id)
        _set(case, at, stage="customer" if passed else "plan")
        append_event(
            session,
            case_id,
            "plan_test_passed" if passed else "plan_test_failed",
            at=at,
            actor=by,
            data={"version": version, "note": note},
            key=f"plan-test-v{version}",
        )
        return passed


@step("window-expired", title="检查客户可容忍时间")
def window_expired(case_id: int, at: datetime) -> bool:
    """Whether the customer's tolerated window is over at `at` without a working plan."""
    with session_scope() as session:
        case = _case(session, case_id)
        ctx = case_context(session, case)
        return rules.window_expired(ctx["started_at"], float(case.data["tolerance_hours"]), at)


@step("start-vendor-support", title="启动原厂商支持", key="{attempt}")
def start_vendor_support(case_id: int, attempt: int, reason: str, at: datetime) -> bool:
    """The director starts vendor support: the vendor contact is told, the event recorded. The first
    call, made because the window closed, dates from the window's close (when the keeper calls it)."""
    with session_scope() as session:
        case = _case(session, case_id)
        if not case.data.get("vendor_engaged_at"):
            at = min(at, _window_closes(case))
        return request_vendor_support(session, case, attempt, reason, at)


def _window_closes(case: Case) -> datetime:
    started = _parse(case.data.get("started_at")) or case.reported_at
    return rules.window_closes_at(
        started, float(case.data.get("tolerance_hours") or rules.DEFAULT_TOLERANCE_HOURS)
    )


def request_vendor_support(session: Session, case: Case, attempt: int, reason: str, at: datetime) -> bool:
    """Record vendor-support call `attempt` (once per attempt) and tell the vendor and the director."""
    director = first_with_role(session, Role.TECHNICAL_DIRECTOR)
    coordinator = first_with_role(session, Role.COORDINATOR)
    vendors = staff_with_role(session, Role.VENDOR)
    key = f"vendor-support-{attempt}"
    if _has_event_key(session, case.id, key):  # type: ignore[arg-type]
        return False
    if not case.data.get("vendor_engaged_at"):
        _set(case, at, vendor_engaged_at=at.isoformat())
    append_event(
        session,
        case.id,  # type: ignore[arg-type]
        "vendor_support_started",
        at=at,
        actor=director.name,
        data={"attempt": attempt, "reason": reason, "vendors": [v.name for v in vendors]},
        key=key,
    )
    plans_tried = len(case.data.get("plans") or {})
    for person in [*vendors, director]:
        _queue(
            session,
            case,
            [person],
            "accident_vendor_support",
            key,
            at,
            urgent=True,
            who=person.name,
            director=director.name,
            coordinator=coordinator.name,
            attempt=attempt,
            reason=reason,
            plans_tried=plans_tried,
        )
    return True


def send_due_vendor_support(now: datetime) -> int:
    """Keeper step: an accident still without a working plan when the customer's tolerated window
    closes gets vendor support at once, in the director's name — not only when a plan fails."""
    started = 0
    with session_scope() as session:
        for case in _active_accidents(session):
            # a plan approved (and tested) that is with the customer or being carried out is a plan
            # within the window (§3 step 3); if it then fails out of the window the flow calls the vendor
            if case.data.get("vendor_engaged_at") or case.data.get("stage") in WORKING_PLAN_STAGES:
                continue
            closes = _window_closes(case)
            if now >= closes and request_vendor_support(
                session,
                case,
                1,
                f"客户可容忍时间（{case.data.get('tolerance_hours')} 小时）内没有恢复业务的方案",
                closes,
            ):
                started += 1
    return started


# --- execution -------------------------------------------------------------------------------


@step("record-execution", title="登记方案实施结果", key="v{version}")
def record_execution(case_id: int, version: int, result: str, note: str, by: str, at: datetime) -> str:
    """Record how executing plan `version` went: restored, partial or failed."""
    if result not in rules.EXECUTION_RESULT_ZH:
        raise ValueError(f"未知的实施结果 {result!r} / unknown result (restored, partial, failed)")
    with session_scope() as session:
        case = _case(session, case_id)
        append_event(
            session,
            case_id,
            "execution_result",
            at=at,
            actor=by,
            data={
                "version": version,
                "result": result,
                "result_zh": rules.EXECUTION_RESULT_ZH[result],
                "note": note,
            },
            key=f"execution-v{version}",
        )
        if result != "restored":
            _set(case, at, stage="plan")
            return result
        # updates due before the restore that a late keeper has not sent yet go out now, then they stop
        _progress_updates(session, case, at, at)
        _set(case, at, restored_at=at.isoformat(), stage="restored", final_plan_version=version)
        case.move_to(CaseStatus.RESTORED, at)
        append_event(session, case_id, "restored", at=at, actor=by, data={"version": version}, key="restored")

        stop_clock(session, case_id, "restore", at=at)
        started = case_context(session, case)["started_at"]
        coordinator = first_with_role(session, Role.COORDINATOR)
        duration = _duration_zh(at - started)
        recipients: list[Any] = [coordinator, first_with_role(session, Role.TECHNICAL_DIRECTOR)]
        recipients += customer_contacts(session, case.customer_id, primary_only=True)
        for person in recipients:
            _queue(
                session,
                case,
                [person],
                "accident_restored",
                "restored",
                at,
                who=person.name,
                at=at,
                version=version,
                duration=duration,
            )
        return result


@step("call-director-on-site", title="技术总监到场", key="{attempt}")
def call_director_on_site(
    case_id: int, attempt: int, version: int, result: str, note: str, at: datetime
) -> None:
    """Failed or partial: the director comes on site and the team looks for another plan."""
    with session_scope() as session:
        case = _case(session, case_id)
        director = first_with_role(session, Role.TECHNICAL_DIRECTOR)
        append_event(
            session,
            case_id,
            "director_on_site",
            at=at,
            actor=director.name,
            data={"attempt": attempt, "version": version},
            key=f"director-on-site-{attempt}",
        )
        _queue(
            session,
            case,
            [director],
            "accident_director_on_site",
            f"director-on-site-{attempt}",
            at,
            urgent=True,
            who=director.name,
            version=version,
            result_zh=rules.EXECUTION_RESULT_ZH.get(result, result),
            note=note,
        )


@step("request-standby-machine", title="启用备机")
def request_standby_machine(case_id: int, reason: str, at: datetime, actor: str = "技术总监") -> bool:
    """A standby machine of the same class replaces the failed system; once per accident."""
    with session_scope() as session:
        return request_standby(session, _case(session, case_id), reason, at, actor)


def request_standby(session: Session, case: Case, reason: str, at: datetime, actor: str) -> bool:
    if has_event(session, case.id, "standby_machine_requested"):  # type: ignore[arg-type]
        return False
    append_event(
        session,
        case.id,  # type: ignore[arg-type]
        "standby_machine_requested",
        at=at,
        actor=actor,
        data={"reason": reason},
        key="standby",
    )
    coordinator = first_with_role(session, Role.COORDINATOR)
    people = staff_with_role(session, Role.VENDOR) + staff_with_role(session, Role.PARTS_KEEPER)
    people.append(coordinator)
    for person in people:
        _queue(
            session,
            case,
            [person],
            "accident_standby",
            "standby",
            at,
            urgent=True,
            who=person.name,
            reason=reason,
            coordinator=coordinator.name,
        )
    return True


def _has_event_key(session: Session, case_id: int, key: str) -> bool:
    return (
        session.exec(select(Event.id).where(Event.case_id == case_id, Event.key == key)).first() is not None
    )


def has_event(session: Session, case_id: int, kind: str) -> bool:
    return (
        session.exec(select(Event.id).where(Event.case_id == case_id, Event.kind == kind)).first() is not None
    )


def _count_events(session: Session, case_id: int, kind: str) -> int:
    return int(
        session.exec(
            select(func.count()).select_from(Event).where(Event.case_id == case_id, Event.kind == kind)
        ).one()
    )


def _duration_zh(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} 小时 {minutes % 60} 分钟"


# --- keeper steps: hourly updates, the vendor's daily report, the automatic standby ----------


def _active_accidents(session: Session) -> list[Case]:
    return list(
        session.exec(
            select(Case)
            .where(Case.kind == CaseKind.ACCIDENT, col(Case.status).in_(ACTIVE))
            .order_by(col(Case.id))
        ).all()
    )


def _status_lines(session: Session, case: Case) -> dict[str, Any]:
    vendor_at = _parse(case.data.get("vendor_engaged_at"))
    return {
        "stage": STAGE_ZH.get(case.data.get("stage", ""), case.data.get("stage", "")),
        "plan_version": f"第 {case.data['plan_version']} 版" if case.data.get("plan_version") else "编写中",
        "vendor": "已启动" if vendor_at else "未启动",
        "standby": "已启用" if has_event(session, case.id, "standby_machine_requested") else "未启用",  # type: ignore[arg-type]
    }


def send_progress_updates(now: datetime) -> int:
    """Keeper step: every full hour of an unrestored accident, the coordinator and the customer get an update."""
    with session_scope() as session:
        return sum(_progress_updates(session, case, now, now) for case in _active_accidents(session))


def _progress_updates(session: Session, case: Case, until: datetime, now: datetime) -> int:
    """Send the hourly updates due up to `until` that are not sent yet (a re-arming timer: the
    next one is due an hour after the last; a keeper that was down catches up, each once)."""
    started = _parse(case.data.get("started_at")) or case.reported_at
    done = _count_events(session, case.id, "progress_update")  # type: ignore[arg-type]
    due = rules.periods_due(started, until, rules.UPDATE_INTERVAL)[done:]
    if not due:
        return 0
    coordinator = first_with_role(session, Role.COORDINATOR)
    people: list[Any] = [coordinator, *customer_contacts(session, case.customer_id, primary_only=True)]
    status = _status_lines(session, case)
    for n in due:
        at = rules.period_at(started, n, rules.UPDATE_INTERVAL)
        append_event(
            session,
            case.id,  # type: ignore[arg-type]
            "progress_update",
            at=at,
            actor="system",
            data={"n": n, **status},
            key=f"progress-{n}",
        )
        for person in people:
            _queue(
                session,
                case,
                [person],
                "accident_progress",
                f"progress-{n}",
                now,
                who=person.name,
                n=n,
                at=at,
                coordinator=coordinator.name,
                **status,
            )
    return len(due)


def send_vendor_daily_reports(now: datetime) -> int:
    """Keeper step: while vendor support is engaged, the vendor gets a progress report every day."""
    sent = 0
    with session_scope() as session:
        for case in _active_accidents(session):
            engaged = _parse(case.data.get("vendor_engaged_at"))
            if engaged is None:
                continue
            done = _count_events(session, case.id, "vendor_daily_report")  # type: ignore[arg-type]
            due = rules.periods_due(engaged, now, rules.VENDOR_REPORT_INTERVAL)[done:]
            if not due:
                continue
            started = _parse(case.data.get("started_at")) or case.reported_at
            vendors = staff_with_role(session, Role.VENDOR)
            status = _status_lines(session, case)
            recent = [
                _event_text(e)
                for e in session.exec(
                    select(Event)
                    .where(Event.case_id == case.id, Event.kind != "progress_update")
                    .order_by(col(Event.at).desc(), col(Event.id).desc())
                    .limit(5)
                ).all()
            ]
            for day in due:
                at = rules.period_at(engaged, day, rules.VENDOR_REPORT_INTERVAL)
                append_event(
                    session,
                    case.id,  # type: ignore[arg-type]
                    "vendor_daily_report",
                    at=at,
                    actor="system",
                    data={"day": day},
                    key=f"vendor-daily-{day}",
                )
                for vendor in vendors:
                    _queue(
                        session,
                        case,
                        [vendor],
                        "accident_vendor_daily",
                        f"vendor-daily-{day}",
                        now,
                        who=vendor.name,
                        day=day,
                        at=at,
                        elapsed_hours=int((at - started).total_seconds() // 3600),
                        recent=recent,
                        **status,
                    )
                sent += 1
    return sent


def send_due_standby(now: datetime) -> int:
    """Keeper step: once half of the contracted restore time has passed unrestored, a standby machine goes out."""
    sent = 0
    with session_scope() as session:
        for case in _active_accidents(session):
            started = _parse(case.data.get("started_at")) or case.reported_at
            restore_due = _parse(case.data.get("restore_due_at"))
            if restore_due is None or not rules.standby_needed(started, restore_due, now):
                continue
            at = rules.standby_due_at(started, restore_due)
            if request_standby(session, case, "已过合同约定恢复时间的一半，仍未恢复", at, "system"):
                sent += 1
    return sent


def _event_text(event: Event) -> str:
    return event_text(event.kind, event.data)


def event_text(kind: str, data: dict[str, Any] | None) -> str:
    """The Chinese history line of one event (of this case, or copied from a repair): never the raw kind."""
    template = EVENT_TEXT_ZH.get(kind)
    if template is None:
        return EVENT_TEXT_FALLBACK_ZH
    values = data or {}
    fields = {k: v for k, v in values.items() if v not in (None, "") and not isinstance(v, (dict, list))}
    if kind.startswith("clock."):
        fields["clock_zh"] = CLOCK_LABELS_ZH.get(str(fields.get("clock", "")), "服务时限")
    if (
        kind == "clock.relaid"
        and fields.get("verdict")
        and fields.get("verdict") != fields.get("verdict_before")
    ):
        # a stopped clock judged again: say what it is now
        return (
            EVENT_TEXT_ZH[kind].format_map(fields)
            + "，判定改为"
            + VERDICT_ZH.get(str(fields["verdict"]), "已停止")
        )
    if kind == "report_issued":
        fields["report_zh"] = REPORT_TITLES_ZH.get(str(fields.get("kind", "")), "报告")
    if "decision" in fields:
        fields["decision_zh"] = DECISION_ZH.get(str(fields["decision"]), "已答复")
    if kind == "linked_case_opened":
        fields["kind_zh"] = CASE_KIND_ZH.get(str(fields.get("kind", "")), "工单")
    try:
        return template.format_map(fields)
    except (KeyError, IndexError, ValueError):
        # a field left empty: the text before it, with "—" for what is still missing
        head = template.split("：")[0]
        return head.format_map(_Blank(fields))


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "—"


def accident_history(session: Session, case_id: int) -> list[dict[str, Any]]:
    """The accident's history for its report, in time order: the repair's events it carries, then its own."""
    lines: list[dict[str, Any]] = []
    for event in session.exec(
        select(Event).where(Event.case_id == case_id).order_by(col(Event.at), col(Event.id))
    ).all():
        if event.kind == "handed_over_from_repair":
            for old in event.data.get("history", []):
                lines.append(
                    {
                        "at": datetime.fromisoformat(old["at"]),
                        "text": f"[维修单] {event_text(old['kind'], old.get('data'))}",
                        "kind": old["kind"],
                    }
                )
        if event.kind in ("progress_update", "vendor_daily_report"):
            continue
        lines.append({"at": event.at, "text": _event_text(event), "kind": event.kind})
    return sorted(lines, key=lambda line: line["at"])  # stable: same-moment lines keep the log's order


# --- reports, review meeting, GM sign-off, archive -------------------------------------------


@step("accident-report-context", title="事故报告所需事实 / accident report facts")
def accident_report_context(case_id: int) -> dict[str, Any]:
    """What the accident service report and the summary show besides the case facts."""
    with session_scope() as session:
        case = _case(session, case_id)
        ctx = case_context(session, case)
        restored = _parse(case.data.get("restored_at"))
        final = str(case.data.get("final_plan_version") or case.data.get("plan_version") or "")
        plan = (case.data.get("plans") or {}).get(final)
        vendor_at = _parse(case.data.get("vendor_engaged_at"))
        standby = session.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == "standby_machine_requested")
        ).first()
        team = case.data.get("accident_team") or []
        return {
            "started_at": ctx["started_at"],
            "restored_at": restored,
            "duration": _duration_zh(restored - ctx["started_at"]) if restored else "未恢复",
            "parent": ctx["parent"],
            "severity_text": ctx["severity_text"],
            "team": team,
            # the provider's signature row of the report: the team's leader (form_team puts the lead first)
            "engineer": f"{team[0]['name']}（紧急抢修小组组长）" if team else "紧急抢修小组",
            "coordinator": (case.data.get("coordinator") or {}).get("name", ""),
            "vendor": f"{vendor_at:%Y-%m-%d %H:%M} UTC 启动" if vendor_at else "未启动",
            "standby": f"已启用（{standby.data.get('reason', '')}）" if standby else "未启用",
            "updates": _count_events(session, case_id, "progress_update"),
            "history": [
                {"at": line["at"], "text": line["text"]} for line in accident_history(session, case_id)
            ],
            "final_plan": plan["plan"] if plan else None,
            "final_version": int(final) if final else None,
        }


@step("record-review", title="记录技术评审会议 / record the review meeting", key="v{version}")
def record_review(
    case_id: int, version: int, payload: dict[str, Any], by: str, at: datetime, previous_comment: str = ""
) -> dict[str, Any]:
    """The director's record of the technical review meeting, issued as the written report to the GM."""
    review = {
        "participants": [
            p.strip() for p in str(payload.get("participants", "")).replace("，", ",").split(",") if p.strip()
        ],
        "conclusion": str(payload.get("conclusion", "")).strip(),
        "actions": str(payload.get("actions", "")).strip(),
    }
    if not review["conclusion"] or not review["participants"]:
        raise ValueError("评审记录须写明参会人员和结论 / the review needs participants and a conclusion")
    with session_scope() as session:
        _case(session, case_id)
        gm = first_with_role(session, Role.GENERAL_MANAGER)
        report = issue_report(
            session,
            case_id,
            "accident_review",
            template="accident/review",
            context={
                "review": review,
                "director": by,
                "gm": gm.name,
                "held_at": at,
                "previous_comment": previous_comment,
            },
            now=at,
            by=by,
            version=version,
        )
        append_event(
            session,
            case_id,
            "review_meeting_held",
            at=at,
            actor=by,
            data={"version": version, "report_id": report.id, **review},
            key=f"review-v{version}",
        )
        return {
            "report_id": report.id,
            "content": report.content,
            "conclusion": review["conclusion"],
            "gm_id": gm.id,
        }


@step("review-returned", title="总经理退回评审报告 / GM returns the review", key="v{version}")
def review_returned(case_id: int, version: int, gm: str, comment: str, at: datetime) -> None:
    """The GM did not sign: recorded; the director is asked for the next version (by the flow's form)."""
    with session_scope() as session:
        _case(session, case_id)
        append_event(
            session,
            case_id,
            "gm_rejected",
            at=at,
            actor=gm,
            data={"version": version, "comment": comment},
            key=f"gm-rejected-v{version}",
        )


@step("gm-signed-off", title="总经理签批 / GM signs off", key="v{version}")
def gm_signed_off(case_id: int, version: int, gm: str, at: datetime) -> None:
    """The GM signed the review report; the director and the coordinator are told it will be archived."""
    with session_scope() as session:
        case = _case(session, case_id)
        append_event(
            session, case_id, "gm_signed_off", at=at, actor=gm, data={"version": version}, key="gm-signed-off"
        )
        for person in (
            first_with_role(session, Role.TECHNICAL_DIRECTOR),
            first_with_role(session, Role.COORDINATOR),
        ):
            _queue(
                session,
                case,
                [person],
                "accident_archived",
                "archived",
                at,
                urgent=False,
                who=person.name,
                gm=gm,
            )
