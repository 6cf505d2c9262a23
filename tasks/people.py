"""Who does a step: staff by role, the customer's contacts (PROCEDURES.md §1)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from models import Contact, Role, Staff
from models.parties import ROLE_LABELS_ZH
from tasks import channels  # noqa: F401  registers the address check on every person written


class NobodyForRole(LookupError):
    """No active staff member holds a role a step needs; the message names it."""


def staff_with_role(session: Session, role: Role | str) -> list[Staff]:
    """Active staff holding `role`, in a stable order (by id)."""
    people = session.exec(select(Staff).where(Staff.active == True).order_by(col(Staff.id))).all()  # noqa: E712
    return [p for p in people if p.has_role(role)]


def first_with_role(session: Session, role: Role | str) -> Staff:
    people = staff_with_role(session, role)
    if not people:
        label = ROLE_LABELS_ZH.get(Role(role), str(role))
        raise NobodyForRole(
            f"没有在岗的{label} / no active staff with role {role}: add one in the staff list"
        )
    return people[0]


def customer_contacts(session: Session, customer_id: int, *, primary_only: bool = False) -> list[Contact]:
    query = select(Contact).where(Contact.customer_id == customer_id)
    if primary_only:
        query = query.where(Contact.is_primary == True)  # noqa: E712
    return list(session.exec(query.order_by(col(Contact.is_primary).desc(), col(Contact.id))).all())
