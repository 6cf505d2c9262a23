"""SQLModel tables, the engine and sessions, and settings.

Importing this package registers every table on `SQLModel.metadata` (Alembic reads it).
"""

from models import assets, cases, contracts, parties  # noqa: F401
from models import reports  # noqa: F401
from models import inspection  # noqa: F401
from models import outbox  # noqa: F401
from models import clocks  # noqa: F401
from models import approvals  # noqa: F401
from models.assets import Device, SparePart, Stock, StockMove
from models.cases import Case, CaseKind, Event, Incident, append_event
from models.contracts import CalendarOverride, CalendarYear, Contract, InspectionFrequency, ServiceHours, SeverityScheme
from models.parties import Contact, Customer, Role, Site, Staff

__all__ = [
    "CalendarOverride",
    "CalendarYear",
    "Case",
    "CaseKind",
    "Contact",
    "Contract",
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
