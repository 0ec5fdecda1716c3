"""troth.client, schedules (API.md 4): what goes on the wire (MockTransport), then servers.

The MockTransport half pins down the paths, bodies, query strings and headers of the schedule
requests and the decoding of their answers and errors, for ``Client`` and ``AsyncClient``
alike. The second half drives the schedule routes of the in-process app (AsyncClient, fake
clock: runs fired by hand) and of a real ``troth serve`` (Client, real time).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest

from tests.server_process import ServerProcess, running_server
from troth.client import AsyncClient, Client, SchedulePage
from troth.clock import FakeClock
from troth.engine import Engine
from troth.errors import AlreadyExists, NotFound, TrothError, ValidationError
from troth.model import Schedule, State, Value
from troth.server import create_app

SCHEDULE_JSON: dict[str, Any] = {
    "id": "news",
    "description": "morning news",
    "cron": "0 6 * * *",
    "tags": {"team": "news"},
    "promiseId": "news_feed_{{.date}}",
    "promiseTimeout": 3_600_000,
    "promiseParam": {"data": "eA=="},
    "promiseTags": {"k": "v"},
    "lastRunTime": 1735711200000,
    "nextRunTime": 1735797600000,
    "idempotencyKey": "ik",
    "createdOn": 1735700000000,
}
MINIMAL_JSON: dict[str, Any] = {
    "id": "s",
    "cron": "@hourly",
    "promiseId": "s.{{.timestamp}}",
    "promiseTimeout": 1000,
    "promiseParam": {},
    "nextRunTime": 1735700400000,
    "createdOn": 1735700000000,
}

Handler = Callable[[httpx.Request], httpx.Response]


def recording(
    status: int = 200, body: object = SCHEDULE_JSON
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


# -- requests ----------------------------------------------------------------------------


def test_create_schedule_wire() -> None:
    seen, handler = recording(201)
    with mock_client(handler) as client:
        s = client.create_schedule(
            "news",
            "0 6 * * *",
            "news_feed_{{.date}}",
            3_600_000,
            description="morning news",
            tags={"team": "news"},
            promise_param="x",
            promise_tags={"k": "v"},
            idempotency_key="ik",
        )
    (request,) = seen
    assert (request.method, request.url.raw_path) == ("POST", b"/schedules")
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "ik"
    assert "Strict" not in request.headers
    # every member of API.md 4's create body, in its order
    assert list(json.loads(request.content).items()) == [
        ("id", "news"),
        ("description", "morning news"),
        ("cron", "0 6 * * *"),
        ("tags", {"team": "news"}),
        ("promiseId", "news_feed_{{.date}}"),
        ("promiseTimeout", 3_600_000),
        ("promiseParam", {"data": "eA=="}),
        ("promiseTags", {"k": "v"}),
    ]
    assert s == Schedule(
        id="news",
        description="morning news",
        cron="0 6 * * *",
        tags={"team": "news"},
        promise_id="news_feed_{{.date}}",
        promise_timeout=3_600_000,
        promise_param=Value(data=b"x"),
        promise_tags={"k": "v"},
        last_run_time=1735711200000,
        next_run_time=1735797600000,
        idempotency_key="ik",
        created_on=1735700000000,
    )
    # the decoded schedule encodes back to exactly the server's object
    assert json.loads(msgspec.json.encode(s)) == SCHEDULE_JSON


def test_create_schedule_minimal_body_and_dedupe_status() -> None:
    seen, handler = recording(200, MINIMAL_JSON)
    with mock_client(handler) as client:
        s = client.create_schedule("s", "@hourly", "s.{{.timestamp}}", 1000, tags={})
    (request,) = seen
    assert json.loads(request.content) == {
        "id": "s",
        "cron": "@hourly",
        "promiseId": "s.{{.timestamp}}",
        "promiseTimeout": 1000,
    }
    assert "Idempotency-Key" not in request.headers
    assert s.promise_param == Value()
    assert (s.description, s.tags, s.last_run_time, s.idempotency_key) == (None,) * 4


def test_create_schedule_param_forms() -> None:
    seen, handler = recording(201, MINIMAL_JSON)
    with mock_client(handler) as client:
        client.create_schedule("s", "@hourly", "p", 1, promise_param=b"\xff")
        client.create_schedule(
            "s", "@hourly", "p", 1, promise_param=Value(headers={"h": "1"}, data=b"d")
        )
    assert json.loads(seen[0].content)["promiseParam"] == {"data": "/w=="}
    assert json.loads(seen[1].content)["promiseParam"] == {"headers": {"h": "1"}, "data": "ZA=="}


@pytest.mark.parametrize(
    ("id", "path"),
    [
        ("news", b"/schedules/news"),
        ("a/b c?d#e%", b"/schedules/a/b%20c%3Fd%23e%25"),
        ("x/../y", b"/schedules/x/%2E%2E/y"),
    ],
)
def test_get_and_delete_paths(id: str, path: bytes) -> None:
    seen, handler = recording(200)
    with mock_client(handler) as client:
        assert client.get_schedule(id).id == "news"
    _, delete_handler = recording(204, None)
    deleted: list[httpx.Request] = []

    def record_delete(request: httpx.Request) -> httpx.Response:
        deleted.append(request)
        return delete_handler(request)

    with mock_client(record_delete) as client:
        assert client.delete_schedule(id) is None  # type: ignore[func-returns-value]
    assert (seen[0].method, seen[0].url.raw_path) == ("GET", path)
    assert (deleted[0].method, deleted[0].url.raw_path) == ("DELETE", path)


def test_search_schedules_query() -> None:
    seen, handler = recording(200, {"schedules": [SCHEDULE_JSON], "cursor": "c2"})
    with mock_client(handler) as client:
        page = client.search_schedules("news*", tags={"team": "news", "a b": "c&d"}, limit=5)
        client.search_schedules(cursor="c2")
    assert isinstance(page, SchedulePage)
    assert [s.id for s in page.schedules] == ["news"]
    assert page.cursor == "c2"
    assert seen[0].url.path == "/schedules"
    assert seen[0].url.params.multi_items() == [
        ("id", "news*"),
        ("tags[team]", "news"),
        ("tags[a b]", "c&d"),
        ("limit", "5"),
    ]
    assert seen[1].url.params.multi_items() == [("id", "*"), ("limit", "100"), ("cursor", "c2")]
    # a page encodes back to the wire's page
    assert json.loads(msgspec.json.encode(page)) == {"schedules": [SCHEDULE_JSON], "cursor": "c2"}


def paged_handler(seen: list[httpx.Request]) -> Handler:
    pages = {
        None: {"schedules": [MINIMAL_JSON, SCHEDULE_JSON], "cursor": "c1"},
        "c1": {"schedules": [{**MINIMAL_JSON, "id": "t"}], "cursor": None},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    return handler


def test_iter_schedules_follows_cursors() -> None:
    seen: list[httpx.Request] = []
    with mock_client(paged_handler(seen)) as client:
        ids = [s.id for s in client.iter_schedules("*", tags={"k": "v"}, limit=2)]
    assert ids == ["s", "news", "t"]
    assert [r.url.params.get("cursor") for r in seen] == [None, "c1"]
    assert all(r.url.params["limit"] == "2" for r in seen)


@pytest.mark.parametrize(
    ("status", "code", "message", "cls"),
    [
        (409, 40901, "schedule 'news' already exists", AlreadyExists),
        (400, 40000, "invalid cron 'nope': expected 5 fields - at $.cron", ValidationError),
        (404, 40401, "schedule 'news' not found", NotFound),
    ],
)
def test_errors_map_to_classes(status: int, code: int, message: str, cls: type[TrothError]) -> None:
    _, handler = recording(status, {"error": {"code": code, "message": message}})
    with mock_client(handler) as client:
        for call in (
            lambda: client.create_schedule("news", "nope", "p", 1),
            lambda: client.get_schedule("news"),
            lambda: client.delete_schedule("news"),
            lambda: client.search_schedules(),
        ):
            with pytest.raises(cls) as info:
                call()
            assert (info.value.code, info.value.message) == (code, message)


def test_unexpected_answer_is_50200() -> None:
    _, handler = recording(200, {"id": "news"})
    with mock_client(handler) as client, pytest.raises(TrothError) as info:
        client.get_schedule("news")
    assert info.value.code == 50200
    _, handler = recording(200, {"promises": []})
    with mock_client(handler) as client, pytest.raises(TrothError) as info:
        client.search_schedules()
    assert info.value.code == 50200


async def test_async_schedule_calls_share_the_wire_shape() -> None:
    seen: list[httpx.Request] = []
    sync_seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(204)
        if request.method == "GET" and request.url.path == "/schedules":
            return paged_handler([])(request)
        return httpx.Response(201, json=SCHEDULE_JSON)

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    def sync_handler(request: httpx.Request) -> httpx.Response:
        sync_seen.append(request)
        return answer(request)

    args = ("news", "0 6 * * *", "news_feed_{{.date}}", 60_000)
    kwargs: dict[str, Any] = {
        "description": "d",
        "tags": {"a": "1"},
        "promise_param": "x",
        "promise_tags": {"b": "2"},
        "idempotency_key": "ik",
    }
    async with AsyncClient("http://h:1", transport=httpx.MockTransport(handler)) as client:
        assert (await client.create_schedule(*args, **kwargs)).id == "news"
        assert (await client.get_schedule("a b")).next_run_time == 1735797600000
        await client.delete_schedule("a b")
        page = await client.search_schedules("n*", tags={"t": "1"}, limit=2)
        assert page.cursor == "c1"
        assert [s.id async for s in client.iter_schedules(limit=2)] == ["s", "news", "t"]
    with mock_client(sync_handler) as sync:
        sync.create_schedule(*args, **kwargs)
        sync.get_schedule("a b")
        sync.delete_schedule("a b")
        sync.search_schedules("n*", tags={"t": "1"}, limit=2)
        list(sync.iter_schedules(limit=2))

    def shape(r: httpx.Request) -> tuple[str, bytes, str | None, bytes]:
        return r.method, r.url.raw_path, r.headers.get("Idempotency-Key"), r.content

    assert [shape(r) for r in seen] == [shape(r) for r in sync_seen]
    assert [r.method for r in seen] == ["POST", "GET", "DELETE", "GET", "GET", "GET"]


# -- AsyncClient against the in-process app (fake clock) ---------------------------------

START = 1_735_732_800_000  # 2025-01-01T12:00:00Z
DAY = 86_400_000


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, minute, sec, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.fixture
async def app_client(engine: Engine, clock: FakeClock) -> AsyncIterator[AsyncClient]:
    clock.set(START)
    app = create_app(engine, manage=False)
    async with AsyncClient("http://troth", transport=httpx.ASGITransport(app=app)) as client:
        yield client


async def test_async_daily_schedule_creates_dated_promises(
    app_client: AsyncClient, engine: Engine, clock: FakeClock
) -> None:
    client = app_client
    s = await client.create_schedule(
        "news",
        "0 6 * * *",
        "news_feed_{{.date}}",
        3_600_000,
        description="morning news",
        tags={"team": "news"},
        promise_param="digest",
        promise_tags={"kind": "feed"},
        idempotency_key="news-v1",
    )
    assert s.next_run_time == utc_ms(2025, 1, 2, 6)
    assert (s.last_run_time, s.created_on, s.idempotency_key) == (None, START, "news-v1")
    assert s.promise_param == Value(data=b"digest")
    assert await client.get_schedule("news") == s

    clock.set(utc_ms(2025, 1, 2, 6, 0, 1))
    assert await engine.fire_schedules() == 1
    p = await client.get_promise("news_feed_2025-01-02")
    assert p.state is State.PENDING
    assert p.timeout == utc_ms(2025, 1, 2, 6) + 3_600_000
    assert p.param.data == b"digest"
    assert p.tags is not None
    assert p.tags["kind"] == "feed"
    assert p.tags["resonate:schedule"] == "news"
    clock.set(utc_ms(2025, 1, 3, 6, 0, 1))
    assert await engine.fire_schedules() == 1
    assert (await client.get_promise("news_feed_2025-01-03")).state is State.PENDING
    # a day later, yesterday's promise has timed out (promiseTimeout 1h after its run)
    assert (await client.get_promise("news_feed_2025-01-02")).state is State.REJECTED_TIMEDOUT
    after = await client.get_schedule("news")
    assert after.last_run_time == utc_ms(2025, 1, 3, 6)
    assert after.next_run_time == utc_ms(2025, 1, 4, 6)

    await client.delete_schedule("news")
    with pytest.raises(NotFound) as info:
        await client.get_schedule("news")
    assert info.value.code == 40401
    with pytest.raises(NotFound):
        await client.delete_schedule("news")
    # the promises it created stay
    assert (await client.get_promise("news_feed_2025-01-02")).id == "news_feed_2025-01-02"


async def test_async_create_dedupe_conflict_and_bad_cron(app_client: AsyncClient) -> None:
    client = app_client
    first = await client.create_schedule("s", "@hourly", "{{.id}}.{{.timestamp}}", 1000,
                                         idempotency_key="k")  # fmt: skip
    again = await client.create_schedule("s", "*/5 * * * *", "other", 5, idempotency_key="k")
    assert again == first
    with pytest.raises(AlreadyExists) as conflict:
        await client.create_schedule("s", "@hourly", "{{.id}}", 1000, idempotency_key="other")
    assert conflict.value.status == 409
    with pytest.raises(AlreadyExists):
        await client.create_schedule("s", "@hourly", "{{.id}}", 1000)
    with pytest.raises(ValidationError) as bad:
        await client.create_schedule("t", "every day at six", "{{.id}}", 1000)
    assert bad.value.status == 400
    assert "cron" in bad.value.message
    with pytest.raises(NotFound):
        await client.get_schedule("t")


async def test_async_search_and_iter(app_client: AsyncClient) -> None:
    client = app_client
    for i in range(5):
        tags = {"team": "a" if i % 2 else "b"}
        await client.create_schedule(f"jobs/{i}", "@daily", "{{.id}}", 1000, tags=tags)
    await client.create_schedule("other", "@daily", "{{.id}}", 1000)
    page = await client.search_schedules("jobs/*", limit=2)
    assert len(page.schedules) == 2
    assert page.cursor is not None
    ids = sorted([s.id async for s in client.iter_schedules("jobs/*", limit=2)])
    assert ids == [f"jobs/{i}" for i in range(5)]
    team_a = sorted([s.id async for s in client.iter_schedules(tags={"team": "a"})])
    assert team_a == ["jobs/1", "jobs/3"]
    everything = await client.search_schedules()
    assert {s.id for s in everything.schedules} == {*ids, "other"}
    assert everything.cursor is None


# -- Client against a real server --------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("client_schedules") / "t.db"
    with running_server("sqlite:///" + str(path)) as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, timeout=10.0) as c:
        yield c


def test_sync_crud_and_errors(client: Client, request: pytest.FixtureRequest) -> None:
    id = f"sync/{request.node.name}"
    before = time.time_ns() // 1_000_000
    s = client.create_schedule(
        id, "0 6 * * *", "news_feed_{{.date}}", DAY, tags={"suite": id}, idempotency_key="k"
    )
    assert before <= s.created_on
    # the next 06:00 UTC after its creation
    assert 0 < s.next_run_time - s.created_on <= DAY
    when = dt.datetime.fromtimestamp(s.next_run_time / 1000, tz=dt.UTC)
    assert (when.hour, when.minute, when.second, when.microsecond) == (6, 0, 0, 0)
    assert s.last_run_time is None
    assert client.get_schedule(id) == s
    assert client.create_schedule(id, "@hourly", "x", 1, idempotency_key="k") == s
    with pytest.raises(AlreadyExists):
        client.create_schedule(id, "@hourly", "x", 1)
    with pytest.raises(ValidationError) as bad:
        client.create_schedule(f"{id}/bad", "61 * * * *", "x", 1)
    assert "cron" in bad.value.message
    assert [x.id for x in client.iter_schedules(tags={"suite": id})] == [id]
    client.delete_schedule(id)
    with pytest.raises(NotFound):
        client.get_schedule(id)
    with pytest.raises(NotFound):
        client.delete_schedule(id)


def test_sync_schedule_fires_on_a_real_clock(
    client: Client, request: pytest.FixtureRequest
) -> None:
    id = f"sync/{request.node.name}"
    # every second (6th field: seconds); promises named after the schedule and run time
    client.create_schedule(id, "* * * * * *", "{{.id}}/{{.timestamp}}", 60_000,
                           promise_tags={"suite": id})  # fmt: skip
    deadline = time.monotonic() + 15
    fired: list[str] = []
    while time.monotonic() < deadline and len(fired) < 2:
        fired = [p.id for p in client.iter_promises(f"{id}/*")]
        time.sleep(0.2)
    client.delete_schedule(id)
    assert len(fired) >= 2, fired
    s_promises = list(client.iter_promises(f"{id}/*", tags={"resonate:schedule": id}))
    assert {p.id for p in s_promises} >= set(fired)
    for p in s_promises:
        run = int(p.id.rsplit("/", 1)[1])
        assert run % 1000 == 0
        assert p.timeout == run + 60_000
