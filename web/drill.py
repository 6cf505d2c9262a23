"""应急恢复方案 / the recovery plans page: every version of each system's emergency recovery plan of a
customer (issue 19 item 1: "every version kept and shown"), newest first, with why it was made and who
approved it — for staff after the login (`/drill/recovery-plans?customer=BJYH[&system=…]`).
Without a customer: the customers that have a plan, each a link."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from sqlmodel import col, select

from models import Customer
from models.db import session_scope
from models.drill import RecoveryPlan
from tasks.cases import IntakeError, find_customer
from web.pages import templates
from web.staff import StaffUser, require_staff

router = APIRouter()


@router.get("/drill/recovery-plans", response_class=HTMLResponse)
def recovery_plans_page(
    user: Annotated[StaffUser, Depends(require_staff())], customer: str = "", system: str = ""
) -> HTMLResponse:
    with session_scope() as session:
        context: dict[str, Any] = {"user": user, "customer": None, "systems": {}, "customers": []}
        if not customer.strip():
            context["customers"] = list(
                session.exec(
                    select(Customer)
                    .where(col(Customer.id).in_(select(RecoveryPlan.customer_id)))
                    .order_by(col(Customer.code))
                ).all()
            )
        else:
            try:
                found = find_customer(session, customer)
            except IntakeError as exc:
                html = templates.get_template("staff/refused.html.j2").render(
                    title="未知客户", message=str(exc)
                )
                return HTMLResponse(html, status_code=404)
            query = select(RecoveryPlan).where(RecoveryPlan.customer_id == found.id)
            if system.strip():
                query = query.where(RecoveryPlan.system == system.strip())
            systems: dict[str, list[RecoveryPlan]] = {}
            for plan in session.exec(
                query.order_by(col(RecoveryPlan.system), col(RecoveryPlan.version).desc())
            ).all():
                systems.setdefault(plan.system, []).append(plan)
            context |= {"customer": found, "systems": systems}
        html = templates.get_template("drill/recovery_plans.html.j2").render(**context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
