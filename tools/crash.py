"""kill -9 the server under write load, restart it, and check nothing acknowledged was lost.

    python -m tools.crash --cycles 30 [--store sqlite:////tmp/crash.db] [--seed N]

Each cycle starts ``troth serve`` on the same database, runs concurrent writers (create,
then resolve/reject some, with idempotency keys) and a worker that claims the invoke tasks of
some promises (holding some leases, completing others), and SIGKILLs the server at a random
moment while requests are in flight. After the restart it checks, against a ledger of what
was *acknowledged* (a 2xx answer received):

- every acknowledged create is still there (no acknowledged write lost);
- every acknowledged completion still has the acknowledged state and value (no completed
  promise reverted or changed);
- for SQLite, ``PRAGMA integrity_check`` of the killed database is ``ok``.

After the last cycle a worker connects and must finish every invoke task that is still
owed: every acknowledged invoke promise that nobody completed gets resolved by the worker
(tasks survive the crashes: parked, enqueued or claimed with a lease that died with the
old process, they are dispatched again).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tools.serverproc import Server

GROUP = "crash"
INVOKE = {"resonate:invoke": f"poll://any@{GROUP}"}
HOUR = 3_600_000


@dataclass
class Ledger:
    """What the server acknowledged, across all cycles."""

    created: dict[str, bool] = field(default_factory=dict)  # id -> has an invoke task
    completed: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (state, data)
    acks: int = 0
    unknown: int = 0  # requests cut off by the kill (outcome unknown)


@dataclass
class CycleResult:
    cycle: int
    acks: int
    killed_after_s: float
    problems: list[str]


def _data(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


async def _writer(
    http: httpx.AsyncClient, ledger: Ledger, cycle: int, client: int, rng: random.Random
) -> None:
    n = 0
    while True:
        n += 1
        id = f"crash/{cycle}/{client}/{n}"
        invoke = rng.random() < 0.3
        body: dict[str, Any] = {"id": id, "timeout": int(time.time() * 1000) + HOUR}
        if invoke:
            body["tags"] = INVOKE
        try:
            r = await http.post("/promises", json=body, headers={"Idempotency-Key": id})
        except httpx.HTTPError:
            ledger.unknown += 1
            return
        if r.status_code in (200, 201):
            ledger.created[id] = invoke
            ledger.acks += 1
        elif r.status_code >= 500:
            ledger.unknown += 1
            return
        if rng.random() < 0.6:
            state = rng.choice(["RESOLVED", "REJECTED"])
            value = _data(f"{id}:{state}")
            try:
                r = await http.patch(
                    f"/promises/{id}",
                    json={"state": state, "value": {"data": value}},
                    headers={"Idempotency-Key": f"done:{id}"},
                )
            except httpx.HTTPError:
                ledger.unknown += 1
                return
            if r.status_code in (200, 201):
                p = r.json()
                ledger.completed[id] = (p["state"], (p.get("value") or {}).get("data", ""))
                ledger.acks += 1
            elif r.status_code >= 500:
                ledger.unknown += 1
                return


async def sse(http: httpx.AsyncClient, path: str) -> Any:
    """Yield each ``data:`` event of a worker stream as parsed JSON."""
    async with http.stream("GET", path, timeout=httpx.Timeout(10.0, read=None)) as r:
        data: list[str] = []
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                yield json.loads("".join(data))
                data = []


async def worker(
    url: str,
    name: str,
    ledger: Ledger | None,
    rng: random.Random,
    *,
    hold: float,
    ttl: int,
) -> None:
    """Claim invoke tasks; hold a fraction ``hold`` of them (never finish), finish the rest.

    Finishing = resolve the root promise fenced by the task, then complete the task. Runs
    until cancelled or the stream ends.
    """
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
        with contextlib.suppress(httpx.HTTPError):
            async for msg in sse(http, f"/poll/{GROUP}/{name}"):
                if msg.get("type") != "invoke":
                    continue
                task = msg["task"]
                claim = {"id": task["id"], "counter": task["counter"], "processId": name}
                r = await http.post("/tasks/claim", json={**claim, "ttl": ttl})
                if r.status_code != 201 or rng.random() < hold:
                    continue
                root = task["rootPromiseId"]
                value = _data(f"{root}:worker")
                r = await http.patch(
                    f"/promises/{root}",
                    json={"state": "RESOLVED", "value": {"data": value}},
                    headers={"Task-Id": task["id"], "Task-Counter": str(task["counter"])},
                )
                if r.status_code in (200, 201) and ledger is not None:
                    p = r.json()
                    ledger.completed[root] = (p["state"], (p.get("value") or {}).get("data", ""))
                    ledger.acks += 1
                await http.post(
                    "/tasks/complete", json={"id": task["id"], "counter": task["counter"]}
                )


async def verify(url: str, ledger: Ledger) -> list[str]:
    """Compare the server with the ledger; return every discrepancy."""
    problems: list[str] = []
    seen: dict[str, tuple[str, str]] = {}
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as http:
        params: dict[str, Any] = {"id": "*", "limit": 1000}
        while True:
            r = await http.get("/promises", params=params)
            if r.status_code != 200:
                return [f"search answered {r.status_code}: {r.text[:200]}"]
            page = r.json()
            for p in page["promises"]:
                seen[p["id"]] = (p["state"], (p.get("value") or {}).get("data", ""))
            if not page["cursor"]:
                break
            params = {"cursor": page["cursor"]}
    for id in sorted(set(ledger.created) | set(ledger.completed)):
        if id not in seen:
            problems.append(f"acknowledged promise {id} lost: not found after restart")
            continue
        want = ledger.completed.get(id)
        if want is not None and seen[id] != want:
            problems.append(f"completed promise {id} changed: {want} -> {seen[id]}")
    return problems


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` of a SQLite database (``ok`` when sound)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


async def cycle(
    server: Server, ledger: Ledger, n: int, rng: random.Random, db: Path | None
) -> CycleResult:
    server.start()
    stop_after = rng.uniform(0.3, 2.0)
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        writers = [
            asyncio.create_task(_writer(http, ledger, n, c, random.Random(rng.random())))
            for c in range(8)
        ]
        holder = asyncio.create_task(
            worker(server.url, f"w{n}", ledger, random.Random(rng.random()), hold=0.5, ttl=1000)
        )
        before = ledger.acks
        await asyncio.sleep(stop_after)
        server.kill9()
        await asyncio.wait([*writers, holder], timeout=30)
        for t in [*writers, holder]:
            t.cancel()
        await asyncio.gather(*writers, holder, return_exceptions=True)
    problems = []
    if db is not None:
        check = integrity(db)
        if check != "ok":
            problems.append(f"integrity_check after kill -9: {check}")
    t0 = time.monotonic()
    server.start()
    up = time.monotonic() - t0
    problems += await verify(server.url, ledger)
    server.kill9()
    print(f"  restart took {up:.1f} s, verify {time.monotonic() - t0 - up:.1f} s", flush=True)
    return CycleResult(n, ledger.acks - before, stop_after, problems)


async def drain_tasks(server: Server, ledger: Ledger, bound_s: float = 150.0) -> list[str]:
    """A worker finishes every invoke task still owed; every such promise gets completed."""
    owed = [id for id, invoke in ledger.created.items() if invoke and id not in ledger.completed]
    rng = random.Random(0)
    w = asyncio.create_task(worker(server.url, "final", ledger, rng, hold=0.0, ttl=30_000))
    deadline = time.monotonic() + bound_s
    missing = set(owed)
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as http:
        while missing and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            for id in sorted(missing):
                r = await http.get(f"/promises/{id}")
                # Completed by the worker, or by a writer whose answer the kill cut off.
                if r.status_code == 200 and r.json()["state"] != "PENDING":
                    missing.discard(id)
    w.cancel()
    await asyncio.gather(w, return_exceptions=True)
    return [f"invoke task of {id} never finished (lost task?)" for id in sorted(missing)]


@dataclass
class Summary:
    cycles: list[CycleResult]
    promises: int
    completions: int
    cut_off: int
    owed_tasks: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems and not any(c.problems for c in self.cycles)


async def run(store: str, db: Path | None, cycles: int, seed: int, log: Path | None) -> Summary:
    """``cycles`` kill -9 cycles on one database, then the task drain and a final check."""
    rng = random.Random(seed)
    ledger = Ledger()
    # A 3 s time-to-claim (default 60 s), so that tasks sent just before a kill come back
    # quickly; everything else is the ordinary server.
    server = Server(store, log=log, bug="none", env={"TROTH_RELIABILITY_TIME_TO_CLAIM_MS": "3000"})
    results = []
    for n in range(cycles):
        res = await cycle(server, ledger, n, rng, db)
        results.append(res)
        print(
            f"cycle {n}: killed after {res.killed_after_s:.2f} s, {res.acks} acknowledged "
            f"writes this cycle, {len(ledger.created)} promises so far: "
            + ("ok" if not res.problems else f"{len(res.problems)} PROBLEMS"),
            flush=True,
        )
        for p in res.problems[:20]:
            print("  " + p)
    server.start()
    try:
        owed = sum(1 for id, inv in ledger.created.items() if inv and id not in ledger.completed)
        started = time.monotonic()
        problems = await drain_tasks(server, ledger)
        drain_s = time.monotonic() - started
        problems += await verify(server.url, ledger)
    finally:
        server.kill9()
    print(
        f"after {cycles} kills: {len(ledger.created)} promises, {len(ledger.completed)} "
        f"completions acknowledged, {ledger.unknown} requests cut off; {owed} invoke tasks "
        f"owed at the end, drained in {drain_s:.1f} s: "
        + ("all finished" if not problems else f"{len(problems)} PROBLEMS")
    )
    for p in problems[:20]:
        print("  " + p)
    return Summary(
        results, len(ledger.created), len(ledger.completed), ledger.unknown, owed, problems
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.crash", description=__doc__)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--store", help="store URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--log", type=Path, help="append the server's output here")
    args = parser.parse_args(argv)
    print(f"seed {args.seed}")
    with tempfile.TemporaryDirectory() as tmp:
        store, db = args.store, None
        if store is None:
            db = Path(tmp) / "crash.db"
            store = f"sqlite:///{db}"
        elif store.startswith("sqlite:///"):
            db = Path(store[len("sqlite:///") :])
        summary = asyncio.run(run(store, db, args.cycles, args.seed, args.log))
        return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
