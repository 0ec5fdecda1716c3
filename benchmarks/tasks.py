"""Task framework benchmark: one ``troth serve`` process, a fresh SQLite file, SSE workers.

    .venv/bin/python benchmarks/tasks.py [--duration 10] [--workers 8]
                                         [--out benchmarks/results/tasks.md]

Two measurements (see benchmarks/README.md, "Task benchmark"):

1. **dispatch latency** on an idle server: one worker stream on ``/poll/bench/w1``; one at a
   time, ``POST /promises`` with tag ``resonate:invoke = poll://uni@bench/w1``, timed from
   sending the POST to the task's message arriving on the stream (matched by task id). Each
   task is then claimed, its root resolved with fencing headers and the task completed
   (untimed), so nothing is left behind.
2. **sustained tasks/s end to end**: ``--workers`` workers (coroutines in the producer's
   process by default, ``--mode procs`` runs each in its own process), each with its own
   stream ``/poll/bench/w{i}``; a producer keeps ``--inflight`` tasks in flight (created and
   not yet completed), addressed ``poll://any@bench`` so the server spreads them. A worker
   claims each task it receives (``POST /tasks/claim``), resolves the root promise with
   ``Task-Id`` / ``Task-Counter`` and completes the task (``POST /tasks/complete``). A task
   counts when its complete answers 201 or 200 (200: resolving the root already completed it).

Afterwards the server is stopped and the SQLite file is checked: every promise the run
created exists, every completed task's promise is RESOLVED and its task COMPLETED, and
nothing is left PENDING. Any unexpected status, socket error or redelivery fails the run.

HTTP: a minimal keep-alive HTTP/1.1 client on asyncio streams (``--client raw``, default) or
httpx ``AsyncClient`` (``--client httpx``); both over loopback only, uvloop if installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import quote, urlsplit

import msgspec
from run import (
    CLK_TCK,
    NCPU,
    BenchError,
    Server,
    all_procs_cpu_s,
    busiest_others,
    git_commit,
    machine_ticks,
    proc_cpu_s,
)

HERE = Path(__file__).resolve().parent
SELF = str(Path(__file__).resolve())
FAR: Final = 2**63 - 1
GROUP: Final = "bench"
TTL_MS: Final = 60_000
CLAIM_STATUS: Final = frozenset({201})
RESOLVE_STATUS: Final = frozenset({201})
COMPLETE_STATUS: Final = frozenset({200, 201})
FLUSH_S: Final = 0.002  # a worker process reports completions to the producer this often
IDLE_S: Final = 2.0  # a pooled connection idle longer than this is closed, not reused
DRAIN_S: Final = 30.0  # after the timed window, in-flight tasks must finish within this

TARGET_P99_MS: Final = 20.0
TARGET_TASKS_PER_S: Final = 1000.0

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def now_ns() -> int:
    """CLOCK_MONOTONIC: one clock for every process on the machine."""
    return time.monotonic_ns()


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted values; 0.0 when empty."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


# -- HTTP clients -----------------------------------------------------------------------------


class Http(Protocol):
    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]: ...

    def stream(self, path: str) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class _RawConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.monotonic()

    async def read_head(self) -> tuple[int, dict[bytes, bytes]]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0][9:12])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        return status, headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body of a ``Transfer-Encoding: chunked`` response, chunk by chunk."""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return
            data = await self.reader.readexactly(size + 2)
            yield data[:-2]


class RawHttp:
    """Keep-alive HTTP/1.1 over asyncio streams: a LIFO pool of up to ``size`` connections.

    Enough for troth's answers (``content-length`` bodies; chunked for the SSE stream)."""

    def __init__(self, base_url: str, size: int) -> None:
        u = urlsplit(base_url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.size = size
        self.idle: list[_RawConn] = []
        self.slots = asyncio.Semaphore(size)
        self.host_header = f"Host: {self.host}:{self.port}\r\n"

    async def _connect(self) -> _RawConn:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        return _RawConn(reader, writer)

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        payload = b"" if body is None else _encode(body)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\n{self.host_header}"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n{extra}\r\n"
        )
        async with self.slots:
            conn = await self._checkout()
            try:
                conn.writer.write(head.encode() + payload)
                status, hdrs = await conn.read_head()
                n = hdrs.get(b"content-length")
                if n is not None:
                    data = await conn.reader.readexactly(int(n))
                elif hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
                    data = b"".join([c async for c in conn.chunks()])
                else:
                    data = b""
            except BaseException:
                conn.writer.close()
                raise
            if hdrs.get(b"connection", b"").lower() == b"close":
                conn.writer.close()
            else:
                conn.last_used = time.monotonic()
                self.idle.append(conn)
            return status, data

    async def _checkout(self) -> _RawConn:
        """An idle connection the server has not closed, else a new one. uvicorn closes a
        keep-alive connection after 5 s idle; one idle for longer than ``IDLE_S`` is not
        reused (a request must never be sent on a connection the server is closing)."""
        while self.idle:
            conn = self.idle.pop()
            if time.monotonic() - conn.last_used < IDLE_S and not conn.reader.at_eof():
                return conn
            conn.writer.close()
        return await self._connect()

    async def stream(self, path: str) -> AsyncIterator[bytes]:
        conn = await self._connect()
        try:
            head = f"GET {path} HTTP/1.1\r\n{self.host_header}accept: text/event-stream\r\n\r\n"
            conn.writer.write(head.encode())
            status, hdrs = await conn.read_head()
            if status != 200:
                raise BenchError(f"GET {path}: {status}")
            if hdrs.get(b"transfer-encoding", b"").lower() != b"chunked":
                raise BenchError(f"GET {path}: expected a chunked event stream, got {hdrs}")
            async for chunk in conn.chunks():
                yield chunk
        finally:
            conn.writer.close()

    async def aclose(self) -> None:
        for conn in self.idle:
            conn.writer.close()
        self.idle.clear()


class HttpxHttp:
    """The same over httpx ``AsyncClient`` (keep-alive pool of ``size`` connections)."""

    def __init__(self, base_url: str, size: int) -> None:
        import httpx

        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self.client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0)
        self.stream_client = httpx.AsyncClient(base_url=base_url, timeout=None)

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        all_headers = {"content-type": "application/json", **(headers or {})}
        content = None if body is None else _encode(body)
        r = await self.client.request(method, path, content=content, headers=all_headers)
        return r.status_code, r.content

    async def stream(self, path: str) -> AsyncIterator[bytes]:
        async with self.stream_client.stream("GET", path) as r:
            if r.status_code != 200:
                raise BenchError(f"GET {path}: {r.status_code}")
            async for chunk in r.aiter_raw():
                yield chunk

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.stream_client.aclose()


def make_http(kind: str, base_url: str, size: int) -> Http:
    return HttpxHttp(base_url, size) if kind == "httpx" else RawHttp(base_url, size)


async def sse_messages(http: Http, path: str, connected: asyncio.Event) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of a worker stream; sets ``connected`` on the first comment."""
    buf = b""
    async for chunk in http.stream(path):
        buf += chunk
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            event, buf = buf[:end], buf[end + 2 :]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    yield line[5:].lstrip()
                elif line.startswith(b":") and not connected.is_set():
                    connected.set()


# -- a worker --------------------------------------------------------------------------------


@dataclass
class WorkerStats:
    messages: int = 0
    completed: int = 0
    redeliveries: int = 0  # a task message with counter > 1, or a task seen twice
    errors: Counter[str] = field(default_factory=Counter)


# on_done(seq, t_msg_ns, t_done_ns): the task of promise ``bench/<nonce>/<seq>`` completed
Done = Callable[[int, int, int], None]


class Worker:
    """One worker stream; every task message is claimed, its root resolved (fenced), and
    the task completed, concurrently with the next messages (up to the pool's size)."""

    def __init__(self, http: Http, name: str, prefix: str, on_done: Done) -> None:
        self.http = http
        self.name = name
        self.prefix = prefix  # "__invoke:bench/<nonce>/"
        self.on_done = on_done
        self.stats = WorkerStats()
        self.connected = asyncio.Event()
        self.seen: set[str] = set()
        self.pending: set[asyncio.Task[None]] = set()

    async def listen(self) -> None:
        async for raw in sse_messages(self.http, f"/poll/{GROUP}/{self.name}", self.connected):
            t_msg = now_ns()
            msg = _decode(raw)
            self.stats.messages += 1
            task = msg.get("task") or {}
            tid, counter = task.get("id", ""), task.get("counter", 0)
            if msg.get("type") != "invoke" or not tid.startswith(self.prefix):
                self.stats.errors[f"unexpected message {raw[:80]!r}"] += 1
                continue
            if counter != 1 or tid in self.seen:
                self.stats.redeliveries += 1
            self.seen.add(tid)
            t = asyncio.create_task(self.handle(tid, counter, t_msg))
            self.pending.add(t)
            t.add_done_callback(self.pending.discard)

    async def handle(self, tid: str, counter: int, t_msg: int) -> None:
        root = tid.removeprefix("__invoke:")
        try:
            s, _ = await self.http.request(
                "POST",
                "/tasks/claim",
                {"id": tid, "counter": counter, "processId": self.name, "ttl": TTL_MS},
            )
            if s not in CLAIM_STATUS:
                self.stats.errors[f"claim {s}"] += 1
                return
            fence = {"Task-Id": tid, "Task-Counter": str(counter)}
            s, _ = await self.http.request(
                "PATCH", f"/promises/{quote(root, safe='/')}", {"state": "RESOLVED"}, fence
            )
            if s not in RESOLVE_STATUS:
                self.stats.errors[f"resolve {s}"] += 1
                return
            s, _ = await self.http.request(
                "POST", "/tasks/complete", {"id": tid, "counter": counter}
            )
            if s not in COMPLETE_STATUS:
                self.stats.errors[f"complete {s}"] += 1
                return
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.stats.errors[f"socket {type(exc).__name__}"] += 1
            return
        self.stats.completed += 1
        self.on_done(int(tid[len(self.prefix) :]), t_msg, now_ns())

    async def drain(self) -> None:
        if self.pending:
            await asyncio.wait(list(self.pending), timeout=DRAIN_S)


async def worker_process(args: argparse.Namespace) -> None:
    """``--_worker NAME``: one worker in its own process. Reports ``ready``, then batches of
    ``d <seq> <t_msg> <t_done>`` lines, then ``summary <json>`` on stdout; stops when its
    stdin closes."""
    out = sys.stdout.buffer
    batch: list[bytes] = []

    def on_done(seq: int, t_msg: int, t_done: int) -> None:
        batch.append(b"d %d %d %d\n" % (seq, t_msg, t_done))

    http = make_http(args.client, args.url, args.pool)
    w = Worker(http, args._worker, args._prefix, on_done)
    listener = asyncio.create_task(w.listen())
    await asyncio.wait_for(w.connected.wait(), 10)
    out.write(b"ready\n")
    out.flush()
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()
        stdin_closed.set_result(None)

    watcher = asyncio.create_task(watch_stdin())
    while not stdin_closed.done() and not listener.done():
        await asyncio.sleep(FLUSH_S)
        if batch:
            out.write(b"".join(batch))
            batch.clear()
            out.flush()
    await w.drain()
    listener.cancel()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError, BenchError, OSError):
        await listener
    out.write(b"".join(batch))
    summary = {
        "messages": w.stats.messages,
        "completed": w.stats.completed,
        "redeliveries": w.stats.redeliveries,
        "errors": dict(w.stats.errors),
    }
    out.write(b"summary " + json.dumps(summary).encode() + b"\n")
    out.flush()
    await http.aclose()


# -- the producer and the phases ---------------------------------------------------------------


@dataclass
class LatencyResult:
    samples_ms: list[float]
    post_first: int  # samples whose POST answer arrived before the stream message
    errors: Counter[str]
    server_cpu_pct: float
    client_cpu_pct: float
    others: list[tuple[str, float]]


@dataclass
class ThroughputResult:
    label: str
    prefix: str  # of its promise ids
    mode: str
    client: str
    workers: int
    inflight: int
    window_s: float
    completed_in_window: int
    latencies_ms: list[float]  # create sent -> complete answered, tasks created in the window
    to_message_ms: list[float]  # create sent -> message on the worker's stream
    created: int
    completed: int
    errors: Counter[str]
    redeliveries: int
    server_cpu_pct: float
    producer_cpu_pct: float
    workers_cpu_pct: float
    machine_cpu_pct: float
    others: list[tuple[str, float]]
    server_threads: str  # CPU of the server's busiest threads over the window
    completed_seqs: list[int] = field(default_factory=list)
    recorded: bool = True

    @property
    def tasks_per_s(self) -> float:
        return self.completed_in_window / self.window_s

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + self.redeliveries

    @property
    def loadgen_cpu_pct(self) -> float:
        return self.producer_cpu_pct + self.workers_cpu_pct


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process, by thread name (``name[tid]``)."""
    out = {}
    for entry in os.scandir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{entry.name}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        comm = text[text.index("(") + 1 : text.rindex(")")]
        name = "main" if entry.name == str(pid) else comm  # threading names are not OS names
        out[f"{name}[{entry.name}]"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def thread_pcts(before: dict[str, float], after: dict[str, float], wall: float) -> str:
    """The busiest threads over an interval, e.g. ``troth[12] 93%, troth-sqlite-wr[14] 20%``."""
    used = sorted(
        ((100 * (v - before.get(k, 0.0)) / wall, k) for k, v in after.items()), reverse=True
    )
    return ", ".join(f"{k} {p:.0f}%" for p, k in used if p >= 1) or "-"


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class TaskServer(Server):
    """run.py's server, with ``?synchronous=normal`` on request."""

    def __init__(self, workdir: Path, synchronous: str) -> None:
        super().__init__(workdir)
        self.synchronous = synchronous

    @property
    def store_url(self) -> str:
        base = f"sqlite:///{self.db}"
        return base if self.synchronous == "full" else f"{base}?synchronous={self.synchronous}"


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.server = TaskServer(workdir, args.synchronous)
        self.nonce = os.urandom(3).hex()
        self.phase = 0
        self.latency: LatencyResult | None = None
        self.runs: list[ThroughputResult] = []
        self.checks: list[str] = []
        self.profile_summary = ""
        self.created_ok: dict[str, int] = {}  # promise prefix -> 201 answers to its creates

    async def wait_quiet(self) -> None:
        """Wait (up to --quiet-wait s) until no other process uses >= 15% of a core."""
        deadline = time.monotonic() + self.args.quiet_wait
        exclude = {self.server.pid, os.getpid()}
        while True:
            before = all_procs_cpu_s()
            await asyncio.sleep(0.5)
            busy = busiest_others(before, all_procs_cpu_s(), exclude, 0.5)
            if sum(p for _, p in busy) < 15 or time.monotonic() > deadline:
                return
            print(f"      waiting for a quiet machine: {busy[:3]}", flush=True)

    def prefix(self, phase: str) -> str:
        return f"{GROUP}/{self.nonce}-{phase}/"

    # -- 1. dispatch latency -----------------------------------------------------------------

    async def dispatch_latency(self) -> LatencyResult:
        args = self.args
        prefix = self.prefix("lat")
        http = make_http(args.client, self.server.url, 4)
        arrived: dict[str, asyncio.Future[int]] = {}
        errors: Counter[str] = Counter()
        connected = asyncio.Event()

        async def listen() -> None:
            async for raw in sse_messages(http, f"/poll/{GROUP}/w1", connected):
                t = now_ns()
                msg = _decode(raw)
                tid = msg.get("task", {}).get("id", "")
                fut = arrived.get(tid)
                if fut is None or fut.done():
                    errors[f"unexpected message {raw[:80]!r}"] += 1
                else:
                    fut.set_result(t)

        await self.wait_quiet()
        listener = asyncio.create_task(listen())
        await asyncio.wait_for(connected.wait(), 10)
        await asyncio.sleep(0.5)
        procs0 = all_procs_cpu_s()
        samples: list[float] = []
        post_first = 0
        created = 0
        srv0, cpu0, t0 = proc_cpu_s(self.server.pid), self_cpu_s(), time.monotonic()
        loop = asyncio.get_running_loop()
        for i in range(args.latency_samples):
            pid = f"{prefix}{i}"
            tid = f"__invoke:{pid}"
            fut = arrived[tid] = loop.create_future()
            body = {
                "id": pid,
                "timeout": FAR,
                "tags": {"resonate:invoke": f"poll://uni@{GROUP}/w1"},
            }
            start = now_ns()
            s, _ = await http.request("POST", "/promises", body)
            answered = now_ns()
            if s != 201:
                errors[f"create {s}"] += 1
                continue
            created += 1
            try:
                t_msg = await asyncio.wait_for(fut, 5)
            except TimeoutError:
                errors["no message within 5 s"] += 1
                continue
            samples.append((t_msg - start) / 1e6)
            post_first += answered < t_msg
            # untimed: claim, fenced resolve, complete (nothing is left behind)
            s, _ = await http.request(
                "POST", "/tasks/claim", {"id": tid, "counter": 1, "processId": "w1", "ttl": TTL_MS}
            )
            s2, _ = await http.request(
                "PATCH",
                f"/promises/{quote(pid, safe='/')}",
                {"state": "RESOLVED"},
                {"Task-Id": tid, "Task-Counter": "1"},
            )
            s3, _ = await http.request("POST", "/tasks/complete", {"id": tid, "counter": 1})
            if (s, s2) != (201, 201) or s3 not in COMPLETE_STATUS:
                errors[f"claim/resolve/complete {s}/{s2}/{s3}"] += 1
        wall = time.monotonic() - t0
        srv1, cpu1 = proc_cpu_s(self.server.pid), self_cpu_s()
        others = busiest_others(procs0, all_procs_cpu_s(), {self.server.pid, os.getpid()}, wall)
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError, BenchError):
            await listener
        await http.aclose()
        self.created_ok[prefix] = created
        return LatencyResult(
            samples,
            post_first,
            errors,
            100 * (srv1 - srv0) / wall,
            100 * (cpu1 - cpu0) / wall,
            others,
        )

    # -- 2. sustained tasks/s -----------------------------------------------------------------

    async def throughput(
        self, mode: str, client: str, inflight: int, *, label: str, recorded: bool = True
    ) -> ThroughputResult:
        args = self.args
        self.phase += 1
        prefix = self.prefix(f"t{self.phase}")
        task_prefix = f"__invoke:{prefix}"
        waiting: dict[int, asyncio.Future[tuple[int, int]]] = {}
        done_at: dict[int, tuple[int, int]] = {}

        def on_done(seq: int, t_msg: int, t_done: int) -> None:
            done_at[seq] = (t_msg, t_done)
            fut = waiting.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_result((t_msg, t_done))

        await self.wait_quiet()
        procs: list[asyncio.subprocess.Process] = []
        workers: list[Worker] = []
        worker_http: list[Http] = []
        listeners: list[asyncio.Task[None]] = []
        readers: list[asyncio.Task[dict[str, Any]]] = []
        if mode == "procs":
            for i in range(args.workers):
                cmd = [sys.executable, SELF, "--_worker", f"w{i + 1}"]
                cmd += ["--_prefix", task_prefix, "--url", self.server.url]
                cmd += ["--client", client, "--pool", str(args.pool)]
                procs.append(
                    await asyncio.create_subprocess_exec(
                        *cmd,
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        limit=1 << 22,
                    )
                )

            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()
            started = Counter[str]()

            async def read_worker(p: asyncio.subprocess.Process) -> dict[str, Any]:
                assert p.stdout is not None
                line = await p.stdout.readline()
                if line != b"ready\n":
                    raise BenchError(f"worker {p.pid} did not start: {line!r}")
                started["ready"] += 1
                if started["ready"] == len(procs):
                    ready.set_result(None)
                while True:
                    line = await p.stdout.readline()
                    if not line:
                        raise BenchError(f"worker {p.pid} exited without a summary")
                    if line.startswith(b"d "):
                        _, seq, t_msg, t_done = line.split()
                        on_done(int(seq), int(t_msg), int(t_done))
                    elif line.startswith(b"summary "):
                        return dict(json.loads(line[8:]))

            readers = [asyncio.create_task(read_worker(p)) for p in procs]
            await asyncio.wait_for(ready, 30)
        else:
            for i in range(args.workers):
                h = make_http(client, self.server.url, args.pool)
                w = Worker(h, f"w{i + 1}", task_prefix, on_done)
                worker_http.append(h)
                workers.append(w)
                listeners.append(asyncio.create_task(w.listen()))
            await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in workers)), 10)
        await asyncio.sleep(0.5)  # every stream registered with the server

        http = make_http(client, self.server.url, args.producer_connections)
        counter = itertools.count()
        created_at: dict[int, int] = {}
        errors: Counter[str] = Counter()
        stop = asyncio.Event()
        created = 0

        async def produce() -> None:
            nonlocal created
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                seq = next(counter)
                pid = f"{prefix}{seq}"
                fut = waiting[seq] = loop.create_future()
                body = {
                    "id": pid,
                    "timeout": FAR,
                    "tags": {"resonate:invoke": f"poll://any@{GROUP}"},
                }
                created_at[seq] = now_ns()
                try:
                    s, _ = await http.request("POST", "/promises", body)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    errors[f"create socket {type(exc).__name__}"] += 1
                    waiting.pop(seq, None)
                    continue
                if s != 201:
                    errors[f"create {s}"] += 1
                    waiting.pop(seq, None)
                    continue
                created += 1
                if seq in done_at:  # completed before the create's answer got here
                    waiting.pop(seq, None)
                    continue
                try:
                    await asyncio.wait_for(fut, DRAIN_S)
                except TimeoutError:
                    errors["task not completed within 30 s"] += 1
                    waiting.pop(seq, None)

        producers = [asyncio.create_task(produce()) for _ in range(inflight)]

        def cpu_sample() -> tuple[float, float, float, tuple[int, int], float]:
            wcpu = sum(proc_cpu_s(p.pid) for p in procs)
            return (
                proc_cpu_s(self.server.pid),
                self_cpu_s(),
                wcpu,
                machine_ticks(),
                time.monotonic(),
            )

        await asyncio.sleep(args.warmup)
        procs0 = all_procs_cpu_s()
        th0 = thread_cpu_s(self.server.pid)
        s0, c0, w0, (b0, tt0), m0 = cpu_sample()
        window_start = now_ns()
        await asyncio.sleep(args.duration)
        window_end = now_ns()
        s1, c1, w1, (b1, tt1), m1 = cpu_sample()
        threads = thread_pcts(th0, thread_cpu_s(self.server.pid), m1 - m0)
        mine = {self.server.pid, os.getpid(), *(p.pid for p in procs)}
        others = busiest_others(procs0, all_procs_cpu_s(), mine, m1 - m0)
        stop.set()
        await asyncio.wait(producers, timeout=DRAIN_S + 5)
        for t in producers:
            t.cancel()
        summaries: list[dict[str, Any]] = []
        if procs:
            for p in procs:
                assert p.stdin is not None
                p.stdin.close()
            summaries = list(await asyncio.wait_for(asyncio.gather(*readers), DRAIN_S + 10))
            for p in procs:
                await p.wait()
        else:
            for w in workers:
                await w.drain()
            for t in listeners:
                t.cancel()
            for t in listeners:
                with contextlib.suppress(asyncio.CancelledError, OSError, BenchError):
                    await t
            for h in worker_http:
                await h.aclose()
            summaries = [
                {
                    "messages": w.stats.messages,
                    "completed": w.stats.completed,
                    "redeliveries": w.stats.redeliveries,
                    "errors": dict(w.stats.errors),
                }
                for w in workers
            ]
        await http.aclose()
        for s in summaries:
            errors.update(s["errors"])
        wall = (m1 - m0) or 1e-9
        in_window = [seq for seq, (_, td) in done_at.items() if window_start <= td < window_end]
        lat = []
        to_msg = []
        for seq, (tm, td) in done_at.items():
            tc = created_at.get(seq)
            if tc is not None and window_start <= tc < window_end:
                lat.append((td - tc) / 1e6)
                to_msg.append((tm - tc) / 1e6)
        self.created_ok[prefix] = created
        run = ThroughputResult(
            label=label,
            prefix=prefix,
            mode=mode,
            client=client,
            workers=args.workers,
            inflight=inflight,
            window_s=(window_end - window_start) / 1e9,
            completed_in_window=len(in_window),
            latencies_ms=lat,
            to_message_ms=to_msg,
            created=created,
            completed=len(done_at),
            errors=errors,
            redeliveries=sum(int(s["redeliveries"]) for s in summaries),
            server_cpu_pct=100 * (s1 - s0) / wall,
            producer_cpu_pct=100 * (c1 - c0) / wall,
            workers_cpu_pct=100 * (w1 - w0) / wall,
            machine_cpu_pct=100 * NCPU * (b1 - b0) / max(1, tt1 - tt0),
            others=others,
            server_threads=threads,
            completed_seqs=sorted(done_at),
            recorded=recorded,
        )
        if created != len(done_at):
            run.errors[f"created {created} but completed {len(done_at)}"] += 1
        print(
            f"{label:<34} {run.tasks_per_s:7.0f} tasks/s  p50 {pct(lat, 50):6.1f} ms"
            f"  p99 {pct(lat, 99):6.1f} ms  errors {run.error_count}"
            f"  cpu server {run.server_cpu_pct:3.0f}% producer {run.producer_cpu_pct:3.0f}%"
            f" workers {run.workers_cpu_pct:3.0f}% all {run.machine_cpu_pct:3.0f}%"
            + ("" if recorded else "  (not recorded)")
            + f"\n      server threads: {threads}"
            + "".join(f"\n      also busy: {n} {p:.0f}%" for n, p in others[:3] if p >= 5),
            flush=True,
        )
        if run.error_count:
            raise BenchError(f"{label}: errors {dict(run.errors)}, redeliveries {run.redeliveries}")
        self.runs.append(run)
        await asyncio.sleep(1.0)
        return run

    # -- profiling ----------------------------------------------------------------------------

    async def profiled(self, out: Path) -> None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if spy is None:
            raise BenchError("py-spy not found: .venv/bin/pip install py-spy")
        out.parent.mkdir(parents=True, exist_ok=True)
        secs = max(3, int(self.args.duration) - 2)
        cmd = [spy, "record", "-p", str(self.server.pid), "-d", str(secs), "-r", "200"]
        cmd += ["-f", "raw", "-o", str(out), *(["--gil"] if self.args.profile_gil else [])]
        old = self.args.warmup
        spy_proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        self.args.warmup = 1.0
        try:
            run = await self.throughput(
                self.args.mode,
                self.args.client,
                self.args.inflight,
                label="profiled (py-spy attached)",
                recorded=False,
            )
        finally:
            self.args.warmup = old
        _, err = await asyncio.wait_for(spy_proc.communicate(), 60)
        if spy_proc.returncode != 0:
            raise BenchError(f"py-spy failed: {err.decode(errors='replace')}")
        self.profile_summary = (
            f"py-spy record -r 200 -f raw{' --gil' if self.args.profile_gil else ''},"
            f" {secs} s of an extra run ({run.tasks_per_s:,.0f}"
            f" tasks/s under the profiler); raw file: {out}\n"
            + summarize_raw(out, top=self.args.profile_top)
        )
        out.with_suffix(".txt").write_text(self.profile_summary + "\n")
        print(self.profile_summary)

    # -- the whole benchmark ------------------------------------------------------------------

    async def execute(self) -> None:
        args = self.args
        self.latency = await self.dispatch_latency()
        lat = self.latency
        print(
            f"dispatch latency ({len(lat.samples_ms)} samples): p50 {pct(lat.samples_ms, 50):.2f}"
            f" ms  p99 {pct(lat.samples_ms, 99):.2f} ms  max {max(lat.samples_ms, default=0):.2f}"
            f" ms  errors {sum(lat.errors.values())}",
            flush=True,
        )
        if lat.errors:
            raise BenchError(f"dispatch latency: errors {dict(lat.errors)}")
        for mode, client, inflight in args.compare:
            n = inflight or args.inflight
            await self.throughput(mode, client, n, label=f"compare {mode}/{client}/{n}")
        await self.throughput(args.mode, args.client, args.inflight, label="main")
        if args.profile:
            await self.profiled(Path(args.profile))

    def verify(self) -> None:
        """With the server stopped: every 201 create has its promise, every completed task's
        promise is RESOLVED and its task COMPLETED, and nothing was left PENDING."""
        failures: list[str] = []
        self.checks = []
        with contextlib.closing(sqlite3.connect(self.server.db)) as conn:
            for prefix, created in self.created_ok.items():
                glob = prefix + "*"
                states = dict(
                    conn.execute(
                        "SELECT state, count(*) FROM promises WHERE id GLOB ? GROUP BY state",
                        (glob,),
                    ).fetchall()
                )
                tasks = dict(
                    conn.execute(
                        "SELECT state, count(*) FROM tasks WHERE id GLOB ? GROUP BY state",
                        ("__invoke:" + glob,),
                    ).fetchall()
                )
                rows = sum(states.values())
                fmt = ", ".join
                line = (
                    f"`{prefix}*`: {created:,} creates answered 201; promises in the file:"
                    f" {fmt(f'{n:,} {k}' for k, n in states.items()) or 'none'}; their invoke"
                    f" tasks: {fmt(f'{n:,} {k}' for k, n in tasks.items()) or 'none'}"
                )
                if rows != created or states.get("RESOLVED", 0) != created:
                    failures.append(line)
                if tasks.get("COMPLETED", 0) != created or sum(tasks.values()) != created:
                    failures.append(line)
                self.checks.append(line)
            for run in self.runs:
                prefix = run.prefix
                have = {
                    r[0]: r[1]
                    for r in conn.execute(
                        "SELECT p.id, p.state || '/' || coalesce(t.state, '-') FROM promises p"
                        " LEFT JOIN tasks t ON t.id = '__invoke:' || p.id WHERE p.id GLOB ?",
                        (prefix + "*",),
                    )
                }
                bad = [
                    s
                    for s in run.completed_seqs
                    if have.get(f"{prefix}{s}") != "RESOLVED/COMPLETED"
                ]
                line = (
                    f"{run.label}: {len(run.completed_seqs):,} tasks completed by workers;"
                    f" promise RESOLVED and task COMPLETED for each: "
                    + ("OK" if not bad else f"FAILED for {len(bad)} (e.g. {bad[:3]})")
                )
                if bad:
                    failures.append(line)
                self.checks.append(line)
        for line in self.checks:
            print("verify:", line)
        if failures:
            raise BenchError("data verification failed:\n  " + "\n  ".join(failures))


# -- profile summary (py-spy raw = collapsed stacks) -----------------------------------------------


def summarize_raw(path: Path, top: int = 15) -> str:
    """Top functions by self and inclusive samples from py-spy's ``-f raw`` output (one
    ``frame;frame;...;leaf count`` line per distinct stack; py-spy counts active samples only:
    a thread idle in epoll or on a queue is left out, one inside SQLite counts)."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        self_c[frames[-1]] += count
        for f in set(frames[1:]):
            incl[f] += count
    if not total:
        return "profile: no samples"

    def share(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    lines = [f"profile: {total:,} active samples (= 100%)"]
    lines += [f"  {share(n)}  {t}" for t, n in threads.most_common()]
    lines.append(f"top {top} by self samples:")
    lines += [f"  {share(n)}  {f}" for f, n in self_c.most_common(top)]
    lines.append(f"top {top} by inclusive samples:")
    lines += [f"  {share(n)}  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)


# -- the report --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def targets(bench: Bench) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    if bench.latency is not None and bench.latency.samples_ms:
        p99 = pct(bench.latency.samples_ms, 99)
        out.append(
            (f"dispatch latency p99 {p99:.2f} ms ≤ {TARGET_P99_MS:g} ms", p99 <= TARGET_P99_MS)
        )
    main = next((r for r in bench.runs if r.label == "main"), None)
    if main is not None:
        out.append(
            (
                f"end to end with {main.workers} workers: {main.tasks_per_s:,.0f} tasks/s"
                f" ≥ {TARGET_TASKS_PER_S:,.0f}",
                main.tasks_per_s >= TARGET_TASKS_PER_S,
            )
        )
        out.append((f"errors in the main run: {main.error_count} = 0", main.error_count == 0))
    return out


def render(bench: Bench, command: str, started: dt.datetime, failure: str | None) -> str:
    m = machine()
    args = bench.args
    out = ["# troth task framework benchmark", ""]
    if failure:
        out += ["> **FAILED** — these numbers are not valid:", ">", f"> {failure}", ""]
    out += [
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: `{git_commit()}`",
        f"- command: `{command}`",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}",
        f"- software: Python {m['python']}, SQLite {m['sqlite']}",
        "- server: one `troth serve` process (uvicorn, uvloop, httptools), fresh SQLite file in"
        " a temp dir, WAL, "
        + (
            "`synchronous=FULL` (default; every acknowledged write fsynced, group commit)"
            if args.synchronous == "full"
            else "**`synchronous=NORMAL`** (not the default: commits not fsynced)"
        ),
        f"- load generator: `{args.client}` HTTP client"
        + (" (minimal keep-alive HTTP/1.1 on asyncio streams)" if args.client == "raw" else "")
        + f", uvloop; workers as {'processes' if args.mode == 'procs' else 'coroutines'};"
        " server and load generator share the CPUs, nothing pinned",
        "",
        "## 1. Dispatch latency (idle server)",
        "",
    ]
    lat = bench.latency
    if lat is not None and lat.samples_ms:
        s = lat.samples_ms
        out += [
            f"One worker stream on `/poll/{GROUP}/w1`; {args.latency_samples} sequential"
            f" `POST /promises` with `resonate:invoke = poll://uni@{GROUP}/w1`; time from sending"
            " the POST to the task message arriving on the stream. Each task then claimed,"
            " resolved (fenced) and completed, untimed.",
            "",
            "| samples | p50 ms | p90 ms | p99 ms | max ms | mean ms | errors | server CPU"
            " | client CPU |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {len(s)} | {pct(s, 50):.2f} | {pct(s, 90):.2f} | {pct(s, 99):.2f} | {max(s):.2f}"
            f" | {statistics.fmean(s):.2f} | {sum(lat.errors.values())}"
            f" | {lat.server_cpu_pct:.0f}% | {lat.client_cpu_pct:.0f}% |",
            "",
            f"The POST's answer arrived before the stream message in {lat.post_first} of"
            f" {len(s)} samples (the dispatcher sends after the create's commit, in its own"
            " transaction: mark ENQUEUED, then send).",
            "",
        ]
    else:
        out += ["- not reached", ""]
    out += [
        "## 2. Sustained tasks/s end to end",
        "",
        f"{args.workers} workers, each with its own stream `/poll/{GROUP}/w{{i}}`; tasks addressed"
        f" `poll://any@{GROUP}`; the producer keeps `inflight` tasks created and not yet"
        f" completed ({args.producer_connections} keep-alive connections for its creates);"
        f" each worker: claim → fenced `PATCH` RESOLVED → complete, up to {args.pool}"
        f" concurrent requests per worker. {args.warmup:g} s warm-up, then a {args.duration:g} s"
        " window.",
        "",
        "| run | workers as | client | inflight | tasks/s | p50 ms | p99 ms | create→message p50"
        " ms | errors | server CPU | producer CPU | workers CPU | all CPU |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in bench.runs:
        out.append(
            f"| {r.label} | {'processes' if r.mode == 'procs' else 'coroutines'} | {r.client}"
            f" | {r.inflight} | {r.tasks_per_s:,.0f} | {pct(r.latencies_ms, 50):.1f}"
            f" | {pct(r.latencies_ms, 99):.1f} | {pct(r.to_message_ms, 50):.1f}"
            f" | {r.error_count} | {r.server_cpu_pct:.0f}% | {r.producer_cpu_pct:.0f}%"
            f" | {r.workers_cpu_pct:.0f}% | {r.machine_cpu_pct:.0f}% |"
        )
    out += [
        "",
        "tasks/s = tasks whose complete answered 201/200 inside the window ÷ the window."
        " Latency: create sent → complete answered, for tasks created inside the window."
        " errors = unexpected statuses + socket errors + redelivered messages + tasks not"
        f" completed. CPU: % of one core over the window (max {100 * NCPU}%); producer ="
        " the benchmark's main process (also the workers in coroutine mode); all = every"
        " process plus the kernel, from /proc/stat.",
        "",
        "Server CPU by thread (% of one core over the window; `main` runs the event loop,"
        " the next busiest is the SQLite writer thread, the small ones the read pool):",
        "",
        *[f"- {r.label}: {r.server_threads}" for r in bench.runs],
        "",
    ]
    phases = [(r.label, r.others) for r in bench.runs]
    if bench.latency is not None:
        phases.insert(0, ("dispatch latency", bench.latency.others))
    busy = [
        f"- {label}: " + ", ".join(f"{n} {p:.0f}%" for n, p in others if p >= 5)
        for label, others in phases
        if any(p >= 5 for _, p in others)
    ]
    out += (
        ["Other processes using ≥ 5% of a core during a measurement:", "", *busy, ""]
        if busy
        else ["No other process used 5% of a core or more during any measurement.", ""]
    )
    out += ["## Targets", ""]
    out += [f"- {'PASS' if ok else 'MISS'}: {text}" for text, ok in targets(bench)]
    out += ["", "## Data check (after the server stopped)", ""]
    out += [f"- {line}" for line in bench.checks] or ["- not reached"]
    if bench.profile_summary:
        out += ["", "## Server profile (extra run, not in the targets)", "", "```"]
        out += [bench.profile_summary, "```"]
    out.append("")
    return "\n".join(out)


# -- main --------------------------------------------------------------------------------------


def parse_compare(text: str) -> list[tuple[str, str, int | None]]:
    out: list[tuple[str, str, int | None]] = []
    for item in filter(None, text.split(",")):
        mode, _, rest = item.partition("/")
        client, _, inflight = rest.partition("/")
        if (
            mode not in ("procs", "coros")
            or client not in ("raw", "httpx")
            or not (inflight == "" or inflight.isdigit())
        ):
            raise argparse.ArgumentTypeError(
                f"expected MODE/CLIENT[/INFLIGHT], e.g. coros/httpx/64: {item!r}"
            )
        out.append((mode, client, int(inflight) if inflight else None))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="timed window, s (10)")
    p.add_argument("--workers", type=int, default=8, help="worker streams (8)")
    p.add_argument("--out", default=str(HERE / "results" / "tasks.md"), help="results markdown")
    p.add_argument("--inflight", type=int, default=128, help="tasks in flight (128)")
    p.add_argument("--mode", choices=("procs", "coros"), default="coros", help="workers as (coros)")
    p.add_argument(
        "--synchronous",
        choices=("full", "normal"),
        default="full",
        help="SQLite synchronous of the server's store (full, the server's default)",
    )
    p.add_argument("--client", choices=("raw", "httpx"), default="raw", help="HTTP client (raw)")
    p.add_argument("--pool", type=int, default=16, help="connections per worker (16)")
    p.add_argument(
        "--producer-connections", type=int, default=32, help="connections for creates (32)"
    )
    p.add_argument("--latency-samples", type=int, default=500, help="dispatch samples (500)")
    p.add_argument("--warmup", type=float, default=2.0, help="s before the window (2)")
    p.add_argument(
        "--compare",
        type=parse_compare,
        default=[],
        help="extra runs before the main one: MODE/CLIENT[/INFLIGHT],...,"
        " e.g. coros/httpx,procs/raw/32",
    )
    p.add_argument("--profile", metavar="RAW", help="extra run with py-spy (-f raw) on the server")
    p.add_argument("--profile-top", type=int, default=15, help="functions listed (15)")
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="py-spy --gil: only samples of the thread holding the GIL",
    )
    p.add_argument("--check-targets", action="store_true", help="exit 2 when a target is missed")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each measurement, wait up to this many s for other processes to go idle",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (db, server log)")
    # internal: one worker process
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    p.add_argument("--_prefix", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 1 <= args.workers <= 64 or not 1 <= args.inflight <= 10_000:
        p.error("--workers 1..64, --inflight 1..10000")
    return args


def run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
        run_loop(worker_process(args))
        return 0
    command = " ".join([".venv/bin/python", "benchmarks/tasks.py", *sys.argv[1:]])
    started = dt.datetime.now(dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="troth-bench-tasks-"))
    bench = Bench(args, workdir)
    failure: str | None = None
    try:
        bench.server.start()
        print(
            f"server pid {bench.server.pid} on {bench.server.url}, store {bench.server.store_url}"
        )
        run_loop(bench.execute())
        bench.server.stop()
        bench.verify()
    except BenchError as exc:
        failure = str(exc).splitlines()[0]
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        bench.server.stop()
        if args.keep or failure:
            print(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(bench, command, started, failure))
    print(f"\nresults: {out}")
    if failure:
        return 1
    results = targets(bench)
    for text, ok in results:
        print(("PASS " if ok else "MISS ") + text)
    return 2 if args.check_targets and not all(ok for _, ok in results) else 0


if __name__ == "__main__":
    sys.exit(main())
