"""The Prefect-UI forms of a waiting step: what a suspended run asks for when someone answers in
Prefect's UI instead of on the link page (`tasks.approvals.await_approval` suspends with them;
`decide` validates what comes back as it does a link's answer). Values are Chinese because people
pick them.

Apart from `tasks.approvals` because they build on Prefect's `RunInput`: only a flow run imports
this module, and the approval web, which imports `tasks.approvals` for `decide`, imports no Prefect
(issue 26).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from prefect.input import RunInput
from pydantic import Field, create_model

from models.approvals import UI_FIELDS, ApprovalKind
from models.forms import COMMENT_MAX, SIGNER_MAX, form_spec
from models.forms import FORMS as FORM_MODELS


class ApprovalForm(RunInput):
    """审批：批准、驳回或要求修改"""

    decision: Literal["批准", "驳回", "要求修改"] = Field(
        title="审批意见", description="批准 / 驳回 / 要求修改"
    )
    comment: str = Field(
        default="", title="说明", description="驳回或要求修改时请写明原因", max_length=COMMENT_MAX
    )
    approver: str = Field(
        title="审批人",
        min_length=1,
        max_length=SIGNER_MAX,
        description="审批人姓名，须为此事项的审批人之一（在此录入即代其录入，并通知本人）",
    )


class SignatureForm(RunInput):
    """客户签字确认或提出异议"""

    decision: Literal["签字确认", "提出异议"] = Field(title="确认结果", description="签字确认 / 提出异议")
    comment: str = Field(default="", title="意见", description="提出异议时请写明原因", max_length=COMMENT_MAX)
    approver: str = Field(
        title="签字人",
        min_length=1,
        max_length=SIGNER_MAX,
        description="签字人姓名，须为此事项指定的客户联系人（在此录入即代其录入，并通知本人）",
    )


class FormSubmission(RunInput):
    """填写表单"""

    decision: Literal["提交"] = Field(default="提交", title="操作")
    comment: str = Field(default="", title="备注", max_length=COMMENT_MAX)
    approver: str = Field(
        title="填写人",
        min_length=1,
        max_length=SIGNER_MAX,
        description="填写人姓名（在此录入即代其录入，并通知本人）",
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        title="表单内容",
        description="各字段的填写内容，按字段名填写；时间写成 2026-11-23 10:30（北京时间）",
    )


FORMS: dict[str, type[RunInput]] = {
    ApprovalKind.APPROVAL: ApprovalForm,
    ApprovalKind.SIGNATURE: SignatureForm,
    ApprovalKind.FORM: FormSubmission,
}


@cache
def ui_form(kind: str, form_name: str | None = None) -> type[RunInput]:
    """The Prefect-UI form a waiting step shows: for a registered form, its own fields with their
    Chinese labels (choices as choices, everything else as text) — `decide` validates them as it
    does a link's answer, so the UI form itself takes any text and never fails the run."""
    model = FORM_MODELS.get(form_name or "") if kind == ApprovalKind.FORM else None
    if model is None:
        return FORMS[kind]
    spec = form_spec(model)
    fields: dict[str, Any] = {
        "decision": (Literal["提交"], Field(default="提交", title="操作")),
        "approver": (
            str,
            Field(
                title="填写人",
                min_length=1,
                max_length=SIGNER_MAX,
                description="填写人姓名（在此录入即代其录入，并通知本人）",
            ),
        ),
        "comment": (str, Field(default="", title="备注", max_length=COMMENT_MAX)),
    }
    for f in spec["fields"]:
        if f["name"] in UI_FIELDS:
            raise ValueError(f"form {form_name}: field {f['name']!r} is taken by the approval form")
        if f.get("options"):
            fields[f["name"]] = (
                Literal[tuple(f["options"])] | None,
                Field(default=None, title=f["label"], description=f["help"]),
            )
        else:
            fields[f["name"]] = (
                str,
                Field(
                    default="",
                    title=f["label"] + ("（必填）" if f["required"] else ""),
                    description=f["help"],
                ),
            )
    return create_model(
        f"{model.__name__}Input",
        __base__=RunInput,
        __doc__=f"填写表单：{spec['title']}（在此提交即代填写人录入，并通知其本人）",
        **fields,
    )
