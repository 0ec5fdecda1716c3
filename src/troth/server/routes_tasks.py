"""Routes of the task framework: promise+task, callbacks, subscriptions, tasks, worker
streams and locks (API.md 1.2, 2, 3, 5). Decode, call the engine, encode — no rules here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import quote

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from troth.engine import Engine
from troth.engine.taskops import Claimed
from troth.errors import ValidationError
from troth.model import EMPTY, Callback, Promise
from troth.server import wire_tasks as w
from troth.server.stream import StreamRegistry

JSON: Final = "application/json"
#: Lease of a task claimed through the GET form, which has no ttl parameter.
GET_CLAIM_TTL_MS: Final = 60_000
_encode = msgspec.json.encode

Handler = Callable[[Request], Awaitable[Response]]


def _json(content: Any, status: int = 200) -> Response:
    return Response(_encode(content), status_code=status, media_type=JSON)


def _callback_wire(cb: Callback | None) -> dict[str, Any] | None:
    if cb is None:
        return None
    out: dict[str, Any] = {
        "id": cb.id,
        "promiseId": cb.promise_id,
        "recv": cb.recv.to_wire(),
        "timeout": cb.timeout,
        "createdOn": cb.created_on,
    }
    if cb.root_promise_id is not None:
        out["rootPromiseId"] = cb.root_promise_id
    return out


def _split_task_path(rest: str) -> tuple[str, int]:
    """``{id}/{counter}`` where the id may itself contain ``/``."""
    id, _, counter = rest.rpartition("/")
    if not id or not counter.isdigit():
        raise ValidationError(
            f"expected /<task id>/<counter>, got {rest!r} - at path",
            details=[{"field": "path"}],
        )
    return id, int(counter)


class TaskApi:
    def __init__(
        self,
        engine: Engine,
        read_body: Callable[[Request], Awaitable[bytes]],
        streams: StreamRegistry,
        keepalive_s: float = 15.0,
    ) -> None:
        self.engine = engine
        self.body = read_body
        self.streams = streams
        self.keepalive_s = keepalive_s

    def _promise_ref(self, p: Promise) -> dict[str, Any]:
        base = self.engine.task_settings.base_url
        return {"id": p.id, "href": f"{base}/promises/{quote(p.id, safe='/')}", "data": p}

    def _claimed(self, c: Claimed) -> dict[str, Any]:
        promises: dict[str, Any] = {"root": self._promise_ref(c.root)}
        if c.leaf is not None:
            promises["leaf"] = self._promise_ref(c.leaf)
        return {"type": c.task.type.value, "promises": promises}

    def _fence(self, request: Request) -> tuple[str, int] | None:
        return w.parse_fence(request.headers.get("task-id"), request.headers.get("task-counter"))

    # -- promises with tasks and callbacks -------------------------------------------------

    async def create_promise_and_task(self, request: Request) -> Response:
        from troth.server.wire import parse_strict

        req: w.CreatePromiseAndTask = w.decode(w.CreatePromiseAndTask, await self.body(request))
        promise, task = await self.engine.create_promise_and_task(
            req.promise.id,
            req.promise.timeout,
            process_id=req.task.process_id,
            ttl=req.task.ttl,
            param=req.promise.param or EMPTY,
            tags=req.promise.tags,
            ikey=request.headers.get("idempotency-key"),
            strict=parse_strict(request.headers.get("strict")),
        )
        body = {"promise": promise, "task": task.to_wire() if task else None}
        return _json(body, 201 if task is not None else 200)

    async def _callback_response(self, cb: Callback | None, p: Promise) -> Response:
        return _json({"callback": _callback_wire(cb), "promise": p}, 201 if cb else 200)

    async def callback(self, request: Request) -> Response:
        req: w.CallbackBody = w.decode(w.CallbackBody, await self.body(request))
        cb, p = await self.engine.register_callback(
            request.path_params["id"],
            root_promise_id=req.root_promise_id,
            timeout=req.timeout,
            recv=req.recv,
            fence=self._fence(request),
        )
        return await self._callback_response(cb, p)

    async def subscribe(self, request: Request) -> Response:
        req: w.SubscribeBody = w.decode(w.SubscribeBody, await self.body(request))
        cb, p = await self.engine.subscribe(
            request.path_params["id"], id=req.id, timeout=req.timeout, recv=req.recv
        )
        return await self._callback_response(cb, p)

    async def legacy_callback(self, request: Request) -> Response:
        req: w.LegacyCallbackBody = w.decode(w.LegacyCallbackBody, await self.body(request))
        cb, p = await self.engine.register_callback(
            req.promise_id,
            root_promise_id=req.root_promise_id,
            timeout=req.timeout,
            recv=req.recv,
            fence=self._fence(request),
        )
        return await self._callback_response(cb, p)

    async def legacy_subscription(self, request: Request) -> Response:
        req: w.LegacySubscriptionBody = w.decode(w.LegacySubscriptionBody, await self.body(request))
        cb, p = await self.engine.subscribe(
            req.promise_id, id=req.id, timeout=req.timeout, recv=req.recv
        )
        return await self._callback_response(cb, p)

    # -- tasks -----------------------------------------------------------------------------

    async def claim(self, request: Request) -> Response:
        req: w.ClaimBody = w.decode(w.ClaimBody, await self.body(request))
        claimed = await self.engine.claim_task(
            req.id, req.counter, process_id=req.process_id, ttl=req.ttl
        )
        return _json(self._claimed(claimed), 201)

    async def complete(self, request: Request) -> Response:
        req: w.TaskRefBody = w.decode(w.TaskRefBody, await self.body(request))
        task, changed = await self.engine.complete_task(req.id, req.counter)
        return _json(task.to_wire(), 201 if changed else 200)

    async def drop(self, request: Request) -> Response:
        req: w.TaskRefBody = w.decode(w.TaskRefBody, await self.body(request))
        task, changed = await self.engine.drop_task(req.id, req.counter)
        return _json(task.to_wire(), 201 if changed else 200)

    async def heartbeat(self, request: Request) -> Response:
        req: w.ProcessBody = w.decode(w.ProcessBody, await self.body(request))
        n = await self.engine.heartbeat_tasks(req.process_id)
        return _json({"tasksAffected": n})

    async def get_claim(self, request: Request) -> Response:
        id, counter = _split_task_path(request.path_params["rest"])
        claimed = await self.engine.claim_task(
            id, counter, process_id=f"{id}/{counter}", ttl=GET_CLAIM_TTL_MS
        )
        return _json(self._claimed(claimed), 201)

    async def get_complete(self, request: Request) -> Response:
        id, counter = _split_task_path(request.path_params["rest"])
        task, changed = await self.engine.complete_task(id, counter)
        return _json(task.to_wire(), 201 if changed else 200)

    async def get_drop(self, request: Request) -> Response:
        id, counter = _split_task_path(request.path_params["rest"])
        task, changed = await self.engine.drop_task(id, counter)
        return _json(task.to_wire(), 201 if changed else 200)

    async def get_heartbeat(self, request: Request) -> Response:
        id, counter = _split_task_path(request.path_params["rest"])
        n = await self.engine.heartbeat_tasks(f"{id}/{counter}")
        return _json({"tasksAffected": n})

    # -- worker streams --------------------------------------------------------------------

    async def poll(self, request: Request) -> Response:
        group, id = request.path_params["group"], request.path_params["id"]
        if not group or not id:
            raise ValidationError("expected /poll/<group>/<id> - at path")
        conn = self.streams.connect(group, id)
        if self.engine.dispatcher is not None:
            await self.engine.dispatcher.stream_connected(f"poll:{group}")

        async def events() -> Any:
            try:
                async for chunk in conn.events(self.keepalive_s):
                    yield chunk
            finally:
                self.streams.disconnect(conn)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    # -- locks -----------------------------------------------------------------------------

    async def acquire_lock(self, request: Request) -> Response:
        req: w.AcquireLockBody = w.decode(w.AcquireLockBody, await self.body(request))
        lock = await self.engine.acquire_lock(
            req.resource_id,
            execution_id=req.execution_id,
            process_id=req.process_id,
            ttl=req.ttl,
        )
        return _json(lock, 201)

    async def release_lock(self, request: Request) -> Response:
        req: w.ReleaseLockBody = w.decode(w.ReleaseLockBody, await self.body(request))
        await self.engine.release_lock(req.resource_id, execution_id=req.execution_id)
        return Response(status_code=204)

    async def heartbeat_locks(self, request: Request) -> Response:
        req: w.ProcessBody = w.decode(w.ProcessBody, await self.body(request))
        return _json({"locksAffected": await self.engine.heartbeat_locks(req.process_id)})

    def routes(self) -> list[Route]:
        return [
            Route("/promises/task", self.create_promise_and_task, methods=["POST"]),
            Route("/promises/callback/{id:path}", self.callback, methods=["POST"]),
            Route("/promises/subscribe/{id:path}", self.subscribe, methods=["POST"]),
            Route("/callbacks", self.legacy_callback, methods=["POST"]),
            Route("/subscriptions", self.legacy_subscription, methods=["POST"]),
            Route("/tasks/claim", self.claim, methods=["POST"]),
            Route("/tasks/complete", self.complete, methods=["POST"]),
            Route("/tasks/drop", self.drop, methods=["POST"]),
            Route("/tasks/heartbeat", self.heartbeat, methods=["POST"]),
            Route("/tasks/claim/{rest:path}", self.get_claim, methods=["GET"]),
            Route("/tasks/complete/{rest:path}", self.get_complete, methods=["GET"]),
            Route("/tasks/drop/{rest:path}", self.get_drop, methods=["GET"]),
            Route("/tasks/heartbeat/{rest:path}", self.get_heartbeat, methods=["GET"]),
            Route("/poll/{group}/{id:path}", self.poll, methods=["GET"]),
            Route("/locks/acquire", self.acquire_lock, methods=["POST"]),
            Route("/locks/release", self.release_lock, methods=["POST"]),
            Route("/locks/heartbeat", self.heartbeat_locks, methods=["POST"]),
        ]

    def poll_routes(self) -> list[Route]:
        """The poll port's only route: ``GET /{group}/{id}`` (older clients look there)."""
        return [Route("/{group}/{id:path}", self.poll, methods=["GET"])]
