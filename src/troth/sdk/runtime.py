"""``Troth``: the durable-function runtime, embedded (engine in-process) or remote (worker and
client of a troth server). The same user code runs in both.

How an execution runs (both modes): the root promise's param names the function, version and
arguments; the function is called with a fresh ``Context`` and *replayed from the top*
whenever it runs again (after a crash, a retry or a suspension). Every durable call is a
child promise created idempotently (the id is its own idempotency key), so a replay finds the
recorded outcomes and only new calls do work.

Embedded: executions run as asyncio tasks of this process; awaiting a promise waits on the
engine's long-poll waiters; on start, every pending root is resumed by replay.

Remote: roots carry ``resonate:invoke`` and become tasks on the server. A worker listens on
its stream ``/poll/<group>/<process id>``, claims tasks (lease ``ttl``, heartbeats every
ttl/3), and runs them with every write fenced by the task's id and counter. Awaiting a
promise that is not complete registers a callback and *suspends*: the task is completed and
nothing is held in memory; the resume task (on any worker of the group) replays the function.
If the worker dies, its lease runs out and another worker takes over with counter + 1 while
the dead worker's writes are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final, TypeVar, overload

import msgspec

from troth.clock import Clock, SystemClock
from troth.errors import AlreadyCompleted, FencingFailed, TrothError
from troth.model import MAX_TIMEOUT, Promise, Schedule, State, Value
from troth.sdk.backend import ROOT_TAG, Backend, ClientBackend, EngineBackend, Fence
from troth.sdk.codec import Codec, JsonCodec
from troth.sdk.context import FUNC_TAG, TIMER_TAG, Context
from troth.sdk.errors import LeaseLost, PlatformError, SdkError, Suspended
from troth.sdk.registry import Function, Registry, call, takes_ctx
from troth.sdk.retry import Retry, run_with_retry

log = logging.getLogger("troth.sdk")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

INVOKE_TAG: Final = "resonate:invoke"
VERSION_TAG: Final = "troth:version"
DEFAULT_STEP_RETRY: Final = Retry.exponential(max_attempts=3)


class PromiseCanceled(TrothError):
    """The awaited promise was canceled."""


class PromiseTimedOut(TrothError):
    """The awaited promise timed out before anyone completed it."""


class _Spec(msgspec.Struct, omit_defaults=True):
    """The param of an execution's promise: which function, with what."""

    func: str
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    version: int | None = None


def _func_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class Handle:
    """A reference to an execution by id: ``await handle.result()``, ``await handle.done()``."""

    def __init__(self, troth: Troth, id: str) -> None:
        self.troth = troth
        self.id = id

    def __repr__(self) -> str:
        return f"Handle({self.id!r})"

    async def done(self) -> bool:
        return (await self.troth.backend.get(self.id)).state is not State.PENDING

    async def result(self, timeout: float | None = None) -> Any:
        """The execution's result (or its error, re-raised), waiting for it if needed."""
        loop = asyncio.get_running_loop()
        give_up = None if timeout is None else loop.time() + timeout
        while True:
            local = self.troth._running.get(self.id)
            if local is not None and local.done() and local.exception() is not None:
                raise local.exception()  # type: ignore[misc]
            wait = 300.0 if give_up is None else max(0.0, give_up - loop.time())
            p = await self.troth.backend.wait(self.id, wait)
            if p.state is not State.PENDING:
                return self.troth.outcome(p)
            if give_up is not None and loop.time() >= give_up:
                raise TimeoutError(f"execution {self.id!r} is still running")


class Troth:
    """Durable functions.

    ``Troth()`` is embedded: the engine runs in this process on ``store`` (default
    ``$TROTH_STORE`` or ``sqlite:///troth.db``), with its timers, and no server is needed.
    ``Troth(url=..., group=...)`` is a remote worker and client of a troth server: it runs the
    functions the server sends to ``group``.

    Use ``async with Troth() as troth:`` (or ``await troth.start()`` / ``await troth.stop()``).

    ``worker=False`` (remote): only a client — start executions and read results, run none.
    ``recover=False`` (embedded): do not resume pending executions on start (a process that
    only resolves promises or reads results).
    """

    def __init__(
        self,
        store: str | None = None,
        *,
        url: str | None = None,
        group: str = "default",
        process_id: str | None = None,
        concurrency: int = 64,
        ttl: timedelta = timedelta(seconds=30),
        codec: Codec | None = None,
        step_retry: Retry = DEFAULT_STEP_RETRY,
        clock: Clock | None = None,
        token: str | None = None,
        worker: bool = True,
        recover: bool = True,
    ) -> None:
        self.registry = Registry()
        self.worker = worker
        self.recover = recover
        self.codec: Codec = codec or JsonCodec()
        self.step_retry = step_retry
        self.group = group
        self.process_id = (
            process_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self.ttl_ms = int(ttl.total_seconds() * 1000)
        self.clock = clock or SystemClock()
        self.remote = url is not None
        self._url = url
        self._token = token
        self._store_url = store or os.environ.get("TROTH_STORE", "sqlite:///troth.db")
        self._sem = asyncio.Semaphore(concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._started = False
        self.backend: Backend
        self._engine: Any = None
        self._client: Any = None

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.remote:
            from troth.client import AsyncClient

            self._client = AsyncClient(self._url, token=self._token)
            self.backend = ClientBackend(self._client)
            if self.worker:
                self._spawn(self._listen(), "troth-worker-stream")
                self._spawn(self._heartbeat(), "troth-worker-heartbeat")
        else:
            from troth.engine import Engine
            from troth.store import create_store

            self._engine = Engine(create_store(self._store_url), self.clock)
            self._engine.on_fired = self._fired
            await self._engine.start()
            self.backend = EngineBackend(self._engine)
            if self.recover:
                for p in await self.backend.pending_roots():  # recovery: resume by replay
                    self._start_local(p)

    async def stop(self) -> None:
        for task in [*self._background, *self._running.values()]:
            task.cancel()
        for task in [*self._background, *self._running.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background.clear()
        self._running.clear()
        if self._engine is not None:
            await self._engine.stop()
        if self._client is not None:
            await self._client.close()
        self._started = False

    async def __aenter__(self) -> Troth:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def now(self) -> int:
        return self.clock.now()

    # -- registration --------------------------------------------------------------------

    @overload
    def register(self, fn: F) -> F: ...

    @overload
    def register(
        self,
        *,
        name: str | None = None,
        version: int = 1,
        retry: Retry | None = None,
        timeout: timedelta | None = None,
    ) -> Callable[[F], F]: ...

    def register(
        self,
        fn: F | None = None,
        *,
        name: str | None = None,
        version: int = 1,
        retry: Retry | None = None,
        timeout: timedelta | None = None,
    ) -> F | Callable[[F], F]:
        """Register a durable function (sync or async; first parameter ``ctx``).

        Args:
            name: the name executions record (default: the function's ``__name__``).
            version: executions keep the version they started with; new ones use the
                highest registered.
            retry: policy for the function as a whole (default: no retry).
            timeout: deadline of its executions (default: none).
        """

        def add(f: F) -> F:
            self.registry.add(
                Function(
                    name=name or f.__name__,
                    version=version,
                    fn=f,
                    retry=retry or Retry.none(),
                    timeout=timeout,
                    with_ctx=takes_ctx(f),
                )
            )
            return f

        return add(fn) if fn is not None else add

    # -- starting executions -------------------------------------------------------------

    def _deadline(self, f: Function) -> int:
        if f.timeout is None:
            return MAX_TIMEOUT
        return min(MAX_TIMEOUT, self.now() + int(f.timeout.total_seconds() * 1000))

    def _spec(self, f: Function, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Value:
        return Value(data=self.codec.encode(_Spec(f.name, list(args), kwargs, f.version)))

    async def run(
        self, id: str, func: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> Handle:
        """Start ``func(*args)`` as the execution ``id`` and return its handle.

        An id is an identity: if execution ``id`` exists, this returns it (its stored result
        once done) and runs nothing.
        """
        await self.start()
        f = self.registry.of(func)
        return await self._start_root(id, f, args, kwargs, target=None, fence=None)

    async def rpc(
        self, id: str, func: str, *args: Any, target: str | None = None, **kwargs: Any
    ) -> Handle:
        """Start the function registered as ``func`` on worker group ``target`` (remote),
        by name — the caller need not have it registered."""
        await self.start()
        spec = Value(data=self.codec.encode(_Spec(func, list(args), kwargs)))
        tags = {ROOT_TAG: "true", FUNC_TAG: func}
        if self.remote:
            tags[INVOKE_TAG] = self._recv(target)
        p = await self.backend.create(id, MAX_TIMEOUT, param=spec, tags=tags)
        if not self.remote:
            self._start_local(p)
        return Handle(self, id)

    async def get(self, id: str) -> Handle:
        """Reattach to an existing execution. Raises ``NotFound``."""
        await self.start()
        await self.backend.get(id)
        return Handle(self, id)

    async def schedule(
        self,
        id: str,
        *,
        cron: str,
        func: Callable[..., Any] | str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        target: str | None = None,
    ) -> Schedule:
        """Run ``func(*args, **kwargs)`` on a cron schedule (UTC; 5 fields, an optional 6th for
        seconds, or ``@hourly``-style). Idempotent: the id is the schedule's identity.

        Each run is an execution with id ``<id>/<run time in ms>``; embedded it runs in this
        process, remote on worker group ``target`` (default: this worker's group).
        """
        await self.start()
        f = self.registry.of(func)
        tags = {ROOT_TAG: "true", FUNC_TAG: f.name, VERSION_TAG: str(f.version)}
        if self.remote:
            tags[INVOKE_TAG] = self._recv(target)
        timeout = MAX_TIMEOUT if f.timeout is None else int(f.timeout.total_seconds() * 1000)
        return await self.backend.create_schedule(
            id,
            cron=cron,
            promise_id="{{.id}}/{{.timestamp}}",
            promise_timeout=timeout,
            promise_param=self._spec(f, tuple(args), kwargs or {}),
            promise_tags=tags,
        )

    def _fired(self, promises: list[Promise]) -> None:
        """Embedded: a schedule created execution roots; run them here."""
        for p in promises:
            if (p.tags or {}).get(ROOT_TAG) == "true":
                self._start_local(p)

    async def resolve(self, id: str, value: Any = None) -> None:
        """Resolve a promise (e.g. one a function awaits with ``ctx.promise``) with ``value``,
        encoded by the codec. Idempotent for the same value; ``AlreadyCompleted`` otherwise."""
        await self.start()
        await self.backend.complete(id, State.RESOLVED, Value(data=self.codec.encode(value)))

    async def reject(self, id: str, error: BaseException) -> None:
        """Reject a promise with ``error``; the awaiting function sees it raised."""
        await self.start()
        await self.backend.complete(id, State.REJECTED, Value(data=self.codec.encode_error(error)))

    async def cancel(self, id: str) -> None:
        """Cancel a promise; the awaiting function sees ``PromiseCanceled``."""
        await self.start()
        await self.backend.complete(id, State.REJECTED_CANCELED, Value())

    def _recv(self, target: str | None) -> str:
        if target is None:
            return f"poll://any@{self.group}"
        return target if "://" in target else f"poll://any@{target}"

    async def _start_root(
        self,
        id: str,
        f: Function,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        target: str | None,
        fence: Fence | None,
    ) -> Handle:
        tags = {ROOT_TAG: "true", FUNC_TAG: f.name, VERSION_TAG: str(f.version)}
        if self.remote:
            tags[INVOKE_TAG] = self._recv(target)
        p = await self.backend.create(
            id, self._deadline(f), param=self._spec(f, args, kwargs), tags=tags, fence=fence
        )
        if not self.remote:
            self._start_local(p)
        return Handle(self, id)

    def _start_local(self, p: Promise) -> None:
        if p.state is not State.PENDING or p.id in self._running:
            return
        task = asyncio.create_task(self._run_local(p), name=f"troth-exec:{p.id}")
        self._running[p.id] = task
        task.add_done_callback(functools.partial(self._finished, p.id))

    def _finished(self, id: str, task: asyncio.Task[None]) -> None:
        if self._running.get(id) is task and (task.cancelled() or task.exception() is None):
            del self._running[id]
        elif not task.cancelled() and task.exception() is not None:
            log.error("execution %s failed in the runtime", id, exc_info=task.exception())

    async def _run_local(self, p: Promise) -> None:
        backoff = 0.1
        while True:
            try:
                async with self._sem:
                    await Execution(self, p, fence=None).run()
                return
            except PlatformError as exc:  # the store failed (disk full…): try again later
                log.warning("execution %s: %s; retrying in %.1fs", p.id, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    # -- outcomes ------------------------------------------------------------------------

    def outcome(self, p: Promise, type: Any = Any) -> Any:
        """The value of a completed promise, or raise what it records."""
        data = p.value.data or b""
        if p.state is State.RESOLVED:
            if not data:
                return None
            for as_type in (type, Any) if type is not Any else (Any,):
                try:
                    return self.codec.decode(data, as_type)
                except Exception:
                    continue  # typed decode failed: try plain JSON before giving up
            try:  # not JSON (a human resolved it with plain text): give it as is
                return data.decode()
            except UnicodeDecodeError:
                return data
        if p.state is State.REJECTED:
            raise self.codec.decode_error(data)
        if p.state is State.REJECTED_CANCELED:
            raise PromiseCanceled(f"promise {p.id!r} was canceled")
        if p.state is State.REJECTED_TIMEDOUT:
            raise PromiseTimedOut(f"promise {p.id!r} timed out at {p.timeout}")
        raise SdkError(f"promise {p.id!r} is still pending")

    # -- the remote worker ---------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                async for msg in self._client.listen(self.group, self.process_id):
                    backoff = 0.1
                    if msg.task is not None and msg.type in ("invoke", "resume"):
                        self._spawn(
                            self._handle_task(msg.task.id, msg.task.counter),
                            f"troth-task:{msg.task.id}",
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("worker stream: %s; reconnecting in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(max(self.ttl_ms / 3000, 0.05))
            try:
                await self._client.heartbeat_tasks(self.process_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _handle_task(self, task_id: str, counter: int) -> None:
        async with self._sem:
            try:
                claimed = await self._client.claim_task(
                    task_id, counter, process_id=self.process_id, ttl=self.ttl_ms
                )
            except TrothError as exc:
                log.info("task %s/%d not claimed: %s", task_id, counter, exc)
                return
            try:
                finished = await Execution(self, claimed.root, fence=(task_id, counter)).run()
            except LeaseLost:
                log.info("task %s/%d: lease lost; another worker has it", task_id, counter)
                return
            except PlatformError as exc:
                log.warning("task %s/%d: %s; giving it back", task_id, counter, exc)
                self._spawn(self._release(task_id, counter), f"troth-release:{task_id}")
                return
            except Exception:
                log.exception("task %s/%d failed in the runtime; giving it back", task_id, counter)
                self._spawn(self._release(task_id, counter), f"troth-release:{task_id}")
                return
            if finished:
                return  # completing the root promise completed its task on the server
            with contextlib.suppress(TrothError):
                await self._client.complete_task(task_id, counter)

    async def _release(self, task_id: str, counter: int) -> None:
        """Drop a task we cannot finish, so it is sent again (here or elsewhere). Retried
        while the server is unreachable; a refusal means it is no longer ours anyway."""
        backoff = 0.2
        for _ in range(20):
            try:
                await self._client.drop_task(task_id, counter)
                return
            except TrothError as exc:
                if exc.status < 500:
                    return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


class Execution:
    """One run (or replay) of a durable function execution, rooted at a promise."""

    def __init__(self, troth: Troth, root: Promise, fence: Fence | None) -> None:
        self.t = troth
        self.root = root
        self.fence = fence

    def now(self) -> int:
        return self.t.now()

    async def _io(self, coro: Awaitable[T]) -> T:
        """Await a backend call, turning troth's own failures into platform signals."""
        try:
            return await coro
        except FencingFailed as exc:
            raise LeaseLost(str(exc)) from exc
        except TrothError as exc:
            if exc.status >= 500:
                raise PlatformError(str(exc)) from exc
            raise

    async def run(self) -> bool:
        """Run (replay) the execution to its outcome (True: the root promise is completed),
        or to a suspension (False).

        Raises ``PlatformError`` (including ``LeaseLost``) when troth itself failed: the
        caller decides how to run it again.
        """
        t, root = self.t, self.root
        try:
            spec = t.codec.decode(root.param.data or b"", _Spec)
            f = t.registry.get(spec.func, spec.version or None)
        except Exception as exc:  # cannot even start: that is the outcome
            await self._finish(root.id, State.REJECTED, Value(data=t.codec.encode_error(exc)))
            return True

        async def attempt() -> Any:
            ctx = Context(self, root.id, root.timeout, root.created_on)
            args = (ctx, *spec.args) if f.with_ctx else tuple(spec.args)
            return await call(f.fn, args, spec.kwargs)

        try:
            result = await run_with_retry(f.retry, attempt)
        except Suspended as s:
            log.debug("execution %s suspended on %s", root.id, s.promise_id)
            return False
        except Exception as exc:
            await self._finish(root.id, State.REJECTED, Value(data=t.codec.encode_error(exc)))
            return True
        try:
            value = Value(data=t.codec.encode(result))
        except Exception as exc:  # an unencodable result is the function's failure
            value = Value(data=t.codec.encode_error(exc))
            await self._finish(root.id, State.REJECTED, value)
            return True
        await self._finish(root.id, State.RESOLVED, value)
        return True

    async def _finish(self, id: str, state: State, value: Value) -> Promise:
        try:
            return await self._io(self.t.backend.complete(id, state, value, fence=self.fence))
        except AlreadyCompleted:
            return await self._io(self.t.backend.get(id))

    async def _await(self, ctx: Context, id: str) -> Promise:
        """Wait for a promise someone else completes: embedded, on the engine's waiters;
        remote under a task, by a callback and a suspension."""
        if self.fence is None:
            while True:
                p = await self._io(self.t.backend.wait(id, 300.0))
                if p.state is not State.PENDING:
                    return p
        done = await self._io(
            self.t.backend.callback(
                id,
                root_id=self.root.id,
                timeout=self.root.timeout,
                recv=f"poll://any@{self.t.group}/{self.t.process_id}",
                fence=self.fence,
            )
        )
        if done is not None:
            return done
        raise Suspended(id)

    async def _create(
        self, ctx: Context, id: str, timeout: int, tags: dict[str, str], param: Value | None = None
    ) -> Promise:
        return await self._io(
            self.t.backend.create(id, timeout, param=param or Value(), tags=tags, fence=self.fence)
        )

    # -- the durable calls (Context delegates here) ------------------------------------------

    async def step(
        self,
        ctx: Context,
        id: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retry: Retry | None,
        name: str | None = None,
    ) -> Any:
        t = self.t
        name = name or _func_name(fn)
        p = await self._create(ctx, id, ctx.timeout, {FUNC_TAG: name})
        ctx._check(p, name)
        if p.state is not State.PENDING:
            return ctx._decode(p, fn)
        with_ctx = takes_ctx(fn)

        async def attempt() -> Any:
            if with_ctx:
                child = Context(self, id, ctx.timeout, ctx._time)
                return await call(fn, (child, *args), kwargs)
            return await call(fn, args, kwargs)

        try:
            result = await run_with_retry(retry or t.step_retry, attempt)
        except Exception as exc:
            done = await self._finish(id, State.REJECTED, Value(data=t.codec.encode_error(exc)))
            ctx._saw(done)
            raise
        done = await self._finish(id, State.RESOLVED, Value(data=t.codec.encode(result)))
        return ctx._decode(done, fn)

    async def rpc(
        self,
        ctx: Context,
        id: str,
        func: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        target: str | None,
    ) -> Any:
        t = self.t
        if not t.remote:  # embedded: the function runs here, as a step with its own context
            f = t.registry.get(func)
            return await self.step(ctx, id, f.fn, args, kwargs, f.retry, name=func)
        spec = Value(data=t.codec.encode(_Spec(func, list(args), kwargs)))
        tags = {FUNC_TAG: func, INVOKE_TAG: t._recv(target)}
        p = await self._create(ctx, id, ctx.timeout, tags, spec)
        ctx._check(p, func)
        if p.state is State.PENDING:
            p = await self._await(ctx, id)
        return ctx._decode(p)

    async def detached(
        self,
        ctx: Context,
        id: str,
        func: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Handle:
        f = self.t.registry.of(func)
        return await self.t._start_root(id, f, args, kwargs, target=None, fence=self.fence)

    async def sleep(self, ctx: Context, id: str, ms: int) -> None:
        deadline = min(MAX_TIMEOUT, self.now() + ms)
        p = await self._create(ctx, id, deadline, {FUNC_TAG: "sleep", TIMER_TAG: "true"})
        ctx._check(p, "sleep")
        if p.state is State.PENDING:
            p = await self._await(ctx, id)
        ctx._saw(p)

    async def create_plain(self, ctx: Context, id: str, timeout: int) -> Promise:
        p = await self._create(ctx, id, timeout, {FUNC_TAG: "promise"})
        ctx._check(p, "promise")
        return p

    async def await_plain(self, ctx: Context, created: asyncio.Task[Promise]) -> Any:
        p = await created
        if p.state is State.PENDING:
            p = await self._await(ctx, p.id)
        return ctx._decode(p)

    def outcome(self, p: Promise, type: Any) -> Any:
        return self.t.outcome(p, type)


__all__ = ["Handle", "PromiseCanceled", "PromiseTimedOut", "Troth"]
