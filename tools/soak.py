"""Soak: minutes of mixed traffic against one server; memory must stay flat, latency steady.

    python -m tools.soak --minutes 5 [--store URL] [--out benchmarks/results/soak.md]

Traffic, all at once, for the whole run (bounded by time, stops by itself):

- writers: create a promise, then resolve or reject it (with idempotency keys);
- waiters: create a promise, long-poll it (``?wait=10s``) while a writer completes it
  after a short delay; the waiter must see the completion;
- tasks: create promises tagged ``resonate:invoke``; a worker on the SSE stream claims each
  task, resolves its promise fenced by the task and completes the task;
- schedules: a few cron schedules firing every second (6-field cron), each firing creates a
  promise;
- readers: gets and searches.

Every ``--window`` seconds it samples the server's RSS (/proc) and the latency of writes and
reads in that window. At the end it compares the windows after the warm-up: RSS growth and
p50/p99 drift, and checks that nothing failed (no 5xx, every waiter saw its completion,
every task finished, every schedule fired).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tools.crash import sse
from tools.serverproc import Server

HOUR = 3_600_000


@dataclass
class Window:
    start: float
    rss_kib: int = 0
    db_kib: int = 0
    write_ms: list[float] = field(default_factory=list)
    read_ms: list[float] = field(default_factory=list)
    waits: int = 0
    tasks_done: int = 0
    claims_refused: int = 0
    errors: int = 0


@dataclass
class Soak:
    server: Server
    duration_s: float
    window_s: float
    windows: list[Window] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tasks_created: set[str] = field(default_factory=set)
    tasks_done: set[str] = field(default_factory=set)
    waits_missed: int = 0
    schedules: int = 3
    overload: bool = False
    producers: int = 1
    fired: int = 0
    stop: bool = False

    def db_kib(self) -> int:
        """Size of the SQLite database and its WAL (0 for other stores), KiB."""
        if not self.server.store.startswith("sqlite:///"):
            return 0
        path = self.server.store[len("sqlite:///") :]
        return sum(
            os.path.getsize(path + suffix) // 1024
            for suffix in ("", "-wal")
            if os.path.exists(path + suffix)
        )

    @property
    def now(self) -> Window:
        return self.windows[-1]

    def _timed(self, kind: str, started: float, r: httpx.Response | None) -> None:
        ms = (time.perf_counter() - started) * 1000
        (self.now.write_ms if kind == "w" else self.now.read_ms).append(ms)
        if r is None or r.status_code >= 500:
            self.now.errors += 1
            if len(self.problems) < 20:
                self.problems.append(
                    f"{kind}: {None if r is None else (r.status_code, r.text[:200])}"
                )

    async def _req(
        self, http: httpx.AsyncClient, kind: str, method: str, path: str, **kw: Any
    ) -> httpx.Response | None:
        started = time.perf_counter()
        r: httpx.Response | None = None
        try:
            r = await http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self.problems.append(f"{method} {path}: {exc!r}")
        self._timed(kind, started, r)
        return r

    async def writer(self, n: int) -> None:
        rng = random.Random(n)
        async with httpx.AsyncClient(base_url=self.server.url, timeout=30) as http:
            i = 0
            while not self.stop:
                i += 1
                id = f"soak/w{n}/{i}"
                body = {"id": id, "timeout": int(time.time() * 1000) + HOUR, "tags": {"k": "v"}}
                await self._req(
                    http, "w", "POST", "/promises", json=body, headers={"Idempotency-Key": id}
                )
                state = rng.choice(["RESOLVED", "REJECTED"])
                await self._req(
                    http,
                    "w",
                    "PATCH",
                    f"/promises/{id}",
                    json={"state": state, "value": {"data": "b2s="}},
                    headers={"Idempotency-Key": f"c:{id}"},
                )
                if i % 5 == 0:
                    await self._req(http, "r", "GET", f"/promises/{id}")
                if i % 20 == 0:
                    await self._req(
                        http, "r", "GET", "/promises", params={"id": f"soak/w{n}/*", "limit": 50}
                    )

    async def waiter(self, n: int) -> None:
        async with httpx.AsyncClient(base_url=self.server.url, timeout=60) as http:
            i = 0
            while not self.stop:
                i += 1
                id = f"soak/wait{n}/{i}"
                body = {"id": id, "timeout": int(time.time() * 1000) + HOUR}
                await self._req(http, "w", "POST", "/promises", json=body)

                async def complete_later(id: str = id) -> None:
                    await asyncio.sleep(0.2)
                    await self._req(
                        http, "w", "PATCH", f"/promises/{id}", json={"state": "RESOLVED"}
                    )

                later = asyncio.create_task(complete_later())
                try:
                    r = await http.get(f"/promises/{id}", params={"wait": "10s"})
                    if r.status_code == 200 and r.json()["state"] == "RESOLVED":
                        self.now.waits += 1
                    else:
                        self.waits_missed += 1
                except httpx.HTTPError:
                    self.waits_missed += 1
                await later

    async def tasker(self, n: int = 0) -> None:
        async with httpx.AsyncClient(base_url=self.server.url, timeout=30) as http:
            i = 0
            while not self.stop:
                i += 1
                id = f"soak/task/{n}/{i}"
                body = {
                    "id": id,
                    "timeout": int(time.time() * 1000) + HOUR,
                    "tags": {"resonate:invoke": "poll://any@soak"},
                }
                r = await self._req(http, "w", "POST", "/promises", json=body)
                if r is not None and r.status_code == 201:
                    self.tasks_created.add(id)
                await asyncio.sleep(0.02)
                # Back-pressure: a steady state, not an ever-growing backlog (--overload
                # turns it off to show what a worker slower than its producers does).
                while (  # noqa: ASYNC110
                    not self.overload
                    and not self.stop
                    and len(self.tasks_created) - len(self.tasks_done) > 100
                ):
                    await asyncio.sleep(0.05)

    async def worker(self) -> None:
        async with httpx.AsyncClient(base_url=self.server.url, timeout=30) as http:
            with contextlib.suppress(httpx.HTTPError):
                async for msg in sse(http, "/poll/soak/w1"):
                    if msg.get("type") != "invoke":
                        continue
                    t = msg["task"]
                    ref = {"id": t["id"], "counter": t["counter"]}
                    r = await self._req(
                        http,
                        "w",
                        "POST",
                        "/tasks/claim",
                        json={**ref, "processId": "w1", "ttl": 30000},
                    )
                    if r is None or r.status_code != 201:
                        if r is not None and r.status_code == 403:
                            self.now.claims_refused += 1
                        continue
                    root = t["rootPromiseId"]
                    await self._req(
                        http,
                        "w",
                        "PATCH",
                        f"/promises/{root}",
                        json={"state": "RESOLVED"},
                        headers={"Task-Id": t["id"], "Task-Counter": str(t["counter"])},
                    )
                    r = await self._req(http, "w", "POST", "/tasks/complete", json=ref)
                    if r is not None and r.status_code in (200, 201):
                        self.tasks_done.add(root)
                        self.now.tasks_done += 1

    async def sampler(self, started: float) -> None:
        while not self.stop:
            await asyncio.sleep(self.window_s)
            self.now.rss_kib = self.server.rss_kib()
            self.now.db_kib = self.db_kib()
            if time.monotonic() - started >= self.duration_s:
                self.stop = True
            else:
                self.windows.append(Window(time.monotonic() - started))

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.server.url, timeout=30) as http:
            for s in range(self.schedules):
                body = {
                    "id": f"soak-s{s}",
                    "cron": "* * * * * *",
                    "promiseId": "soak/sched/{{.id}}/{{.timestamp}}",
                    "promiseTimeout": HOUR,
                }
                r = await http.post("/schedules", json=body)
                assert r.status_code in (200, 201), r.text
        started = time.monotonic()
        self.windows.append(Window(0.0))
        worker = asyncio.create_task(self.worker())
        jobs = [
            *(self.writer(n) for n in range(4)),
            *(self.waiter(n) for n in range(8)),
            *(self.tasker(n) for n in range(self.producers)),
            self.sampler(started),
        ]
        await asyncio.gather(*jobs)
        # let the worker finish the last tasks, then stop it
        deadline = time.monotonic() + 60
        while self.tasks_created - self.tasks_done and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        async with httpx.AsyncClient(base_url=self.server.url, timeout=30) as http:
            fired = 0
            params: dict[str, Any] = {"id": "soak/sched/*", "limit": 1000}
            while True:
                page = (await http.get("/promises", params=params)).json()
                fired += len(page["promises"])
                if not page["cursor"]:
                    break
                params = {"cursor": page["cursor"]}
        self.fired = fired
        lost = self.tasks_created - self.tasks_done
        if lost:
            self.problems.append(f"{len(lost)} tasks never finished")
        if self.waits_missed:
            self.problems.append(f"{self.waits_missed} waiters did not see their completion")
        expected = self.schedules * self.duration_s * 0.5
        if fired < expected:
            self.problems.append(f"schedules fired {fired} times, expected about {expected:.0f}+")

    def report(self) -> str:
        lines = [
            "| t (s) | RSS (MiB) | DB (MiB) | writes | write p50 / p99 (ms) | reads"
            " | read p50 / p99 (ms) | waits | tasks | refused claims | 5xx |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for w in self.windows:
            lines.append(
                f"| {w.start:.0f} | {w.rss_kib / 1024:.1f} | {w.db_kib / 1024:.1f} "
                f"| {len(w.write_ms)} "
                f"| {_pct(w.write_ms)} | {len(w.read_ms)} | {_pct(w.read_ms)} | {w.waits} "
                f"| {w.tasks_done} | {w.claims_refused} | {w.errors} |"
            )
        return "\n".join(lines)

    def verdict(self) -> dict[str, float]:
        """RSS growth and latency drift between the first and the last third after warm-up."""
        body = self.windows[1:] if len(self.windows) > 3 else self.windows
        third = max(1, len(body) // 3)
        first, last = body[:third], body[-third:]
        rss = [w.rss_kib for w in body]

        def p(ws: list[Window], q: float) -> float:
            xs = sorted(x for w in ws for x in w.write_ms)
            return xs[int(q * (len(xs) - 1))] if xs else 0.0

        return {
            "rss_first_mib": statistics.mean(w.rss_kib for w in first) / 1024,
            "rss_last_mib": statistics.mean(w.rss_kib for w in last) / 1024,
            "rss_max_mib": max(rss) / 1024,
            "write_p50_first_ms": p(first, 0.5),
            "write_p50_last_ms": p(last, 0.5),
            "write_p99_first_ms": p(first, 0.99),
            "write_p99_last_ms": p(last, 0.99),
        }


def _pct(xs: list[float]) -> str:
    if not xs:
        return "-"
    s = sorted(xs)
    return f"{s[len(s) // 2]:.1f} / {s[int(0.99 * (len(s) - 1))]:.1f}"


async def soak(
    store: str,
    duration_s: float,
    window_s: float,
    log: Path | None = None,
    overload: bool = False,
    sqlite_cache_kib: int | None = None,
) -> Soak:
    server = Server(store, log=log)
    if sqlite_cache_kib is not None:  # through the test wrapper: only the cache differs
        server.bug = "none"
        server.env = {"TROTH_RELIABILITY_SQLITE_CACHE_KIB": str(sqlite_cache_kib)}
    server.start()
    try:
        s = Soak(server, duration_s, window_s, overload=overload, producers=4 if overload else 1)
        await s.run()
        return s
    finally:
        server.kill9()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=15.0, help="sampling window, s")
    parser.add_argument("--store", help="store URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    parser.add_argument(
        "--sqlite-cache-kib",
        type=int,
        help="cap SQLite's page cache per connection (tells cache growth from leaks)",
    )
    parser.add_argument(
        "--overload",
        action="store_true",
        help="4 task producers without back-pressure against one worker (docs/reliability.md)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or f"sqlite:///{Path(tmp) / 'soak.db'}"
        s = asyncio.run(
            soak(
                store,
                args.minutes * 60,
                args.window,
                overload=args.overload,
                sqlite_cache_kib=args.sqlite_cache_kib,
            )
        )
    v = s.verdict()
    writes = sum(len(w.write_ms) for w in s.windows)
    reads = sum(len(w.read_ms) for w in s.windows)
    summary = (
        f"{args.minutes:g} min soak on {store.split(':')[0]}: {writes} writes, {reads} reads, "
        f"{sum(w.waits for w in s.windows)} long polls answered, {len(s.tasks_done)} tasks, "
        f"{s.fired} schedule firings, {sum(w.errors for w in s.windows)} 5xx.\n\n"
        f"RSS after warm-up {v['rss_first_mib']:.1f} MiB -> {v['rss_last_mib']:.1f} MiB "
        f"(max {v['rss_max_mib']:.1f}); write p50 {v['write_p50_first_ms']:.1f} -> "
        f"{v['write_p50_last_ms']:.1f} ms, p99 {v['write_p99_first_ms']:.1f} -> "
        f"{v['write_p99_last_ms']:.1f} ms (first third vs last third of the windows).\n"
    )
    text = summary + "\n" + s.report() + "\n"
    if s.problems:
        text += "\nProblems:\n" + "\n".join(f"- {p}" for p in s.problems) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 1 if s.problems else 0


if __name__ == "__main__":
    sys.exit(main())
