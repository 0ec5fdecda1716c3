"""End to end: the task framework against a real ``troth serve`` process, real sockets, SQLite.

Workers are real processes (``tests/e2e/worker.py``) or SSE streams read by the test;
HTTP receivers are real servers on loopback ports. Every wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import ServerProcess, free_port, running_server

FAR = 2**63 - 1
WORKER = Path(__file__).with_name("worker.py")
GROUP = "workers"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "troth.db"


@pytest.fixture
def server(db: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(sqlite_url(db), log_path=tmp_path / "server.log") as s:
        yield s


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        yield c


def task_row(db: Path, id: str) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM tasks WHERE id = ?", (id,)).fetchone()
    assert row is not None, f"no task {id!r} in the store"
    return dict(row)


async def eventually(
    check: Callable[[], Any], timeout: float, what: str, every: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


async def create_invoke(c: httpx.AsyncClient, id: str, recv: str) -> None:
    body = {"id": id, "timeout": FAR, "tags": {"resonate:invoke": recv}}
    r = await c.post("/promises", json=body)
    assert r.status_code == 201, r.text


# -- worker processes ------------------------------------------------------------------------


class Worker:
    """``tests/e2e/worker.py`` as a subprocess; its events are read from its JSON-lines file."""

    def __init__(self, url: str, id: str, mode: str, tmp: Path, ttl: int = 30_000) -> None:
        self.id = id
        self.out = tmp / f"worker-{id}.jsonl"
        self._log = open(tmp / f"worker-{id}.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--url",
                url,
                "--group",
                GROUP,
                "--id",
                id,
                "--mode",
                mode,
                "--out",
                str(self.out),
                "--ttl",
                str(ttl),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        lines = self.out.read_text().splitlines()
        # a SIGKILL can leave half a line at the end
        parsed = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):
                parsed.append(json.loads(line))
        return [e for e in parsed if event is None or e["event"] == event]

    async def wait(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if self.proc.poll() is not None and not self.events(event):
                raise AssertionError(f"worker {self.id} exited with {self.proc.returncode}")
            found = self.events(event)
            return found[0] if found else None

        result: dict[str, Any] = await eventually(check, timeout, f"{event} of {self.id}")
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: the worker's lease is simply abandoned
        self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        self._log.close()


@contextlib.contextmanager
def worker(url: str, id: str, mode: str, tmp: Path, ttl: int = 30_000) -> Iterator[Worker]:
    w = Worker(url, id, mode, tmp, ttl)
    try:
        yield w
    finally:
        w.stop()


# -- SSE streams read by the test ------------------------------------------------------------


class Stream:
    """A worker stream read in the background: messages land in ``messages``."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.ended = asyncio.Event()
        self.status = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            async with self.client.stream("GET", self.url) as r:
                self.status = r.status_code
                assert r.headers["content-type"].startswith("text/event-stream")
                data: list[str] = []
                async for line in r.aiter_lines():
                    if line.startswith(":"):
                        if line == ": connected":
                            self.connected.set()
                    elif line.startswith("data: "):
                        data.append(line[6:])
                    elif line == "" and data:
                        self.messages.put_nowait(json.loads("\n".join(data)))
                        data = []
        finally:
            self.ended.set()

    async def __aenter__(self) -> Stream:
        self._task = asyncio.create_task(self._run())
        connected = asyncio.create_task(self.connected.wait())
        await asyncio.wait([self._task, connected], timeout=5, return_when=asyncio.FIRST_COMPLETED)
        connected.cancel()
        if not self.connected.is_set():
            await self.__aexit__()
            raise AssertionError(f"stream {self.url} did not connect (status {self.status})")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.messages.get(), timeout)


def stream(client: httpx.AsyncClient, path: str) -> Stream:
    return Stream(client, path)


def stream_client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10.0, read=None))


# -- an HTTP receiver ------------------------------------------------------------------------


class Receiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 that records every request and answers 200."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in header_lines:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((method, target, headers, body))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):  # keep-alive connections of the server's client
            writer.close()
        await self._server.wait_closed()

    def posts(self) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        return [(t, h, json.loads(b)) for m, t, h, b in self.requests if m == "POST"]


# -- 1. invoke → claim → fenced resolve → complete -------------------------------------------


async def test_worker_process_runs_an_invoke_task_to_completion(
    server: ServerProcess, client: httpx.AsyncClient, db: Path, tmp_path: Path
) -> None:
    with worker(server.url, "w1", "complete", tmp_path) as w:
        await w.wait("connected")
        await create_invoke(client, "job/1", f"poll://any@{GROUP}")
        completed = await w.wait("completed")

        [received] = w.events("received")
        assert received["type"] == "invoke"
        assert (received["task"], received["counter"]) == ("__invoke:job/1", 1)
        [claimed] = w.events("claimed")
        assert claimed["status"] == 201
        assert claimed["body"]["type"] == "invoke"
        assert claimed["body"]["promises"]["root"]["data"]["state"] == "PENDING"
        [resolved] = w.events("resolved")
        assert resolved["status"] == 201, resolved
        assert resolved["body"]["state"] == "RESOLVED"
        # resolving the root already completed its invoke task, so complete is a 200 replay
        assert completed["status"] in (200, 201)
        assert completed["body"]["state"] == "COMPLETED"
        assert completed["body"]["counter"] == 1

    p = (await client.get("/promises/job/1")).json()
    assert p["state"] == "RESOLVED"
    assert base64.b64decode(p["value"]["data"]) == b"done by w1"
    row = task_row(db, "__invoke:job/1")
    assert (row["state"], row["counter"], row["process_id"]) == ("COMPLETED", 1, "w1")


# -- 2. a crashed worker's lease runs out; the task moves on, fenced ---------------------------


async def test_killed_worker_lease_expires_and_task_moves_to_another_worker(
    server: ServerProcess, client: httpx.AsyncClient, db: Path, tmp_path: Path
) -> None:
    with worker(server.url, "A", "hold", tmp_path, ttl=1500) as a:
        await a.wait("connected")
        await create_invoke(client, "job/crash", f"poll://any@{GROUP}")
        claimed = await a.wait("claimed")
        assert (claimed["status"], claimed["counter"]) == (201, 1)
        await a.wait("heartbeat")  # A keeps its lease alive while it lives
        assert task_row(db, "__invoke:job/crash")["state"] == "CLAIMED"

        with worker(server.url, "B", "complete", tmp_path) as b:
            await b.wait("connected")
            await asyncio.sleep(0.3)
            assert b.events("received") == []  # the task is A's while A heartbeats
            killed_at = time.time()
            a.kill()

            completed = await b.wait("completed", timeout=10)
            [received] = b.events("received")
            assert (received["task"], received["counter"]) == ("__invoke:job/crash", 2)
            assert received["at"] > killed_at
            [b_claimed] = b.events("claimed")
            assert b_claimed["status"] == 201
            [resolved] = b.events("resolved")
            assert resolved["status"] == 201, resolved
            assert completed["body"]["state"] == "COMPLETED"
    assert [e["counter"] for e in a.events("received")] == [1]

    # A comes back from the dead with its old counter: every write is refused.
    late = {"Task-Id": "__invoke:job/crash", "Task-Counter": "1"}
    r = await client.patch("/promises/job/crash", json={"state": "REJECTED"}, headers=late)
    assert r.status_code == 412, r.text
    assert r.json()["error"]["code"] == 41200
    claim = {"id": "__invoke:job/crash", "counter": 1, "processId": "A", "ttl": 1500}
    r = await client.post("/tasks/claim", json=claim)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] in (40307, 40308)

    p = (await client.get("/promises/job/crash")).json()
    assert p["state"] == "RESOLVED"
    assert base64.b64decode(p["value"]["data"]) == b"done by B"
    row = task_row(db, "__invoke:job/crash")
    assert (row["state"], row["counter"], row["process_id"]) == ("COMPLETED", 2, "B")


async def test_abandoned_lease_is_redispatched_soon_after_it_expires(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    """The dispatcher sleeps toward the next task deadline; a claim moves that deadline from
    the time-to-claim (60 s) to the lease (here 1 s), so the task must come back about 1 s
    after the claim, not whenever the dispatcher happens to wake next."""
    async with stream_client(server.url) as sc, stream(sc, f"/poll/{GROUP}/w1") as s:
        await create_invoke(client, "job/lease", f"poll://any@{GROUP}")
        first = await s.next()
        await asyncio.sleep(0.2)  # the dispatcher has gone back to sleep
        claim = {"id": first["task"]["id"], "counter": 1, "processId": "gone", "ttl": 1000}
        assert (await client.post("/tasks/claim", json=claim)).status_code == 201
        claimed_at = time.monotonic()
        again = await s.next(timeout=8)  # never heartbeated: the lease runs out
        late_by = time.monotonic() - claimed_at - 1.0
        assert again["task"]["counter"] == 2
        assert late_by < 1.0, f"re-dispatched {late_by:.2f}s after the lease expired"


# -- 3. the sweeper fires a callback nobody is waiting on --------------------------------------


async def test_sweeper_times_out_promise_and_resume_task_reaches_stream(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    async with stream_client(server.url) as sc, stream(sc, f"/poll/{GROUP}/w1") as s:
        await client.post("/promises", json={"id": "flow", "timeout": FAR})
        deadline = now_ms() + 300
        await client.post("/promises", json={"id": "flow.step", "timeout": deadline})
        body = {"rootPromiseId": "flow", "timeout": FAR, "recv": f"poll://any@{GROUP}"}
        r = await client.post("/promises/callback/flow.step", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["callback"]["id"] == "__resume:flow:flow.step"

        msg = await s.next(timeout=8)  # nobody reads flow.step: only the sweeper can fire it
        assert now_ms() >= deadline
        assert msg["type"] == "resume"
        task = msg["task"]
        assert task["id"] == "__resume:flow:flow.step"
        assert (task["rootPromiseId"], task["leafPromiseId"]) == ("flow", "flow.step")
        assert task["counter"] == 1
        assert msg["href"]["claim"].startswith(server.url)

        claim = {"id": task["id"], "counter": 1, "processId": "w1", "ttl": 10_000}
        r = await client.post("/tasks/claim", json=claim)
        assert r.status_code == 201, r.text
        promises = r.json()["promises"]
        assert promises["leaf"]["data"]["state"] == "REJECTED_TIMEDOUT"
        assert promises["leaf"]["data"]["completedOn"] == deadline
        assert promises["root"]["data"]["state"] == "PENDING"


# -- 4. subscriptions: HTTP push and stream ----------------------------------------------------


async def test_subscriptions_notify_http_receiver_and_stream(
    server: ServerProcess, client: httpx.AsyncClient, db: Path
) -> None:
    port = free_port()
    async with (
        Receiver(port) as receiver,
        stream_client(server.url) as sc,
        stream(sc, f"/poll/{GROUP}/watcher") as s,
    ):
        await client.post("/promises", json={"id": "watched", "timeout": FAR})
        http_recv = {
            "type": "http",
            "data": {"url": f"http://127.0.0.1:{port}/hook", "headers": {"X-Hook": "h1"}},
        }
        r = await client.post(
            "/promises/subscribe/watched", json={"id": "s1", "timeout": FAR, "recv": http_recv}
        )
        assert r.status_code == 201, r.text
        r = await client.post(
            "/promises/subscribe/watched",
            json={"id": "s2", "timeout": FAR, "recv": f"poll://any@{GROUP}"},
        )
        assert r.status_code == 201, r.text
        value = {"data": base64.b64encode(b"42").decode()}
        r = await client.patch("/promises/watched", json={"state": "RESOLVED", "value": value})
        assert r.status_code == 201

        [(target, headers, pushed)] = await eventually(receiver.posts, 5, "the http notify")
        assert target == "/hook"
        assert headers["x-hook"] == "h1"
        assert headers["content-type"] == "application/json"
        assert pushed["type"] == "notify"
        assert pushed["promise"]["id"] == "watched"
        assert pushed["promise"]["state"] == "RESOLVED"
        assert pushed["promise"]["value"] == value

        streamed = await s.next()
        assert streamed["type"] == "notify"
        assert streamed["promise"]["state"] == "RESOLVED"
        assert streamed["promise"]["value"] == value

        await eventually(
            lambda: task_row(db, "__notify:watched:s1")["state"] == "COMPLETED",
            5,
            "the http notify task to be COMPLETED",
        )
        assert task_row(db, "__notify:watched:s2")["state"] == "COMPLETED"
        await asyncio.sleep(0.3)
        assert len(receiver.posts()) == 1  # sent once
        assert s.messages.empty()


# -- 5. HTTP push retries with backoff ---------------------------------------------------------


async def test_http_push_retries_until_receiver_comes_up(
    server: ServerProcess, client: httpx.AsyncClient, db: Path
) -> None:
    port = free_port()  # nothing listens here yet
    await client.post("/promises", json={"id": "later", "timeout": FAR})
    r = await client.post(
        "/promises/subscribe/later",
        json={"id": "s", "timeout": FAR, "recv": f"http://127.0.0.1:{port}/in"},
    )
    assert r.status_code == 201, r.text
    assert (await client.patch("/promises/later", json={"state": "REJECTED"})).status_code == 201

    # For ~1.5 s nothing listens: watch the failed attempts and when each retry is due.
    due: dict[int, int] = {}  # attempt (failures so far) -> ready_at of the next try
    until = time.monotonic() + 1.5
    while time.monotonic() < until:
        row = task_row(db, "__notify:later:s")
        assert row["state"] in ("INIT", "ENQUEUED"), row
        if row["state"] == "INIT" and row["attempt"] > 0:
            due[row["attempt"]] = row["ready_at"]
        await asyncio.sleep(0.05)
    assert 1 in due and 2 in due, due  # refused at t≈0 and again at t≈0.5 s
    # the second retry waits twice as long as the first (500 ms, then 1000 ms, ...)
    assert due[2] - due[1] >= 1000, due
    started = time.monotonic()
    async with Receiver(port) as receiver:
        [(target, _, pushed)] = await eventually(receiver.posts, 15, "the retried notify")
        assert time.monotonic() - started < 15
        assert target == "/in"
        assert pushed["type"] == "notify"
        assert pushed["promise"]["state"] == "REJECTED"
        await eventually(
            lambda: task_row(db, "__notify:later:s")["state"] == "COMPLETED",
            5,
            "the notify task to be COMPLETED",
        )
        await asyncio.sleep(0.3)
        assert len(receiver.posts()) == 1


# -- 6. one stream per (group, id) -------------------------------------------------------------


async def test_newer_stream_replaces_older_and_uni_reaches_only_it(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    async with (
        stream_client(server.url) as sc,
        stream(sc, f"/poll/{GROUP}/dup") as first,
        stream(sc, f"/poll/{GROUP}/dup") as second,
        stream(sc, f"/poll/{GROUP}/other") as other,
    ):
        await asyncio.wait_for(first.ended.wait(), 5)  # the server closed it
        assert first.status == 200
        assert not second.ended.is_set()
        await create_invoke(client, "uni/1", f"poll://uni@{GROUP}/dup")
        msg = await second.next()
        assert msg["task"]["id"] == "__invoke:uni/1"
        await asyncio.sleep(0.3)
        assert first.messages.empty()
        assert other.messages.empty()


# -- 7. locks across processes -----------------------------------------------------------------

LOCK_CLIENT = r"""
import json, sys
import httpx
url, process = sys.argv[1], sys.argv[2]
with httpx.Client(base_url=url, timeout=10) as c:
    for line in sys.stdin:
        cmd, resource, execution, *rest = line.split()
        if cmd == "acquire":
            body = {"resourceId": resource, "executionId": execution,
                    "processId": process, "ttl": int(rest[0])}
        else:
            body = {"resourceId": resource, "executionId": execution}
        r = c.post(f"/locks/{cmd}", json=body)
        print(json.dumps({"status": r.status_code, "body": r.json() if r.content else None}),
              flush=True)
"""


class LockProcess:
    def __init__(self, url: str, process_id: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCK_CLIENT, url, process_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"lock client exited with {self.proc.poll()}"
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, command: str) -> dict[str, Any]:
        self.send(command)
        return self.answer()

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()


def test_locks_between_two_processes(server: ServerProcess) -> None:
    p1, p2 = LockProcess(server.url, "proc-1"), LockProcess(server.url, "proc-2")
    try:
        p1.send("acquire res exec-1 30000")
        p2.send("acquire res exec-2 30000")
        answers = {"exec-1": (p1, p1.answer()), "exec-2": (p2, p2.answer())}
        winners = [e for e, (_, a) in answers.items() if a["status"] == 201]
        losers = [e for e, (_, a) in answers.items() if a["status"] != 201]
        assert len(winners) == 1 and len(losers) == 1, answers
        (win, (holder, held)), (lose, (waiter, refused)) = (
            (winners[0], answers[winners[0]]),
            (losers[0], answers[losers[0]]),
        )
        assert held["body"]["executionId"] == win
        assert refused["status"] == 403
        assert refused["body"]["error"]["code"] == 40305
        assert waiter.ask(f"acquire res {lose} 30000")["status"] == 403
        assert holder.ask(f"acquire res {win} 30000")["status"] == 201  # re-entrant

        assert holder.ask(f"release res {win}")["status"] == 204
        assert waiter.ask(f"release res {lose}")["status"] == 404  # not the holder
        taken = waiter.ask(f"acquire res {lose} 800")  # short ttl, never heartbeated
        assert taken["status"] == 201
        taken_at = time.monotonic()

        refused = holder.ask(f"acquire res {win} 30000")
        assert refused["status"] == 403
        assert refused["body"]["error"]["code"] == 40305
        deadline = taken_at + 5
        while (got := holder.ask(f"acquire res {win} 30000"))["status"] != 201:
            assert got["status"] == 403, got
            assert time.monotonic() < deadline, "the expired lock was never taken over"
            time.sleep(0.05)
        assert time.monotonic() - taken_at >= 0.7
        assert got["body"]["executionId"] == win
        assert waiter.ask(f"release res {lose}")["status"] == 404  # it lost the lock
        assert holder.ask(f"release res {win}")["status"] == 204
    finally:
        p1.close()
        p2.close()


# -- 8. the poll port --------------------------------------------------------------------------


async def test_poll_port_serves_the_same_worker_streams(db: Path, tmp_path: Path) -> None:
    poll_port = free_port()
    with running_server(
        sqlite_url(db), log_path=tmp_path / "server.log", extra_args=("--poll-port", str(poll_port))
    ) as server:
        poll_url = f"http://127.0.0.1:{poll_port}"
        try:
            _, probe = await asyncio.open_connection("127.0.0.1", poll_port)
        except OSError as exc:
            raise AssertionError(f"nothing listens on --poll-port {poll_port}") from exc
        probe.close()
        await probe.wait_closed()
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=10) as c,
            stream_client(server.url) as main_sc,
            stream_client(poll_url) as poll_sc,
            stream(main_sc, f"/poll/{GROUP}/a") as on_main,
            stream(poll_sc, f"/{GROUP}/b") as on_poll,
        ):
            await create_invoke(c, "pp/a", f"poll://uni@{GROUP}/a")
            await create_invoke(c, "pp/b", f"poll://uni@{GROUP}/b")
            a, b = await on_main.next(), await on_poll.next()
            assert a["task"]["id"] == "__invoke:pp/a"
            assert b["task"]["id"] == "__invoke:pp/b"
            assert a.keys() == b.keys()
            assert a["task"].keys() == b["task"].keys()
            assert (a["type"], b["type"]) == ("invoke", "invoke")
            # the links point at the API port, whichever port the stream came from
            assert b["href"]["claim"] == f"{server.url}/tasks/claim/__invoke:pp/b/1"
            r = await c.get(b["href"]["claim"])
            assert r.status_code == 201, r.text
            assert r.json()["promises"]["root"]["id"] == "pp/b"

            # one registry behind both ports: a poll-port stream replaces a main one
            async with stream(poll_sc, f"/{GROUP}/a") as replacement:
                await asyncio.wait_for(on_main.ended.wait(), 5)
                await create_invoke(c, "pp/a2", f"poll://uni@{GROUP}/a")
                assert (await replacement.next())["task"]["id"] == "__invoke:pp/a2"
