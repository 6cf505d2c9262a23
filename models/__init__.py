"""SQLModel tables, the engine and sessions, and settings.

Importing this package registers every table on `SQLModel.metadata` (Alembic reads it).
"""

from models import (  # noqa: F401 - every table module, so the metadata is complete
    accounts,
    approvals,
    assets,
    cases,
    clocks,
    contracts,
    drill,
    inspection,
    leases,
    outbox,
    parties,
    reports,
    steps,
)
from models.assets import Device, SparePart, Stock, StockMove
from models.cases import Case, CaseKind, CaseStatus, Event, Incident, append_event
from models.contracts import (
    CalendarOverride,
    CalendarYear,
    Contract,
    ContractVersion,
    InspectionFrequency,
    ServiceHours,
    SeverityScheme,
)
from models.parties import Contact, Customer, Role, Site, Staff

__all__ = [
    "CalendarOverride",
    "CalendarYear",
    "Case",
    "CaseKind",
    "CaseStatus",
    "Contact",
    "Contract",
    "ContractVersion",
    "Customer",
    "Device",
    "Event",
    "Incident",
    "InspectionFrequency",
    "Role",
    "ServiceHours",
    "SeverityScheme",
    "Site",
    "SparePart",
    "Staff",
    "Stock",
    "StockMove",
    "append_event",
]
