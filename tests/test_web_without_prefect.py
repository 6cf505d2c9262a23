"""issue 26: the approval web imports no Prefect — not at start, not when a decision is recorded and
its run woken (plain REST: tasks.prefect_api). Prefect's client would cost it ~64 MB PSS."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A fresh interpreter in which importing Prefect fails loudly: the web is imported, a director's
# approval is opened, decided through its link page (GET, then POST 批准) and the run woken.
SCRIPT = r"""
import importlib.abc, re, sys
from datetime import timedelta

class NoPrefect(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ImportError(f"the web imported {name}")
        return None

sys.meta_path.insert(0, NoPrefect())

from fastapi.testclient import TestClient
from sqlmodel import select

from models import Case, wallclock
from models.approvals import Approval
from models.db import session_scope
from models.outbox import Notification
from tasks.approvals import ApprovalRequest, open_approval
from web.app import create_app

now = wallclock.now()
with session_scope() as s:
    case = Case(kind="repair", customer_id=1, title="存储控制器告警", reported_at=now, created_at=now, updated_at=now)
    s.add(case)
    s.flush()
    row = open_approval(s, ApprovalRequest(
        case_id=case.id, step="director-approval", version=1, subject="解决方案", content="更换电源模块",
        approver_role="technical_director", expires_at=now + timedelta(days=3), now=now,
        flow_run_id="7c2c24ef-0321-472d-857c-c28fb963466f",
    ))
    approval_id = row.id
with session_scope() as s:
    body = s.exec(select(Notification.body).where(Notification.key.like(f"approval:{approval_id}:%"))).first()
token = re.search(r"/a/([A-Za-z0-9_.\-]+)", body).group(1)
web = TestClient(create_app())
page = web.get(f"/a/{token}")
assert page.status_code == 200, page.text
csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
done = web.post(f"/a/{token}", data={"csrf": csrf, "decision": "approved", "comment": "同意"})
assert done.status_code == 200 and "已记录" in done.text, done.text
with session_scope() as s:
    decided = s.get(Approval, approval_id)
    assert decided.decision == "approved" and decided.resumed_at is None  # Prefect unreachable: retried later
print("prefect modules:", sorted(m for m in sys.modules if m.split(".")[0] == "prefect"))
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_web_records_a_decision_and_wakes_its_run_without_importing_prefect(demo: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_API_URL"] = (
        f"http://127.0.0.1:{_closed_port()}/api"  # nobody there: the wake is retried later
    )
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prefect modules: []" in done.stdout, done.stdout
    assert "could not resume flow run" in done.stderr  # the wake was tried, over plain HTTP
