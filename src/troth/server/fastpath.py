"""A raw-ASGI fast path for the two routes that carry the write load.

``POST /promises`` and ``PATCH /promises/{id}`` are answered here without Starlette's
router, ``Request`` object, middleware stack and ``Response`` class, which together cost
about as much CPU as the durable write itself (profiled in ``benchmarks/results/core.md``).
The handlers are the same ``Api.create`` / ``Api.complete`` the Starlette routes call, and
errors are mapped by the same function, so the two paths cannot answer differently; the
API tests run against the app with the fast path in front, as production does.

Everything else (other routes, other methods on these paths, lifespan) passes through to
the Starlette app untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from troth.errors import PayloadTooLarge, TrothError

log = logging.getLogger("troth.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PREFIX: Final = "/promises/"
_WANTED: Final = frozenset(
    (b"idempotency-key", b"strict", b"content-length", b"task-id", b"task-counter")
)


class _Disconnected(Exception):
    """The client went away before sending its whole body."""


class _RawHeaders:
    """The few request headers the write routes read, from the ASGI header list."""

    __slots__ = ("_h",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._h: dict[str, str] = {}
        for name, value in raw:
            lower = name.lower()
            if lower in _WANTED:
                self._h[lower.decode("latin-1")] = value.decode("latin-1")

    def get(self, key: str, /) -> str | None:
        return self._h.get(key)


class FastPath:
    def __init__(
        self,
        app: ASGIApp,
        create: Callable[[_RawHeaders, bytes], Awaitable[tuple[int, bytes]]],
        complete: Callable[[str, _RawHeaders, bytes], Awaitable[tuple[int, bytes]]],
        error: Callable[[TrothError], tuple[int, bytes]],
        max_body: int,
    ) -> None:
        self.app = app
        self._create = create
        self._complete = complete
        self._error = error
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            path: str = scope["path"]
            if method == "POST" and path == "/promises":
                return await self._serve(scope, receive, send, None)
            if method == "PATCH" and path.startswith(_PREFIX) and len(path) > len(_PREFIX):
                return await self._serve(scope, receive, send, path[len(_PREFIX) :])
        await self.app(scope, receive, send)

    async def _body(self, headers: _RawHeaders, receive: Receive) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise PayloadTooLarge(f"request body exceeds {self._max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise PayloadTooLarge(f"request body exceeds {self._max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, id: str | None) -> None:
        headers = _RawHeaders(scope["headers"])
        try:
            body = await self._body(headers, receive)
            if id is None:
                status, content = await self._create(headers, body)
            else:
                status, content = await self._complete(id, headers, body)
        except _Disconnected:
            return
        except TrothError as exc:
            status, content = self._error(exc)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            status, content = self._error(
                TrothError("internal server error; the request may not have been applied")
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
