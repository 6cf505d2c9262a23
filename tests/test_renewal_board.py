"""The dispatcher's board says when a contract has lapsed (PROCEDURES.md §6 step 7): for 30 days after
a contract ended without renewal its customer's new requests are paid service, and the board lists it."""

from __future__ import annotations

from datetime import date

from fastapi.testclient import TestClient
from sqlmodel import select

from models import Contract
from models.db import session_scope
from tests.test_board import board_client  # noqa: F401 - the logged-in board of the demo data


def test_the_board_lists_a_contract_that_ended_without_renewal(board_client: TestClient) -> None:  # noqa: F811
    with session_scope() as s:
        contract = s.exec(select(Contract).where(Contract.code == "HT-2026-SJZY")).one()
        contract.end_date = date(2026, 11, 18)  # five days before the board's day (T0, 2026-11-23)
        s.add(contract)
    page = board_client.get("/")
    assert page.status_code == 200
    assert "合同已到期未续约（新请求按合同外有偿服务受理）" in page.text
    assert "石家庄某医院信息中心 · HT-2026-SJZY（2026-11-18 到期）" in page.text
    # one that ended long ago (the demo's third, 2026-03-31) is no news any more
    assert "HT-2026-TYDX" not in page.text
