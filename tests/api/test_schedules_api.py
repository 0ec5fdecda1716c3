"""Schedules over HTTP in-process, on MemoryStore and SqliteStore, with a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pg import SESSION_SCHEMA, session_store, truncate
from troth.clock import FakeClock
from troth.engine import Engine
from troth.server import create_app
from troth.store.base import Store
from troth.store.memory import MemoryStore
from troth.store.sqlite import SqliteStore

MINUTE = 60_000
DAY = 24 * 60 * MINUTE
T0 = int(datetime(2024, 5, 1, tzinfo=UTC).timestamp() * 1000)  # a midnight


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def env(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Engine, httpx.AsyncClient, FakeClock]]:
    clock = FakeClock(T0)
    store: Store = (
        MemoryStore()
        if request.param == "memory"
        else SqliteStore(f"sqlite:///{tmp_path}/s.db")
        if request.param == "sqlite"
        else session_store()
    )
    engine = Engine(store, clock)
    await engine.open()
    app = create_app(engine, manage=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield engine, c, clock
    await engine.stop()
    if request.param == "postgres":
        truncate(SESSION_SCHEMA)


def body(
    id: str, cron: str = "* * * * *", template: str = "{{.id}}/{{.timestamp}}", **kw: Any
) -> dict[str, Any]:
    return {"id": id, "cron": cron, "promiseId": template, "promiseTimeout": MINUTE, **kw}


async def ids(c: httpx.AsyncClient, pattern: str) -> list[str]:
    out: list[str] = []
    params: dict[str, Any] = {"id": pattern, "limit": 1000}
    while True:
        page = (await c.get("/promises", params=params)).json()
        out += [p["id"] for p in page["promises"]]
        if page["cursor"] is None:
            return sorted(out)
        params = {"cursor": page["cursor"]}


async def test_create_get_delete(env: Any) -> None:
    _, c, _ = env
    r = await c.post(
        "/schedules",
        json=body("s", description="d", tags={"team": "x"}),
        headers={"Idempotency-Key": "k"},
    )
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["nextRunTime"] == T0 + MINUTE
    assert s["createdOn"] == T0
    assert s["cron"] == "* * * * *"
    assert s["promiseParam"] == {}
    assert "lastRunTime" not in s
    again = await c.post("/schedules", json=body("s"), headers={"Idempotency-Key": "k"})
    assert again.status_code == 200
    assert again.json() == s
    conflict = await c.post("/schedules", json=body("s"))
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == 40901
    assert (await c.get("/schedules/s")).json() == s
    assert (await c.delete("/schedules/s")).status_code == 204
    missing = await c.get("/schedules/s")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == 40401
    assert (await c.delete("/schedules/s")).status_code == 404


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("61 * * * *", "out of range"),
        ("* * *", "expected 5 fields"),
        ("* * * * * * *", "expected 5 fields"),
        ("@fortnightly", "unknown shortcut"),
        ("not cron at all", "expected 5 fields"),
    ],
)
async def test_bad_cron_is_400_naming_the_problem(env: Any, cron: str, fragment: str) -> None:
    _, c, _ = env
    r = await c.post("/schedules", json=body("bad", cron=cron))
    assert r.status_code == 400
    assert fragment in r.json()["error"]["message"]
    assert "$.cron" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("cron", "first"),
    [
        ("*/15 * * * *", T0 + 15 * MINUTE),
        ("0 * * * * 30", T0 + 30_000),  # a 6th field: seconds
        ("@hourly", T0 + 60 * MINUTE),
        ("@daily", T0 + DAY),
    ],
)
async def test_cron_forms(env: Any, cron: str, first: int) -> None:
    _, c, _ = env
    r = await c.post("/schedules", json=body("c", cron=cron))
    assert r.json()["nextRunTime"] == first


async def test_every_minute_of_a_day_fires_exactly_once(env: Any) -> None:
    engine, c, clock = env
    await c.post("/schedules", json=body("m", param=None, promiseTags={"kind": "tick"}))
    for _ in range(24 * 60):
        clock.advance(MINUTE)
        assert await engine.fire_schedules() == 1
    assert await engine.fire_schedules() == 0
    fired = await ids(c, "m/*")
    assert fired == sorted(f"m/{T0 + i * MINUTE}" for i in range(1, 24 * 60 + 1))
    p = (await c.get(f"/promises/m/{T0 + MINUTE}")).json()
    assert p["tags"] == {"kind": "tick", "resonate:schedule": "m", "resonate:invocation": "true"}
    assert p["timeout"] == T0 + 2 * MINUTE  # relative to the run time
    s = (await c.get("/schedules/m")).json()
    assert s["lastRunTime"] == T0 + DAY
    assert s["nextRunTime"] == T0 + DAY + MINUTE


async def test_downtime_is_caught_up_one_run_at_a_time(env: Any) -> None:
    engine, c, clock = env
    await c.post("/schedules", json=body("d"))
    clock.advance(10 * MINUTE + 30_000)  # the server was down for 10 runs
    assert await engine.fire_schedules() == 10
    assert await ids(c, "d/*") == sorted(f"d/{T0 + i * MINUTE}" for i in range(1, 11))
    # runs older than their timeout are stored already timed out
    assert (await c.get(f"/promises/d/{T0 + MINUTE}")).json()["state"] == "REJECTED_TIMEDOUT"
    assert (await c.get(f"/promises/d/{T0 + 10 * MINUTE}")).json()["state"] == "PENDING"
    assert await engine.fire_schedules() == 0


async def test_delete_stops_it(env: Any) -> None:
    engine, c, clock = env
    await c.post("/schedules", json=body("x"))
    clock.advance(MINUTE)
    assert await engine.fire_schedules() == 1
    await c.delete("/schedules/x")
    clock.advance(5 * MINUTE)
    assert await engine.fire_schedules() == 0
    assert await ids(c, "x/*") == [f"x/{T0 + MINUTE}"]


async def test_an_existing_generated_id_does_not_wedge(env: Any) -> None:
    engine, c, clock = env
    await c.post("/schedules", json=body("w"))
    taken = f"w/{T0 + MINUTE}"
    await c.post("/promises", json={"id": taken, "timeout": 2**63 - 1, "tags": {"mine": "1"}})
    clock.advance(3 * MINUTE)
    assert await engine.fire_schedules() == 3
    assert (await c.get(f"/promises/{taken}")).json()["tags"] == {"mine": "1"}  # untouched
    assert await ids(c, "w/*") == sorted([taken, f"w/{T0 + 2 * MINUTE}", f"w/{T0 + 3 * MINUTE}"])
    assert (await c.get("/schedules/w")).json()["lastRunTime"] == T0 + 3 * MINUTE


async def test_date_based_ids(env: Any) -> None:
    engine, c, clock = env
    await c.post("/schedules", json=body("news", cron="@daily", template="news_feed_{{.date}}"))
    for _ in range(3):
        clock.advance(DAY)
        await engine.fire_schedules()
    assert await ids(c, "news_feed_*") == [
        "news_feed_2024-05-02",
        "news_feed_2024-05-03",
        "news_feed_2024-05-04",
    ]


async def test_invoke_tag_starts_a_task_per_run(env: Any) -> None:
    engine, c, clock = env
    tags = {"resonate:invoke": "poll://any@workers"}
    await c.post(
        "/schedules",
        json=body("inv", promiseTags=tags, promiseParam={"data": "eA=="}, promiseTimeout=DAY),
    )
    clock.advance(2 * MINUTE)
    await engine.fire_schedules()
    for run in (T0 + MINUTE, T0 + 2 * MINUTE):
        task = await engine.get_task(f"__invoke:inv/{run}")
        assert task.recv.group == "workers"
    p = (await c.get(f"/promises/inv/{T0 + MINUTE}")).json()
    assert p["param"] == {"data": "eA=="}
    bad = await c.post("/schedules", json=body("b", promiseTags={"resonate:invoke": "nowhere"}))
    assert bad.status_code == 400


async def test_search(env: Any) -> None:
    _, c, _ = env
    for i in range(5):
        await c.post("/schedules", json=body(f"team/{i}", tags={"even": str(i % 2 == 0)}))
    await c.post("/schedules", json=body("other"))
    r = await c.get("/schedules", params={"id": "team/*", "limit": 2})
    page = r.json()
    assert [s["id"] for s in page["schedules"]] == ["team/4", "team/3"]
    seen = [s["id"] for s in page["schedules"]]
    while page["cursor"]:
        page = (await c.get("/schedules", params={"cursor": page["cursor"]})).json()
        seen += [s["id"] for s in page["schedules"]]
    assert seen == ["team/4", "team/3", "team/2", "team/1", "team/0"]
    tagged = (await c.get("/schedules", params={"tags[even]": "True"})).json()
    assert [s["id"] for s in tagged["schedules"]] == ["team/4", "team/2", "team/0"]
    promise_cursor = (await c.get("/promises", params={"limit": 1})).json()["cursor"]
    if promise_cursor:
        assert (await c.get("/schedules", params={"cursor": promise_cursor})).status_code == 400
