"""Benchmark: one full repair (solved remotely) with instant approvals — orchestrated vs direct.

- direct: the same task functions (`.fn`) called one after another against the same database,
  each approval requested and decided at once (no Prefect);
- orchestrated: the `repair` deployment run by a real local Prefect server and runner, a decider
  thread answering every approval the moment it appears and the keeper ticked at once for the
  callback timer (so the figure is Prefect's suspend / resume / replay cost, not people's).

Prints both and their ratio and writes bench/results/repair.json. `--quick`: one repair each.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

ANSWERS: dict[str, dict[str, Any]] = {
    "diagnosis": {"contacted_at": "2026-11-23 10:03", "fault_confirmed": "是", "result": "缓存策略被改，已恢复",
                  "command_log": "$ set cache policy", "solved_remotely": "是"},
    "fault-report": {"customer_engineer": "王先生", "symptoms": "告警", "business_impact": "变慢", "process": "远程恢复",
                     "cause": "策略被改", "solution": "恢复策略", "advice": "巡检时核对"},
    "written-account": {"account": "远程登录后恢复缓存策略，观察正常。"},
    "callback": {"customer_person": "王先生", "centre_confirmed": "是", **{k: "优" for k in (
        "response", "arrival", "fix_speed", "spare_parts", "one_visit", "follow_up", "attitude", "skill", "overall")},
                 "comments": ""},
}
DECISION = {"approval": "approved", "signature": "signed", "form": "submitted"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(n: int) -> dict[str, Any]:
    return {"customer": "BJYH", "site": "亦庄机房", "reported_by": f"bench {n}", "description": f"阵列告警 {n}",
            "severity": 3, "reported_at": (T0 + timedelta(minutes=n)).isoformat()}


def decide_pending(case_ids: set[int] | None, now: datetime, *, wake: bool) -> int:
    """Answer every pending approval (of these cases) at once, as the form pages would."""
    from sqlmodel import select

    from models.approvals import Approval, ApprovalStatus
    from models.db import session_scope
    from tasks.approvals import Approver, decide

    with session_scope() as s:
        rows = s.exec(select(Approval).where(Approval.status == ApprovalStatus.PENDING)).all()
    done = 0
    for row in rows:
        if case_ids is not None and row.case_id not in case_ids:
            continue
        who = (Approver("staff", row.approver_staff_ids[0]) if row.approver_staff_ids
               else Approver("contact", row.approver_contact_ids[0]))
        payload = ANSWERS.get(row.step, {}) if row.kind == "form" else {}
        result = decide(row.id, DECISION[row.kind], by=who, payload=payload, channel="link",  # type: ignore[arg-type]
                        now=max(now, row.created_at), wake=wake)
        done += result.recorded
    return done


def direct_repair(n: int) -> float:
    """The solved-remotely repair by calling the task functions directly, approvals decided at once."""
    from flows.repair import DiagnosisForm, FaultReportForm
    from flows.steps import AccountForm, CallbackForm, _form_spec
    from models.approvals import Approval
    from models.db import session_scope
    from tasks import cases, reports
    from tasks.approvals import request_approval

    started = time.perf_counter()
    now = T0 + timedelta(minutes=n)
    req = cases.RepairRequest.model_validate(request(n))
    case_id = cases.take_request.fn(req, now, f"direct-{n}-{time.time_ns()}")
    facts = cases.load_case.fn(case_id)
    for kind in ("first_contact", "remote_response", "restore"):
        cases.clock.fn(case_id, kind, "start", now)
    cases.notify.fn(case_id, "repair/opened", "opened", now, roles=["dispatcher", "technical_lead", "engineer"])
    cases.notify.fn(case_id, "repair/received", "received", now, customer=True)

    def ask(step: str, *, role: str | None = None, form: Any = None, kind: str = "form") -> Approval:
        staff = cases.assignees.fn(case_id, role) if role else []
        contacts = [] if role else [cases.contact_of.fn(case_id)]
        aid = request_approval.fn(case_id, step, 1, f"{facts['number']} {step}", facts["description"], kind=kind,
                                  approver_staff_ids=staff, approver_contact_ids=contacts, approver_role=role or "customer",
                                  expires_at=now + timedelta(days=3), now=now, form=_form_spec(form))
        decide_pending({case_id}, now, wake=False)
        with session_scope() as s:
            return s.get(Approval, aid)  # type: ignore[return-value]

    diag = ask("diagnosis", role="technical_lead", form=DiagnosisForm)
    cases.record.fn(case_id, "first_contact", now, diag.decided_by or "")
    cases.clock.fn(case_id, "first_contact", "stop", now)
    cases.clock.fn(case_id, "remote_response", "stop", now)
    cases.record.fn(case_id, "remote_diagnosis", now, diag.decided_by or "", diag.payload)
    cases.record.fn(case_id, "restored", now, diag.decided_by or "")
    cases.clock.fn(case_id, "restore", "stop", now)
    ctx = reports.report_context.fn(case_id, 1)
    doc = reports.issue.fn(case_id, "service_report", "repair/service_report", {
        **ctx, "solved_remotely": True, "diagnosis": "x", "command_log": "$ x", "plan": None, "work_done": "x",
        "parts_used": [], "maintenance": "", "further_problems": [], "engineer": "x", "corrections": []}, now)
    sig = ask("service-report-signature", kind="signature")
    reports.bind_signature.fn(doc["id"], sig.decided_by or "", sig.payload, now, cases.contact_of.fn(case_id))
    cases.notify.fn(case_id, "repair/done_sms", "done-sms", now, roles=["dispatcher"], context={"procedure": "故障维修"})
    for kind in ("callback", "written_account", "fault_report"):
        cases.clock.fn(case_id, kind, "start", now)
    fault = ask("fault-report", role="technical_lead", form=FaultReportForm)
    fr = reports.issue.fn(case_id, "fault_report", "repair/fault_report",
                          {**reports.report_context.fn(case_id, 2), **fault.payload, "engineer": "x"}, now)
    cases.clock.fn(case_id, "fault_report", "stop", now)
    cb = ask("callback", role="dispatcher", form=CallbackForm)
    cbr = reports.issue.fn(case_id, "callback_form", "common/callback_form",
                           {"callback": {**cb.payload, "by": "x", "at": now}, "scores": []}, now)
    cases.clock.fn(case_id, "callback", "stop", now)
    acc = ask("written-account", role="engineer", form=AccountForm)
    ar = reports.issue.fn(case_id, "written_account", "repair/written_account",
                          {"account": acc.payload.get("account", ""), "engineer": "x", "plan": None}, now)
    cases.clock.fn(case_id, "written_account", "stop", now)
    ask("final-approval", role="technical_director", kind="approval")
    reports.set_report_status.fn([doc["id"], fr["id"], cbr["id"], ar["id"]], "archived", now)
    cases.record.fn(case_id, "archived", now, "system", {}, key="archived", status="archived")
    return time.perf_counter() - started


class Stack:
    """A local Prefect server and a runner serving the deployments, like `aftercare up`."""

    def __init__(self, home: Path) -> None:
        from deployments.prefect_env import prefect_env
        from models.settings import Settings

        port = _free_port()
        settings = Settings(home=home, database_url=f"sqlite:///{home / 'aftercare.db'}", secret_key="bench",
                            public_base_url="http://bench", prefect_port=port)
        self.env = {**os.environ, **prefect_env(settings, api_url=f"http://127.0.0.1:{port}/api"),
                    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                    "PREFECT_LOGGING_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.home = home

    def start(self) -> None:
        import httpx

        log = (self.home / "server.log").open("ab")
        self.procs.append(subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                                            "127.0.0.1", "--port", self.env["PREFECT_API_URL"].split(":")[-1].split("/")[0]],
                                           env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        api = self.env["PREFECT_API_URL"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        log = (self.home / "runner.log").open("ab")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "deployments.serve"], env=self.env, cwd=ROOT,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def stop(self) -> None:
        import signal

        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)


def orchestrated_repair(n: int) -> float:
    """The `repair` deployment end to end, every approval answered at once, the timer ticked at once."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from sqlmodel import select

    from flows.clock_keeper import tick
    from models import Case
    from models.db import session_scope

    started = time.perf_counter()
    give_up = time.monotonic() + 120
    while True:
        if time.monotonic() > give_up:
            raise RuntimeError("the runner did not serve the repair deployment within 120 s (see runner.log)")
        try:
            run = run_deployment("repair/repair", parameters={"request": request(1000 + n)}, timeout=0, as_subflow=False)
            break
        except ObjectNotFound:  # the runner has not registered the deployment yet
            time.sleep(0.2)
            started = time.perf_counter()
    stop = threading.Event()
    case_ids: set[int] = set()

    def decider() -> None:
        loops = 0
        while not stop.is_set():
            loops += 1
            with session_scope() as s:
                case = s.exec(select(Case).where(Case.flow_run_id == str(run.id))).first()
            if case is not None:
                case_ids.add(case.id)  # type: ignore[arg-type]
                decide_pending(case_ids, T0 + timedelta(minutes=1000 + n), wake=True)
                if loops % 10 == 0:  # the keeper, twice a second: fires the callback timer, wakes missed resumes
                    tick(T0 + timedelta(days=3))
            time.sleep(0.05)

    thread = threading.Thread(target=decider, daemon=True)
    thread.start()
    deadline = time.monotonic() + 600
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run.id).state
            if state is not None and state.is_final():
                break
            if time.monotonic() > deadline:
                stop.set()
                raise RuntimeError(f"the repair run is still {state.name if state else '?'} after 600 s")
            time.sleep(0.1)
    stop.set()
    thread.join()
    if not state.is_completed():
        raise RuntimeError(f"the repair run ended {state.name}: {state.message}")
    if os.environ.get("AFTERCARE_BENCH_TRACE"):
        with get_client(sync_client=True) as client:
            states = client.read_flow_run_states(run.id)
        first = states[0].timestamp
        for st in states:
            print(f"  {(st.timestamp - first).total_seconds():7.2f}  {st.name}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI size: one repair each")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "repair.json"))
    args = parser.parse_args()
    runs = 1 if args.quick else 3

    # a Prefect of our own: nothing inherited from a caller's (e.g. the test session's server database)
    for key in [k for k in os.environ if k.startswith("PREFECT_")]:
        del os.environ[key]
    home = Path(tempfile.mkdtemp(prefix="aftercare-bench-repair-"))
    os.environ.update(AFTERCARE_HOME=str(home), AFTERCARE_DATABASE_URL=f"sqlite:///{home / 'aftercare.db'}",
                      AFTERCARE_SECRET_KEY="bench", AFTERCARE_PUBLIC_BASE_URL="http://bench")
    stack = Stack(home)
    for key, value in stack.env.items():
        if key.startswith("PREFECT_"):
            os.environ[key] = value
    from deployments.seed import seed_demo
    from models.db import migrate, session_scope

    migrate()
    with session_scope() as s:
        seed_demo(s, today=T0.date(), now=T0)

    direct_repair(0)  # warm-up: imports, template compilation
    direct = [direct_repair(n) for n in range(1, runs + 1)]
    stack.start()
    try:
        if not args.quick:
            orchestrated_repair(0)  # warm-up: the runner's first run
        orchestrated = [orchestrated_repair(n) for n in range(1, runs + 1)]
    finally:
        stack.stop()
    d, o = sum(direct) / runs, sum(orchestrated) / runs
    result = {"bench": "repair", "quick": args.quick, "runs": runs, "path": "solved remotely, 6 approvals, 1 timer",
              "direct_seconds": round(d, 3), "orchestrated_seconds": round(o, 3), "ratio": round(o / d, 1),
              "target_ratio": 3.0, "meets_target": o / d <= 3.0,
              "suspensions_per_repair": 7, "orchestrated_seconds_per_suspension": round(o / 7, 2),
              "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count()}
    print(f"repair, direct:        {d:.3f} s per repair")
    print(f"repair, orchestrated:  {o:.3f} s per repair (Prefect server + runner, 7 suspensions)")
    print(f"ratio:                 {o / d:.1f}x (target <= 3x: {'met' if o / d <= 3 else 'NOT met'})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
