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
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final, Literal, TypeVar, overload

import msgspec

from troth.clock import Clock, SystemClock
from troth.engine.sdkops import ClaimRef, Op, OpResult
from troth.engine.sdkops import Fence as WireFence
from troth.errors import FencingFailed, TrothError, error_from_code
from troth.model import MAX_TIMEOUT, Promise, Schedule, State, Value
from troth.sdk.backend import ROOT_TAG, Backend, ClientBackend, EngineBackend, Fence
from troth.sdk.codec import Codec, JsonCodec
from troth.sdk.context import FUNC_TAG, TIMER_TAG, Context
from troth.sdk.errors import LeaseLost, PlatformError, SdkError, Suspended
from troth.sdk.pipeline import Pipeline
from troth.sdk.registry import Function, Registry, call, takes_ctx
from troth.sdk.results import RemoteResults
from troth.sdk.retry import Retry, run_with_retry

log = logging.getLogger("troth.sdk")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

INVOKE_TAG: Final = "resonate:invoke"
VERSION_TAG: Final = "troth:version"
DEFAULT_STEP_RETRY: Final = Retry.exponential(max_attempts=3)
#: How many finished executions' outcomes a runtime remembers (``Handle.result`` answers
#: them without a read; a completed promise never changes).
DONE_CACHE: Final = 4096
Checkpoints = Literal["pipelined", "strict"]


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
            done = self.troth._done.get(self.id)
            if done is not None:  # finished here: its recorded outcome, no read needed
                return self.troth.outcome(done)
            local = self.troth._running.get(self.id)
            if local is not None and local.done() and local.exception() is not None:
                raise local.exception()  # type: ignore[misc]
            if local is not None and not local.done():
                wait = None if give_up is None else max(0.0, give_up - loop.time())
                await asyncio.wait({local}, timeout=wait)  # never raises the task's error
                if self.id in self.troth._done:
                    continue
            wait = 300.0 if give_up is None else max(0.0, give_up - loop.time())
            results = self.troth._remote_results()
            if results is not None:
                got = await results.wait(self.id, wait)
                if got is not None:
                    return self.troth.outcome(got)
                if give_up is not None and loop.time() >= give_up:
                    raise TimeoutError(f"execution {self.id!r} is still running")
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

    ``checkpoints``: when a step's record must be durable. ``"pipelined"`` (default): the
    function continues as soon as the step returns; the record is written in order with
    the execution's other writes and is durable before anything that depends on it is
    acknowledged (the root's result, a timer, an rpc, a promise, a suspension). A crash can
    therefore re-run a step that had finished but whose record had not committed yet (about
    one commit interval). ``"strict"``: every record is durable before the function
    continues. See docs/sdk.md, "Durability".
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
        checkpoints: Checkpoints = "pipelined",
    ) -> None:
        if checkpoints not in ("pipelined", "strict"):
            raise ValueError(f"checkpoints must be 'pipelined' or 'strict', got {checkpoints!r}")
        self.checkpoints: Checkpoints = checkpoints
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
        self._done: OrderedDict[str, Promise] = OrderedDict()
        self._creating: dict[str, asyncio.Future[OpResult]] = {}
        self._pipeline: Pipeline | None = None
        self._claims: list[tuple[ClaimRef, asyncio.Future[Any]]] = []
        self._claimer: asyncio.Task[None] | None = None
        self._results: RemoteResults | None = None
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
            self._pipeline = Pipeline(self.backend.batch)
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
            self._pipeline = Pipeline(self.backend.batch)
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
        self._results = None
        if self._pipeline is not None:
            await self._pipeline.close()
        if isinstance(getattr(self, "backend", None), EngineBackend):
            self.backend.close()  # type: ignore[attr-defined]
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

    def _remote_results(self) -> RemoteResults | None:
        """Remote: the results stream (opened on first use); embedded: None."""
        if not self.remote or not self._started:
            return None
        if self._results is None:
            self._results = RemoteResults(self)
            self._spawn(self._results.listen(), "troth-results-stream")
        return self._results

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
            await self.write(Op(kind="create", id=id, timeout=MAX_TIMEOUT, param=spec, tags=tags))
            return Handle(self, id)
        return await self._run_embedded(id, MAX_TIMEOUT, spec, tags)

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
        param = self._spec(f, args, kwargs)
        if self.remote:
            tags[INVOKE_TAG] = self._recv(target)
        if self.remote or fence is not None:
            op = Op(
                kind="create",
                id=id,
                timeout=self._deadline(f),
                param=param,
                tags=tags,
                fence=_wire_fence(fence),
            )
            p = await self.write(op)
            if not self.remote:
                self._start_local(p)
            return Handle(self, id)
        return await self._run_embedded(id, self._deadline(f), param, tags)

    # -- the write pipeline --------------------------------------------------------------

    def submit(self, op: Op) -> asyncio.Future[OpResult]:
        assert self._pipeline is not None, "Troth.start() was not called"
        return self._pipeline.submit(op)

    async def write(self, op: Op) -> Promise:
        """Submit ``op`` and wait until it is durable; its promise, or raise its error."""
        return _checked(await self.submit(op))

    async def _run_embedded(
        self, id: str, timeout: int, param: Value, tags: dict[str, str]
    ) -> Handle:
        """Start an execution here. A new id is created and run *at once*: the function's
        first writes queue behind the create, so a quick function's create, step records and
        result commit together. Returns once the create is durable."""
        if id not in self._running and id not in self._done:
            existing = await self.backend.find(id)
            if existing is not None:
                self._start_local(existing)
                return Handle(self, id)
        if id in self._running or id in self._done:  # started here (maybe just now)
            creating = self._creating.get(id)
            if creating is not None:
                _checked(await asyncio.shield(creating))
            return Handle(self, id)
        at = self.now()
        fut = self.submit(Op(kind="create", id=id, timeout=timeout, param=param, tags=tags, at=at))
        self._creating[id] = fut
        root = Promise(
            id=id,
            state=State.PENDING,
            timeout=timeout,
            created_on=at,
            param=param,
            tags=tags,
            idempotency_key_for_create=id,
        )
        self._start_local(root, fresh=fut)
        try:
            _checked(await asyncio.shield(fut))
        except BaseException:
            # Not created (the id was taken meanwhile, or the store failed): the execution
            # that started with it stops here; steps it ran are as after a crash.
            task = self._running.get(id)
            if task is not None and self._creating.get(id) is fut:
                task.cancel()
            raise
        finally:
            if self._creating.get(id) is fut:
                del self._creating[id]
        return Handle(self, id)

    def _start_local(self, p: Promise, fresh: asyncio.Future[OpResult] | None = None) -> None:
        if p.state is not State.PENDING or p.id in self._running:
            return
        task = asyncio.create_task(self._run_local(p, fresh), name=f"troth-exec:{p.id}")
        self._running[p.id] = task
        task.add_done_callback(functools.partial(self._finished, p.id))

    def _remember(self, p: Promise) -> None:
        self._done[p.id] = p
        if len(self._done) > DONE_CACHE:
            self._done.popitem(last=False)

    def _finished(self, id: str, task: asyncio.Task[None]) -> None:
        if self._running.get(id) is task and (task.cancelled() or task.exception() is None):
            del self._running[id]
        elif not task.cancelled() and task.exception() is not None:
            log.error("execution %s failed in the runtime", id, exc_info=task.exception())

    async def _run_local(self, p: Promise, created: asyncio.Future[OpResult] | None) -> None:
        """Run an execution here until it completes. ``created``: the pending create of a
        new root (the execution runs while it commits, knowing it has no recorded calls)."""
        backoff = 0.1
        fresh = created is not None
        while True:
            try:
                async with self._sem:
                    await Execution(self, p, fence=None, fresh=fresh, created=created).run()
                return
            except PlatformError as exc:  # the store failed (disk full…): try again later
                log.warning("execution %s: %s; retrying in %.1fs", p.id, exc, backoff)
                fresh, created = False, None
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

    async def _claim(self, task_id: str, counter: int) -> Any:
        """Claim a task; the claims of tasks that arrive together go in one request."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._claims.append((ClaimRef(task_id, counter), fut))
        if self._claimer is None:
            self._claimer = asyncio.create_task(self._send_claims(), name="troth-claims")
        return await fut

    async def _send_claims(self) -> None:
        assert isinstance(self.backend, ClientBackend)
        try:
            await asyncio.sleep(0)
            while self._claims:
                batch, self._claims = self._claims[:1000], self._claims[1000:]
                try:
                    results = await self.backend.claim(
                        [ref for ref, _ in batch], self.process_id, self.ttl_ms
                    )
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._claimer = None

    async def _handle_task(self, task_id: str, counter: int) -> None:
        async with self._sem:
            try:
                claimed = (await self._claim(task_id, counter)).claimed()
            except TrothError as exc:
                log.info("task %s/%d not claimed: %s", task_id, counter, exc)
                return
            # The first holder of an invoke task (counter 1) is the only one that can have
            # written the execution's calls (every write is fenced): it knows there are none.
            fresh = claimed.task.type.value == "invoke" and counter == 1
            try:
                execution = Execution(self, claimed.root, fence=(task_id, counter), fresh=fresh)
                finished = await execution.run()
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


def _wire_fence(fence: Fence | None) -> WireFence | None:
    return None if fence is None else WireFence(fence[0], fence[1])


def _checked(result: OpResult) -> Promise:
    """The promise of a write, or raise its error (as the single-request route would)."""
    if result.status >= 400:
        raise error_from_code(result.code, result.message)
    assert result.promise is not None
    return result.promise


def _retrieve(fut: asyncio.Future[OpResult]) -> None:
    """Mark a pipelined record's exception as seen (the execution checks it later)."""
    if not fut.cancelled():
        fut.exception()


class Execution:
    """One run (or replay) of a durable function execution, rooted at a promise.

    ``fresh``: the root was just created by this run (embedded) or this is the first claim
    of its invoke task (remote), so nothing of it is recorded yet and steps need not look.
    Otherwise the recorded calls are read once, on the first durable call.
    """

    def __init__(
        self,
        troth: Troth,
        root: Promise,
        fence: Fence | None,
        *,
        fresh: bool = False,
        created: asyncio.Future[OpResult] | None = None,
    ) -> None:
        self.t = troth
        self.root = root
        self.fence = fence
        self.wire_fence = _wire_fence(fence)
        self.created = created
        self.known: dict[str, Promise] | None = {} if fresh else None
        self.records: list[asyncio.Future[OpResult]] = []

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

    async def _write(self, op: Op) -> Promise:
        return await self._io(self.t.write(op))

    async def _recorded(self, id: str) -> Promise | None:
        """The recorded promise of call ``id`` as of the start of this run, if any."""
        if self.known is None:
            self.known = await self._io(self.t.backend.children(self.root.id))
        return self.known.get(id)

    def _settle_records(self) -> None:
        """Raise if a pipelined record that has been answered was refused for a reason that
        stops the execution (lease lost, store failure)."""
        keep = []
        for fut in self.records:
            if not fut.done():
                keep.append(fut)
                continue
            exc = fut.exception()
            if exc is None:
                result = fut.result()
                if result.status < 400:
                    continue
                exc = error_from_code(result.code, result.message)
            if isinstance(exc, FencingFailed):
                raise LeaseLost(str(exc)) from exc
            if isinstance(exc, TrothError) and exc.status >= 500:
                raise PlatformError(str(exc)) from exc
            log.warning("execution %s: a step record was refused: %s", self.root.id, exc)
        self.records = keep

    async def _barrier(self) -> None:
        """Wait until every record submitted so far is durable (before a write that does
        not go through the pipeline)."""
        if self.records:
            await asyncio.wait(self.records)
            self._settle_records()

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
        """Complete the root: durable only after every write of the execution before it
        (the pipeline is ordered), and only if this runtime's create of it (if any) held."""
        # A new root runs while its create commits (in this batch or an earlier one): its
        # completion applies only to a promise an SDK created (``owned``), in case the
        # create was refused because the id was taken meanwhile by something else.
        owned = self.created is not None and id == self.root.id
        op = Op(
            kind="complete", id=id, state=state, value=value, fence=self.wire_fence, owned=owned
        )
        fut = self.t.submit(op)
        if self.created is not None:
            try:
                created = await asyncio.shield(self.created)
            except Exception as exc:
                fut.add_done_callback(_retrieve)
                raise SdkError(f"execution {id!r} was not created: {exc}") from exc
            if created.status >= 400:
                fut.add_done_callback(_retrieve)
                raise SdkError(f"execution {id!r} was not created: {created.message}")
        try:
            result = await self._io(asyncio.shield(fut))
        finally:
            self._settle_records()
        if result.status == 403 and result.promise is not None:
            p = result.promise  # completed otherwise already (a concurrent run): that stands
        else:
            p = _checked(result)
        if id == self.root.id and p.state is not State.PENDING:
            self.t._remember(p)
        return p

    async def _await(self, ctx: Context, id: str) -> Promise:
        """Wait for a promise someone else completes: embedded, on the engine's waiters;
        remote under a task, by a callback and a suspension."""
        if self.fence is None:
            while True:
                p = await self._io(self.t.backend.wait(id, 300.0))
                if p.state is not State.PENDING:
                    return p
        await self._barrier()  # nothing recorded may be lost once we suspend
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
        known = await self._recorded(id)
        if known is not None and known.state is not State.PENDING:
            return known  # completed promises never change: no write needed
        op = Op(
            kind="create",
            id=id,
            timeout=timeout,
            param=param or Value(),
            tags=tags,
            fence=self.wire_fence,
        )
        return await self._write(op)

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
        recorded = await self._recorded(id)
        if recorded is not None:
            ctx._check(recorded, name)
            if recorded.state is not State.PENDING:
                return ctx._decode(recorded, fn)
        if self.now() >= ctx.timeout:  # past the deadline: the step's promise times out
            p = await self._create(ctx, id, ctx.timeout, {FUNC_TAG: name})
            ctx._check(p, name)
            return ctx._decode(p, fn)
        with_ctx = takes_ctx(fn)

        async def attempt() -> Any:
            if with_ctx:
                child = Context(self, id, ctx.timeout, ctx._time)
                return await call(fn, (child, *args), kwargs)
            return await call(fn, args, kwargs)

        try:
            result = await run_with_retry(retry or t.step_retry, attempt)
            state, value = State.RESOLVED, Value(data=t.codec.encode(result))
        except Exception as exc:
            state, value = State.REJECTED, Value(data=t.codec.encode_error(exc))
        return await self._record(ctx, id, name, fn, state, value)

    async def _record(
        self,
        ctx: Context,
        id: str,
        name: str,
        fn: Callable[..., Any],
        state: State,
        value: Value,
    ) -> Any:
        """Record a step's outcome in one write (its promise is created completed) and
        return (or raise) it as a replay would. Pipelined: without waiting for the write."""
        at = max(self.now(), ctx._time)
        tags = {FUNC_TAG: name}
        op = Op(
            kind="record",
            id=id,
            timeout=ctx.timeout,
            tags=tags,
            state=state,
            value=value,
            at=at,
            fence=self.wire_fence,
            brief=True,
        )
        local = Promise(
            id=id,
            state=state,
            timeout=ctx.timeout,
            created_on=at,
            completed_on=at,
            value=value,
            tags=tags,
        )
        fut = self.t.submit(op)
        if self.t.checkpoints == "strict":
            result = await self._io(asyncio.shield(fut))
            if result.status >= 400 and result.promise is None:
                _checked(result)  # raises
            p = result.promise or local  # the stored one if it differs (a concurrent run)
            if p.state is State.PENDING:
                raise SdkError(f"step {id!r} is still pending after its record")
        else:
            fut.add_done_callback(_retrieve)
            self.records.append(fut)
            if len(self.records) > 64:
                self._settle_records()
            p = local
        return ctx._decode(p, fn)

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
