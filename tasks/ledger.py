"""Steps replayed from our own ledger (DESIGN.md §2, "Replay from our own step ledger").

A flow that waits for a person exits and is started again from the top when the person acts; its
body is replayed. `@step(...)` makes a function a replayable step of that body:

- **A finished step returns its recorded result** — typed: pydantic models, dataclasses, enums,
  datetimes, ints, lists, dicts, tuples come back as they went in (`encode` / `decode`, a type tag
  per value) — without creating a Prefect task run and without touching the database: the run's
  ledger (`models.steps.StepRecord`) is read **once** per process, at the first step of the replay.
  So a wake-up costs the same at the first and the fiftieth wait, and each real step shows once in
  the Prefect UI (as a task run named after its ledger key).
- **A new step runs as a Prefect task** (logs, the UI) **and commits its effect and its ledger row
  in one transaction**: the step claims its row first, every `session_scope()` the step's code
  opens joins that transaction (`models.db.ambient_transaction`), and one commit ends it; on a
  busy database the whole transaction is rolled back and run again (`models.db.run_retrying`).
  A process killed before the commit leaves neither: the step runs again on the next replay.
  A process killed after it leaves both: the replay returns the result and repeats nothing.
  Steps whose effect is outside our database (starting another Prefect run, month-end batches
  that commit per customer) are declared `transactional=False`: they run first and record after;
  their own idempotency keys (Prefect's `idempotency_key`, unique rows) make a re-run after a crash
  between the two harmless.
- **Fresh reads** (`fresh=...`: has the approval been decided? has the timer fired?) run on every
  replay until they have an answer, inline (a read makes no task run); then the answer is recorded
  like any result. A "not yet" the run went on from (a refused Prefect-UI input, then the next
  attempt) is recorded with the next record, so a later replay takes the same path; only the
  "not yet" right before a suspend stays unrecorded, to be read again on the wake-up.

**Keys.** A step's key is `name[:own]#n`. `name` is the stable name given to `@step` (never the
function's source or module: an upgrade of aftercare while cases wait changes neither, and a
finished step is not repeated — Prefect's default cache key includes the task's source). `own` is
the step's own key, made from the arguments the flows already carry for that purpose (an approval
step and its version, an event key, a clock's kind and action); `n` counts the calls of the same
`name[:own]` in the order the replay makes them, like Temporal's command sequence. Why both: the
count alone would make every key after an inserted or removed call shift when the procedure's
code changes under a waiting case; the own key pins the steps that have one, and the count keeps
repeated calls (a case's facts read after new events, `current_time()`, a re-check in a loop)
apart without an argument whose only job is to change a cache key. The count is deterministic
because a flow body decides only from step results (docs/internals.md).

**Scope.** The run is the Prefect flow run (its id keys the ledger, see `models.steps`). Outside a
flow run — tests calling a step, the CLI, the keeper — a step simply runs its function and records
nothing: there is no replay to serve. `replaying(run_id)` opens a ledger for a plain call of a flow
body (benchmarks, tests); steps then run inline, recorded, without Prefect; `unrecorded()` turns
the ledger off for a flow that is never replayed (the clock keeper's loop). A step called inside
another step's code is part of that step's effect and runs plainly, in that step's transaction.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Generic, ParamSpec, TypeVar, cast
from uuid import UUID

from pydantic import BaseModel

from models import wallclock
from models.db import ambient_transaction, insert_ignore, retrying, run_retrying, session_scope
from models.steps import StepRecord

P = ParamSpec("P")
R = TypeVar("R")


# ---------------------------------------------------------------------------------------------
# Results as type-tagged JSON

TAGS = ("$dt", "$date", "$time", "$td", "$dec", "$uuid", "$tuple", "$set", "$enum", "$model", "$dc", "$dict")


def _path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


@functools.cache
def _class(path: str) -> Any:
    module, _, qualname = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def encode(value: Any) -> Any:
    """A step result as JSON-able data that `decode` turns back into an equal value of the same type."""
    if value is None or isinstance(value, bool | float) or type(value) in (int, str):
        return value
    if isinstance(value, Enum):
        return {"$enum": _path(type(value)), "v": encode(value.value)}
    if isinstance(value, int | str):  # a subclass that is not an Enum: kept as the plain value
        return int(value) if isinstance(value, int) else str(value)
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, time):
        return {"$time": value.isoformat()}
    if isinstance(value, timedelta):
        return {"$td": value.total_seconds()}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, UUID):
        return {"$uuid": str(value)}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, set | frozenset):
        return {"$set": [encode(v) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in TAGS for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"$dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, BaseModel):
        cls = type(value)
        meta = cls.__pydantic_generic_metadata__
        tagged: dict[str, Any] = {"$model": _path(meta["origin"] or cls)}
        if meta["origin"] is not None:  # Answer[DiagnosisForm]: the origin and its arguments
            tagged["args"] = [_path(a) for a in meta["args"]]
        tagged["v"] = encode({name: getattr(value, name) for name in cls.model_fields})
        return tagged
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "$dc": _path(type(value)),
            "v": encode({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}),
        }
    raise TypeError(f"a step result of type {type(value).__name__} cannot be recorded in the step ledger")


def decode(data: Any) -> Any:
    """The value `encode` was given."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    tag = next(iter(data), None)
    if tag not in TAGS:
        return {k: decode(v) for k, v in data.items()}
    raw = data[tag]
    if tag == "$dt":
        return datetime.fromisoformat(raw)
    if tag == "$date":
        return date.fromisoformat(raw)
    if tag == "$time":
        return time.fromisoformat(raw)
    if tag == "$td":
        return timedelta(seconds=raw)
    if tag == "$dec":
        return Decimal(raw)
    if tag == "$uuid":
        return UUID(raw)
    if tag == "$tuple":
        return tuple(decode(v) for v in raw)
    if tag == "$set":
        return {decode(v) for v in raw}
    if tag == "$dict":
        return {decode(k): decode(v) for k, v in raw}
    if tag == "$enum":
        return _class(raw)(decode(data["v"]))
    if tag == "$model":
        cls = _class(raw)
        if data.get("args"):
            cls = cls[tuple(_class(a) for a in data["args"])]
        return cls.model_validate(decode(data["v"]))
    cls = _class(raw)  # "$dc"
    return cls(**decode(data["v"]))


def dumps(value: Any) -> str:
    """`value` as ledger text; refuses a value that would not come back equal (found at record time,
    in the step's transaction, instead of as a wrong value in a later replay)."""
    text = json.dumps(encode(value), ensure_ascii=False, separators=(",", ":"))
    if loads(text) != value:
        raise TypeError(f"a step result does not survive the step ledger unchanged: {value!r}")
    return text


def loads(text: str) -> Any:
    return decode(json.loads(text))


# ---------------------------------------------------------------------------------------------
# The ledger of one run, loaded once per process


@dataclasses.dataclass
class RunLedger:
    """The finished steps of one flow run, as this process replays it."""

    flow_run_id: str
    records: dict[str, str]  # key → result text
    as_tasks: bool  # new steps run as Prefect tasks (inside a flow run) or inline (`replaying`)
    owner: Any = None  # the Prefect FlowRunContext this replay belongs to
    calls: Counter[str] = dataclasses.field(default_factory=Counter)
    # fresh reads without an answer that this replay went on from; written with the next record
    unsettled: dict[str, str] = dataclasses.field(default_factory=dict)

    def next_key(self, base: str) -> str:
        self.calls[base] += 1
        return f"{base}#{self.calls[base]}"


def load(flow_run_id: str, *, as_tasks: bool, owner: Any = None) -> RunLedger:
    """The run's ledger: one query."""
    from sqlmodel import col, select

    def read() -> list[Any]:
        with session_scope() as session:
            return list(
                session.exec(
                    select(StepRecord.key, StepRecord.result_json).where(
                        col(StepRecord.flow_run_id) == flow_run_id
                    )
                ).all()
            )

    rows = run_retrying(read, kind="step", what="the step ledger")
    return RunLedger(flow_run_id, {key: text for key, text in rows}, as_tasks, owner)


_current: RunLedger | None = None  # the flow run this process replays (a forked run has one)
_SCOPE: ContextVar[RunLedger | None] = ContextVar("aftercare_ledger_scope", default=None)
_IN_STEP: ContextVar[bool] = ContextVar("aftercare_in_step", default=False)
_OFF: ContextVar[bool] = ContextVar("aftercare_ledger_off", default=False)
_PENDING: ContextVar[tuple[RunLedger, str] | None] = ContextVar("aftercare_step_pending", default=None)


def _prefect_context() -> Any:
    """`prefect.context` when this process has loaded Prefect, else None. A process that has not
    (the approval web, issue 26: it never imports Prefect) runs no flow or task, so there is no run
    context to look up — importing Prefect only to find none would cost it ~64 MB."""
    return sys.modules.get("prefect.context")


def active() -> RunLedger | None:
    """The ledger of the flow run being replayed here, or None outside a flow run."""
    global _current
    if _OFF.get():
        return None
    scoped = _SCOPE.get()
    if scoped is not None:
        return scoped
    prefect_context = _prefect_context()
    if prefect_context is None:
        return None
    ctx = prefect_context.FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    if _current is None or _current.owner is not ctx:  # a new run (or a new attempt of it): read its ledger
        _current = load(str(ctx.flow_run.id), as_tasks=True, owner=ctx)
    return _current


@contextmanager
def replaying(flow_run_id: str) -> Iterator[RunLedger]:
    """Replay a flow body called as a plain function against the ledger of `flow_run_id`: finished
    steps return their records, new ones run inline (no Prefect) and are recorded."""
    token = _SCOPE.set(load(flow_run_id, as_tasks=False))
    try:
        ledger = _SCOPE.get()
        assert ledger is not None
        yield ledger
    finally:
        _SCOPE.reset(token)


def as_if_woken() -> None:
    """A wait answered in this process without suspending (the fast test layer, `tasks.answering`):
    as on a wake-up's replay, every "not yet" read since the last record (the wait's own read; a
    wait on an answer or a time reads both) is read again under its own key — it stays unrecorded,
    as a suspend leaves it — so the ledger is the one a real run writes."""
    ledger = active()
    if ledger is None:
        return
    for key in list(ledger.unsettled):
        del ledger.unsettled[key]
        ledger.calls[key.rpartition("#")[0]] -= 1


@contextmanager
def unrecorded() -> Iterator[None]:
    """Steps called inside the block just run, even in a flow run (a flow that is never replayed:
    the clock keeper's loop)."""
    token = _OFF.set(True)
    try:
        yield
    finally:
        _OFF.reset(token)


def _write(ledger: RunLedger, key: str, text: str) -> None:
    """Record a result outside a step's transaction (fresh reads, non-transactional steps)."""
    with session_scope() as session:
        _insert(session, ledger, key, text)
        _settle(session, ledger)


def _insert(session: Any, ledger: RunLedger, key: str, text: str) -> Any:
    """The row's id, or None when the key was recorded already."""
    return insert_ignore(
        session,
        StepRecord,
        {"flow_run_id": ledger.flow_run_id, "key": key, "result_json": text, "created_at": wallclock.now()},
    )


def _settle(session: Any, ledger: RunLedger) -> None:
    """The unanswered fresh reads this replay acted on are part of its history from now on: a later
    replay takes the same path (the suspend after the last one leaves it unrecorded: read again)."""
    for key, text in ledger.unsettled.items():
        _insert(session, ledger, key, text)
    ledger.records.update(ledger.unsettled)
    ledger.unsettled.clear()


# ---------------------------------------------------------------------------------------------
# The decorator


KeySpec = str | Callable[[dict[str, Any]], str] | None


def _task_run_name() -> str:
    pending = _PENDING.get()
    return pending[1] if pending else "step"


class Step(Generic[P, R]):
    """A replayable step (see the module docstring).

    `.fn`: the plain function as one unit of work re-run whole on a busy database
    (`models.db.retrying`); `.body`: the function itself."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str,
        title: str | None,
        key: KeySpec,
        fresh: Callable[[Any], bool] | None,
        transactional: bool,
    ) -> None:
        self.body = fn
        self.fn: Callable[P, R] = retrying(fn, kind="step")
        self.name = name
        self.key = key
        self.fresh = fresh
        self.transactional = transactional
        self._what = f"step {name}"
        self._signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)

        self._title = title or name
        self._task: Any = None  # the Prefect task, made when a flow run first runs the step

    @property
    def task(self) -> Any:
        """The step as a Prefect task, made on first use: a process that only calls steps as plain
        functions (the approval web) never imports Prefect's task machinery (issue 26)."""
        if self._task is None:
            from prefect.cache_policies import NO_CACHE
            from prefect.tasks import Task

            @functools.wraps(self.body)
            def run(*args: Any, **kwargs: Any) -> Any:
                return self._execute(args, kwargs)

            # the ledger keeps the result: no Prefect cache, no persisted result file per step; no
            # Prefect retries either: a busy database re-runs the step's whole transaction (`_execute`)
            self._task = Task(
                run,
                name=self._title,
                cache_policy=NO_CACHE,
                persist_result=False,
                task_run_name=_task_run_name,
            )
        return self._task

    def __reduce__(self) -> Any:
        # by reference: a flow pickled by value for a warm start names its steps, which the forked
        # process has imported already (deployments.warm_start)
        return _step_named, (self.body.__module__, self.body.__qualname__)

    def base_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self.key is None:
            return self.name
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        own = self.key.format(**bound.arguments) if isinstance(self.key, str) else self.key(bound.arguments)
        return f"{self.name}:{own}"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if _IN_STEP.get():  # part of another step's effect (and of its transaction)
            return self.body(*args, **kwargs)
        prefect_context = _prefect_context()
        if prefect_context is not None and prefect_context.TaskRunContext.get() is not None:
            return self.fn(*args, **kwargs)  # inside a plain Prefect task
        ledger = active()
        if ledger is None:  # outside a flow run: nothing to replay, nothing recorded
            return self.fn(*args, **kwargs)
        key = ledger.next_key(self.base_key(args, kwargs))
        found = ledger.records.get(key)
        if found is not None:
            return cast(R, loads(found))
        if self.fresh is not None:
            return self._read(ledger, key, args, kwargs)
        token = _PENDING.set((ledger, key))
        try:
            if ledger.as_tasks:
                return cast(R, self.task(*args, **kwargs))
            return cast(R, self._execute(args, kwargs))
        finally:
            _PENDING.reset(token)

    def _read(self, ledger: RunLedger, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """A fresh read: run inline; recorded once it is an answer."""
        result = self.fn(*args, **kwargs)
        text = dumps(result)
        if self.fresh is not None and self.fresh(result):
            run_retrying(lambda: _write(ledger, key, text), kind="step", what=self._what)
            ledger.records[key] = text
        else:
            ledger.unsettled[key] = text
        return result

    def _execute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The step's body and its ledger row, one unit of work: on a busy database the whole
        transaction is rolled back and run again (`models.db.run_retrying`)."""
        pending = _PENDING.get()
        assert pending is not None, "a step's body runs through Step.__call__"
        ledger, key = pending
        token = _IN_STEP.set(True)
        try:
            if self.transactional:
                result, text = run_retrying(
                    lambda: self._in_transaction(ledger, key, args, kwargs), kind="step", what=self._what
                )
            else:
                result = self.fn(*args, **kwargs)
                text = dumps(result)
                run_retrying(lambda: _write(ledger, key, text), kind="step", what=self._what)
        finally:
            _IN_STEP.reset(token)
        ledger.records[key] = text
        return result

    def _in_transaction(
        self, ledger: RunLedger, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, str]:
        import sqlalchemy as sa
        from sqlmodel import col, select

        with ambient_transaction() as session:
            # the claim is the transaction's first write (see ambient_transaction)
            row_id = _insert(session, ledger, key, "")
            if row_id is None:  # recorded meanwhile by another process replaying this run: its result
                text = session.exec(
                    select(StepRecord.result_json).where(
                        col(StepRecord.flow_run_id) == ledger.flow_run_id, col(StepRecord.key) == key
                    )
                ).one()
                return loads(text), text
            result = self.body(*args, **kwargs)
            text = dumps(result)
            session.execute(
                sa.update(StepRecord).where(col(StepRecord.id) == row_id).values(result_json=text)
            )
            _settle(session, ledger)
        return result, text


_NAMES: dict[str, str] = {}  # ledger name → the function it names


def _step_named(module: str, qualname: str) -> Any:
    return _class(f"{module}:{qualname}")


def step(
    name: str,
    *,
    title: str | None = None,
    key: KeySpec = None,
    fresh: Callable[[Any], bool] | None = None,
    transactional: bool = True,
) -> Callable[[Callable[P, R]], Step[P, R]]:
    """Make a function a replayable step of a flow body.

    `name`: the stable ledger name (lowercase, dashes; never change it while cases wait).
    `title`: the task's name in the Prefect UI. `key`: the step's own key — a format string over
    its arguments ("{step}-v{version}") or a function of them. `fresh`: a read repeated on every
    replay until this predicate says its result is an answer. `transactional=False`: the effect is
    outside our database (recorded after it; the effect must be idempotent by its own key).
    """

    def make(fn: Callable[P, R]) -> Step[P, R]:
        where = f"{fn.__module__}:{fn.__qualname__}"
        if _NAMES.setdefault(name, where) != where:  # two steps under one name would replay each other
            raise ValueError(f"step name {name!r} is taken by {_NAMES[name]}")
        return Step(fn, name=name, title=title, key=key, fresh=fresh, transactional=transactional)

    return make
