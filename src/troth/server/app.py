"""The HTTP front end: decode, call the engine, encode. No rules live here.

Every error leaves through ``_error_response`` as the JSON body of API.md 0, whether it came
from the engine (``TrothError``), from routing (unknown path, wrong method) or from a bug
(500, logged with its traceback, never shown to the client).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Protocol

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from troth.engine import Engine
from troth.errors import PayloadTooLarge, StoreUnavailable, TrothError
from troth.logs import AccessLog
from troth.model import EMPTY, Promise
from troth.server import wire
from troth.server.auth import Authenticator
from troth.server.fastpath import FastPath
from troth.server.front import Front
from troth.server.metrics import CONTENT_TYPE, Metrics
from troth.server.openapi import openapi_document
from troth.server.routes_schedules import ScheduleApi
from troth.server.routes_sdk import SdkApi
from troth.server.routes_tasks import TaskApi
from troth.server.stream import StreamRegistry
from troth.server.ui import UiApi
from troth.server.wire_tasks import parse_fence

log = logging.getLogger("troth.server")

JSON: Final = "application/json"
DEFAULT_MAX_BODY: Final = 10 * 1024 * 1024
_encode = msgspec.json.encode
_PING: Final = b'{"status":"ok"}'


def _json(content: Any, status: int = 200) -> Response:
    return Response(_encode(content), status_code=status, media_type=JSON)


def error_body(code: int, message: str, details: list[Any] | None = None) -> tuple[int, bytes]:
    """The status and JSON body of API.md 0 for an error."""
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return code // 100, _encode(body)


def _error_response(code: int, message: str, details: list[Any] | None = None) -> Response:
    status, body = error_body(code, message, details)
    return Response(body, status_code=status, media_type=JSON)


def _troth_error_body(exc: TrothError) -> tuple[int, bytes]:
    if exc.status >= 500:
        log.warning("request failed with %d: %s", exc.status, exc.message)
    return error_body(exc.code, exc.message, exc.details)


class Headers(Protocol):
    def get(self, key: str, /) -> str | None: ...


class Api:
    """Route handlers bound to one engine."""

    def __init__(
        self, engine: Engine, max_body: int = DEFAULT_MAX_BODY, metrics: Metrics | None = None
    ) -> None:
        self.engine = engine
        self.max_body = max_body
        self.metrics = metrics

    async def body(self, request: Request) -> bytes:
        """Read the body, refusing (413) more than ``max_body`` bytes without buffering it."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise PayloadTooLarge(f"request body exceeds {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(f"request body exceeds {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- operational ---------------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        return Response(_PING, media_type=JSON)

    async def healthz(self, request: Request) -> Response:
        return Response(_PING, media_type=JSON)

    async def readyz(self, request: Request) -> Response:
        await self.engine.store.check()
        return _json({"status": "ready"})

    async def openapi(self, request: Request) -> Response:
        return _json(openapi_document())

    async def prometheus(self, request: Request) -> Response:
        if self.metrics is None:
            return _error_response(40400, "metrics are off on this server")
        return Response(await self.metrics.render(), media_type=CONTENT_TYPE)

    # -- promises ------------------------------------------------------------------------

    async def create(self, headers: Headers, body: bytes) -> tuple[int, bytes]:
        """POST /promises, shared by the Starlette route and the raw-ASGI fast path."""
        req = wire.decode_create(body)
        promise, created = await self.engine.create_promise(
            req.id,
            req.timeout,
            param=req.param or EMPTY,
            tags=req.tags,
            ikey=headers.get("idempotency-key"),
            strict=wire.parse_strict(headers.get("strict")),
            fence=parse_fence(headers.get("task-id"), headers.get("task-counter")),
        )
        return (201 if created else 200), _encode(promise)

    async def complete(self, id: str, headers: Headers, body: bytes) -> tuple[int, bytes]:
        """PATCH /promises/{id}, shared by the Starlette route and the fast path."""
        state, value = wire.decode_complete(body)
        promise, created = await self.engine.complete_promise(
            id,
            state,
            value=value or EMPTY,
            ikey=headers.get("idempotency-key"),
            strict=wire.parse_strict(headers.get("strict")),
            fence=parse_fence(headers.get("task-id"), headers.get("task-counter")),
        )
        return (201 if created else 200), _encode(promise)

    async def create_promise(self, request: Request) -> Response:
        status, body = await self.create(request.headers, await self.body(request))
        return Response(body, status_code=status, media_type=JSON)

    async def complete_promise(self, request: Request) -> Response:
        status, body = await self.complete(
            request.path_params["id"], request.headers, await self.body(request)
        )
        return Response(body, status_code=status, media_type=JSON)

    async def get_promise(self, request: Request) -> Response:
        id = request.path_params["id"]
        wait = request.query_params.get("wait")
        if wait is None:
            promise = await self.engine.get_promise(id)
        else:
            promise = await self.engine.wait_promise(id, wire.parse_duration_ms(wait))
        return Response(_encode(promise), media_type=JSON)

    async def search_promises(self, request: Request) -> Response:
        params = request.query_params
        tags = wire.parse_tag_filters(params.multi_items())
        limit = params.get("limit")
        page = await self.engine.search_promises(
            pattern=params.get("id") or "*",
            state=params.get("state") or None,
            tags=tags,
            limit=wire.parse_int(limit, "limit") if limit else 100,
            cursor=params.get("cursor") or None,
        )
        return _json({"promises": page.promises, "cursor": page.cursor})


# -- error mapping -----------------------------------------------------------------------


async def _troth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TrothError)
    if exc.status >= 500:
        log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.message)
    return _error_response(exc.code, exc.message, exc.details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.url.path!r}; see GET /openapi.json for the API"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path!r}"
    else:
        message = str(exc.detail)
    return _error_response(exc.status_code * 100, message)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _error_response(50000, "internal server error; the request may not have been applied")


class _App(Starlette):
    """Starlette behind the write fast path (``troth.server.fastpath``), both behind the
    front layer (``troth.server.front``: request id, auth, metrics, access log)."""

    def __init__(
        self,
        api: Api,
        auth: Authenticator | None,
        access_log: AccessLog | None,
        metrics_public: bool,
        **kwargs: Any,
    ) -> None:
        self._api = api
        self._auth = auth
        self._access_log = access_log
        self._metrics_public = metrics_public
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        api = self._api
        fast = FastPath(
            super().build_middleware_stack(),
            api.create,
            api.complete,
            _troth_error_body,
            api.max_body,
        )
        return Front(
            fast,
            auth=self._auth,
            metrics=api.metrics,
            access_log=self._access_log,
            metrics_public=self._metrics_public,
            max_body=api.max_body,
        )


def _count_fired(
    metrics: Metrics, then: Callable[[list[Promise]], None] | None
) -> Callable[[list[Promise]], None]:
    """The engine's ``on_fired`` hook: count the promises schedules create, then chain."""

    def fired(promises: list[Promise]) -> None:
        for p in promises:
            metrics.observe_promise(p)
        if then is not None:
            then(promises)

    return fired


def create_app(
    engine: Engine,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    manage: bool = True,
    streams: StreamRegistry | None = None,
    keepalive_s: float = 15.0,
    auth: Authenticator | None = None,
    metrics: Metrics | None = None,
    access_log: AccessLog | bool = False,
    metrics_public: bool = True,
) -> Starlette:
    """Build the ASGI app over ``engine``.

    Args:
        manage: start the engine (and its sweeper) in the app's lifespan and stop it at
            shutdown. In-process tests that run the engine themselves pass ``False``.
        auth: check credentials on every route but the public ones (``None``: auth off).
        metrics: where to count; default a new ``Metrics`` hooked to the engine and store.
        access_log: where to write one line per request; ``True`` is stderr in the text
            format (``troth.logs.AccessLog``).
        metrics_public: ``/metrics`` answers without credentials when auth is on.
    """
    if streams is None:
        streams = StreamRegistry()
    requests_log = AccessLog() if access_log is True else access_log or None
    if metrics is None:
        metrics = Metrics(engine, streams)
    engine.on_written = metrics.observe_promise
    engine.on_fired = _count_fired(metrics, engine.on_fired)
    if hasattr(engine.store, "on_commit"):
        engine.store.on_commit = metrics.observe_commit
    api = Api(engine, max_body, metrics)
    tasks = TaskApi(engine, api.body, streams, keepalive_s)
    routes = [
        Route("/ping", api.ping, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/metrics", api.prometheus, methods=["GET"]),
        Route("/promises", api.create_promise, methods=["POST"]),
        Route("/promises", api.search_promises, methods=["GET"]),
        Route("/promises/{id:path}", api.get_promise, methods=["GET"]),
        Route("/promises/{id:path}", api.complete_promise, methods=["PATCH"]),
        *tasks.routes(),
        *ScheduleApi(engine, api.body).routes(),
        *SdkApi(engine, api.body).routes(),
        *UiApi(engine, streams, auth.mode if auth is not None else "none").routes(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage:
            await engine.start()
        try:
            yield
        finally:
            streams.close_all()
            if manage:
                await engine.stop()
            if requests_log is not None:
                requests_log.flush()

    app = _App(
        api,
        auth,
        requests_log,
        metrics_public,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            TrothError: _troth_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.engine = engine
    app.state.streams = streams
    app.state.tasks = tasks
    app.state.metrics = metrics
    app.state.auth = auth
    app.state.access_log = requests_log
    return app


def create_poll_app(app: Starlette) -> ASGIApp:
    """The ``--poll-port`` app: only the worker stream, at ``GET /{group}/{id}``."""
    tasks: TaskApi = app.state.tasks
    poll = Starlette(
        routes=tasks.poll_routes(),
        exception_handlers={
            TrothError: _troth_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    return Front(poll, auth=app.state.auth, metrics=None, access_log=app.state.access_log)


__all__ = ["StoreUnavailable", "create_app"]
