"""Records as SQL rows and back: one column layout for every SQL backend.

SQLite and PostgreSQL store the same columns in the same order (only types differ: 0/1 vs
booleans, BLOB vs BYTEA), so the tuples sent and the rows read are built here once.
Headers and tags are JSON text, kept as given (key order included); blobs come back as
``bytes`` from both drivers.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from troth.model import (
    EMPTY,
    Callback,
    Lock,
    Promise,
    Recv,
    Schedule,
    State,
    Task,
    TaskKind,
    TaskState,
    Value,
)

PROMISE_COLUMNS: Final = (
    "seq, id, state, param_headers, param_data, value_headers, value_data, timeout,"
    " ikey_create, ikey_complete, tags, created_on, completed_on, watched"
)
#: Columns of ``promise_params``, in order.
PROMISE_INSERT_COLUMNS: Final = (
    "id, state, param_headers, param_data, value_headers, value_data, timeout, ikey_create,"
    " ikey_complete, tags, is_timer, created_on, completed_on"
)
CALLBACK_COLUMNS: Final = "id, promise_id, root_promise_id, recv, timeout, created_on"
TASK_COLUMNS: Final = (
    "id, type, state, recv, root_promise_id, leaf_promise_id, counter, attempt, process_id,"
    " ttl, timeout, expires_at, ready_at, created_on, completed_on"
)
LOCK_COLUMNS: Final = "resource_id, execution_id, process_id, ttl, expires_at"
SCHEDULE_COLUMNS: Final = (
    "seq, id, description, cron, tags, promise_id, promise_timeout, promise_param_headers,"
    " promise_param_data, promise_tags, last_run_time, next_run_time, idempotency_key,"
    " created_on"
)
#: Columns of ``schedule_params``, in order.
SCHEDULE_INSERT_COLUMNS: Final = (
    "id, description, cron, tags, promise_id, promise_timeout, promise_param_headers,"
    " promise_param_data, promise_tags, last_run_time, next_run_time, idempotency_key,"
    " created_on"
)

_STATES: Final = {s.value: s for s in State}
_TASK_STATES: Final = {s.value: s for s in TaskState}
_TASK_KINDS: Final = {k.value: k for k in TaskKind}
_encode = msgspec.json.encode
_headers_decode = msgspec.json.Decoder(dict[str, str]).decode
_recv_decode = msgspec.json.Decoder(Recv).decode


def headers(raw: str | None) -> dict[str, str] | None:
    return _headers_decode(raw) if raw else None


def dump(d: dict[str, str] | None) -> str | None:
    return _encode(d).decode() if d else None


def dump_recv(recv: Recv) -> str:
    return _encode(recv).decode()


def value(raw_headers: str | None, data: bytes | None) -> Value:
    if raw_headers is None and data is None:
        return EMPTY
    return Value(headers=headers(raw_headers), data=data)


def promise(row: tuple[Any, ...]) -> Promise:
    """A row of ``PROMISE_COLUMNS``."""
    return Promise(
        id=row[1],
        state=_STATES[row[2]],
        param=value(row[3], row[4]),
        value=value(row[5], row[6]),
        timeout=row[7],
        idempotency_key_for_create=row[8],
        idempotency_key_for_complete=row[9],
        tags=headers(row[10]),
        created_on=row[11],
        completed_on=row[12],
    )


def promise_params(p: Promise, is_timer: Any) -> tuple[Any, ...]:
    """The values of ``PROMISE_INSERT_COLUMNS`` (``is_timer`` in the backend's type)."""
    return (
        p.id,
        p.state.value,
        dump(p.param.headers),
        p.param.data,
        dump(p.value.headers),
        p.value.data,
        p.timeout,
        p.idempotency_key_for_create,
        p.idempotency_key_for_complete,
        dump(p.tags),
        is_timer,
        p.created_on,
        p.completed_on,
    )


def completion_params(p: Promise) -> tuple[Any, ...]:
    """state, value_headers, value_data, ikey_complete, completed_on, then the id."""
    return (
        p.state.value,
        dump(p.value.headers),
        p.value.data,
        p.idempotency_key_for_complete,
        p.completed_on,
        p.id,
    )


def callback(row: tuple[Any, ...]) -> Callback:
    """A row of ``CALLBACK_COLUMNS``."""
    return Callback(
        id=row[0],
        promise_id=row[1],
        root_promise_id=row[2],
        recv=_recv_decode(row[3]),
        timeout=row[4],
        created_on=row[5],
    )


def callback_params(cb: Callback) -> tuple[Any, ...]:
    return (cb.id, cb.promise_id, cb.root_promise_id, dump_recv(cb.recv), cb.timeout, cb.created_on)


def task(row: tuple[Any, ...]) -> Task:
    """A row of ``TASK_COLUMNS``."""
    return Task(
        id=row[0],
        type=_TASK_KINDS[row[1]],
        state=_TASK_STATES[row[2]],
        recv=_recv_decode(row[3]),
        root_promise_id=row[4],
        leaf_promise_id=row[5],
        counter=row[6],
        attempt=row[7],
        process_id=row[8],
        ttl=row[9],
        timeout=row[10],
        expires_at=row[11],
        ready_at=row[12],
        created_on=row[13],
        completed_on=row[14],
    )


def task_params(t: Task) -> tuple[Any, ...]:
    """The values of ``TASK_COLUMNS`` and then ``recv_key``."""
    return (
        t.id,
        t.type.value,
        t.state.value,
        dump_recv(t.recv),
        t.root_promise_id,
        t.leaf_promise_id,
        t.counter,
        t.attempt,
        t.process_id,
        t.ttl,
        t.timeout,
        t.expires_at,
        t.ready_at,
        t.created_on,
        t.completed_on,
        t.recv.key,
    )


def task_update_params(t: Task) -> tuple[Any, ...]:
    """state, counter, attempt, process_id, ttl, expires_at, ready_at, completed_on, id."""
    return (
        t.state.value,
        t.counter,
        t.attempt,
        t.process_id,
        t.ttl,
        t.expires_at,
        t.ready_at,
        t.completed_on,
        t.id,
    )


def lock(row: tuple[Any, ...]) -> Lock:
    """A row of ``LOCK_COLUMNS``."""
    return Lock(
        resource_id=row[0], execution_id=row[1], process_id=row[2], ttl=row[3], expires_at=row[4]
    )


def schedule(row: tuple[Any, ...]) -> Schedule:
    """A row of ``SCHEDULE_COLUMNS``."""
    return Schedule(
        id=row[1],
        description=row[2],
        cron=row[3],
        tags=headers(row[4]),
        promise_id=row[5],
        promise_timeout=row[6],
        promise_param=value(row[7], row[8]),
        promise_tags=headers(row[9]),
        last_run_time=row[10],
        next_run_time=row[11],
        idempotency_key=row[12],
        created_on=row[13],
    )


def schedule_params(sc: Schedule) -> tuple[Any, ...]:
    """The values of ``SCHEDULE_INSERT_COLUMNS``."""
    return (
        sc.id,
        sc.description,
        sc.cron,
        dump(sc.tags),
        sc.promise_id,
        sc.promise_timeout,
        dump(sc.promise_param.headers),
        sc.promise_param.data,
        dump(sc.promise_tags),
        sc.last_run_time,
        sc.next_run_time,
        sc.idempotency_key,
        sc.created_on,
    )
