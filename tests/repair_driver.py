"""Drive repair flows as people do: read the link a notification carried, open the page, post the form.

Used by the repair flow tests and the repair benchmark. Each action happens at a fixed moment the
caller passes (the pages' clock dependency is overridden), so clocks are met or breached exactly.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from models import Case, Event
from models.approvals import Approval, ApprovalStatus
from models.db import get_engine
from models.outbox import Notification


class RepairDriver:
    def __init__(self, harness: Any, client: Any) -> None:
        self.h = harness
        self.client = client

    # --- reading the record ---

    def session(self) -> Session:
        return Session(get_engine(self.h.db_url), expire_on_commit=False)

    def case_of_run(self, run_id: Any, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.session() as s:
                case = s.exec(select(Case).where(Case.flow_run_id == str(run_id))).first()
                if case is not None:
                    return int(case.id)  # type: ignore[arg-type]
            time.sleep(0.1)
        raise AssertionError(f"no case for run {run_id}: {self.h.state_name(run_id)}")

    def events(self, case_id: int) -> list[str]:
        with self.session() as s:
            return [
                e.kind for e in s.exec(select(Event).where(Event.case_id == case_id).order_by(col(Event.id)))
            ]

    def notifications(self, case_id: int) -> list[tuple[str, str]]:
        """(recipient name, template) of every outbox row of the case, in order."""
        with self.session() as s:
            rows = s.exec(
                select(Notification).where(Notification.case_id == case_id).order_by(col(Notification.id))
            )
            return [(n.recipient_name, n.template) for n in rows]

    def pending(self, case_id: int, step: str, run_id: Any = None, timeout: float = 90) -> Approval:
        """Wait for the step's pending approval (and, with run_id, for the run to be suspended on it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.session() as s:
                row = s.exec(
                    select(Approval)
                    .where(
                        Approval.case_id == case_id,
                        Approval.step == step,
                        Approval.status == ApprovalStatus.PENDING,
                    )
                    .order_by(col(Approval.version).desc())
                ).first()
            if row is not None and (run_id is None or self.h.state_name(run_id) == "Suspended"):
                return row
            if run_id is not None:
                state = self.h.read(run_id).state
                if state is not None and state.is_final():
                    raise AssertionError(f"run ended {state.name}: {state.message} (waiting for {step})")
            time.sleep(0.15)
        with self.session() as s:
            steps = [
                (a.step, a.version, a.status)
                for a in s.exec(select(Approval).where(Approval.case_id == case_id))
            ]
        raise AssertionError(
            f"no pending {step!r} for case {case_id}; approvals: {steps}; run: "
            f"{self.h.state_name(run_id) if run_id else '-'}"
        )

    def link_for(self, row: Approval) -> str:
        """The approval link as a notification carried it (asserts it was queued)."""
        with self.session() as s:
            bodies = [n.body for n in s.exec(select(Notification).where(Notification.case_id == row.case_id))]
        for body in bodies:
            for url in re.findall(r"https?://\S+/a/[A-Za-z0-9_.\-]+", body):
                token = url.rsplit("/a/", 1)[1]
                from tasks.links import verify_token

                try:
                    data = verify_token(token, "a", now=row.created_at)
                except Exception:  # noqa: BLE001 - a link of another approval or expired: not ours
                    continue
                if int(data["a"]) == row.id:
                    return url
        raise AssertionError(
            f"no notification carries a link to approval {row.id} ({row.step} v{row.version})"
        )

    # --- acting ---

    def act(
        self,
        case_id: int,
        step: str,
        decision: str,
        at: datetime,
        *,
        run_id: Any = None,
        fields: dict[str, str] | None = None,
        comment: str = "",
    ) -> Approval:
        """Open the link of the step's pending approval and post the decision, at `at`."""
        from web.approvals import clock
        from web.reports import page_now

        row = self.pending(case_id, step, run_id)
        path = "/a/" + self.link_for(row).rsplit("/a/", 1)[1]
        self.client.app.dependency_overrides[clock] = lambda: at
        self.client.app.dependency_overrides[page_now] = lambda: at
        page = self.client.get(path)
        assert page.status_code == 200, page.text[:500]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
        data = {"csrf": csrf, "decision": decision, "comment": comment}
        data.update({f"f_{k}": v for k, v in (fields or {}).items()})
        if decision == "signed":  # the page fills in the signer's name; the customer keeps it
            data["signer"] = re.search(r'name="signer" value="([^"]*)"', page.text)[1]  # type: ignore[index]
        answer = self.client.post(path, data=data)
        assert answer.status_code == 200, answer.text[:800]
        self.tick(at)  # the keeper runs all the time: it also wakes a run whose resume did not land
        return row

    def sign_on_report_page(
        self, case_id: int, step: str, at: datetime, *, name: str, run_id: Any = None
    ) -> None:
        """The customer follows the report link in the signature request and signs with a drawn signature."""
        from web.approvals import clock
        from web.reports import page_now

        row = self.pending(case_id, step, run_id)
        url = re.search(r"https?://\S+/reports/sign/\S+", row.content)[0]  # type: ignore[index]
        path = "/reports/sign/" + url.rsplit("/reports/sign/", 1)[1]
        self.client.app.dependency_overrides[clock] = lambda: at
        self.client.app.dependency_overrides[page_now] = lambda: at
        page = self.client.get(path)
        assert page.status_code == 200, page.text[:500]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
        content_hash = re.search(r'name="content_hash" value="([^"]+)"', page.text)[1]  # type: ignore[index]
        drawn = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
        answer = self.client.post(
            path,
            data={
                "csrf": csrf,
                "content_hash": content_hash,
                "signer_name": name,
                "method": "drawn",
                "image": drawn,
                "action": "sign",
            },
        )
        assert answer.status_code == 200 and "签字成功" in answer.text, answer.text[:800]
        self.tick(at)

    def tick(self, now: datetime, timeout: float = 60) -> dict[str, Any]:
        """The keeper at `now`, as it runs in production — all the time: the runs reach their waits
        first; a wake-up that met a run still suspending is tried again until every fired timer
        and decided approval has woken its run."""
        from flows.clock_keeper import tick

        self.h.settle()
        result = tick(now)
        deadline = time.monotonic() + timeout
        while self._unwoken() and time.monotonic() < deadline:
            time.sleep(0.3)
            tick(now)
        return result

    def _unwoken(self) -> bool:
        from models.approvals import Timer

        with self.session() as s:
            timer = s.exec(
                select(Timer.id).where(col(Timer.fired_at).is_not(None), col(Timer.resumed_at).is_(None))
            ).first()
            decided = s.exec(
                select(Approval.id).where(
                    col(Approval.decision).is_not(None),
                    col(Approval.flow_run_id).is_not(None),
                    col(Approval.resumed_at).is_(None),
                )
            ).first()
        return timer is not None or decided is not None

    def finish(self, run_id: Any, timeout: float = 90) -> Any:
        return self.h.wait(run_id, "Completed", timeout=timeout)
