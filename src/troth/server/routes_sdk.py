"""Routes for the durable-function SDK: batched writes and batched claims.

- ``POST /sdk/batch`` ``{"ops": [Op, ...]}`` → ``200 {"results": [OpResult, ...]}``: the ops
  applied in order in one transaction (``troth.engine.sdkops.apply_ops``). Each op has its
  own result; the request fails as a whole (4xx/5xx with the usual error body) only when it
  is malformed or the store is unavailable.
- ``POST /sdk/claim`` ``{"tasks": [{"id", "counter"}, ...], "processId", "ttl"}`` →
  ``200 {"results": [ClaimResult, ...]}``: each task claimed as ``POST /tasks/claim`` would,
  in one transaction.
- ``GET /sdk/results/{session}``: a results stream (Server-Sent Events). ``watch`` ops of
  ``POST /sdk/batch`` name the session and a promise; the batch answers a watched promise
  that is already completed at once (200 with the promise), else registers it (202) and
  the stream sends it, as ``data: {"promises": [...]}``, once it completes — a client
  waiting for many results holds one stream instead of one long poll per promise. Watches
  live in this server's memory: when the stream closes they are dropped, and a watch op for
  a session with no open stream answers 404 (the client reconnects and watches again).

Decode, call the engine, encode — no rules here. See docs/api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from troth import rules
from troth.engine import Engine
from troth.engine.sdkops import ClaimRef, ClaimResult, Op, OpResult, apply_ops, claim_tasks
from troth.errors import TrothError, ValidationError
from troth.model import Promise, State
from troth.store.base import Tx

JSON: Final = "application/json"
#: A watch op named a session with no open results stream.
SESSION_UNKNOWN: Final = 40410
B = TypeVar("B")


class BatchBody(msgspec.Struct):
    ops: list[Op]


class BatchAnswer(msgspec.Struct):
    results: list[OpResult]


class ClaimBody(msgspec.Struct, rename="camel"):
    tasks: list[ClaimRef]
    process_id: str
    ttl: int


class ClaimAnswer(msgspec.Struct):
    results: list[ClaimResult]


_batch = msgspec.json.Decoder(BatchBody)
_claim = msgspec.json.Decoder(ClaimBody)
_encode = msgspec.json.encode


def _decode(decoder: msgspec.json.Decoder[B], body: bytes) -> B:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}") from None


class _Results(msgspec.Struct):
    promises: list[Promise]


_UNKNOWN = OpResult(
    status=404, code=SESSION_UNKNOWN, message="no results stream is open for this session; open one"
)
_WATCHING = OpResult(status=202)
_SHUTDOWN: Final = "\x00troth:sdk-results-shutdown"


class _Session:
    """One open results stream and the promises it watches (waiter futures by id)."""

    def __init__(self, id: str) -> None:
        self.id = id
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.watching: dict[str, asyncio.Future[None]] = {}
        self.fired: set[str] = set()
        self.collecting = False
        self.closed = False


class Watches:
    """Results streams (``GET /sdk/results/{session}``) and their watched promises."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions: dict[str, _Session] = {}
        self._shutdown: asyncio.Future[None] | None = None

    def _on_shutdown(self, fut: asyncio.Future[None]) -> None:
        self._shutdown = None
        if self.engine._stopping:  # SIGTERM wakes every waiter: close the streams too
            self.close_all()

    def open(self, id: str) -> _Session:
        if self._shutdown is None:  # a waiter no completion wakes, only shutdown
            self._shutdown = self.engine.waiters.register(_SHUTDOWN)
            self._shutdown.add_done_callback(self._on_shutdown)
        old = self.sessions.get(id)
        if old is not None:
            self.close(old)  # the newer stream wins
        session = self.sessions[id] = _Session(id)
        return session

    def close(self, session: _Session) -> None:
        if session.closed:
            return
        session.closed = True
        session.queue.put_nowait(None)
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        for id, fut in session.watching.items():
            self.engine.waiters.discard(id, fut)
        session.watching.clear()

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            self.close(session)

    async def watch(self, ops: list[tuple[int, Op]], results: list[OpResult | None]) -> None:
        """Answer the watch ops of a batch: completed promises at once, others registered."""
        by_session: dict[str, list[tuple[int, str]]] = {}
        for i, op in ops:
            if op.session is None or op.session not in self.sessions:
                results[i] = _UNKNOWN
            else:
                by_session.setdefault(op.session, []).append((i, op.id))
        for sid, items in by_session.items():
            session = self.sessions[sid]
            for _, id in items:  # register first, so a completion after the read is heard
                self._register(session, id)
            found = await self._read([id for _, id in items])
            for i, id in items:
                p = found.get(id)
                if p is None:
                    self._unregister(session, id)
                    results[i] = OpResult(
                        status=404, code=rules.NOT_FOUND_CODE, message=f"promise {id!r} not found"
                    )
                elif p.state is not State.PENDING:
                    self._unregister(session, id)
                    results[i] = OpResult(status=200, promise=p)
                else:
                    results[i] = _WATCHING

    def _register(self, session: _Session, id: str) -> None:
        if id in session.watching:
            return
        fut = self.engine.waiters.register(id)
        fut.add_done_callback(functools.partial(self._fired, session, id))
        session.watching[id] = fut

    def _unregister(self, session: _Session, id: str) -> None:
        fut = session.watching.pop(id, None)
        if fut is not None:
            self.engine.waiters.discard(id, fut)

    def _fired(self, session: _Session, id: str, fut: asyncio.Future[None]) -> None:
        if session.closed or session.watching.get(id) is not fut:
            return
        del session.watching[id]
        session.fired.add(id)
        if not session.collecting:
            session.collecting = True
            asyncio.get_running_loop().call_soon(
                lambda: asyncio.ensure_future(self._collect(session))
            )

    async def _collect(self, session: _Session) -> None:
        """Read the promises whose waiters fired (one read for all) and send the completed
        ones; re-register any that is still pending (a wake-up without a completion)."""
        try:
            while session.fired and not session.closed:
                ids, session.fired = list(session.fired), set()
                try:
                    found = await self._read(ids)
                except TrothError:
                    for id in ids:  # try again with the next wake-up
                        self._register(session, id)
                    return
                done = []
                for id in ids:
                    p = found.get(id)
                    if p is None:
                        continue
                    if p.state is State.PENDING:
                        self._register(session, id)
                    else:
                        done.append(p)
                if done and not session.closed:
                    session.queue.put_nowait(_encode(_Results(done)))
        finally:
            session.collecting = False

    async def _read(self, ids: list[str]) -> dict[str, Promise]:
        """The promises as clients may observe them now (timed out lazily when due)."""

        def op(tx: Tx) -> list[Promise]:
            return [p for id in ids if (p := tx.get_promise(id)) is not None]

        promises = await self.engine.store.read(op)
        now = self.engine.clock.now()
        out = {p.id: p for p in promises}
        due = [p.id for p in promises if p.state is State.PENDING and now >= p.timeout]
        for id in due:  # rare: a deadline passed and nobody has looked yet
            with contextlib.suppress(TrothError):
                out[id] = await self.engine.get_promise(id)
        return out

    async def events(self, session: _Session, keepalive_s: float) -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        try:
            while True:
                try:
                    message = await asyncio.wait_for(session.queue.get(), keepalive_s)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if message is None:
                    return
                yield b"data: " + message + b"\n\n"
        finally:
            self.close(session)


class SdkApi:
    def __init__(
        self,
        engine: Engine,
        read_body: Callable[[Request], Awaitable[bytes]],
        keepalive_s: float = 15.0,
    ) -> None:
        self.engine = engine
        self.body = read_body
        self.keepalive_s = keepalive_s
        self.watches = Watches(engine)

    async def batch(self, request: Request) -> Response:
        req = _decode(_batch, await self.body(request))
        watch = [(i, op) for i, op in enumerate(req.ops) if op.kind == "watch"]
        if not watch:
            results = await apply_ops(self.engine, req.ops)
            return Response(_encode(BatchAnswer(results)), media_type=JSON)
        writes = [(i, op) for i, op in enumerate(req.ops) if op.kind != "watch"]
        answers: list[OpResult | None] = [None] * len(req.ops)
        if writes:
            written = await apply_ops(self.engine, [op for _, op in writes])
            for (i, _), answer in zip(writes, written, strict=True):
                answers[i] = answer
        await self.watches.watch(watch, answers)
        out: list[OpResult] = []
        for r in answers:
            assert r is not None
            out.append(r)
        return Response(_encode(BatchAnswer(out)), media_type=JSON)

    async def results(self, request: Request) -> Response:
        session = self.watches.open(request.path_params["session"])
        headers: dict[str, Any] = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        return StreamingResponse(
            self.watches.events(session, self.keepalive_s),
            media_type="text/event-stream",
            headers=headers,
        )

    async def claim(self, request: Request) -> Response:
        req = _decode(_claim, await self.body(request))
        results = await claim_tasks(self.engine, req.tasks, process_id=req.process_id, ttl=req.ttl)
        return Response(_encode(ClaimAnswer(results)), media_type=JSON)

    def routes(self) -> list[Route]:
        return [
            Route("/sdk/batch", self.batch, methods=["POST"]),
            Route("/sdk/claim", self.claim, methods=["POST"]),
            Route("/sdk/results/{session}", self.results, methods=["GET"]),
        ]
