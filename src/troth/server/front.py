"""The outermost ASGI layer: request id, authentication, metrics and the access log.

It sits in front of the write fast path (``troth.server.fastpath``), so every request —
fast path or Starlette — passes through it once. Per request it scans the header list once
(``authorization``, ``x-request-id`` / ``request-id``), wraps ``send`` to learn the status
and to echo ``X-Request-Id``, and afterwards feeds one latency histogram and writes one
access-log line. Everything else (auth off, access log off) is skipped by plain ``if``s.

Requests of prefix-scoped tokens (``troth.server.auth``) have their JSON body read here
and replayed to the app, so that the ids in it can be checked before anything runs.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qsl

import msgspec

from troth.logs import AccessLog
from troth.server.auth import (
    PUBLIC_PATHS,
    PUBLIC_PREFIXES,
    UI_PAGES,
    Authenticator,
    AuthFailed,
    Principal,
    check_scope,
    needs_body,
)
from troth.server.metrics import Metrics, route_template

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("troth.server")
_perf = time.perf_counter
_encode: Final = msgspec.json.encode
#: Scope key under which the authenticated ``Principal`` is passed to handlers.
PRINCIPAL: Final = "troth.principal"
_MAX_REQUEST_ID: Final = 200


class Front:
    """See the module docstring.

    Args:
        auth: the authenticator, or ``None`` when auth is off.
        metrics: where to count requests, or ``None``.
        access_log: where to write one line per request (``None``: nowhere).
        metrics_public: ``/metrics`` answers without credentials.
        max_body: the body limit (scoped requests' bodies are read here).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Authenticator | None,
        metrics: Metrics | None,
        access_log: AccessLog | None,
        metrics_public: bool = True,
        max_body: int = 10 * 1024 * 1024,
    ) -> None:
        self.app = app
        self.auth = auth
        self.metrics = metrics
        self.access_log = access_log
        self.max_body = max_body
        public = set(PUBLIC_PATHS) | set(UI_PAGES)
        if metrics_public:
            public.add("/metrics")
        self.public = frozenset(public)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = _perf()
        auth_header: bytes | None = None
        request_id: bytes | None = None
        # ASGI header names are lowercase (the spec says so; uvicorn complies).
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth_header = value
            elif name == b"x-request-id" or name == b"request-id":
                request_id = value[:_MAX_REQUEST_ID]
        if request_id is None:
            request_id = f"{self._id_prefix}-{next(self._ids)}".encode()
        status = 0  # no response yet
        rid_header = (b"x-request-id", request_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            if self.auth is not None:
                receive = await self._authorize(scope, receive, auth_header)
            await self.app(scope, receive, send_with_id)
        except AuthFailed as exc:
            status = exc.status
            await self._refuse(exc, scope, send_with_id)
        except Exception:
            if status == 0:
                status = 500
            raise
        finally:
            if status == 0:
                status = 499  # the client went away before an answer (nginx's code)
            elapsed = _perf() - start
            method: str = scope["method"]
            path: str = scope["path"]
            route = route_template(method, path)
            if self.metrics is not None:
                self.metrics.observe_request(method, route, status, elapsed)
            if self.access_log is not None:
                self.access_log(
                    method,
                    path,
                    status,
                    round(elapsed * 1000, 2),
                    request_id.decode("latin-1"),
                    route,
                )

    async def _authorize(self, scope: Scope, receive: Receive, header: bytes | None) -> Receive:
        """Authenticate (401) and check a scoped token's ids (403); returns the ``receive``
        the app must use (a replay of the body when it was read here)."""
        assert self.auth is not None
        path: str = scope["path"]
        if path in self.public or path.startswith(PUBLIC_PREFIXES):
            return receive
        principal = self.auth.authenticate(header)
        scope[PRINCIPAL] = principal
        if principal.prefix is None:
            return receive
        return await self._check_scoped(principal, scope, receive)

    async def _check_scoped(self, principal: Principal, scope: Scope, receive: Receive) -> Receive:
        method: str = scope["method"]
        path: str = scope["path"]
        route = route_template(method, path)
        if route in ("unmatched", "/metrics") or route.startswith("/sdk/"):
            # Deny by default: a route this check does not know may carry ids it cannot see
            # (the SDK's batch routes carry many).
            raise AuthFailed(
                403, f"a token scoped to {principal.prefix!r} may not use {method} {path}"
            )
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if not needs_body(method, path):
            check_scope(principal, method, path, query)
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive  # disconnected: the app sees the disconnect too
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.max_body or not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            decoded: Any = msgspec.json.decode(body)
        except msgspec.DecodeError:
            decoded = None  # the app answers 400 for it and writes nothing
        check_scope(principal, method, path, query, decoded)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _refuse(self, exc: AuthFailed, scope: Scope, send: Send) -> None:
        code = exc.status * 100
        details: list[dict[str, str]] = []
        headers = [(b"content-type", b"application/json")]
        if exc.status == 401 and self.auth is not None:
            details.append({"scheme": "Basic" if self.auth.mode == "basic" else "Bearer"})
            # The dashboard asks with X-Requested-With and signs in with its own form: no
            # challenge for it, or the browser would pop up its basic-auth dialog.
            if not any(name == b"x-requested-with" for name, _ in scope["headers"]):
                headers.append((b"www-authenticate", self.auth.challenge))
        body = _encode({"error": {"code": code, "message": exc.message, "details": details}})
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


__all__ = ["PRINCIPAL", "Front"]
