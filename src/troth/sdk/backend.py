"""Where the SDK keeps its promises: the engine in-process, or a troth server.

The SDK's execution logic is written once against ``Backend``; ``EngineBackend`` calls an
``Engine`` directly (embedded mode, no server), ``ClientBackend`` the HTTP API (remote mode).
Every write carries the fence of the task the execution runs under (remote), so a worker
that lost its lease cannot write any more.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Protocol

import httpx
import msgspec

from troth.client import AsyncClient, _Call, _connection_failed, _raise_for_status
from troth.engine import Engine
from troth.engine.sdkops import ClaimRef, ClaimResult, Op, OpResult, apply_ops
from troth.errors import NotFound, TrothError
from troth.model import Promise, Recv, Schedule, State, Task, TaskState, Value
from troth.transport import LeanTransport

Fence = tuple[str, int]
Search = Callable[[str, str | None], Awaitable[tuple[list[Promise], str | None]]]
MAX_WAIT_S = 300.0
EMBEDDED_POLL_S = 1.0


class Backend(Protocol):
    async def create(
        self,
        id: str,
        timeout: int,
        *,
        param: Value,
        tags: dict[str, str],
        fence: Fence | None = None,
    ) -> Promise:
        """Create (idempotently: the id is its own key) and return the stored promise."""
        ...

    async def complete(
        self, id: str, state: State, value: Value, *, fence: Fence | None = None
    ) -> Promise: ...

    async def get(self, id: str) -> Promise: ...

    async def wait(self, id: str, seconds: float) -> Promise:
        """The promise once completed, or as it is after ``seconds``."""
        ...

    async def callback(
        self, promise_id: str, *, root_id: str, timeout: int, recv: str, fence: Fence | None
    ) -> Promise | None:
        """Register a resume callback; the promise if it is already completed, else None."""
        ...

    async def pending_roots(self) -> list[Promise]:
        """Pending promises that are roots of durable function executions."""
        ...

    async def batch(self, ops: list[Op]) -> list[OpResult]:
        """Apply ``ops`` in order, atomically (one transaction); one result per op."""
        ...

    async def find(self, id: str) -> Promise | None:
        """The promise, or None if there is none."""
        ...

    async def children(self, id: str) -> dict[str, Promise]:
        """Every promise whose id starts with ``<id>.`` (the recorded calls of an
        execution, nested ones included), by id."""
        ...

    async def create_schedule(
        self,
        id: str,
        *,
        cron: str,
        promise_id: str,
        promise_timeout: int,
        promise_param: Value,
        promise_tags: dict[str, str],
    ) -> Schedule:
        """Create a schedule idempotently (the id is its own key)."""
        ...


ROOT_TAG = "troth:root"


class EngineBackend:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._probe: sqlite3.Connection | None = None
        self._probe_tried = False

    def _absent(self, id: str) -> bool:
        """Whether ``id`` is certainly absent, by a point read on this thread (SQLite only).

        ``troth.run`` asks this before every new execution; the store's reads run on a
        thread pool, and the hop there and back costs more than the read. A read-only
        connection of our own to the same file (WAL: it sees every committed write) answers
        in microseconds. ``False`` means "present, or cannot tell": the engine is asked.
        """
        if not self._probe_tried:
            self._probe_tried = True
            path = getattr(self.engine.store, "path", None)
            if type(self.engine.store).__name__ == "SqliteStore" and isinstance(path, str):
                try:
                    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
                    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=0.1)
                    conn.execute("PRAGMA query_only = ON")
                    self._probe = conn
                except sqlite3.Error:
                    self._probe = None
        if self._probe is None:
            return False
        try:
            # fetchall: the statement runs to its end, so no read snapshot stays open (an
            # open one would keep the WAL from being checkpointed)
            rows = self._probe.execute("SELECT 1 FROM promises WHERE id = ?", (id,)).fetchall()
        except sqlite3.Error:
            self.close()
            return False
        return not rows

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    async def create(
        self,
        id: str,
        timeout: int,
        *,
        param: Value,
        tags: dict[str, str],
        fence: Fence | None = None,
    ) -> Promise:
        p, _ = await self.engine.create_promise(
            id, timeout, param=param, tags=tags, ikey=id, fence=fence
        )
        return p

    async def complete(
        self, id: str, state: State, value: Value, *, fence: Fence | None = None
    ) -> Promise:
        p, _ = await self.engine.complete_promise(id, state, value=value, ikey=id, fence=fence)
        return p

    async def get(self, id: str) -> Promise:
        return await self.engine.get_promise(id)

    async def wait(self, id: str, seconds: float) -> Promise:
        # Waiters hear of completions made in this process at once; another process on the
        # same database (a CLI, a second embedded app) is noticed by the next re-read.
        return await self.engine.wait_promise(id, int(min(seconds, EMBEDDED_POLL_S) * 1000))

    async def callback(
        self, promise_id: str, *, root_id: str, timeout: int, recv: str, fence: Fence | None
    ) -> Promise | None:
        cb, p = await self.engine.register_callback(
            promise_id, root_promise_id=root_id, timeout=timeout, recv=recv, fence=fence
        )
        return p if cb is None and p.state.completed else None

    async def batch(self, ops: list[Op]) -> list[OpResult]:
        return await apply_ops(self.engine, ops)

    async def find(self, id: str) -> Promise | None:
        if self._absent(id):
            return None
        try:
            return await self.engine.get_promise(id)
        except NotFound:
            return None

    async def children(self, id: str) -> dict[str, Promise]:
        return await _children(self._search, id)

    async def _search(self, pattern: str, cursor: str | None) -> tuple[list[Promise], str | None]:
        page = await self.engine.search_promises(pattern=pattern, limit=1000, cursor=cursor)
        return page.promises, page.cursor

    async def pending_roots(self) -> list[Promise]:
        out: list[Promise] = []
        cursor: str | None = None
        while True:
            page = await self.engine.search_promises(
                state="pending", tags={ROOT_TAG: "true"}, limit=1000, cursor=cursor
            )
            out += page.promises
            if page.cursor is None:
                return out
            cursor = page.cursor

    async def create_schedule(
        self,
        id: str,
        *,
        cron: str,
        promise_id: str,
        promise_timeout: int,
        promise_param: Value,
        promise_tags: dict[str, str],
    ) -> Schedule:
        schedule, _ = await self.engine.create_schedule(
            id,
            cron_expr=cron,
            promise_id=promise_id,
            promise_timeout=promise_timeout,
            promise_param=promise_param,
            promise_tags=promise_tags,
            ikey=id,
        )
        return schedule


class _RawPost:
    """POSTs of JSON to one path through the client's ``LeanTransport`` with a head encoded
    once (the client's headers, including its token): the SDK sends many batches."""

    def __init__(self, client: AsyncClient, path: str) -> None:
        self.client = client
        self.path = path
        transport = getattr(client._http, "_transport", None)
        self.transport = transport if isinstance(transport, LeanTransport) else None
        url = httpx.URL(client.url + path)
        self.host, self.port = url.host, url.port or 80
        self.usable = self.transport is not None and url.scheme == "http"
        lines = [b"POST " + url.raw_path + b" HTTP/1.1", b"host: " + url.netloc]
        for name, value in client._http.headers.raw:
            if name.lower() not in (b"host", b"content-length", b"content-type"):
                lines.append(name + b": " + value)
        lines.append(b"content-type: application/json")
        self.head = b"\r\n".join(lines)

    async def __call__(self, body: bytes) -> bytes:
        if not self.usable:
            response = await self.client._send(_Call("POST", self.path, content=body))
            _raise_for_status(response)
            return response.content
        assert self.transport is not None
        try:
            status, content = await self.transport.send_raw(
                self.host, self.port, self.head, body, self.client.timeout
            )
        except httpx.TransportError as exc:
            raise _connection_failed(self.client.url, exc) from exc
        if status >= 300:
            request = httpx.Request("POST", self.client.url + self.path)
            _raise_for_status(httpx.Response(status, content=content, request=request))
        return content


class ClientBackend:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._batch = _RawPost(client, "/sdk/batch")
        self._claim = _RawPost(client, "/sdk/claim")
        #: The server has no SDK routes (an older troth, or a token scoped to an id prefix,
        #: which may not use them): one request per write, as before them.
        self.classic = False

    async def create(
        self,
        id: str,
        timeout: int,
        *,
        param: Value,
        tags: dict[str, str],
        fence: Fence | None = None,
    ) -> Promise:
        return await self.client.create_promise(
            id, timeout, param=param, tags=tags, idempotency_key=id, fence=fence
        )

    async def complete(
        self, id: str, state: State, value: Value, *, fence: Fence | None = None
    ) -> Promise:
        if state is State.RESOLVED:
            return await self.client.resolve_promise(
                id, value=value, idempotency_key=id, fence=fence
            )
        if state is State.REJECTED:
            return await self.client.reject_promise(
                id, value=value, idempotency_key=id, fence=fence
            )
        return await self.client.cancel_promise(id, value=value, idempotency_key=id, fence=fence)

    async def get(self, id: str) -> Promise:
        return await self.client.get_promise(id)

    async def wait(self, id: str, seconds: float) -> Promise:
        return await self.client.wait_promise(id, min(seconds, MAX_WAIT_S))

    async def callback(
        self, promise_id: str, *, root_id: str, timeout: int, recv: str, fence: Fence | None
    ) -> Promise | None:
        cb, p = await self.client.register_callback(
            promise_id, root_promise_id=root_id, timeout=timeout, recv=recv, fence=fence
        )
        return p if cb is None and p.state.completed else None

    async def pending_roots(self) -> list[Promise]:
        return [
            p
            async for p in self.client.iter_promises("*", state="pending", tags={ROOT_TAG: "true"})
        ]

    async def batch(self, ops: list[Op]) -> list[OpResult]:
        if not self.classic:
            try:
                answer = await self._batch(_encode(_BatchBody(ops)))
            except TrothError as exc:
                if not _no_sdk_routes(exc):
                    raise
                self.classic = True
            else:
                results = _batch_answer.decode(answer).results
                if len(results) != len(ops):
                    raise TrothError(f"/sdk/batch answered {len(results)} results for {len(ops)}")
                return results
        return [await self._one(op) for op in ops]

    async def _one(self, op: Op) -> OpResult:
        """``op`` through the single-promise routes (``at`` cannot be honoured there)."""
        fence = None if op.fence is None else (op.fence.id, op.fence.counter)
        if op.kind == "watch":
            return OpResult(status=501, code=50100, message="no results stream")
        try:
            if op.kind in ("create", "record"):
                p = await self.create(
                    op.id, op.timeout, param=op.param, tags=op.tags or {}, fence=fence
                )
                if op.kind == "create" or p.state is not State.PENDING:
                    return OpResult(status=201, promise=p)
            assert op.state is not None
            p = await self.complete(op.id, op.state, op.value, fence=fence)
            return OpResult(status=201, promise=p)
        except TrothError as exc:
            return OpResult(status=exc.status, code=exc.code, message=exc.message)

    async def claim(self, refs: list[ClaimRef], process_id: str, ttl: int) -> list[ClaimResult]:
        if not self.classic:
            try:
                answer = await self._claim(_encode(_ClaimBody(refs, process_id, ttl)))
            except TrothError as exc:
                if not _no_sdk_routes(exc):
                    raise
                self.classic = True
            else:
                return _claim_answer.decode(answer).results
        out = []
        for ref in refs:
            try:
                c = await self.client.claim_task(
                    ref.id, ref.counter, process_id=process_id, ttl=ttl
                )
            except TrothError as exc:
                out.append(ClaimResult(status=exc.status, code=exc.code, message=exc.message))
                continue
            task = Task(
                id=ref.id,
                type=c.type,
                state=TaskState.CLAIMED,
                recv=Recv(type="poll"),
                root_promise_id=c.root.id,
                leaf_promise_id=None if c.leaf is None else c.leaf.id,
                counter=ref.counter,
                process_id=process_id,
                ttl=ttl,
                timeout=c.root.timeout,
                created_on=0,
            )
            out.append(ClaimResult(status=201, task=task, root=c.root, leaf=c.leaf))
        return out

    async def find(self, id: str) -> Promise | None:
        try:
            return await self.client.get_promise(id)
        except NotFound:
            return None

    async def children(self, id: str) -> dict[str, Promise]:
        return await _children(self._search, id)

    async def _search(self, pattern: str, cursor: str | None) -> tuple[list[Promise], str | None]:
        page = await self.client.search_promises(pattern, limit=1000, cursor=cursor)
        return page.promises, page.cursor

    async def create_schedule(
        self,
        id: str,
        *,
        cron: str,
        promise_id: str,
        promise_timeout: int,
        promise_param: Value,
        promise_tags: dict[str, str],
    ) -> Schedule:
        return await self.client.create_schedule(
            id,
            cron,
            promise_id,
            promise_timeout,
            promise_param=promise_param,
            promise_tags=promise_tags,
            idempotency_key=id,
        )


# -- batches on the wire (``POST /sdk/batch``, ``POST /sdk/claim``) -------------------------


class _BatchBody(msgspec.Struct):
    ops: list[Op]


class _BatchAnswer(msgspec.Struct):
    results: list[OpResult]


class _ClaimBody(msgspec.Struct, rename="camel"):
    tasks: list[ClaimRef]
    process_id: str
    ttl: int


class _ClaimAnswer(msgspec.Struct):
    results: list[ClaimResult]


_encode = msgspec.json.encode
_batch_answer = msgspec.json.Decoder(_BatchAnswer)
_claim_answer = msgspec.json.Decoder(_ClaimAnswer)


def _no_sdk_routes(exc: TrothError) -> bool:
    """The server answered that it has no such route (404/405 from routing) or that this
    client may not use it (403 for a token scoped to an id prefix)."""
    return exc.code in (40400, 40500, 40300) and "sdk" in exc.message


async def _children(search: Search, id: str) -> dict[str, Promise]:
    """Every promise whose id starts with ``<id>.``. Search patterns have ``*`` as their only
    wildcard, so ``<id>.*`` matches a superset when ``id`` itself holds a ``*``: filtered."""
    out: dict[str, Promise] = {}
    cursor: str | None = None
    prefix = id + "."
    while True:
        promises, cursor = await search(prefix + "*", cursor)
        out.update((p.id, p) for p in promises if p.id.startswith(prefix))
        if cursor is None:
            return out
