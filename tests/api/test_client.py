"""troth.client: AsyncClient against the in-process app, Client against a real server.

Both clients are also driven through ``httpx.MockTransport`` to pin down what goes on the
wire (paths, headers, query) and how odd responses are turned into errors.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.server_process import ServerProcess, free_port, running_server
from troth.client import AsyncClient, Client, ConnectionFailed, encode_id
from troth.clock import FakeClock
from troth.engine import Engine
from troth.errors import AlreadyCompleted, AlreadyExists, NotFound, TrothError, ValidationError
from troth.model import Promise, State, Value
from troth.server import create_app

ODD_IDS = [
    "plain",
    "a/b/c",
    "with space",
    "question?mark=1&x",
    "hash#frag",
    "percent%20not-decoded%",
    "unicodé/日本語/🙂",
    "dots/./and/../segments",
    "..",
    "double//slash",
    "/leading",
    "trailing/",
    "plus+and;semi:colon",
]


# -- AsyncClient, in process -------------------------------------------------------------


@pytest.fixture
async def aclient(engine: Engine) -> AsyncIterator[AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(engine, manage=False))
    async with AsyncClient("http://troth", transport=transport) as client:
        yield client


def later(clock: FakeClock, ms: int = 60_000) -> int:
    return clock.now() + ms


async def test_async_create_returns_decoded_promise(aclient: AsyncClient, clock: FakeClock) -> None:
    p = await aclient.create_promise(
        "p1", later(clock), param="hello", tags={"k": "v"}, idempotency_key="ik"
    )
    assert isinstance(p, Promise)
    assert p.id == "p1"
    assert p.state is State.PENDING
    assert p.param == Value(data=b"hello")
    assert p.tags == {"k": "v"}
    assert p.idempotency_key_for_create == "ik"
    assert p.timeout == later(clock)
    assert p.created_on == clock.now()
    assert await aclient.get_promise("p1") == p


async def test_async_param_kinds(aclient: AsyncClient, clock: FakeClock) -> None:
    b = await aclient.create_promise("bytes", later(clock), param=b"\x00\xff")
    assert b.param.data == b"\x00\xff"
    v = await aclient.create_promise(
        "value", later(clock), param=Value(headers={"h": "1"}, data=b"d")
    )
    assert v.param == Value(headers={"h": "1"}, data=b"d")
    none = await aclient.create_promise("none", later(clock))
    assert none.param == Value()


async def test_async_dedupe_and_conflict(aclient: AsyncClient, clock: FakeClock) -> None:
    first = await aclient.create_promise("d", later(clock), idempotency_key="k")
    again = await aclient.create_promise("d", later(clock, 5), idempotency_key="k")
    assert again == first
    with pytest.raises(AlreadyExists) as info:
        await aclient.create_promise("d", later(clock), idempotency_key="other")
    assert info.value.code == 40900
    assert info.value.status == 409
    assert "already exists" in info.value.message
    with pytest.raises(AlreadyExists):
        await aclient.create_promise("d", later(clock))


async def test_async_strict_create_of_completed_promise_conflicts(
    aclient: AsyncClient, clock: FakeClock
) -> None:
    await aclient.create_promise("s", later(clock), idempotency_key="k")
    await aclient.resolve_promise("s")
    replay = await aclient.create_promise("s", later(clock), idempotency_key="k")
    assert replay.state is State.RESOLVED
    with pytest.raises(AlreadyExists):
        await aclient.create_promise("s", later(clock), idempotency_key="k", strict=True)


@pytest.mark.parametrize(
    ("method", "state"),
    [
        ("resolve_promise", State.RESOLVED),
        ("reject_promise", State.REJECTED),
        ("cancel_promise", State.REJECTED_CANCELED),
    ],
)
async def test_async_complete(
    aclient: AsyncClient, clock: FakeClock, method: str, state: State
) -> None:
    await aclient.create_promise("c", later(clock))
    clock.advance(10)
    p = await getattr(aclient, method)("c", value="out", idempotency_key="iku")
    assert p.state is state
    assert p.value == Value(data=b"out")
    assert p.completed_on == clock.now()
    assert p.idempotency_key_for_complete == "iku"
    # replay with the same key is deduplicated
    assert await getattr(aclient, method)("c", value="ignored", idempotency_key="iku") == p
    with pytest.raises(AlreadyCompleted) as info:
        await getattr(aclient, method)("c", idempotency_key="different")
    assert info.value.status == 403
    assert info.value.code in range(40301, 40305)


async def test_async_complete_other_state_strict(aclient: AsyncClient, clock: FakeClock) -> None:
    await aclient.create_promise("x", later(clock))
    await aclient.resolve_promise("x", idempotency_key="k")
    relaxed = await aclient.reject_promise("x", idempotency_key="k")
    assert relaxed.state is State.RESOLVED
    with pytest.raises(AlreadyCompleted) as info:
        await aclient.reject_promise("x", idempotency_key="k", strict=True)
    assert info.value.code == 40301


async def test_async_not_found(aclient: AsyncClient) -> None:
    with pytest.raises(NotFound) as info:
        await aclient.get_promise("missing")
    assert info.value.code == 40400
    with pytest.raises(NotFound):
        await aclient.resolve_promise("missing")


async def test_async_validation_error(aclient: AsyncClient, clock: FakeClock) -> None:
    with pytest.raises(ValidationError) as info:
        await aclient.create_promise("neg", -1)
    assert info.value.code == 40000
    assert "timeout" in info.value.message
    with pytest.raises(ValidationError):
        await aclient.search_promises(state="bogus")


async def test_async_search_paging_and_iter(aclient: AsyncClient, clock: FakeClock) -> None:
    ids = [f"page/{i}" for i in range(7)]
    for i, id in enumerate(ids):
        await aclient.create_promise(id, later(clock), tags={"parity": str(i % 2)})
    await aclient.create_promise("other", later(clock))

    first = await aclient.search_promises("page/*", limit=3)
    assert [p.id for p in first.promises] == ids[::-1][:3]
    assert first.cursor is not None
    second = await aclient.search_promises("page/*", limit=3, cursor=first.cursor)
    assert [p.id for p in second.promises] == ids[::-1][3:6]

    seen = [p.id async for p in aclient.iter_promises("page/*", limit=3)]
    assert seen == ids[::-1]
    odd = [p.id async for p in aclient.iter_promises("page/*", tags={"parity": "1"}, limit=2)]
    assert odd == ["page/5", "page/3", "page/1"]

    await aclient.resolve_promise("page/0")
    resolved = await aclient.search_promises(state="resolved")
    assert [p.id for p in resolved.promises] == ["page/0"]
    assert resolved.cursor is None
    pending = [p.id async for p in aclient.iter_promises(state="PENDING")]
    assert set(pending) == {*ids[1:], "other"}


async def test_async_wait_returns_on_completion(aclient: AsyncClient, clock: FakeClock) -> None:
    await aclient.create_promise("w", later(clock))
    started = time.monotonic()
    waiter = asyncio.create_task(aclient.wait_promise("w", 10))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await aclient.resolve_promise("w", value="v")
    done = await asyncio.wait_for(waiter, 5)
    assert done.state is State.RESOLVED
    assert done.value.data == b"v"
    assert time.monotonic() - started < 5


async def test_async_wait_elapses_pending(aclient: AsyncClient, clock: FakeClock) -> None:
    await aclient.create_promise("w2", later(clock))
    started = time.monotonic()
    p = await aclient.wait_promise("w2", 0.2)
    elapsed = time.monotonic() - started
    assert p.state is State.PENDING
    assert 0.15 <= elapsed < 5


async def test_async_wait_missing_raises(aclient: AsyncClient) -> None:
    with pytest.raises(NotFound):
        await aclient.wait_promise("nope", 1)


@pytest.mark.parametrize("id", ODD_IDS)
async def test_async_odd_ids_round_trip(aclient: AsyncClient, clock: FakeClock, id: str) -> None:
    created = await aclient.create_promise(id, later(clock))
    assert created.id == id
    assert (await aclient.get_promise(id)).id == id
    resolved = await aclient.resolve_promise(id)
    assert resolved.id == id
    assert resolved.state is State.RESOLVED
    assert (await aclient.wait_promise(id, 1)).id == id
    found = await aclient.search_promises(id)
    assert [p.id for p in found.promises] == [id]


async def test_async_ping(aclient: AsyncClient) -> None:
    assert await aclient.ping() is True


# -- what goes on the wire (MockTransport) -----------------------------------------------

PROMISE_JSON = {
    "id": "x",
    "state": "PENDING",
    "param": {},
    "value": {},
    "timeout": 10,
    "createdOn": 1,
}


def recording(
    status: int = 200, body: object = PROMISE_JSON
) -> tuple[list[httpx.Request], Callable[[httpx.Request], httpx.Response]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    return seen, handler


def test_encode_id() -> None:
    assert encode_id("a/b") == "a/b"
    assert encode_id("a b?c#d%e") == "a%20b%3Fc%23d%25e"
    assert encode_id("é") == "%C3%A9"
    assert encode_id("./x/..") == "%2E/x/%2E%2E"
    assert encode_id("a.b/..c") == "a.b/..c"


def test_request_shape_create_and_complete() -> None:
    seen, handler = recording()
    with Client(
        "http://h:1/", transport=httpx.MockTransport(handler), token="tok", headers={"X-A": "1"}
    ) as client:
        client.create_promise(
            "id/1",
            123,
            param=Value(headers={"h": "v"}, data=b"\x01"),
            tags={"t": "u"},
            idempotency_key="ik",
            strict=True,
            headers={"Task-Id": "t1", "Task-Counter": "2"},
        )
        client.cancel_promise("a b/é", value="v", idempotency_key="iu")
        client.get_promise("q?")
    create, cancel, get = seen
    assert create.method == "POST"
    assert create.url.raw_path == b"/promises"
    assert json.loads(create.content) == {
        "id": "id/1",
        "timeout": 123,
        "param": {"headers": {"h": "v"}, "data": "AQ=="},
        "tags": {"t": "u"},
    }
    assert create.headers["Idempotency-Key"] == "ik"
    assert create.headers["Strict"] == "true"
    assert create.headers["Task-Id"] == "t1"
    assert create.headers["Authorization"] == "Bearer tok"
    assert create.headers["X-A"] == "1"
    assert create.headers["Content-Type"] == "application/json"
    assert cancel.method == "PATCH"
    assert cancel.url.raw_path == b"/promises/a%20b/%C3%A9"
    assert json.loads(cancel.content) == {"state": "REJECTED_CANCELED", "value": {"data": "dg=="}}
    assert cancel.headers["Idempotency-Key"] == "iu"
    assert "Strict" not in cancel.headers
    assert get.url.raw_path == b"/promises/q%3F"
    assert get.content == b""


def test_request_shape_search_and_wait() -> None:
    seen, handler = recording(body={"promises": [PROMISE_JSON], "cursor": None})
    with Client("http://h:1", transport=httpx.MockTransport(handler), timeout=2.0) as client:
        page = client.search_promises(
            "a/*", state="pending", tags={"k": "v", "z": "1"}, limit=5, cursor="c"
        )
    assert page.cursor is None
    assert [p.id for p in page.promises] == ["x"]
    params = seen[0].url.params
    assert params["id"] == "a/*"
    assert params["state"] == "pending"
    assert params["tags[k]"] == "v"
    assert params["tags[z]"] == "1"
    assert params["limit"] == "5"
    assert params["cursor"] == "c"

    seen2, handler2 = recording(body={**PROMISE_JSON, "state": "RESOLVED", "completedOn": 5})
    with Client("http://h:1", transport=httpx.MockTransport(handler2), timeout=2.0) as client:
        client.wait_promise("x", 0)
        client.wait_promise("x", 1000)  # longer than the server's maximum: first chunk capped
    assert seen2[0].url.params["wait"] == "0"
    assert 299_000 < int(seen2[1].url.params["wait"]) <= 300_000
    read_timeout = seen2[1].extensions["timeout"]["read"]
    assert read_timeout > int(seen2[1].url.params["wait"]) / 1000 + 1


def test_wait_polls_politely_when_server_ignores_wait() -> None:
    seen, handler = recording()  # always PENDING, at once
    with Client("http://h:1", transport=httpx.MockTransport(handler)) as client:
        started = time.monotonic()
        p = client.wait_promise("x", 0.6)
        elapsed = time.monotonic() - started
    assert p.state is State.PENDING
    assert 0.55 <= elapsed < 3
    assert 2 <= len(seen) <= 5


def test_non_json_error_falls_back_to_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="bad gateway from proxy")

    with Client("http://h:1", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TrothError) as info:
            client.get_promise("x")
        assert client.ping() is False
    assert info.value.code == 50200
    assert "bad gateway from proxy" in info.value.message


def test_json_error_body_maps_class_and_details() -> None:
    body = {"error": {"code": 40302, "message": "already rejected", "details": [{"a": 1}]}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json=body)

    with (
        Client("http://h:1", transport=httpx.MockTransport(handler)) as client,
        pytest.raises(AlreadyCompleted) as info,
    ):
        client.resolve_promise("x")
    assert info.value.code == 40302
    assert info.value.message == "already rejected"
    assert info.value.details == [{"a": 1}]


def test_unexpected_success_body_is_an_error() -> None:
    _, handler = recording(body={"not": "a promise"})
    with (
        Client("http://h:1", transport=httpx.MockTransport(handler)) as client,
        pytest.raises(TrothError) as info,
    ):
        client.get_promise("x")
    assert "unexpected response" in info.value.message


async def test_async_uses_same_wire_shape() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=PROMISE_JSON)

    async with AsyncClient("http://h:1", transport=httpx.MockTransport(handler)) as client:
        await client.resolve_promise("a/%", value=b"\x00", strict=True)
    assert seen[0].url.raw_path == b"/promises/a/%25"
    assert json.loads(seen[0].content) == {"state": "RESOLVED", "value": {"data": "AA=="}}
    assert seen[0].headers["Strict"] == "true"


def test_default_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROTH_URL", "http://example.invalid:9/")
    with Client() as client:
        assert client.url == "http://example.invalid:9"
    monkeypatch.delenv("TROTH_URL")
    with Client() as client:
        assert client.url == "http://127.0.0.1:8001"


def test_connection_failed_sync() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, timeout=2.0) as client:
        assert client.ping() is False
        with pytest.raises(ConnectionFailed) as info:
            client.get_promise("x")
    assert info.value.code == 50300
    assert url in info.value.message


async def test_connection_failed_async() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(url, timeout=2.0) as client:
        assert await client.ping() is False
        with pytest.raises(ConnectionFailed) as info:
            await client.create_promise("x", 1)
    assert info.value.code == 50300
    assert url in info.value.message


# -- Client against a real server --------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path: Path = tmp_path_factory.mktemp("client") / "t.db"
    with running_server("sqlite:///" + str(path)) as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, timeout=10.0) as c:
        yield c


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_sync_ping(client: Client) -> None:
    assert client.ping() is True


def test_sync_create_dedupe_conflict(client: Client, request: pytest.FixtureRequest) -> None:
    id = f"sync/{request.node.name}"
    p = client.create_promise(id, now_ms() + 60_000, param="x", idempotency_key="k")
    assert p.state is State.PENDING
    assert p.param.data == b"x"
    assert client.create_promise(id, now_ms() + 1, idempotency_key="k") == p
    with pytest.raises(AlreadyExists) as info:
        client.create_promise(id, now_ms() + 60_000)
    assert info.value.code == 40900


def test_sync_complete_and_errors(client: Client, request: pytest.FixtureRequest) -> None:
    base = f"sync/{request.node.name}"
    for suffix, method, state in [
        ("r", client.resolve_promise, State.RESOLVED),
        ("j", client.reject_promise, State.REJECTED),
        ("c", client.cancel_promise, State.REJECTED_CANCELED),
    ]:
        id = f"{base}/{suffix}"
        client.create_promise(id, now_ms() + 60_000)
        p = method(id, value=b"v")
        assert (p.state, p.value.data) == (state, b"v")
        assert client.get_promise(id) == p
        with pytest.raises(AlreadyCompleted) as info:
            client.resolve_promise(id, strict=True)
        assert info.value.status == 403
    with pytest.raises(NotFound):
        client.get_promise(f"{base}/missing")


def test_sync_search_iter(client: Client, request: pytest.FixtureRequest) -> None:
    base = f"sync/{request.node.name}"
    ids = [f"{base}/{i}" for i in range(5)]
    for id in ids:
        client.create_promise(id, now_ms() + 60_000, tags={"suite": base})
    page = client.search_promises(f"{base}/*", limit=2)
    assert len(page.promises) == 2
    assert page.cursor
    assert [p.id for p in client.iter_promises(f"{base}/*", limit=2)] == ids[::-1]
    assert [p.id for p in client.iter_promises(tags={"suite": base}, limit=4)] == ids[::-1]


def test_sync_wait_returns_on_completion(client: Client, server: ServerProcess) -> None:
    id = "sync/wait/1"
    client.create_promise(id, now_ms() + 60_000)

    def complete_later() -> None:
        time.sleep(0.3)
        with Client(server.url) as other:
            other.resolve_promise(id, value="done")

    thread = threading.Thread(target=complete_later)
    started = time.monotonic()
    thread.start()
    try:
        p = client.wait_promise(id, 20)
    finally:
        thread.join()
    elapsed = time.monotonic() - started
    assert p.state is State.RESOLVED
    assert p.value.data == b"done"
    assert 0.2 <= elapsed < 10


def test_sync_wait_times_out_pending(client: Client) -> None:
    client.create_promise("sync/wait/2", now_ms() + 60_000)
    started = time.monotonic()
    p = client.wait_promise("sync/wait/2", 0.3)
    assert p.state is State.PENDING
    assert time.monotonic() - started >= 0.25


def test_sync_wait_sees_promise_timeout(client: Client) -> None:
    client.create_promise("sync/wait/3", now_ms() + 300)
    p = client.wait_promise("sync/wait/3", 10)
    assert p.state is State.REJECTED_TIMEDOUT
    assert p.completed_on == p.timeout


@pytest.mark.parametrize("id", ODD_IDS)
def test_sync_odd_ids_round_trip(client: Client, id: str) -> None:
    full = f"odd/{id}"
    assert client.create_promise(full, now_ms() + 60_000).id == full
    assert client.get_promise(full).id == full
    assert client.resolve_promise(full, value=full).value.data == full.encode()
    assert [p.id for p in client.search_promises(full).promises] == [full]
