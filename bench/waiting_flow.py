"""The flow `bench/waiting.py` starts thousands of: ask for one approval, wait for it, finish."""

# No `from __future__ import annotations`: Prefect builds the parameter model from these
# annotations in the flow-run process, and real types need no name resolution there.
from datetime import datetime, timedelta
from typing import Any

from prefect import flow

from tasks.approvals import ApprovalRequest, await_approval, request_approval

STEP = "bench-approval"


@flow(name="bench-waiting", retries=0)
def bench_waiting(case_id: int, start: datetime) -> str:
    """一个等待审批的流程（基准测试用）."""
    approval_id = request_approval(
        ApprovalRequest(
            case_id=case_id,
            step=STEP,
            version=1,
            subject="基准测试方案",
            content="基准测试：更换电源模块，预计不中断业务。",
            approver_role="technical_director",
            expires_at=start + timedelta(days=7),
            now=start,
        )
    )
    return str(await_approval(approval_id, STEP, 1).decision)


def deployments() -> list[Any]:
    return [bench_waiting.to_deployment(name="bench-waiting")]
