"""Batched promise writes and batched claims for the durable-function SDK.

Two operations on an ``Engine`` (functions rather than a mixin, so ``engine.py`` stays as it
is), each **one store transaction**, so a batch is atomic and ordered:

- ``apply_ops``: a list of ``Op`` — ``create`` (as ``POST /promises``), ``complete`` (as
  ``PATCH /promises/{id}``) and ``record``: create a promise *already completed* (a step's
  outcome in one write instead of a create and a complete). Every op uses its promise id as
  its idempotency key (the SDK's convention), may carry its own fence (``Task-Id`` /
  ``Task-Counter``), and gets its own result (status, promise, or error code and message);
  one op failing does not undo the others.
- ``claim_tasks``: claim several tasks for one process in one transaction (a worker that
  received several task messages at once).

The rules are those of the single-request routes (``troth.rules``, ``troth.task_rules``);
completions fire callbacks and finish root tasks through ``effects`` in the same
transaction, and waiters are woken after the commit, as for any other write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from troth import rules, task_rules
from troth.engine import effects
from troth.engine.taskops import Claimed
from troth.errors import TrothError, ValidationError
from troth.model import (
    COMPLETIONS,
    EMPTY,
    MAX_TIMEOUT,
    MAX_TTL,
    Promise,
    Recv,
    State,
    Task,
    Value,
)
from troth.store.base import Tx

if TYPE_CHECKING:
    from troth.engine.engine import Engine

OpKind = Literal["create", "record", "complete", "watch"]
#: How many ops (or claims) one batch may carry.
MAX_OPS = 1000


class Fence(msgspec.Struct, frozen=True):
    id: str
    counter: int


class Op(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One promise write of a batch (the wire form of ``POST /sdk/batch``).

    ``create``: ``id``, ``timeout``, ``param``, ``tags``. ``record``: the same plus ``state``
    and ``value`` (the promise is created completed; if it exists and is pending it is
    completed; if it is completed, the stored one is returned). ``complete``: ``id``,
    ``state``, ``value``. ``at`` (create, record): the creation (and completion) time to
    store, epoch ms, instead of the server's clock: the SDK's clock, so that a function
    replayed later sees the times its first run saw (``ctx.now()``).
    ``brief``: answer only the status (and the promise when it differs from the request).
    ``watch`` (``POST /sdk/batch`` only, with ``session``): send the promise on the results
    stream ``session`` once it is completed; answered after the batch's writes. ``owned``
    (complete only): complete the promise only if it was created with its id as idempotency
    key (by an SDK create), else 409 — for a completion queued before its create's answer.
    """

    kind: OpKind
    id: str
    timeout: int = 0
    param: Value = EMPTY
    tags: dict[str, str] | None = None
    state: State | None = None
    value: Value = EMPTY
    at: int | None = None
    fence: Fence | None = None
    brief: bool = False
    session: str | None = None
    owned: bool = False


class OpResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``status``: 200 (deduplicated), 201 (written) or the error's HTTP status, with its
    five-digit ``code`` and ``message``."""

    status: int
    promise: Promise | None = None
    code: int = 0
    message: str = ""

    def raise_for_error(self) -> Promise:
        """The promise, or raise the error as the single-request route would."""
        if self.status >= 400:
            from troth.errors import error_from_code

            raise error_from_code(self.code, self.message)
        assert self.promise is not None
        return self.promise


class ClaimRef(msgspec.Struct, frozen=True):
    id: str
    counter: int


def _bad(message: str, field: str) -> ValidationError:
    return ValidationError(f"{message} - at {field}", details=[{"field": field}])


def _validate(engine: Engine, op: Op) -> None:
    if op.kind == "watch":
        raise _bad("watch ops are answered by POST /sdk/batch only", "$.kind")
    if op.kind in ("create", "record"):
        engine._check_create(op.id, op.timeout, op.tags)
        engine._check_value(op.param, "$.param")
    else:
        engine._check_id(op.id, "id")
    if op.kind in ("record", "complete") and op.state not in COMPLETIONS:
        raise _bad("state must be RESOLVED, REJECTED or REJECTED_CANCELED", "$.state")
    if op.kind != "create":
        engine._check_value(op.value, "$.value")
    if op.at is not None and not 0 <= op.at <= MAX_TIMEOUT:
        raise _bad("at must be an epoch-ms time", "$.at")


def _error(exc: TrothError) -> OpResult:
    return OpResult(status=exc.status, code=exc.code, message=exc.message)


_FENCED = OpResult(
    status=412,
    code=41200,
    message="the fencing task is not claimed with that counter (lease lost?); nothing was written",
)


class _Applied(msgspec.Struct):
    results: list[OpResult | None]
    writes: list[Promise]
    tasks: list[Task]


async def apply_ops(engine: Engine, ops: list[Op]) -> list[OpResult]:
    """Apply ``ops`` in order in one transaction; one result per op."""
    if len(ops) > MAX_OPS:
        raise _bad(f"at most {MAX_OPS} ops per batch", "$.ops")
    early: list[OpResult | None] = []
    todo: list[Op | None] = []
    for op in ops:
        try:
            _validate(engine, op)
        except TrothError as exc:
            early.append(_error(exc))
            todo.append(None)
            continue
        norm = msgspec.structs.replace(
            op, param=op.param.normalized(), value=op.value.normalized(), tags=op.tags or None
        )
        early.append(None)
        todo.append(norm)
    invokes: dict[int, tuple[Recv, int] | None] = {}
    for i, maybe in enumerate(todo):
        if maybe is not None and maybe.kind == "create":
            try:
                invokes[i] = effects.invoke_of(maybe.tags, engine.receivers)
            except TrothError as exc:
                early[i] = _error(exc)
                todo[i] = None
    clock = engine.clock

    def run(tx: Tx) -> _Applied:
        now = clock.now()
        fences: dict[tuple[str, int], bool] = {}
        out = _Applied(results=list(early), writes=[], tasks=[])
        for i, op in enumerate(todo):
            if op is None:
                continue
            if op.fence is not None:
                key = (op.fence.id, op.fence.counter)
                held = fences.get(key)
                if held is None:
                    held = fences[key] = task_rules.fence_holds(tx.get_task(key[0]), key[1], now)
                if not held:
                    out.results[i] = _FENCED
                    continue
            out.results[i] = _one(tx, op, now, invokes.get(i), out)
        return out

    applied = await engine.store.write(run)
    for p in applied.writes:
        engine._after(p)
    if applied.tasks or any(invokes.values()):
        engine.tasks_changed()
    results = []
    for r in applied.results:
        assert r is not None
        results.append(r)
    return results


def _answer(op: Op, status: int, p: Promise, *, same: bool) -> OpResult:
    if op.brief and same:
        return OpResult(status=status)
    return OpResult(status=status, promise=p)


def _one(tx: Tx, op: Op, now: int, invoke: tuple[Recv, int] | None, out: _Applied) -> OpResult:
    if op.kind == "complete":
        assert op.state is not None
        stored = tx.get_promise(op.id)
        if op.owned and stored is not None and stored.idempotency_key_for_create != op.id:
            msg = f"promise {op.id!r} was not created by this execution; not completed"
            return OpResult(status=409, code=rules.EXISTS_CODE, message=msg)
        d = rules.decide_complete(stored, op.state, op.value, op.id, False, now)
        if d.write is not None:
            tx.update_promise(d.write)
            out.writes.append(d.write)
            out.tasks += effects.on_completed(tx, [d.write], now)
        if d.status == 404:
            return OpResult(
                status=404, code=rules.NOT_FOUND_CODE, message=f"promise {op.id!r} not found"
            )
        assert d.promise is not None
        if not d.ok:
            p = d.promise
            return OpResult(
                status=403,
                promise=p,
                code=d.code,
                message=f"promise {op.id!r} is already {p.state.value}; it cannot become "
                f"{op.state.value}",
            )
        return _answer(op, d.status, d.promise, same=d.status == rules.CREATED)
    new = Promise(
        id=op.id,
        state=State.PENDING,
        timeout=op.timeout,
        created_on=now if op.at is None else op.at,
        param=op.param,
        idempotency_key_for_create=op.id,
        tags=op.tags,
    )
    if op.kind == "record":
        assert op.state is not None
        at = now if op.at is None else op.at
        if now < op.timeout:
            record = msgspec.structs.replace(
                new,
                state=op.state,
                value=op.value,
                idempotency_key_for_complete=op.id,
                created_on=at,
                completed_on=at,
            )
        else:  # past its deadline: it times out, as a late complete would make it
            record = rules.current(new, now)
        if tx.try_insert_promise(record):
            out.writes.append(record)
            return _answer(op, 201, record, same=record.state is op.state)
        stored = tx.get_promise(op.id)
        assert stored is not None
        if stored.state is State.PENDING:  # created earlier (by a create op): complete it
            d = rules.decide_complete(stored, op.state, op.value, op.id, False, now)
            if d.write is not None:
                tx.update_promise(d.write)
                out.writes.append(d.write)
                out.tasks += effects.on_completed(tx, [d.write], now)
            assert d.promise is not None
            if d.ok:
                return OpResult(status=200, promise=d.promise)
            msg = f"promise {op.id!r} is already {d.promise.state.value}"
            return OpResult(status=403, promise=d.promise, code=d.code, message=msg)
        return OpResult(status=200, promise=stored)
    fresh = rules.decide_create(None, new, False, now)
    created = fresh.write
    assert created is not None
    if tx.try_insert_promise(created):
        out.writes.append(created)
        if created.state is State.PENDING and invoke is not None:
            task = effects.invoke_task(created, invoke[0], invoke[1], now)
            tx.insert_task(task)
            out.tasks.append(task)
        return _answer(op, 201, created, same=created.state is State.PENDING)
    d = rules.decide_create(tx.get_promise(op.id), new, False, now)
    if d.write is not None:
        tx.update_promise(d.write)
        out.writes.append(d.write)
        out.tasks += effects.on_completed(tx, [d.write], now)
    assert d.promise is not None
    if not d.ok:
        p = d.promise
        return OpResult(
            status=409,
            promise=p,
            code=rules.EXISTS_CODE,
            message=f"promise {op.id!r} already exists ({p.state.value})",
        )
    return OpResult(status=200, promise=d.promise)


# -- claims ------------------------------------------------------------------------------


class ClaimResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A claimed task with its root (and leaf) promise, or the refusal's status and code."""

    status: int
    task: Task | None = None
    root: Promise | None = None
    leaf: Promise | None = None
    code: int = 0
    message: str = ""

    def claimed(self) -> Claimed:
        if self.status >= 400:
            from troth.errors import error_from_code

            raise error_from_code(self.code, self.message)
        assert self.task is not None and self.root is not None
        return Claimed(self.task, self.root, self.leaf)


async def claim_tasks(
    engine: Engine, refs: list[ClaimRef], *, process_id: str, ttl: int
) -> list[ClaimResult]:
    """Claim each task of ``refs`` for ``process_id`` (lease ``ttl`` ms) in one transaction;
    per task the answer ``POST /tasks/claim`` would give."""
    if not process_id:
        raise _bad("processId must not be empty", "$.processId")
    if not 0 <= ttl <= MAX_TTL:
        raise _bad("ttl must be from 0 to 2^62 ms", "$.ttl")
    if len(refs) > MAX_OPS:
        raise _bad(f"at most {MAX_OPS} claims per batch", "$.tasks")
    clock = engine.clock

    def run(tx: Tx) -> tuple[list[ClaimResult], bool]:
        now = clock.now()
        fired = False
        out: list[ClaimResult] = []
        for ref in refs:
            task = tx.get_task(ref.id)
            root = leaf = None
            if task is not None:
                root = tx.get_promise(task.root_promise_id)
                expired = rules.expire(root, now) if root is not None else None
                if expired is not None:
                    tx.update_promise(expired)
                    fired = bool(effects.on_completed(tx, [expired], now)) or fired
                    root, task = expired, tx.get_task(ref.id)
                if task is not None and task.leaf_promise_id is not None:
                    leaf = tx.get_promise(task.leaf_promise_id)
            d = task_rules.decide_claim(task, ref.counter, process_id, ttl, now)
            if d.write is not None:
                tx.update_task(d.write)
            if not d.ok:
                err = engine._fail(d, ref.id)
                out.append(ClaimResult(status=err.status, code=err.code, message=err.message))
            elif root is None:
                msg = f"root promise of task {ref.id!r} not found"
                out.append(ClaimResult(status=404, code=rules.NOT_FOUND_CODE, message=msg))
            else:
                out.append(ClaimResult(status=201, task=d.task, root=root, leaf=leaf))
        return out, fired

    results, fired = await engine.store.write(run)
    if fired:
        engine.tasks_changed()
    for r in results:
        if r.task is not None and r.task.expires_at is not None:
            engine.task_deadline(r.task.expires_at)
    return results


__all__ = ["ClaimRef", "ClaimResult", "Fence", "Op", "OpResult", "apply_ops", "claim_tasks"]
