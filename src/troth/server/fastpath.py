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
#: The request headers the write routes read, by their (lowercase, as ASGI guarantees) name.
_WANTED: Final = {
    b"idempotency-key": "idempotency-key",
    b"strict": "strict",
    b"content-length": "content-length",
    b"task-id": "task-id",
    b"task-counter": "task-counter",
}
_CONTENT_TYPE: Final = (b"content-type", b"application/json")


class _Disconnected(Exception):
    """The client went away before sending its whole body."""


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The few request headers the write routes read (``.get(name)`` like Starlette's)."""
    found: dict[str, str] = {}
    for name, value in raw:
        key = _WANTED.get(name)
        if key is None and not name.islower():
            key = _WANTED.get(name.lower())  # ASGI says lowercase; be lenient anyway
        if key is not None:
            found[key] = value.decode("latin-1")
    return found


class FastPath:
    def __init__(
        self,
        app: ASGIApp,
        create: Callable[[dict[str, str], bytes], Awaitable[tuple[int, bytes]]],
        complete: Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]],
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
            if method == "POST":
                if scope["path"] == "/promises":
                    return await self._serve(scope, receive, send, None)
            elif method == "PATCH":
                path: str = scope["path"]
                if path.startswith(_PREFIX) and len(path) > len(_PREFIX):
                    return await self._serve(scope, receive, send, path[len(_PREFIX) :])
        await self.app(scope, receive, send)

    async def _body(self, headers: dict[str, str], receive: Receive) -> bytes:
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
        headers = _headers(scope["headers"])
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
                "headers": [_CONTENT_TYPE, (b"content-length", b"%d" % len(content))],
            }
        )
        await send({"type": "http.response.body", "body": content})
