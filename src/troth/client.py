"""HTTP clients for a troth (or Resonate-compatible) server: ``Client`` and ``AsyncClient``.

Both classes have the same methods with the same signatures; ``AsyncClient``'s are
coroutines (and ``iter_promises`` is an async generator). Requests are built by one set of
helpers (``_Call`` values) and responses decoded by one set of functions, so the two clients
differ only in how they send.

    from troth.client import Client

    with Client("http://127.0.0.1:8001") as troth:
        p = troth.create_promise("orders/42", timeout=deadline_ms, param="hello")
        done = troth.wait_promise("orders/42", wait=30)

Every method returns the decoded ``troth.model.Promise`` (or ``SearchPage``). A create or a
completion answered 201 (done now) and one answered 200 (deduplicated: an idempotent replay,
or a completion of an already timed-out promise) are both successes; read ``state`` on the
returned promise to see what it is now. Any other status raises the ``TrothError`` subclass
of the server's error code (``AlreadyExists`` for 409, ``AlreadyCompleted`` for 40301..40304,
``NotFound`` for 404, ...); a server that cannot be reached raises ``ConnectionFailed``.

The task framework (API.md 2, 3, 5) is covered too, for writing or driving a worker by hand:

    with Client() as troth:
        for message in troth.listen("g", "w1"):           # GET /poll/g/w1 (server-sent events)
            if message.task is None:
                continue                                   # a notify message
            claimed = troth.claim_task(message.task.id, message.task.counter,
                                       process_id="w1", ttl=60_000)
            fence = (message.task.id, message.task.counter)
            troth.resolve_promise(claimed.root.id, value="done", fence=fence)
            troth.complete_task(*fence)

Decoded shapes: tasks are ``TaskInfo`` (the task as the wire shows it: ``troth.model.Task``
without the server-only ``recv``, ``attempt`` and ``readyAt``; every member but ``id`` and
``counter`` optional, because stream messages carry a subset), callbacks are
``troth.model.Callback`` (its ``recv`` decoded leniently from the wire's ``{"type", "data"}``
into the flat ``troth.model.Recv``; ``callback_to_wire`` gives the wire form back), locks are
``troth.model.Lock``, claims are ``ClaimedTask`` and stream messages ``Message``.

Schedules (API.md 4) create promises on a cron timetable:

    with Client() as troth:
        troth.create_schedule("news", "0 6 * * *", "news_feed_{{.date}}", 3_600_000)
        for s in troth.iter_schedules("news*"):
            print(s.id, s.next_run_time)
        troth.delete_schedule("news")

They decode to ``troth.model.Schedule``; a page of a schedule search is a ``SchedulePage``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, NamedTuple, Self, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx
import msgspec

from troth.errors import TrothError, ValidationError, error_from_code
from troth.model import (
    Callback,
    Lock,
    Promise,
    Recv,
    Schedule,
    SearchPage,
    State,
    TaskKind,
    TaskState,
    Value,
)
from troth.recv import parse_recv
from troth.transport import LeanTransport

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "CallbackResult",
    "ClaimedPromise",
    "ClaimedPromises",
    "ClaimedTask",
    "Client",
    "ConnectionFailed",
    "Fence",
    "Href",
    "Message",
    "PromiseAndTask",
    "RecvLike",
    "SchedulePage",
    "TaskInfo",
    "callback_to_wire",
    "encode_id",
    "recv_from_wire",
    "to_value",
]

DEFAULT_URL: Final = "http://127.0.0.1:8001"
#: The longest wait the server accepts in one request (API.md 1.6); longer waits are chunked.
MAX_WAIT_SECONDS: Final = 300.0
#: Pause between polls when a server answers a wait early with the promise still pending.
POLL_PAUSE_SECONDS: Final = 0.25

ParamLike = Value | bytes | str | None
#: A receiver as a request may give it: ``poll://any@group/id``, ``http(s)://...``, a
#: logical name, a ``troth.model.Recv``, or the wire object ``{"type": ..., "data": {...}}``.
RecvLike = str | Recv | Mapping[str, Any]
#: ``(task id, task counter)``: sent as headers ``Task-Id`` / ``Task-Counter`` to make a write
#: conditional on that task being claimed with exactly that counter (else ``FencingFailed``).
Fence = tuple[str, int]
_T = TypeVar("_T")


class ConnectionFailed(TrothError):
    """The troth server could not be reached; check the URL and that the server is running."""

    default_code = 50300


# -- encoding ----------------------------------------------------------------------------


def encode_id(id: str) -> str:
    """Percent-encode a promise id for the path of ``/promises/{id}``.

    Everything but ``/`` is encoded (``?``, ``#``, ``%``, spaces, unicode as UTF-8). Segments
    that are exactly ``.`` or ``..`` are encoded as ``%2E`` so that no HTTP library removes
    them as dot segments.
    """
    segments = []
    for segment in id.split("/"):
        if segment in (".", ".."):
            segments.append("%2E" * len(segment))
        else:
            segments.append(quote(segment, safe=""))
    return "/".join(segments)


def to_value(value: ParamLike) -> Value | None:
    """A ``Value`` from bytes, text (UTF-8) or a ``Value``; ``None`` stays absent."""
    if value is None or isinstance(value, Value):
        return value
    if isinstance(value, str):
        return Value(data=value.encode())
    if isinstance(value, bytes | bytearray | memoryview):
        return Value(data=bytes(value))
    raise TypeError(f"expected Value, bytes, str or None, got {type(value).__name__}")


class _CreateBody(msgspec.Struct, omit_defaults=True):
    id: str
    timeout: int
    param: Value | None = None
    tags: dict[str, str] | None = None


class _CompleteBody(msgspec.Struct, omit_defaults=True):
    state: State
    value: Value | None = None


@dataclass(frozen=True, slots=True)
class _Call:
    """One request, independent of the httpx client that sends it."""

    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    #: Extra seconds of read timeout on top of the client's (long polls).
    extra_read: float = 0.0


def _write_headers(
    idempotency_key: str | None,
    strict: bool,
    headers: Mapping[str, str] | None,
    fence: Fence | None = None,
) -> dict[str, str]:
    out = dict(headers or {})
    if _content_type_missing(out):
        out["Content-Type"] = "application/json"
    for name, text in (("Idempotency-Key", idempotency_key), ("Task-Id", fence and fence[0])):
        # HTTP header values are ASCII here (httpx refuses others with UnicodeEncodeError).
        if text is not None and not (text.isascii() and text.isprintable()):
            raise ValidationError(f"{name} must be printable ASCII, got {text!r}")
    if idempotency_key is not None:
        out["Idempotency-Key"] = idempotency_key
    if strict:
        out["Strict"] = "true"
    if fence is not None:
        task_id, counter = fence
        out["Task-Id"] = task_id
        out["Task-Counter"] = str(counter)
    return out


def _content_type_missing(headers: Mapping[str, str]) -> bool:
    return not any(k.lower() == "content-type" for k in headers)


def _create_call(
    id: str,
    timeout: int,
    param: ParamLike,
    tags: Mapping[str, str] | None,
    idempotency_key: str | None,
    strict: bool,
    headers: Mapping[str, str] | None,
    fence: Fence | None = None,
) -> _Call:
    return _Call(
        "POST",
        "/promises",
        headers=_write_headers(idempotency_key, strict, headers, fence),
        content=msgspec.json.encode(_create_body(id, timeout, param, tags)),
    )


def _create_body(
    id: str, timeout: int, param: ParamLike, tags: Mapping[str, str] | None
) -> _CreateBody:
    return _CreateBody(
        id=id, timeout=timeout, param=to_value(param), tags=dict(tags) if tags else None
    )


def _complete_call(
    id: str,
    state: State,
    value: ParamLike,
    idempotency_key: str | None,
    strict: bool,
    headers: Mapping[str, str] | None,
    fence: Fence | None = None,
) -> _Call:
    body = _CompleteBody(state=state, value=to_value(value))
    return _Call(
        "PATCH",
        f"/promises/{encode_id(id)}",
        headers=_write_headers(idempotency_key, strict, headers, fence),
        content=msgspec.json.encode(body),
    )


def _get_call(id: str) -> _Call:
    return _Call("GET", f"/promises/{encode_id(id)}")


def _wait_call(id: str, wait: float) -> _Call:
    wait = min(max(wait, 0.0), MAX_WAIT_SECONDS)
    return _Call(
        "GET",
        f"/promises/{encode_id(id)}",
        params=[("wait", str(int(wait * 1000)))],
        extra_read=wait,
    )


def _search_call(
    id: str,
    state: str | None,
    tags: Mapping[str, str] | None,
    limit: int,
    cursor: str | None,
) -> _Call:
    params = [("id", id)]
    if state is not None:
        params.append(("state", state))
    params.extend((f"tags[{k}]", v) for k, v in (tags or {}).items())
    params.append(("limit", str(limit)))
    if cursor is not None:
        params.append(("cursor", cursor))
    return _Call("GET", "/promises", params=params)


_PING: Final = _Call("GET", "/ping")


# -- schedules: requests -------------------------------------------------------------------


def _create_schedule_call(
    id: str,
    cron: str,
    promise_id: str,
    promise_timeout: int,
    description: str | None,
    tags: Mapping[str, str] | None,
    promise_param: ParamLike,
    promise_tags: Mapping[str, str] | None,
    idempotency_key: str | None,
    headers: Mapping[str, str] | None,
) -> _Call:
    # the members of API.md 4 in wire order, optional ones only when given
    body: dict[str, object] = {"id": id}
    if description is not None:
        body["description"] = description
    body["cron"] = cron
    if tags:
        body["tags"] = dict(tags)
    body["promiseId"] = promise_id
    body["promiseTimeout"] = promise_timeout
    param = to_value(promise_param)
    if param is not None:
        body["promiseParam"] = param
    if promise_tags:
        body["promiseTags"] = dict(promise_tags)
    return _Call(
        "POST",
        "/schedules",
        headers=_write_headers(idempotency_key, False, headers),
        content=msgspec.json.encode(body),
    )


def _schedule_path(id: str) -> str:
    return f"/schedules/{encode_id(id)}"


def _get_schedule_call(id: str) -> _Call:
    return _Call("GET", _schedule_path(id))


def _delete_schedule_call(id: str) -> _Call:
    return _Call("DELETE", _schedule_path(id))


def _search_schedules_call(
    id: str, tags: Mapping[str, str] | None, limit: int, cursor: str | None
) -> _Call:
    params = [("id", id)]
    params.extend((f"tags[{k}]", v) for k, v in (tags or {}).items())
    params.append(("limit", str(limit)))
    if cursor is not None:
        params.append(("cursor", cursor))
    return _Call("GET", "/schedules", params=params)


# -- the task framework: requests ---------------------------------------------------------


class _TaskSpec(msgspec.Struct, rename="camel"):
    process_id: str
    ttl: int


class _CreateWithTaskBody(msgspec.Struct):
    promise: _CreateBody
    task: _TaskSpec


class _CallbackBody(msgspec.Struct, rename="camel"):
    root_promise_id: str
    timeout: int
    recv: Any


class _SubscribeBody(msgspec.Struct):
    id: str
    timeout: int
    recv: Any


class _ClaimBody(msgspec.Struct, rename="camel"):
    id: str
    counter: int
    process_id: str
    ttl: int


class _TaskRefBody(msgspec.Struct):
    id: str
    counter: int


class _ProcessBody(msgspec.Struct, rename="camel"):
    process_id: str


class _AcquireBody(msgspec.Struct, rename="camel"):
    resource_id: str
    execution_id: str
    process_id: str
    ttl: int


class _ReleaseBody(msgspec.Struct, rename="camel"):
    resource_id: str
    execution_id: str


def _recv_body(recv: RecvLike) -> Any:
    """A receiver as the request body carries it (strings and objects are passed through)."""
    if isinstance(recv, Recv):
        return recv.to_wire()
    if isinstance(recv, str):
        return recv
    return dict(recv)


def _post(path: str, body: msgspec.Struct, headers: Mapping[str, str] | None = None) -> _Call:
    return _Call(
        "POST",
        path,
        headers=_write_headers(None, False, headers),
        content=msgspec.json.encode(body),
    )


def _create_with_task_call(
    id: str,
    timeout: int,
    process_id: str,
    ttl: int,
    param: ParamLike,
    tags: Mapping[str, str] | None,
    idempotency_key: str | None,
    strict: bool,
    headers: Mapping[str, str] | None,
) -> _Call:
    body = _CreateWithTaskBody(
        promise=_create_body(id, timeout, param, tags),
        task=_TaskSpec(process_id=process_id, ttl=ttl),
    )
    return _Call(
        "POST",
        "/promises/task",
        headers=_write_headers(idempotency_key, strict, headers),
        content=msgspec.json.encode(body),
    )


def _callback_call(
    promise_id: str, root_promise_id: str, timeout: int, recv: RecvLike, fence: Fence | None
) -> _Call:
    body = _CallbackBody(root_promise_id=root_promise_id, timeout=timeout, recv=_recv_body(recv))
    return _Call(
        "POST",
        f"/promises/callback/{encode_id(promise_id)}",
        headers=_write_headers(None, False, None, fence),
        content=msgspec.json.encode(body),
    )


def _subscribe_call(promise_id: str, id: str, timeout: int, recv: RecvLike) -> _Call:
    body = _SubscribeBody(id=id, timeout=timeout, recv=_recv_body(recv))
    return _post(f"/promises/subscribe/{encode_id(promise_id)}", body)


def _claim_call(id: str, counter: int, process_id: str, ttl: int) -> _Call:
    return _post("/tasks/claim", _ClaimBody(id=id, counter=counter, process_id=process_id, ttl=ttl))


def _complete_task_call(id: str, counter: int) -> _Call:
    return _post("/tasks/complete", _TaskRefBody(id=id, counter=counter))


def _drop_task_call(id: str, counter: int) -> _Call:
    return _post("/tasks/drop", _TaskRefBody(id=id, counter=counter))


def _heartbeat_tasks_call(process_id: str) -> _Call:
    return _post("/tasks/heartbeat", _ProcessBody(process_id=process_id))


def _acquire_lock_call(resource_id: str, execution_id: str, process_id: str, ttl: int) -> _Call:
    body = _AcquireBody(
        resource_id=resource_id, execution_id=execution_id, process_id=process_id, ttl=ttl
    )
    return _post("/locks/acquire", body)


def _release_lock_call(resource_id: str, execution_id: str) -> _Call:
    return _post("/locks/release", _ReleaseBody(resource_id=resource_id, execution_id=execution_id))


def _heartbeat_locks_call(process_id: str) -> _Call:
    return _post("/locks/heartbeat", _ProcessBody(process_id=process_id))


def _listen_call(group: str, id: str) -> _Call:
    return _Call(
        "GET",
        f"/poll/{quote(group, safe='')}/{encode_id(id)}",
        headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"},
    )


class _WaitLoop:
    """Long-poll ``GET /promises/{id}?wait=`` until completed or ``wait`` seconds passed.

    Waits longer than the server's maximum are sent in chunks. A server that answers a
    pending promise early (one that ignores ``wait``, or one shutting down) is polled with
    a short pause rather than in a tight loop.
    """

    def __init__(self, wait: float) -> None:
        self.deadline = time.monotonic() + wait
        self.sent = 0.0

    def next_call(self, id: str) -> _Call:
        self.sent = time.monotonic()
        return _wait_call(id, self.deadline - self.sent)

    def pause_after(self, p: Promise) -> float | None:
        """``None`` when done, else the seconds to pause before the next request."""
        now = time.monotonic()
        if p.state is not State.PENDING or now >= self.deadline:
            return None
        asked = min(self.deadline - self.sent, MAX_WAIT_SECONDS)
        if now - self.sent < asked - 0.05:
            return min(POLL_PAUSE_SECONDS, self.deadline - now)
        return 0.0


# -- decoding ----------------------------------------------------------------------------

_promise_decoder: Final = msgspec.json.Decoder(Promise)
_page_decoder: Final = msgspec.json.Decoder(SearchPage)


class _ErrorBody(msgspec.Struct):
    code: int
    message: str
    details: list[Any] | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody


_error_decoder: Final = msgspec.json.Decoder(_ErrorEnvelope)


def _raise_for_status(response: httpx.Response) -> None:
    """Raise the ``TrothError`` of a non-2xx response, from its JSON error body if any."""
    if response.is_success:
        return
    try:
        body = _error_decoder.decode(response.content).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = response.text.strip()[:500] or response.reason_phrase
        raise error_from_code(
            response.status_code * 100,
            f"HTTP {response.status_code} from {response.request.url}: {text}",
        ) from None
    raise error_from_code(body.code, body.message, body.details)


def _decode_promise(response: httpx.Response) -> Promise:
    _raise_for_status(response)
    return _decode(_promise_decoder, response)


def _decode_page(response: httpx.Response) -> SearchPage:
    _raise_for_status(response)
    return _decode(_page_decoder, response)


class SchedulePage(msgspec.Struct, frozen=True):
    """One page of a schedule search (encodes as the wire's ``{"schedules", "cursor"}``);
    ``cursor`` is ``None`` on the last page."""

    schedules: list[Schedule]
    cursor: str | None = None


_schedule_decoder: Final = msgspec.json.Decoder(Schedule)
_schedule_page_decoder: Final = msgspec.json.Decoder(SchedulePage)


def _decode_schedule(response: httpx.Response) -> Schedule:
    _raise_for_status(response)
    return _decode(_schedule_decoder, response)


def _decode_schedule_page(response: httpx.Response) -> SchedulePage:
    _raise_for_status(response)
    return _decode(_schedule_page_decoder, response)


def _decode(decoder: msgspec.json.Decoder[_T], response: httpx.Response) -> _T:
    try:
        return decoder.decode(response.content)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise TrothError(
            f"unexpected response from {response.request.url}: {exc}", code=50200
        ) from None


def _ping_ok(response: httpx.Response) -> bool:
    return response.status_code == 200


# -- the task framework: responses --------------------------------------------------------


class TaskInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """A task as the wire shows it (``troth.model.Task.to_wire()``, API.md 3).

    Task routes answer every member; stream messages carry a subset (``type`` and ``state``
    may be absent there), so everything but ``id`` and ``counter`` is optional.
    """

    # in the order of ``Task.to_wire()``, so that a task re-encodes as the server sent it
    id: str
    type: TaskKind | None = None
    state: TaskState | None = None
    counter: int
    timeout: int | None = None
    root_promise_id: str | None = None
    created_on: int | None = None
    leaf_promise_id: str | None = None
    process_id: str | None = None
    ttl: int | None = None
    expires_at: int | None = None
    completed_on: int | None = None

    @property
    def fence(self) -> Fence:
        """``(id, counter)``, for the ``fence=`` argument of writes made under this task."""
        return (self.id, self.counter)


class PromiseAndTask(NamedTuple):
    """Answer of ``create_promise_and_task``: ``task`` is ``None`` when deduplicated (200)."""

    promise: Promise
    task: TaskInfo | None


class CallbackResult(NamedTuple):
    """Answer of ``register_callback`` / ``subscribe``.

    ``callback`` is ``None`` (200) when the promise is already completed (continue at once:
    its result is in ``promise``) or the callback already exists.
    """

    callback: Callback | None
    promise: Promise


class ClaimedPromise(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    href: str | None = None
    data: Promise


class ClaimedPromises(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    root: ClaimedPromise
    leaf: ClaimedPromise | None = None


class ClaimedTask(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Answer of ``claim_task``, shaped (and encoding) exactly as the wire's claim answer.

    ``type`` is ``invoke`` (run the function of ``root``) or ``resume`` (``leaf``, awaited by
    ``root``, has completed).
    """

    type: TaskKind
    promises: ClaimedPromises

    @property
    def root(self) -> Promise:
        return self.promises.root.data

    @property
    def leaf(self) -> Promise | None:
        return None if self.promises.leaf is None else self.promises.leaf.data


class Href(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Links sent with a task message (GET forms of the task routes)."""

    claim: str | None = None
    complete: str | None = None
    heartbeat: str | None = None


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One message of a worker stream (``listen``), encoding back to its wire JSON.

    ``type`` ``invoke`` / ``resume``: ``task`` (claim it with ``task.id``, ``task.counter``) and
    ``href``; ``notify``: ``promise``, completed. ``type`` is kept as the server's string so
    that message kinds this client does not know pass through; compare with ``TaskKind``.
    """

    type: str
    task: TaskInfo | None = None
    href: Href | None = None
    promise: Promise | None = None


class _WireRecv(msgspec.Struct, frozen=True):
    type: str
    data: dict[str, Any] | None = None


class _WireCallback(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    promise_id: str
    root_promise_id: str | None = None
    recv: _WireRecv | str
    timeout: int
    created_on: int


class _WireCallbackResult(msgspec.Struct, frozen=True):
    promise: Promise
    callback: _WireCallback | None = None


class _WirePromiseAndTask(msgspec.Struct, frozen=True):
    promise: Promise
    task: TaskInfo | None = None


class _TasksAffected(msgspec.Struct, frozen=True, rename="camel"):
    tasks_affected: int


class _LocksAffected(msgspec.Struct, frozen=True, rename="camel"):
    locks_affected: int


def recv_from_wire(recv: Mapping[str, Any] | str) -> Recv:
    """A ``troth.model.Recv`` from a wire receiver, leniently.

    Every form the server accepts (``troth.recv.parse_recv``: ``poll://any@group[/id]``,
    ``poll://uni@group/id``, ``http(s)://...``, ``{"type": "poll" | "http", "data": {...}}``)
    is decoded; anything else is kept as ``Recv(type=...)`` (a logical name such as
    ``default`` becomes ``Recv(type="default")``) rather than refused.
    """
    try:
        return parse_recv(recv if isinstance(recv, str) else dict(recv), receivers={})
    except ValidationError:
        return Recv(type=recv if isinstance(recv, str) else str(recv.get("type", "")))


def callback_to_wire(callback: Callback) -> dict[str, object]:
    """The wire JSON object of a callback (``recv`` as ``{"type", "data"}``)."""
    out: dict[str, object] = {"id": callback.id, "promiseId": callback.promise_id}
    if callback.root_promise_id is not None:
        out["rootPromiseId"] = callback.root_promise_id
    out["recv"] = callback.recv.to_wire()
    out["timeout"] = callback.timeout
    out["createdOn"] = callback.created_on
    return out


def _callback_from_wire(wire: _WireCallback) -> Callback:
    recv = (
        wire.recv
        if isinstance(wire.recv, str)
        else {"type": wire.recv.type, "data": wire.recv.data}
    )
    return Callback(
        id=wire.id,
        promise_id=wire.promise_id,
        root_promise_id=wire.root_promise_id,
        recv=recv_from_wire(recv),
        timeout=wire.timeout,
        created_on=wire.created_on,
    )


_task_decoder: Final = msgspec.json.Decoder(TaskInfo)
_claim_decoder: Final = msgspec.json.Decoder(ClaimedTask)
_message_decoder: Final = msgspec.json.Decoder(Message)
_lock_decoder: Final = msgspec.json.Decoder(Lock)
_callback_result_decoder: Final = msgspec.json.Decoder(_WireCallbackResult)
_promise_and_task_decoder: Final = msgspec.json.Decoder(_WirePromiseAndTask)
_tasks_affected_decoder: Final = msgspec.json.Decoder(_TasksAffected)
_locks_affected_decoder: Final = msgspec.json.Decoder(_LocksAffected)


def _decode_promise_and_task(response: httpx.Response) -> PromiseAndTask:
    _raise_for_status(response)
    wire = _decode(_promise_and_task_decoder, response)
    return PromiseAndTask(wire.promise, wire.task)


def _decode_callback_result(response: httpx.Response) -> CallbackResult:
    _raise_for_status(response)
    wire = _decode(_callback_result_decoder, response)
    callback = None if wire.callback is None else _callback_from_wire(wire.callback)
    return CallbackResult(callback, wire.promise)


def _decode_claim(response: httpx.Response) -> ClaimedTask:
    _raise_for_status(response)
    return _decode(_claim_decoder, response)


def _decode_task(response: httpx.Response) -> TaskInfo:
    _raise_for_status(response)
    return _decode(_task_decoder, response)


def _decode_tasks_affected(response: httpx.Response) -> int:
    _raise_for_status(response)
    return _decode(_tasks_affected_decoder, response).tasks_affected


def _decode_lock(response: httpx.Response) -> Lock:
    _raise_for_status(response)
    return _decode(_lock_decoder, response)


def _decode_locks_affected(response: httpx.Response) -> int:
    _raise_for_status(response)
    return _decode(_locks_affected_decoder, response).locks_affected


def _decode_message(data: str, url: str) -> Message:
    try:
        return _message_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise TrothError(f"unexpected message on the stream {url}: {exc}", code=50200) from None


class _EventParser:
    """The ``data`` of server-sent events, fed one line at a time (WHATWG SSE, data only).

    Comment lines (``:`` keep-alives) and the ``event``, ``id`` and ``retry`` fields are
    skipped; several ``data`` lines of one event are joined with newlines; a blank line ends
    an event. An event cut off by the end of the stream is dropped, as the standard says.
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """The data of the event this line completes, else ``None``."""
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return None


def _connection_failed(url: str, exc: httpx.TransportError) -> ConnectionFailed:
    if isinstance(exc, httpx.TimeoutException):
        what = f"no answer from the troth server at {url} in time ({type(exc).__name__})"
    else:
        what = f"cannot reach the troth server at {url}: {exc or type(exc).__name__}"
    return ConnectionFailed(f"{what}; check the URL (--url / TROTH_URL) and that it is running")


def authorization(url: str, token: str | None, user: str | None) -> tuple[str, str | None]:
    """The URL without credentials, and the ``Authorization`` header to send.

    Credentials, first found wins: ``token`` (bearer), ``user`` (``NAME:PASSWORD``, basic),
    the URL's own ``http://name:password@host``, then ``$TROTH_TOKEN``, then ``$TROTH_USER``.
    """
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port is not None else "")
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        if token is None and user is None:
            user = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    if token is None and user is None:
        token = os.environ.get("TROTH_TOKEN") or None
        user = os.environ.get("TROTH_USER") or None
    if token is not None:
        return url, f"Bearer {token}"
    if user is not None:
        if ":" not in user:
            raise ValidationError("user must be NAME:PASSWORD (basic authentication)")
        return url, "Basic " + base64.b64encode(user.encode()).decode()
    return url, None


def _default_headers(auth: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    out = {"Accept": "application/json", **(headers or {})}
    if auth is not None:
        out["Authorization"] = auth
    return out


class _Base:
    """Configuration and request plumbing shared by both clients."""

    def __init__(
        self, url: str | None, timeout: float, token: str | None = None, user: str | None = None
    ) -> None:
        raw = (url or os.environ.get("TROTH_URL") or DEFAULT_URL).rstrip("/")
        self.url, self._auth = authorization(raw, token, user)
        self.timeout = timeout

    def _timeout_for(self, call: _Call) -> httpx.Timeout:
        if call.extra_read:
            return httpx.Timeout(self.timeout, read=self.timeout + call.extra_read)
        return httpx.Timeout(self.timeout)

    def _request_kwargs(self, call: _Call) -> dict[str, Any]:
        return {
            "params": call.params or None,
            "headers": call.headers or None,
            "content": call.content,
            "timeout": self._timeout_for(call),
        }

    def _stream_kwargs(self, call: _Call, read_timeout: float | None) -> dict[str, Any]:
        return {
            **self._request_kwargs(call),
            "timeout": httpx.Timeout(self.timeout, read=read_timeout),
        }


# -- sync --------------------------------------------------------------------------------


class Client(_Base):
    """A blocking client (``httpx.Client``); use as a context manager or call ``close()``.

    Args:
        url: server base URL; default ``$TROTH_URL``, else ``http://127.0.0.1:8001``.
        timeout: seconds for connecting, writing and reading (a wait adds its own duration).
        transport: an httpx transport (tests: ``httpx.MockTransport``).
        token: bearer token sent as ``Authorization: Bearer <token>``.
        user: ``NAME:PASSWORD`` for basic authentication (or put them in the URL,
            ``http://name:password@host:8001``). Without either, ``$TROTH_TOKEN`` or
            ``$TROTH_USER`` is used when set.
        headers: extra headers sent with every request.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
        user: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(url, timeout, token, user)
        self._http = httpx.Client(
            base_url=self.url,
            transport=transport,
            timeout=timeout,
            headers=_default_headers(self._auth, headers),
        )

    def _send(self, call: _Call) -> httpx.Response:
        try:
            return self._http.request(call.method, call.path, **self._request_kwargs(call))
        except httpx.TransportError as exc:
            raise _connection_failed(self.url, exc) from exc

    def create_promise(
        self,
        id: str,
        timeout: int,
        *,
        param: ParamLike = None,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
        fence: Fence | None = None,
    ) -> Promise:
        """Create promise ``id`` with absolute deadline ``timeout`` (epoch ms).

        Returns the new promise (201) or, for a replay with the same idempotency key, the
        stored one (200). Raises ``AlreadyExists`` (40900) when the id exists otherwise.
        With ``fence=(task_id, counter)`` the create happens only while that task is claimed
        with that counter, else ``FencingFailed`` (41200) and nothing is written (the same
        holds for the completions below).
        """
        call = _create_call(id, timeout, param, tags, idempotency_key, strict, headers, fence)
        return _decode_promise(self._send(call))

    def get_promise(self, id: str) -> Promise:
        """Read a promise; raises ``NotFound`` (40400)."""
        return _decode_promise(self._send(_get_call(id)))

    def wait_promise(self, id: str, wait: float) -> Promise:
        """Read a promise once it is completed, or after ``wait`` seconds if still pending."""
        loop = _WaitLoop(wait)
        while True:
            p = _decode_promise(self._send(loop.next_call(id)))
            pause = loop.pause_after(p)
            if pause is None:
                return p
            time.sleep(pause)

    def resolve_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
        fence: Fence | None = None,
    ) -> Promise:
        """Resolve a pending promise; raises ``AlreadyCompleted`` / ``NotFound``."""
        call = _complete_call(id, State.RESOLVED, value, idempotency_key, strict, headers, fence)
        return _decode_promise(self._send(call))

    def reject_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
        fence: Fence | None = None,
    ) -> Promise:
        """Reject a pending promise; raises ``AlreadyCompleted`` / ``NotFound``."""
        call = _complete_call(id, State.REJECTED, value, idempotency_key, strict, headers, fence)
        return _decode_promise(self._send(call))

    def cancel_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
        fence: Fence | None = None,
    ) -> Promise:
        """Cancel (REJECTED_CANCELED) a pending promise; raises ``AlreadyCompleted``."""
        call = _complete_call(
            id, State.REJECTED_CANCELED, value, idempotency_key, strict, headers, fence
        )
        return _decode_promise(self._send(call))

    def search_promises(
        self,
        id: str = "*",
        *,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SearchPage:
        """One page of promises matching ``id`` (``*`` wildcard), newest first."""
        return _decode_page(self._send(_search_call(id, state, tags, limit, cursor)))

    def iter_promises(
        self,
        id: str = "*",
        *,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Iterator[Promise]:
        """Every matching promise, following cursors page by page (``limit`` per page)."""
        while True:
            page = self.search_promises(id, state=state, tags=tags, limit=limit, cursor=cursor)
            yield from page.promises
            if page.cursor is None:
                return
            cursor = page.cursor

    # -- schedules (API.md 4) ---------------------------------------------------------------

    def create_schedule(
        self,
        id: str,
        cron: str,
        promise_id: str,
        promise_timeout: int,
        *,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        promise_param: ParamLike = None,
        promise_tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Schedule:
        """Create schedule ``id``: at every ``cron`` time (UTC; 5 fields, an optional 6th for
        seconds, or ``@hourly``-style shortcuts) the server creates a promise.

        ``promise_id`` is the id template of those promises: ``{{.id}}`` is replaced by the
        schedule id, ``{{.timestamp}}`` by the run time (epoch ms) and ``{{.date}}`` by its
        date (``YYYY-MM-DD``, UTC). Each promise times out ``promise_timeout`` ms after its
        run, and carries ``promise_param`` and ``promise_tags``.

        Returns the new schedule (201) or, when ``id`` exists and ``idempotency_key`` is the
        key it was created with, the stored one (200). Raises ``AlreadyExists`` (40901) when
        it exists otherwise, ``ValidationError`` (40000) for a bad cron expression.
        """
        call = _create_schedule_call(
            id, cron, promise_id, promise_timeout, description, tags, promise_param,
            promise_tags, idempotency_key, headers,
        )  # fmt: skip
        return _decode_schedule(self._send(call))

    def get_schedule(self, id: str) -> Schedule:
        """Read schedule ``id``; raises ``NotFound`` (40401)."""
        return _decode_schedule(self._send(_get_schedule_call(id)))

    def delete_schedule(self, id: str) -> None:
        """Delete schedule ``id`` (promises it already created stay); raises ``NotFound``."""
        _raise_for_status(self._send(_delete_schedule_call(id)))

    def search_schedules(
        self,
        id: str = "*",
        *,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SchedulePage:
        """One page of schedules whose id matches ``id`` (``*`` wildcard) and every tag."""
        return _decode_schedule_page(self._send(_search_schedules_call(id, tags, limit, cursor)))

    def iter_schedules(
        self,
        id: str = "*",
        *,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Iterator[Schedule]:
        """Every matching schedule, following cursors page by page (``limit`` per page)."""
        while True:
            page = self.search_schedules(id, tags=tags, limit=limit, cursor=cursor)
            yield from page.schedules
            if page.cursor is None:
                return
            cursor = page.cursor

    # -- the task framework (API.md 2, 3, 5) ---------------------------------------------

    def create_promise_and_task(
        self,
        id: str,
        timeout: int,
        *,
        process_id: str,
        ttl: int,
        param: ParamLike = None,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> PromiseAndTask:
        """Create promise ``id`` together with a task already claimed by ``process_id``
        (``POST /promises/task``; lease ``ttl`` ms, renewed by ``heartbeat_tasks``).

        Returns ``(promise, task)``; ``task`` is ``None`` when the create was deduplicated
        (200). Raises ``AlreadyExists`` like ``create_promise``.
        """
        call = _create_with_task_call(
            id, timeout, process_id, ttl, param, tags, idempotency_key, strict, headers
        )
        return _decode_promise_and_task(self._send(call))

    def register_callback(
        self,
        promise_id: str,
        *,
        root_promise_id: str,
        timeout: int,
        recv: RecvLike,
        fence: Fence | None = None,
    ) -> CallbackResult:
        """Ask for a resume task for ``root_promise_id``, sent to ``recv`` once ``promise_id``
        completes (``POST /promises/callback/{id}``).

        Returns ``(callback, promise)``: ``callback`` is ``None`` when the promise is already
        completed or the callback exists (200). Raises ``NotFound`` for a missing promise.
        """
        call = _callback_call(promise_id, root_promise_id, timeout, recv, fence)
        return _decode_callback_result(self._send(call))

    def subscribe(
        self, promise_id: str, *, id: str, timeout: int, recv: RecvLike
    ) -> CallbackResult:
        """Ask for a notify message to ``recv`` once ``promise_id`` completes; ``id`` names the
        subscription (``POST /promises/subscribe/{id}``). Answers like ``register_callback``.
        """
        return _decode_callback_result(self._send(_subscribe_call(promise_id, id, timeout, recv)))

    def claim_task(self, id: str, counter: int, *, process_id: str, ttl: int) -> ClaimedTask:
        """Claim task ``id`` at ``counter`` for ``process_id`` with a lease of ``ttl`` ms.

        Raises ``Forbidden`` (40306..40309: claimed, completed, bad counter, bad state) or
        ``NotFound`` (40403).
        """
        return _decode_claim(self._send(_claim_call(id, counter, process_id, ttl)))

    def complete_task(self, id: str, counter: int) -> TaskInfo:
        """Complete claimed task ``id`` at ``counter``; a completed or timed-out task is
        answered as it is (200)."""
        return _decode_task(self._send(_complete_task_call(id, counter)))

    def drop_task(self, id: str, counter: int) -> TaskInfo:
        """Give claimed task ``id`` back: it is dispatched again with ``counter + 1``."""
        return _decode_task(self._send(_drop_task_call(id, counter)))

    def heartbeat_tasks(self, process_id: str) -> int:
        """Renew the lease of every task claimed by ``process_id``; returns how many."""
        return _decode_tasks_affected(self._send(_heartbeat_tasks_call(process_id)))

    def acquire_lock(self, resource_id: str, execution_id: str, process_id: str, ttl: int) -> Lock:
        """Take (or re-take, for the same ``execution_id``) the lock on ``resource_id`` for
        ``ttl`` ms; raises ``Forbidden`` (40305) while another execution holds it."""
        call = _acquire_lock_call(resource_id, execution_id, process_id, ttl)
        return _decode_lock(self._send(call))

    def release_lock(self, resource_id: str, execution_id: str) -> None:
        """Release the lock; raises ``NotFound`` (40402) when ``execution_id`` does not hold it."""
        _raise_for_status(self._send(_release_lock_call(resource_id, execution_id)))

    def heartbeat_locks(self, process_id: str) -> int:
        """Renew every lock of ``process_id``; returns how many."""
        return _decode_locks_affected(self._send(_heartbeat_locks_call(process_id)))

    def listen(
        self, group: str, id: str, *, read_timeout: float | None = None
    ) -> Generator[Message, None, None]:
        """The messages of worker stream ``id`` of ``group`` (``GET /poll/{group}/{id}``).

        A generator: the stream is open while it is iterated and closed when it is closed
        (``break``, ``close()``, garbage collection). It ends when the server closes the
        stream (a newer stream for the same id replaced it, or shutdown); reconnecting is the
        caller's business. ``read_timeout`` bounds the silence between two lines (keep-alive
        comments count), else ``ConnectionFailed``; ``None`` waits forever. A message that is
        not a JSON object of the expected shape raises ``TrothError`` (code 50200).
        """
        url = self.url + _listen_call(group, id).path
        with contextlib.closing(self.listen_raw(group, id, read_timeout=read_timeout)) as events:
            for data in events:
                yield _decode_message(data, url)

    def listen_raw(
        self, group: str, id: str, *, read_timeout: float | None = None
    ) -> Generator[str, None, None]:
        """Like ``listen``, but each message is the event's data as sent (JSON text)."""
        call = _listen_call(group, id)
        parser = _EventParser()
        try:
            with self._http.stream(
                call.method, call.path, **self._stream_kwargs(call, read_timeout)
            ) as response:
                if not response.is_success:
                    response.read()
                    _raise_for_status(response)
                for line in response.iter_lines():
                    data = parser.feed(line)
                    if data is not None:
                        yield data
        except httpx.TransportError as exc:
            raise _connection_failed(self.url, exc) from exc

    def ping(self) -> bool:
        """True when the server answers ``GET /ping`` with 200."""
        try:
            return _ping_ok(self._send(_PING))
        except ConnectionFailed:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- async -------------------------------------------------------------------------------


class AsyncClient(_Base):
    """The asyncio twin of ``Client`` (``httpx.AsyncClient``); same methods, awaited.

    Use ``async with AsyncClient(...)`` or ``await client.close()``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        token: str | None = None,
        user: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(url, timeout, token, user)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            transport=transport if transport is not None else LeanTransport(),
            timeout=timeout,
            headers=_default_headers(self._auth, headers),
        )

    async def _send(self, call: _Call) -> httpx.Response:
        try:
            return await self._http.request(call.method, call.path, **self._request_kwargs(call))
        except httpx.TransportError as exc:
            raise _connection_failed(self.url, exc) from exc

    async def create_promise(
        self,
        id: str,
        timeout: int,
        *,
        param: ParamLike = None,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
        fence: Fence | None = None,
    ) -> Promise:
        """See ``Client.create_promise``."""
        call = _create_call(id, timeout, param, tags, idempotency_key, strict, headers, fence)
        return _decode_promise(await self._send(call))

    async def get_promise(self, id: str) -> Promise:
        """See ``Client.get_promise``."""
        return _decode_promise(await self._send(_get_call(id)))

    async def wait_promise(self, id: str, wait: float) -> Promise:
        """See ``Client.wait_promise``."""
        loop = _WaitLoop(wait)
        while True:
            p = _decode_promise(await self._send(loop.next_call(id)))
            pause = loop.pause_after(p)
            if pause is None:
                return p
            await asyncio.sleep(pause)

    async def resolve_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
        fence: Fence | None = None,
    ) -> Promise:
        """See ``Client.resolve_promise``."""
        call = _complete_call(id, State.RESOLVED, value, idempotency_key, strict, headers, fence)
        return _decode_promise(await self._send(call))

    async def reject_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
        fence: Fence | None = None,
    ) -> Promise:
        """See ``Client.reject_promise``."""
        call = _complete_call(id, State.REJECTED, value, idempotency_key, strict, headers, fence)
        return _decode_promise(await self._send(call))

    async def cancel_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
        fence: Fence | None = None,
    ) -> Promise:
        """See ``Client.cancel_promise``."""
        call = _complete_call(
            id, State.REJECTED_CANCELED, value, idempotency_key, strict, headers, fence
        )
        return _decode_promise(await self._send(call))

    async def search_promises(
        self,
        id: str = "*",
        *,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SearchPage:
        """See ``Client.search_promises``."""
        return _decode_page(await self._send(_search_call(id, state, tags, limit, cursor)))

    async def iter_promises(
        self,
        id: str = "*",
        *,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> AsyncIterator[Promise]:
        """See ``Client.iter_promises`` (an async generator)."""
        while True:
            page = await self.search_promises(
                id, state=state, tags=tags, limit=limit, cursor=cursor
            )
            for p in page.promises:
                yield p
            if page.cursor is None:
                return
            cursor = page.cursor

    # -- schedules -------------------------------------------------------------------------

    async def create_schedule(
        self,
        id: str,
        cron: str,
        promise_id: str,
        promise_timeout: int,
        *,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        promise_param: ParamLike = None,
        promise_tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Schedule:
        """See ``Client.create_schedule``."""
        call = _create_schedule_call(
            id, cron, promise_id, promise_timeout, description, tags, promise_param,
            promise_tags, idempotency_key, headers,
        )  # fmt: skip
        return _decode_schedule(await self._send(call))

    async def get_schedule(self, id: str) -> Schedule:
        """See ``Client.get_schedule``."""
        return _decode_schedule(await self._send(_get_schedule_call(id)))

    async def delete_schedule(self, id: str) -> None:
        """See ``Client.delete_schedule``."""
        _raise_for_status(await self._send(_delete_schedule_call(id)))

    async def search_schedules(
        self,
        id: str = "*",
        *,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SchedulePage:
        """See ``Client.search_schedules``."""
        call = _search_schedules_call(id, tags, limit, cursor)
        return _decode_schedule_page(await self._send(call))

    async def iter_schedules(
        self,
        id: str = "*",
        *,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> AsyncIterator[Schedule]:
        """See ``Client.iter_schedules`` (an async generator)."""
        while True:
            page = await self.search_schedules(id, tags=tags, limit=limit, cursor=cursor)
            for s in page.schedules:
                yield s
            if page.cursor is None:
                return
            cursor = page.cursor

    # -- the task framework ----------------------------------------------------------------

    async def create_promise_and_task(
        self,
        id: str,
        timeout: int,
        *,
        process_id: str,
        ttl: int,
        param: ParamLike = None,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> PromiseAndTask:
        """See ``Client.create_promise_and_task``."""
        call = _create_with_task_call(
            id, timeout, process_id, ttl, param, tags, idempotency_key, strict, headers
        )
        return _decode_promise_and_task(await self._send(call))

    async def register_callback(
        self,
        promise_id: str,
        *,
        root_promise_id: str,
        timeout: int,
        recv: RecvLike,
        fence: Fence | None = None,
    ) -> CallbackResult:
        """See ``Client.register_callback``."""
        call = _callback_call(promise_id, root_promise_id, timeout, recv, fence)
        return _decode_callback_result(await self._send(call))

    async def subscribe(
        self, promise_id: str, *, id: str, timeout: int, recv: RecvLike
    ) -> CallbackResult:
        """See ``Client.subscribe``."""
        call = _subscribe_call(promise_id, id, timeout, recv)
        return _decode_callback_result(await self._send(call))

    async def claim_task(self, id: str, counter: int, *, process_id: str, ttl: int) -> ClaimedTask:
        """See ``Client.claim_task``."""
        return _decode_claim(await self._send(_claim_call(id, counter, process_id, ttl)))

    async def complete_task(self, id: str, counter: int) -> TaskInfo:
        """See ``Client.complete_task``."""
        return _decode_task(await self._send(_complete_task_call(id, counter)))

    async def drop_task(self, id: str, counter: int) -> TaskInfo:
        """See ``Client.drop_task``."""
        return _decode_task(await self._send(_drop_task_call(id, counter)))

    async def heartbeat_tasks(self, process_id: str) -> int:
        """See ``Client.heartbeat_tasks``."""
        return _decode_tasks_affected(await self._send(_heartbeat_tasks_call(process_id)))

    async def acquire_lock(
        self, resource_id: str, execution_id: str, process_id: str, ttl: int
    ) -> Lock:
        """See ``Client.acquire_lock``."""
        call = _acquire_lock_call(resource_id, execution_id, process_id, ttl)
        return _decode_lock(await self._send(call))

    async def release_lock(self, resource_id: str, execution_id: str) -> None:
        """See ``Client.release_lock``."""
        _raise_for_status(await self._send(_release_lock_call(resource_id, execution_id)))

    async def heartbeat_locks(self, process_id: str) -> int:
        """See ``Client.heartbeat_locks``."""
        return _decode_locks_affected(await self._send(_heartbeat_locks_call(process_id)))

    async def listen(
        self, group: str, id: str, *, read_timeout: float | None = None
    ) -> AsyncGenerator[Message, None]:
        """See ``Client.listen`` (an async generator: close it with ``aclose()``, e.g. through
        ``contextlib.aclosing``, to close the stream at once)."""
        url = self.url + _listen_call(group, id).path
        events = self.listen_raw(group, id, read_timeout=read_timeout)
        async with contextlib.aclosing(events):
            async for data in events:
                yield _decode_message(data, url)

    async def listen_raw(
        self, group: str, id: str, *, read_timeout: float | None = None
    ) -> AsyncGenerator[str, None]:
        """See ``Client.listen_raw``."""
        call = _listen_call(group, id)
        parser = _EventParser()
        try:
            async with self._http.stream(
                call.method, call.path, **self._stream_kwargs(call, read_timeout)
            ) as response:
                if not response.is_success:
                    await response.aread()
                    _raise_for_status(response)
                async for line in response.aiter_lines():
                    data = parser.feed(line)
                    if data is not None:
                        yield data
        except httpx.TransportError as exc:
            raise _connection_failed(self.url, exc) from exc

    async def ping(self) -> bool:
        """See ``Client.ping``."""
        try:
            return _ping_ok(await self._send(_PING))
        except ConnectionFailed:
            return False

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
