"""troth.client, task framework: what goes on the wire (MockTransport), then real servers.

The MockTransport half pins down paths, bodies and headers of every task, callback and lock
request, the decoding of their answers, and the server-sent-events parser of ``listen``. The
second half drives a worker by hand against the in-process app (AsyncClient) and a real
``troth serve`` (Client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import msgspec
import pytest

from tests.server_process import ServerProcess, running_server
from troth.client import (
    AsyncClient,
    CallbackResult,
    ClaimedTask,
    Client,
    ConnectionFailed,
    Message,
    PromiseAndTask,
    TaskInfo,
    _EventParser,
    callback_to_wire,
    recv_from_wire,
)
from troth.clock import FakeClock
from troth.engine import Engine
from troth.engine.dispatch import TaskSettings
from troth.errors import FencingFailed, Forbidden, NotFound, TrothError
from troth.model import Callback, Lock, Promise, Recv, State, TaskKind, TaskState
from troth.server import create_app
from troth.server.stream import StreamConn, StreamRegistry
from troth.store.memory import MemoryStore

PROMISE_JSON: dict[str, Any] = {
    "id": "p",
    "state": "PENDING",
    "param": {},
    "value": {},
    "timeout": 10,
    "createdOn": 1,
}
TASK_JSON: dict[str, Any] = {
    "id": "__invoke:p",
    "type": "invoke",
    "state": "CLAIMED",
    "counter": 1,
    "timeout": 10,
    "rootPromiseId": "p",
    "createdOn": 1,
    "processId": "w1",
    "ttl": 5000,
    "expiresAt": 5001,
}
CALLBACK_JSON: dict[str, Any] = {
    "id": "__resume:root:p",
    "promiseId": "p",
    "rootPromiseId": "root",
    "recv": {"type": "poll", "data": {"group": "g", "id": "w1"}},
    "timeout": 10,
    "createdOn": 1,
}
LOCK_JSON: dict[str, Any] = {
    "resourceId": "r",
    "executionId": "e",
    "processId": "w1",
    "ttl": 1000,
    "expiresAt": 1001,
}

Handler = Callable[[httpx.Request], httpx.Response]


def recording(
    status: int = 200, body: object = PROMISE_JSON
) -> tuple[list[httpx.Request], Handler]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if body is None:
            return httpx.Response(status)
        return httpx.Response(status, json=body)

    return seen, handler


def mock_client(handler: Handler) -> Client:
    return Client("http://h:1", transport=httpx.MockTransport(handler))


def sent(request: httpx.Request) -> Any:
    assert request.headers["Content-Type"] == "application/json"
    return json.loads(request.content)


# -- requests ----------------------------------------------------------------------------


def test_create_promise_and_task_wire() -> None:
    seen, handler = recording(201, {"promise": PROMISE_JSON, "task": TASK_JSON})
    with mock_client(handler) as client:
        result = client.create_promise_and_task(
            "p",
            10,
            process_id="w1",
            ttl=5000,
            param="x",
            tags={"k": "v"},
            idempotency_key="ik",
            strict=True,
        )
    (request,) = seen
    assert (request.method, request.url.raw_path) == ("POST", b"/promises/task")
    assert sent(request) == {
        "promise": {"id": "p", "timeout": 10, "param": {"data": "eA=="}, "tags": {"k": "v"}},
        "task": {"processId": "w1", "ttl": 5000},
    }
    assert request.headers["Idempotency-Key"] == "ik"
    assert request.headers["Strict"] == "true"
    assert isinstance(result, PromiseAndTask)
    promise, task = result
    assert promise.id == "p"
    assert task is not None
    assert task.type is TaskKind.INVOKE
    assert task.state is TaskState.CLAIMED
    assert (task.process_id, task.ttl, task.expires_at) == ("w1", 5000, 5001)
    assert task.fence == ("__invoke:p", 1)


def test_create_promise_and_task_deduplicated() -> None:
    _, handler = recording(200, {"promise": PROMISE_JSON, "task": None})
    with mock_client(handler) as client:
        promise, task = client.create_promise_and_task("p", 10, process_id="w", ttl=1)
    assert task is None
    assert promise.state is State.PENDING


def test_fence_headers_on_create_and_completions() -> None:
    seen, handler = recording()
    fence = ("__invoke:a/b", 7)
    with mock_client(handler) as client:
        client.create_promise("c", 10, fence=fence)
        client.resolve_promise("c", fence=fence)
        client.reject_promise("c", fence=fence)
        client.cancel_promise("c", fence=fence, headers={"X-Other": "1"})
        client.resolve_promise("c")
    for request in seen[:4]:
        assert request.headers["Task-Id"] == "__invoke:a/b"
        assert request.headers["Task-Counter"] == "7"
    assert seen[3].headers["X-Other"] == "1"
    assert "Task-Id" not in seen[4].headers
    assert "Task-Counter" not in seen[4].headers


@pytest.mark.parametrize(
    ("recv", "wire"),
    [
        ("poll://any@g/w1", "poll://any@g/w1"),
        ("default", "default"),
        (
            Recv(type="poll", group="g", id="w1"),
            {"type": "poll", "data": {"group": "g", "id": "w1"}},
        ),
        (
            {"type": "http", "data": {"url": "http://x/y"}},
            {"type": "http", "data": {"url": "http://x/y"}},
        ),
    ],
)
def test_register_callback_wire(recv: Any, wire: Any) -> None:
    seen, handler = recording(201, {"callback": CALLBACK_JSON, "promise": PROMISE_JSON})
    with mock_client(handler) as client:
        result = client.register_callback(
            "a b/p", root_promise_id="root", timeout=10, recv=recv, fence=("t", 3)
        )
    (request,) = seen
    assert (request.method, request.url.raw_path) == ("POST", b"/promises/callback/a%20b/p")
    assert sent(request) == {"rootPromiseId": "root", "timeout": 10, "recv": wire}
    assert (request.headers["Task-Id"], request.headers["Task-Counter"]) == ("t", "3")
    assert isinstance(result, CallbackResult)
    callback, promise = result
    assert callback == Callback(
        id="__resume:root:p",
        promise_id="p",
        root_promise_id="root",
        recv=Recv(type="poll", group="g", id="w1"),
        timeout=10,
        created_on=1,
    )
    assert callback_to_wire(callback) == CALLBACK_JSON
    assert promise.id == "p"


def test_subscribe_wire_and_already_completed() -> None:
    done = {**PROMISE_JSON, "state": "RESOLVED", "completedOn": 5}
    seen, handler = recording(200, {"callback": None, "promise": done})
    with mock_client(handler) as client:
        callback, promise = client.subscribe("p/1", id="s1", timeout=10, recv="poll://uni@g/w")
    (request,) = seen
    assert (request.method, request.url.raw_path) == ("POST", b"/promises/subscribe/p/1")
    assert sent(request) == {"id": "s1", "timeout": 10, "recv": "poll://uni@g/w"}
    assert "Task-Id" not in request.headers
    assert callback is None
    assert promise.state is State.RESOLVED


def test_callback_not_found() -> None:
    body = {"error": {"code": 40400, "message": "promise 'p' not found"}}
    _, handler = recording(404, body)
    with mock_client(handler) as client, pytest.raises(NotFound) as info:
        client.register_callback("p", root_promise_id="r", timeout=1, recv="default")
    assert info.value.code == 40400


def test_claim_wire_and_decoding() -> None:
    leaf = {**PROMISE_JSON, "id": "leaf", "state": "RESOLVED", "completedOn": 3}
    body = {
        "type": "resume",
        "promises": {
            "root": {"id": "p", "href": "http://h:1/promises/p", "data": PROMISE_JSON},
            "leaf": {"id": "leaf", "href": "http://h:1/promises/leaf", "data": leaf},
        },
    }
    seen, handler = recording(201, body)
    with mock_client(handler) as client:
        claimed = client.claim_task("__resume:p:leaf", 2, process_id="w1", ttl=30_000)
    (request,) = seen
    assert (request.method, request.url.raw_path) == ("POST", b"/tasks/claim")
    assert sent(request) == {
        "id": "__resume:p:leaf",
        "counter": 2,
        "processId": "w1",
        "ttl": 30_000,
    }
    assert isinstance(claimed, ClaimedTask)
    assert claimed.type is TaskKind.RESUME
    assert claimed.root.id == "p"
    assert claimed.leaf is not None
    assert claimed.leaf.state is State.RESOLVED
    assert claimed.promises.root.href == "http://h:1/promises/p"
    invoke = {"type": "invoke", "promises": {"root": body["promises"]["root"]}}  # type: ignore[index]
    _, handler = recording(201, invoke)
    with mock_client(handler) as client:
        claimed = client.claim_task("__invoke:p", 1, process_id="w1", ttl=1)
    assert claimed.type is TaskKind.INVOKE
    assert claimed.leaf is None


def test_claim_refused() -> None:
    body = {"error": {"code": 40308, "message": "counter 1 is not the task's counter 2"}}
    _, handler = recording(403, body)
    with mock_client(handler) as client, pytest.raises(Forbidden) as info:
        client.claim_task("t", 1, process_id="w", ttl=1)
    assert info.value.code == 40308


@pytest.mark.parametrize(("method", "path"), [("complete_task", "/tasks/complete"),
                                               ("drop_task", "/tasks/drop")])  # fmt: skip
def test_complete_and_drop_wire(method: str, path: str) -> None:
    done = {**TASK_JSON, "state": "COMPLETED", "completedOn": 9}
    seen, handler = recording(201, done)
    with mock_client(handler) as client:
        task = getattr(client, method)("__invoke:p", 4)
    (request,) = seen
    assert (request.method, request.url.raw_path) == ("POST", path.encode())
    assert sent(request) == {"id": "__invoke:p", "counter": 4}
    assert isinstance(task, TaskInfo)
    assert task.state is TaskState.COMPLETED
    assert task.completed_on == 9


def test_heartbeats_wire() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/tasks/heartbeat":
            return httpx.Response(200, json={"tasksAffected": 3})
        return httpx.Response(200, json={"locksAffected": 2})

    with mock_client(handler) as client:
        assert client.heartbeat_tasks("w1") == 3
        assert client.heartbeat_locks("w1") == 2
    assert [r.url.raw_path for r in seen] == [b"/tasks/heartbeat", b"/locks/heartbeat"]
    assert [sent(r) for r in seen] == [{"processId": "w1"}, {"processId": "w1"}]


def test_locks_wire() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/locks/acquire":
            return httpx.Response(201, json=LOCK_JSON)
        return httpx.Response(204)

    with mock_client(handler) as client:
        lock = client.acquire_lock("r", "e", "w1", 1000)
        client.release_lock("r", "e")
    assert lock == Lock(
        resource_id="r", execution_id="e", process_id="w1", ttl=1000, expires_at=1001
    )
    acquire, release = seen
    assert acquire.url.raw_path == b"/locks/acquire"
    assert sent(acquire) == {
        "resourceId": "r",
        "executionId": "e",
        "processId": "w1",
        "ttl": 1000,
    }
    assert release.url.raw_path == b"/locks/release"
    assert sent(release) == {"resourceId": "r", "executionId": "e"}


def test_lock_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/locks/acquire":
            return httpx.Response(403, json={"error": {"code": 40305, "message": "held"}})
        return httpx.Response(404, json={"error": {"code": 40402, "message": "no lock"}})

    with mock_client(handler) as client:
        with pytest.raises(Forbidden) as held:
            client.acquire_lock("r", "e", "w1", 1000)
        with pytest.raises(NotFound) as missing:
            client.release_lock("r", "e")
    assert held.value.code == 40305
    assert missing.value.code == 40402


def test_fencing_failed_maps_to_class() -> None:
    body = {"error": {"code": 41200, "message": "task t is not claimed with counter 1"}}
    _, handler = recording(412, body)
    with mock_client(handler) as client, pytest.raises(FencingFailed) as info:
        client.resolve_promise("p", fence=("t", 1))
    assert info.value.status == 412


async def test_async_task_calls_share_the_wire_shape() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/promises/task":
            return httpx.Response(201, json={"promise": PROMISE_JSON, "task": TASK_JSON})
        if path.startswith(("/promises/callback/", "/promises/subscribe/")):
            return httpx.Response(201, json={"callback": CALLBACK_JSON, "promise": PROMISE_JSON})
        if path == "/tasks/claim":
            root = {"id": "p", "href": "h", "data": PROMISE_JSON}
            return httpx.Response(201, json={"type": "invoke", "promises": {"root": root}})
        if path in ("/tasks/complete", "/tasks/drop"):
            return httpx.Response(201, json=TASK_JSON)
        if path == "/tasks/heartbeat":
            return httpx.Response(200, json={"tasksAffected": 1})
        if path == "/locks/acquire":
            return httpx.Response(201, json=LOCK_JSON)
        if path == "/locks/release":
            return httpx.Response(204)
        if path == "/locks/heartbeat":
            return httpx.Response(200, json={"locksAffected": 1})
        return httpx.Response(201, json=PROMISE_JSON)

    async with AsyncClient("http://h:1", transport=httpx.MockTransport(handler)) as client:
        _, task = await client.create_promise_and_task("p", 10, process_id="w", ttl=5)
        assert task is not None
        cb, _ = await client.register_callback(
            "p", root_promise_id="root", timeout=10, recv="default", fence=("t", 2)
        )
        assert cb is not None
        await client.subscribe("p", id="s", timeout=10, recv="default")
        assert (await client.claim_task("t", 1, process_id="w", ttl=5)).root.id == "p"
        assert (await client.complete_task("t", 1)).id == "__invoke:p"
        assert (await client.drop_task("t", 1)).id == "__invoke:p"
        assert await client.heartbeat_tasks("w") == 1
        assert (await client.acquire_lock("r", "e", "w", 1)).resource_id == "r"
        await client.release_lock("r", "e")
        assert await client.heartbeat_locks("w") == 1
        await client.resolve_promise("p", fence=("t", 2))
    paths = [r.url.raw_path.decode() for r in seen]
    assert paths == [
        "/promises/task",
        "/promises/callback/p",
        "/promises/subscribe/p",
        "/tasks/claim",
        "/tasks/complete",
        "/tasks/drop",
        "/tasks/heartbeat",
        "/locks/acquire",
        "/locks/release",
        "/locks/heartbeat",
        "/promises/p",
    ]
    assert seen[1].headers["Task-Counter"] == "2"
    assert seen[-1].headers["Task-Id"] == "t"


# -- recv decoding -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "recv"),
    [
        ("poll://any@g/w1", Recv(type="poll", group="g", id="w1")),
        ("poll://any@g", Recv(type="poll", group="g")),
        ("poll://uni@g/w1", Recv(type="poll", group="g", id="w1", mode="uni")),
        ("https://x/y?z=1", Recv(type="http", url="https://x/y?z=1")),
        ("default", Recv(type="default")),
        ({"type": "poll", "data": {"group": "g", "id": "w", "mode": "uni"}},
         Recv(type="poll", group="g", id="w", mode="uni")),
        ({"type": "http", "data": {"url": "http://u", "headers": {"a": "b"}}},
         Recv(type="http", url="http://u", headers={"a": "b"})),
        ({"type": "carrier-pigeon"}, Recv(type="carrier-pigeon")),
    ],
)  # fmt: skip
def test_recv_from_wire(wire: Any, recv: Recv) -> None:
    assert recv_from_wire(wire) == recv


def test_callback_with_string_recv_decodes() -> None:
    body = {"callback": {**CALLBACK_JSON, "recv": "poll://uni@g/w"}, "promise": PROMISE_JSON}
    _, handler = recording(201, body)
    with mock_client(handler) as client:
        callback, _ = client.register_callback("p", root_promise_id="r", timeout=1, recv="x")
    assert callback is not None
    assert callback.recv == Recv(type="poll", group="g", id="w", mode="uni")


# -- listen: server-sent events ----------------------------------------------------------


def test_event_parser() -> None:
    parser = _EventParser()
    lines = [
        ": keep-alive",
        "",
        "event: message",
        "id: 7",
        'data: {"a":',
        "data:1}",
        "",
        "retry: 1000",
        "data: x\r",
        "\r",
        "",
        "data: cut off at the end",
    ]
    assert [d for d in map(parser.feed, lines) if d is not None] == ['{"a":\n1}', "x"]


INVOKE_MESSAGE = {
    "type": "invoke",
    "task": {"id": "__invoke:p", "counter": 1, "timeout": 10, "rootPromiseId": "p"},
    "href": {"claim": "http://h/tasks/claim/__invoke:p/1", "complete": "c", "heartbeat": "h"},
}
NOTIFY_MESSAGE = {"type": "notify", "promise": {**PROMISE_JSON, "state": "RESOLVED"}}


def sse_body(*messages: object) -> bytes:
    parts = [": hello\n\n"]
    for m in messages:
        parts.append(f"data: {json.dumps(m)}\n\n")
        parts.append(":\n\n")
    return "".join(parts).encode()


def sse_handler(seen: list[httpx.Request], body: bytes) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

    return handler


def test_listen_decodes_messages() -> None:
    seen: list[httpx.Request] = []
    body = sse_body(INVOKE_MESSAGE, NOTIFY_MESSAGE, {"type": "future-kind", "extra": 1})
    with mock_client(sse_handler(seen, body)) as client:
        messages = list(client.listen("g", "w/1"))
    (request,) = seen
    assert (request.method, request.url.raw_path) == ("GET", b"/poll/g/w/1")
    assert request.headers["Accept"] == "text/event-stream"
    invoke, notify, future = messages
    assert isinstance(invoke, Message)
    assert invoke.type == TaskKind.INVOKE
    assert invoke.task == TaskInfo(id="__invoke:p", counter=1, timeout=10, root_promise_id="p")
    assert invoke.href is not None
    assert invoke.href.claim == "http://h/tasks/claim/__invoke:p/1"
    assert json.loads(msgspec.json.encode(invoke)) == INVOKE_MESSAGE
    assert notify.type == TaskKind.NOTIFY
    assert notify.task is None
    assert isinstance(notify.promise, Promise)
    assert notify.promise.state is State.RESOLVED
    assert future.type == "future-kind"


async def test_async_listen_decodes_messages() -> None:
    seen: list[httpx.Request] = []
    body = sse_body(INVOKE_MESSAGE, NOTIFY_MESSAGE)
    handler = sse_handler(seen, body)

    async def ahandler(request: httpx.Request) -> httpx.Response:
        return handler(request)

    async with AsyncClient("http://h:1", transport=httpx.MockTransport(ahandler)) as client:
        messages = [m async for m in client.listen("a group", "w1")]
    assert [m.type for m in messages] == ["invoke", "notify"]
    assert seen[0].url.raw_path == b"/poll/a%20group/w1"


def test_listen_raw_yields_event_data() -> None:
    body = sse_body(INVOKE_MESSAGE) + b"data: not json\n\n"
    with mock_client(sse_handler([], body)) as client:
        assert list(client.listen_raw("g", "w")) == [json.dumps(INVOKE_MESSAGE), "not json"]


async def test_async_listen_raw_yields_event_data() -> None:
    handler = sse_handler([], sse_body(NOTIFY_MESSAGE))

    async def ahandler(request: httpx.Request) -> httpx.Response:
        return handler(request)

    async with AsyncClient("http://h:1", transport=httpx.MockTransport(ahandler)) as client:
        assert [d async for d in client.listen_raw("g", "w")] == [json.dumps(NOTIFY_MESSAGE)]


def test_listen_error_status_and_bad_message() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"code": 40000, "message": "bad group"}})

    with mock_client(refused) as client, pytest.raises(TrothError) as info:
        next(client.listen("g", "w"))
    assert info.value.code == 40000

    with (
        mock_client(sse_handler([], b"data: not json\n\n")) as client,
        pytest.raises(TrothError) as bad,
    ):
        next(client.listen("g", "w"))
    assert bad.value.code == 50200
    assert "/poll/g/w" in bad.value.message


def test_listen_unreachable() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with mock_client(down) as client, pytest.raises(ConnectionFailed):
        next(client.listen("g", "w"))


# -- AsyncClient against the in-process app ----------------------------------------------

FAR = 2**63 - 1


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Like ``httpx.ASGITransport``, but the response body streams as the app sends it.

    ``httpx.ASGITransport`` runs the app to completion before answering, which never happens
    for a worker stream. Here the app runs in a task; the response is returned at
    ``http.response.start`` and its body read from a queue. Closing the response tells the
    app the client disconnected (``http.disconnect``) and waits for it to finish.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.url.scheme,
            "path": unquote(request.url.raw_path.split(b"?")[0].decode("ascii")),
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": (request.url.host, request.url.port or 80),
            "client": ("127.0.0.1", 12345),
        }
        sent_request = False
        disconnected = asyncio.Event()
        started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def receive() -> dict[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    chunks.put_nowait(message["body"])
                if not message.get("more_body", False):
                    chunks.put_nowait(None)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:  # the app answered 500 already, or never started
                if not started.done():
                    started.set_exception(exc)
            finally:
                chunks.put_nowait(None)

        task = asyncio.create_task(run())
        pending: list[asyncio.Future[Any]] = [started, task]
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        start = await started
        return httpx.Response(
            start["status"],
            headers=start.get("headers", []),
            stream=_QueueStream(chunks, task, disconnected),
            request=request,
        )


class _QueueStream(httpx.AsyncByteStream):
    def __init__(
        self, chunks: asyncio.Queue[bytes | None], task: asyncio.Task[None], gone: asyncio.Event
    ) -> None:
        self.chunks, self.task, self.gone = chunks, task, gone

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self.chunks.get()) is not None:
            yield chunk

    async def aclose(self) -> None:
        self.gone.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 5)
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class Delivery:
    """The server's delivery for ``poll`` receivers; HTTP pushes are recorded."""

    def __init__(self, streams: StreamRegistry) -> None:
        self.streams = streams
        self.pushed: list[bytes] = []

    def stream_for(self, recv: Recv) -> StreamConn | None:
        return self.streams.stream_for(recv)

    async def push(self, recv: Recv, message: bytes) -> bool:
        self.pushed.append(message)
        return True


class World:
    """An engine with a fake clock whose dispatcher the test steps, behind the real app."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.streams = StreamRegistry()
        self.engine = Engine(
            MemoryStore(),
            clock,
            delivery=Delivery(self.streams),
            task_settings=TaskSettings(base_url="http://troth"),
        )
        self.app = create_app(self.engine, manage=False, streams=self.streams)
        self.client: AsyncClient

    async def step(self) -> None:
        """One dispatcher round: overdue tasks moved on, ready tasks sent."""
        assert self.engine.dispatcher is not None
        await self.engine.dispatcher.advance()
        await self.engine.dispatcher.dispatch()

    async def connected(self, n: int = 1) -> None:
        """Wait until ``n`` worker streams are connected."""
        for _ in range(500):
            if len(self.streams) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(self.streams)} streams connected, expected {n}")


@pytest.fixture
async def world(clock: FakeClock) -> AsyncIterator[World]:
    w = World(clock)
    await w.engine.open()
    async with AsyncClient("http://troth", transport=StreamingASGITransport(w.app)) as client:
        w.client = client
        yield w
    w.streams.close_all()
    await w.engine.stop()


async def next_message(messages: AsyncIterator[Message], timeout: float = 5.0) -> Message:
    return await asyncio.wait_for(anext(messages), timeout)


async def test_async_worker_cycle(world: World) -> None:
    w, client = world, world.client
    async with contextlib.aclosing(client.listen("g", "w1")) as messages:
        first = asyncio.ensure_future(next_message(messages))
        await w.connected()
        await client.create_promise(
            "job/1", FAR, param="in", tags={"resonate:invoke": "poll://any@g/w1"}
        )
        await w.step()
        msg = await first
    assert msg.type == TaskKind.INVOKE
    assert msg.task is not None
    assert msg.task.id == "__invoke:job/1"
    assert (msg.task.counter, msg.task.root_promise_id) == (1, "job/1")
    assert msg.task.state is TaskState.ENQUEUED
    assert msg.href is not None
    assert msg.href.claim == "http://troth/tasks/claim/__invoke:job/1/1"
    assert len(w.streams) == 0  # closing the generator closed the stream

    claimed = await client.claim_task(*msg.task.fence, process_id="w1", ttl=30_000)
    assert claimed.type is TaskKind.INVOKE
    assert claimed.root.id == "job/1"
    assert claimed.root.param.data == b"in"
    assert claimed.leaf is None
    assert claimed.promises.root.href == "http://troth/promises/job/1"
    with pytest.raises(Forbidden) as again:
        await client.claim_task(*msg.task.fence, process_id="w2", ttl=30_000)
    assert again.value.code == 40306
    assert await client.heartbeat_tasks("w1") == 1

    stale = (msg.task.id, msg.task.counter + 1)
    with pytest.raises(FencingFailed) as fenced:
        await client.resolve_promise("job/1", value="out", fence=stale)
    assert fenced.value.code == 41200
    assert (await client.get_promise("job/1")).state is State.PENDING

    done = await client.resolve_promise("job/1", value="out", fence=msg.task.fence)
    assert (done.state, done.value.data) == (State.RESOLVED, b"out")
    task = await client.complete_task(*msg.task.fence)
    assert task.state is TaskState.COMPLETED
    assert task.id == "__invoke:job/1"
    assert await client.heartbeat_tasks("w1") == 0


async def test_async_stream_connected_after_create_gets_parked_task(world: World) -> None:
    w, client = world, world.client
    await client.create_promise("job/2", FAR, tags={"resonate:invoke": "poll://any@late"})
    await w.step()  # nobody listens: parked
    async with contextlib.aclosing(client.listen("late", "x")) as messages:
        first = asyncio.ensure_future(next_message(messages))
        await w.connected()
        await w.step()
        msg = await first
    assert msg.task is not None
    assert msg.task.id == "__invoke:job/2"


async def test_async_promise_and_task_drop_and_errors(world: World) -> None:
    w, client = world, world.client
    promise, task = await client.create_promise_and_task(
        "pt", FAR, process_id="me", ttl=10_000, idempotency_key="k"
    )
    assert promise.state is State.PENDING
    assert task is not None
    assert (task.state, task.process_id, task.ttl) == (TaskState.CLAIMED, "me", 10_000)
    assert task.expires_at == w.clock.now() + 10_000
    replay = await client.create_promise_and_task(
        "pt", FAR, process_id="me", ttl=10_000, idempotency_key="k"
    )
    assert replay == PromiseAndTask(promise, None)
    w.clock.advance(5_000)
    assert await client.heartbeat_tasks("me") == 1
    dropped = await client.drop_task(*task.fence)
    assert (dropped.state, dropped.counter) == (TaskState.INIT, task.counter + 1)
    with pytest.raises(Forbidden) as stale:
        await client.claim_task(*task.fence, process_id="me", ttl=1)
    assert stale.value.code == 40308
    with pytest.raises(NotFound) as missing:
        await client.complete_task("__invoke:nope", 1)
    assert missing.value.code == 40403
    with pytest.raises(FencingFailed):
        await client.create_promise("child", FAR, fence=task.fence)


async def test_async_callbacks_and_subscriptions(world: World) -> None:
    w, client = world, world.client
    await client.create_promise("root", FAR)
    await client.create_promise("leaf", FAR)
    recv = Recv(type="poll", group="g", id="w1")
    cb, p = await client.register_callback("leaf", root_promise_id="root", timeout=FAR, recv=recv)
    assert cb == Callback(
        id="__resume:root:leaf",
        promise_id="leaf",
        root_promise_id="root",
        recv=recv,
        timeout=FAR,
        created_on=w.clock.now(),
    )
    assert p.id == "leaf"
    again = await client.register_callback(
        "leaf", root_promise_id="root", timeout=FAR, recv="poll://any@g/w1"
    )
    assert again.callback is None
    with pytest.raises(NotFound):
        await client.register_callback("nope", root_promise_id="root", timeout=FAR, recv=recv)

    sub, _ = await client.subscribe("leaf", id="s1", timeout=FAR, recv="poll://uni@n/s1")
    assert sub is not None
    assert sub.id == "__notify:leaf:s1"
    assert sub.root_promise_id is None
    assert sub.recv == Recv(type="poll", group="n", id="s1", mode="uni")
    assert (await client.subscribe("leaf", id="s1", timeout=FAR, recv="default")).callback is None
    with pytest.raises(NotFound):
        await client.subscribe("nope", id="s1", timeout=FAR, recv="default")

    async with (
        contextlib.aclosing(client.listen("g", "w1")) as worker,
        contextlib.aclosing(client.listen("n", "s1")) as watcher,
    ):
        resume = asyncio.ensure_future(next_message(worker))
        notify = asyncio.ensure_future(next_message(watcher))
        await w.connected(2)
        await client.resolve_promise("leaf", value="v")
        await w.step()
        r, n = await resume, await notify
    assert r.type == TaskKind.RESUME
    assert r.task is not None
    assert (r.task.root_promise_id, r.task.leaf_promise_id) == ("root", "leaf")
    assert n.type == TaskKind.NOTIFY
    assert n.promise is not None
    assert (n.promise.id, n.promise.state) == ("leaf", State.RESOLVED)

    claimed = await client.claim_task(*r.task.fence, process_id="w1", ttl=5_000)
    assert claimed.type is TaskKind.RESUME
    assert claimed.root.id == "root"
    assert claimed.leaf is not None
    assert (claimed.leaf.id, claimed.leaf.value.data) == ("leaf", b"v")

    # on a completed promise: nothing registered, the promise comes back to continue at once
    late, done = await client.register_callback(
        "leaf", root_promise_id="root", timeout=FAR, recv=recv, fence=r.task.fence
    )
    assert late is None
    assert done.state is State.RESOLVED
    await client.create_promise("leaf2", FAR)
    with pytest.raises(FencingFailed):
        await client.register_callback(
            "leaf2", root_promise_id="root", timeout=FAR, recv=recv, fence=(r.task.id, 99)
        )


async def test_async_locks(world: World) -> None:
    w, client = world, world.client
    lock = await client.acquire_lock("r", "e1", "p1", 1000)
    assert lock == Lock(
        resource_id="r",
        execution_id="e1",
        process_id="p1",
        ttl=1000,
        expires_at=w.clock.now() + 1000,
    )
    assert (await client.acquire_lock("r", "e1", "p1", 1000)).execution_id == "e1"
    with pytest.raises(Forbidden) as held:
        await client.acquire_lock("r", "e2", "p2", 1000)
    assert held.value.code == 40305
    w.clock.advance(900)
    assert await client.heartbeat_locks("p1") == 1
    assert await client.heartbeat_locks("p2") == 0
    with pytest.raises(NotFound):
        await client.release_lock("r", "e2")
    await client.release_lock("r", "e1")
    with pytest.raises(NotFound):
        await client.release_lock("r", "e1")
    assert (await client.acquire_lock("r", "e2", "p2", 1000)).process_id == "p2"
    w.clock.advance(1000)
    assert (await client.acquire_lock("r", "e3", "p3", 1000)).execution_id == "e3"  # expired


# -- Client against a real server --------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("client_tasks") / "t.db"
    with running_server("sqlite:///" + str(path)) as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, timeout=10.0) as c:
        yield c


def test_sync_worker_cycle(client: Client, request: pytest.FixtureRequest) -> None:
    id = f"sync/{request.node.name}"
    client.create_promise(id, FAR, param="in", tags={"resonate:invoke": "poll://any@sg/w1"})
    # the task was parked (no stream yet) and is sent as soon as this stream connects
    with contextlib.closing(client.listen("sg", "w1", read_timeout=20)) as messages:
        msg = next(messages)
    assert msg.type == TaskKind.INVOKE
    assert msg.task is not None
    assert msg.task.id == f"__invoke:{id}"

    claimed = client.claim_task(*msg.task.fence, process_id="w1", ttl=60_000)
    assert claimed.root.param.data == b"in"
    with pytest.raises(FencingFailed):
        client.resolve_promise(id, value="x", fence=(msg.task.id, msg.task.counter + 1))
    assert client.get_promise(id).state is State.PENDING
    assert client.heartbeat_tasks("w1") >= 1
    assert client.resolve_promise(id, value="out", fence=msg.task.fence).state is State.RESOLVED
    assert client.complete_task(*msg.task.fence).state is TaskState.COMPLETED


def test_sync_listen_read_timeout(client: Client) -> None:
    with (
        pytest.raises(ConnectionFailed) as info,
        contextlib.closing(client.listen("quiet", "w", read_timeout=0.3)) as messages,
    ):
        next(messages)
    assert "ReadTimeout" in info.value.message


def test_sync_callbacks_and_locks(client: Client, request: pytest.FixtureRequest) -> None:
    base = f"sync/{request.node.name}"
    client.create_promise(f"{base}/root", FAR)
    client.create_promise(f"{base}/leaf", FAR)
    created = client.register_callback(
        f"{base}/leaf", root_promise_id=f"{base}/root", timeout=FAR, recv="default"
    )
    assert created.callback is not None
    assert created.callback.recv == Recv(type="poll", group="default")
    assert (
        client.register_callback(
            f"{base}/leaf", root_promise_id=f"{base}/root", timeout=FAR, recv="default"
        ).callback
        is None
    )
    with pytest.raises(NotFound):
        client.subscribe(f"{base}/none", id="s", timeout=FAR, recv="default")
    assert client.subscribe(f"{base}/leaf", id="s", timeout=FAR, recv="default").callback

    client.acquire_lock(base, "e1", "p1", 60_000)
    with pytest.raises(Forbidden) as held:
        client.acquire_lock(base, "e2", "p2", 60_000)
    assert held.value.code == 40305
    assert client.heartbeat_locks("p1") >= 1
    client.release_lock(base, "e1")
    assert client.acquire_lock(base, "e2", "p2", 60_000).execution_id == "e2"
