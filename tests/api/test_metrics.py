"""``GET /metrics`` (docs/metrics.md): what each metric counts, read back through the
Prometheus text parser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from troth.clock import FakeClock
from troth.engine import Engine
from troth.model import Recv
from troth.server import create_app
from troth.server.metrics import MeasuredDelivery, Metrics, route_template
from troth.store.sqlite import SqliteStore

FAR = 2**63 - 1


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return samples(resp.text)


def req(method: str, route: str, status: int) -> tuple[tuple[str, str], ...]:
    return (("method", method), ("route", route), ("status", str(status)))


async def test_requests_by_route_and_status(http: httpx.AsyncClient) -> None:
    for i in range(3):
        await http.post("/promises", json={"id": f"m/{i}", "timeout": FAR})
    await http.post("/promises", json={"id": "m/0", "timeout": 1})  # 409
    await http.get("/promises/m/1")
    await http.get("/promises/nope")
    await http.get("/no/such/route")
    m = await scrape(http)
    assert m[("troth_http_requests_total", req("POST", "/promises", 201))] == 3
    assert m[("troth_http_requests_total", req("POST", "/promises", 409))] == 1
    assert m[("troth_http_requests_total", req("GET", "/promises/{id}", 200))] == 1
    assert m[("troth_http_requests_total", req("GET", "/promises/{id}", 404))] == 1
    assert m[("troth_http_requests_total", req("GET", "unmatched", 404))] == 1
    hist = req("POST", "/promises", 201)
    assert m[("troth_http_request_duration_seconds_count", hist)] == 3
    inf = tuple(sorted((*hist, ("le", "+Inf"))))
    assert m[("troth_http_request_duration_seconds_bucket", inf)] == 3
    assert m[("troth_http_request_duration_seconds_sum", hist)] > 0
    # no id ever becomes a label value
    assert not any("m/1" in v for _, labels in m for _, v in labels)


async def test_promise_counters_and_pending_gauge(
    http: httpx.AsyncClient, engine: Engine, clock: FakeClock
) -> None:
    now = clock.now()
    for id in ("a", "b", "c", "d"):
        await http.post("/promises", json={"id": id, "timeout": now + 1_000})
    await http.patch("/promises/a", json={"state": "RESOLVED"})
    await http.patch("/promises/b", json={"state": "REJECTED"})
    await http.patch("/promises/b", json={"state": "REJECTED"})  # deduplicated: not counted
    await http.patch("/promises/c", json={"state": "REJECTED_CANCELED"})
    m = await scrape(http)
    assert m[("troth_promises_created_total", ())] == 4
    assert m[("troth_promises_completed_total", (("state", "RESOLVED"),))] == 1
    assert m[("troth_promises_completed_total", (("state", "REJECTED"),))] == 1
    assert m[("troth_promises_completed_total", (("state", "REJECTED_CANCELED"),))] == 1
    assert m[("troth_promises_completed_total", (("state", "REJECTED_TIMEDOUT"),))] == 0
    assert m[("troth_promises_pending", ())] == 1
    assert m[("troth_sweeper_lag_seconds", ())] == 0
    # d is due 4 s ago and nobody swept yet: the sweeper is 4 s late
    clock.advance(5_000)
    m = await scrape(http)
    assert m[("troth_sweeper_lag_seconds", ())] == 4.0
    assert await engine.sweep() == 1
    m = await scrape(http)
    assert m[("troth_promises_completed_total", (("state", "REJECTED_TIMEDOUT"),))] == 1
    assert m[("troth_promises_pending", ())] == 0
    assert m[("troth_sweeper_lag_seconds", ())] == 0


async def test_tasks_by_state(http: httpx.AsyncClient) -> None:
    tags = {"resonate:invoke": "poll://any@workers"}
    await http.post("/promises", json={"id": "job/1", "timeout": FAR, "tags": tags})
    await http.post("/promises", json={"id": "job/2", "timeout": FAR, "tags": tags})
    claim = {"id": "__invoke:job/1", "counter": 1, "processId": "w", "ttl": 60_000}
    # INIT tasks can be claimed directly (no dispatcher runs in this app)
    assert (await http.post("/tasks/claim", json=claim)).status_code in (200, 201)
    m = await scrape(http)
    assert m[("troth_tasks", (("state", "CLAIMED"),))] == 1
    assert m[("troth_tasks", (("state", "INIT"),))] == 1
    assert m[("troth_tasks", (("state", "ENQUEUED"),))] == 0


async def test_long_poll_waiters_gauge(http: httpx.AsyncClient) -> None:
    await http.post("/promises", json={"id": "w", "timeout": FAR})
    waiting = asyncio.create_task(http.get("/promises/w?wait=60s"))
    for _ in range(1000):
        if (await scrape(http))[("troth_longpoll_waiters", ())] == 1:
            break
        await asyncio.sleep(0.01)
    assert (await scrape(http))[("troth_longpoll_waiters", ())] == 1
    await http.patch("/promises/w", json={"state": "RESOLVED"})
    assert (await waiting).json()["state"] == "RESOLVED"
    assert (await scrape(http))[("troth_longpoll_waiters", ())] == 0


@pytest.fixture
async def sqlite_http(tmp_path: Path, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    engine = Engine(SqliteStore(f"sqlite:///{tmp_path}/m.db"), clock)
    await engine.open()
    app = create_app(engine, manage=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://troth"
        ) as c:
            yield c
    finally:
        await engine.stop()


async def test_commit_batches_on_sqlite(sqlite_http: httpx.AsyncClient) -> None:
    before = await scrape(sqlite_http)
    commits = before[("troth_store_commit_batch_size_count", ())]
    ops = before[("troth_store_commit_batch_size_sum", ())]
    await asyncio.gather(
        *(sqlite_http.post("/promises", json={"id": f"s/{i}", "timeout": FAR}) for i in range(20))
    )
    m = await scrape(sqlite_http)
    assert m[("troth_store_commit_batch_size_sum", ())] == ops + 20
    new_commits = m[("troth_store_commit_batch_size_count", ())] - commits
    assert 1 <= new_commits <= 20
    assert m[("troth_store_commit_duration_seconds_count", ())] == commits + new_commits
    assert m[("troth_store_commit_duration_seconds_sum", ())] > 0
    assert m[("troth_promises_pending", ())] == 20


class _Sink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, message: bytes) -> bool:
        self.sent.append(message)
        return True


class _Inner:
    def __init__(self) -> None:
        self.sink = _Sink()

    def stream_for(self, recv: Recv) -> _Sink:
        return self.sink

    async def push(self, recv: Recv, message: bytes) -> bool:
        return True


async def test_dispatch_latency(engine: Engine, clock: FakeClock) -> None:
    metrics = Metrics(engine)
    inner = _Inner()
    delivery = MeasuredDelivery(inner, metrics)
    created = clock.now() - 2_500
    message = b'{"type":"invoke","task":{"id":"t","createdOn":%d}}' % created
    sink = delivery.stream_for(Recv(type="poll", group="g"))
    assert sink is not None and sink.send(message)
    assert inner.sink.sent == [message]
    assert await delivery.push(Recv(type="http", url="http://x"), message)
    assert metrics.dispatch.count == 2
    assert metrics.dispatch.sum == 5.0
    text = (await metrics.render()).decode()
    assert 'troth_task_dispatch_latency_seconds_bucket{le="5.0"} 2.0' in text
    assert 'troth_task_dispatch_latency_seconds_bucket{le="1.0"} 0.0' in text


def test_route_templates_bound_label_values() -> None:
    assert route_template("POST", "/promises") == "/promises"
    assert route_template("GET", "/promises/a/b.1") == "/promises/{id}"
    assert route_template("POST", "/promises/task") == "/promises/task"
    assert route_template("GET", "/promises/task") == "/promises/{id}"
    assert route_template("POST", "/promises/callback/x") == "/promises/callback/{id}"
    assert route_template("GET", "/tasks/claim/__invoke:a/1") == "/tasks/claim/{id}/{counter}"
    assert route_template("GET", "/poll/g/w1") == "/poll/{group}/{id}"
    assert route_template("GET", "/schedules/s") == "/schedules/{id}"
    assert route_template("GET", "/favicon.ico") == "unmatched"


async def test_a_client_gone_before_the_answer_counts_as_499(engine: Engine) -> None:
    app = create_app(engine, manage=False)
    stack = app.build_middleware_stack()
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/promises", "headers": [],
             "query_string": b""}  # fmt: skip
    await stack(scope, receive, send)
    assert sent == []  # nobody to answer
    metrics: Metrics = app.state.metrics
    assert metrics.requests[("POST", "/promises", 499)].count == 1


async def test_promises_created_by_schedules_are_counted(
    http: httpx.AsyncClient, engine: Engine, clock: FakeClock
) -> None:
    body = {"id": "tick", "cron": "* * * * *", "promiseId": "tick/{{.timestamp}}",
            "promiseTimeout": 3_600_000}  # fmt: skip
    assert (await http.post("/schedules", json=body)).status_code == 201
    clock.advance(61_000)
    assert await engine.fire_schedules() == 1
    m = await scrape(http)
    assert m[("troth_promises_created_total", ())] == 1
    assert m[("troth_promises_pending", ())] == 1
