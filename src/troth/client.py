"""HTTP clients for a troth (or Resonate-compatible) server: ``Client`` and ``AsyncClient``.

Both classes have the same methods with the same signatures; ``AsyncClient``'s are
coroutines (and ``iter_promises`` is an async generator). Requests are built by one set of
helpers (``_Call`` values) and responses decoded by one set of functions, so the two clients
differ only in how they send.

    from troth.client import Client

    with Client("http://127.0.0.1:8001") as troth:
        p = troth.create_promise("orders/42", timeout=deadline_ms, param="hello")
        done = troth.wait_promise("orders/42", wait=30)

Every method returns the decoded ``troth.model.Promise`` (or ``SearchPage``). A create or a
completion answered 201 (done now) and one answered 200 (deduplicated: an idempotent replay,
or a completion of an already timed-out promise) are both successes; read ``state`` on the
returned promise to see what it is now. Any other status raises the ``TrothError`` subclass
of the server's error code (``AlreadyExists`` for 409, ``AlreadyCompleted`` for 40301..40304,
``NotFound`` for 404, ...); a server that cannot be reached raises ``ConnectionFailed``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from troth.errors import TrothError, error_from_code
from troth.model import Promise, SearchPage, State, Value

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "Client",
    "ConnectionFailed",
    "encode_id",
    "to_value",
]

DEFAULT_URL: Final = "http://127.0.0.1:8001"
#: The longest wait the server accepts in one request (API.md 1.6); longer waits are chunked.
MAX_WAIT_SECONDS: Final = 300.0
#: Pause between polls when a server answers a wait early with the promise still pending.
POLL_PAUSE_SECONDS: Final = 0.25

ParamLike = Value | bytes | str | None
_T = TypeVar("_T")


class ConnectionFailed(TrothError):
    """The troth server could not be reached; check the URL and that the server is running."""

    default_code = 50300


# -- encoding ----------------------------------------------------------------------------


def encode_id(id: str) -> str:
    """Percent-encode a promise id for the path of ``/promises/{id}``.

    Everything but ``/`` is encoded (``?``, ``#``, ``%``, spaces, unicode as UTF-8). Segments
    that are exactly ``.`` or ``..`` are encoded as ``%2E`` so that no HTTP library removes
    them as dot segments.
    """
    segments = []
    for segment in id.split("/"):
        if segment in (".", ".."):
            segments.append("%2E" * len(segment))
        else:
            segments.append(quote(segment, safe=""))
    return "/".join(segments)


def to_value(value: ParamLike) -> Value | None:
    """A ``Value`` from bytes, text (UTF-8) or a ``Value``; ``None`` stays absent."""
    if value is None or isinstance(value, Value):
        return value
    if isinstance(value, str):
        return Value(data=value.encode())
    if isinstance(value, bytes | bytearray | memoryview):
        return Value(data=bytes(value))
    raise TypeError(f"expected Value, bytes, str or None, got {type(value).__name__}")


class _CreateBody(msgspec.Struct, omit_defaults=True):
    id: str
    timeout: int
    param: Value | None = None
    tags: dict[str, str] | None = None


class _CompleteBody(msgspec.Struct, omit_defaults=True):
    state: State
    value: Value | None = None


@dataclass(frozen=True, slots=True)
class _Call:
    """One request, independent of the httpx client that sends it."""

    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    #: Extra seconds of read timeout on top of the client's (long polls).
    extra_read: float = 0.0


def _write_headers(
    idempotency_key: str | None, strict: bool, headers: Mapping[str, str] | None
) -> dict[str, str]:
    out = dict(headers or {})
    if _content_type_missing(out):
        out["Content-Type"] = "application/json"
    if idempotency_key is not None:
        out["Idempotency-Key"] = idempotency_key
    if strict:
        out["Strict"] = "true"
    return out


def _content_type_missing(headers: Mapping[str, str]) -> bool:
    return not any(k.lower() == "content-type" for k in headers)


def _create_call(
    id: str,
    timeout: int,
    param: ParamLike,
    tags: Mapping[str, str] | None,
    idempotency_key: str | None,
    strict: bool,
    headers: Mapping[str, str] | None,
) -> _Call:
    body = _CreateBody(
        id=id, timeout=timeout, param=to_value(param), tags=dict(tags) if tags else None
    )
    return _Call(
        "POST",
        "/promises",
        headers=_write_headers(idempotency_key, strict, headers),
        content=msgspec.json.encode(body),
    )


def _complete_call(
    id: str,
    state: State,
    value: ParamLike,
    idempotency_key: str | None,
    strict: bool,
    headers: Mapping[str, str] | None,
) -> _Call:
    body = _CompleteBody(state=state, value=to_value(value))
    return _Call(
        "PATCH",
        f"/promises/{encode_id(id)}",
        headers=_write_headers(idempotency_key, strict, headers),
        content=msgspec.json.encode(body),
    )


def _get_call(id: str) -> _Call:
    return _Call("GET", f"/promises/{encode_id(id)}")


def _wait_call(id: str, wait: float) -> _Call:
    wait = min(max(wait, 0.0), MAX_WAIT_SECONDS)
    return _Call(
        "GET",
        f"/promises/{encode_id(id)}",
        params=[("wait", str(int(wait * 1000)))],
        extra_read=wait,
    )


def _search_call(
    id: str,
    state: str | None,
    tags: Mapping[str, str] | None,
    limit: int,
    cursor: str | None,
) -> _Call:
    params = [("id", id)]
    if state is not None:
        params.append(("state", state))
    params.extend((f"tags[{k}]", v) for k, v in (tags or {}).items())
    params.append(("limit", str(limit)))
    if cursor is not None:
        params.append(("cursor", cursor))
    return _Call("GET", "/promises", params=params)


_PING: Final = _Call("GET", "/ping")


class _WaitLoop:
    """Long-poll ``GET /promises/{id}?wait=`` until completed or ``wait`` seconds passed.

    Waits longer than the server's maximum are sent in chunks. A server that answers a
    pending promise early (one that ignores ``wait``, or one shutting down) is polled with
    a short pause rather than in a tight loop.
    """

    def __init__(self, wait: float) -> None:
        self.deadline = time.monotonic() + wait
        self.sent = 0.0

    def next_call(self, id: str) -> _Call:
        self.sent = time.monotonic()
        return _wait_call(id, self.deadline - self.sent)

    def pause_after(self, p: Promise) -> float | None:
        """``None`` when done, else the seconds to pause before the next request."""
        now = time.monotonic()
        if p.state is not State.PENDING or now >= self.deadline:
            return None
        asked = min(self.deadline - self.sent, MAX_WAIT_SECONDS)
        if now - self.sent < asked - 0.05:
            return min(POLL_PAUSE_SECONDS, self.deadline - now)
        return 0.0


# -- decoding ----------------------------------------------------------------------------

_promise_decoder: Final = msgspec.json.Decoder(Promise)
_page_decoder: Final = msgspec.json.Decoder(SearchPage)


class _ErrorBody(msgspec.Struct):
    code: int
    message: str
    details: list[Any] | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody


_error_decoder: Final = msgspec.json.Decoder(_ErrorEnvelope)


def _raise_for_status(response: httpx.Response) -> None:
    """Raise the ``TrothError`` of a non-2xx response, from its JSON error body if any."""
    if response.is_success:
        return
    try:
        body = _error_decoder.decode(response.content).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = response.text.strip()[:500] or response.reason_phrase
        raise error_from_code(
            response.status_code * 100,
            f"HTTP {response.status_code} from {response.request.url}: {text}",
        ) from None
    raise error_from_code(body.code, body.message, body.details)


def _decode_promise(response: httpx.Response) -> Promise:
    _raise_for_status(response)
    return _decode(_promise_decoder, response)


def _decode_page(response: httpx.Response) -> SearchPage:
    _raise_for_status(response)
    return _decode(_page_decoder, response)


def _decode(decoder: msgspec.json.Decoder[_T], response: httpx.Response) -> _T:
    try:
        return decoder.decode(response.content)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise TrothError(
            f"unexpected response from {response.request.url}: {exc}", code=50200
        ) from None


def _ping_ok(response: httpx.Response) -> bool:
    return response.status_code == 200


def _connection_failed(url: str, exc: httpx.TransportError) -> ConnectionFailed:
    if isinstance(exc, httpx.TimeoutException):
        what = f"no answer from the troth server at {url} in time ({type(exc).__name__})"
    else:
        what = f"cannot reach the troth server at {url}: {exc or type(exc).__name__}"
    return ConnectionFailed(f"{what}; check the URL (--url / TROTH_URL) and that it is running")


def _default_headers(token: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    out = {"Accept": "application/json", **(headers or {})}
    if token is not None:
        out["Authorization"] = f"Bearer {token}"
    return out


class _Base:
    """Configuration and request plumbing shared by both clients."""

    def __init__(self, url: str | None, timeout: float) -> None:
        self.url = (url or os.environ.get("TROTH_URL") or DEFAULT_URL).rstrip("/")
        self.timeout = timeout

    def _timeout_for(self, call: _Call) -> httpx.Timeout:
        if call.extra_read:
            return httpx.Timeout(self.timeout, read=self.timeout + call.extra_read)
        return httpx.Timeout(self.timeout)

    def _request_kwargs(self, call: _Call) -> dict[str, Any]:
        return {
            "params": call.params or None,
            "headers": call.headers or None,
            "content": call.content,
            "timeout": self._timeout_for(call),
        }


# -- sync --------------------------------------------------------------------------------


class Client(_Base):
    """A blocking client (``httpx.Client``); use as a context manager or call ``close()``.

    Args:
        url: server base URL; default ``$TROTH_URL``, else ``http://127.0.0.1:8001``.
        timeout: seconds for connecting, writing and reading (a wait adds its own duration).
        transport: an httpx transport (tests: ``httpx.MockTransport``).
        token: bearer token sent as ``Authorization: Bearer <token>``.
        headers: extra headers sent with every request.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(url, timeout)
        self._http = httpx.Client(
            base_url=self.url,
            transport=transport,
            timeout=timeout,
            headers=_default_headers(token, headers),
        )

    def _send(self, call: _Call) -> httpx.Response:
        try:
            return self._http.request(call.method, call.path, **self._request_kwargs(call))
        except httpx.TransportError as exc:
            raise _connection_failed(self.url, exc) from exc

    def create_promise(
        self,
        id: str,
        timeout: int,
        *,
        param: ParamLike = None,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Promise:
        """Create promise ``id`` with absolute deadline ``timeout`` (epoch ms).

        Returns the new promise (201) or, for a replay with the same idempotency key, the
        stored one (200). Raises ``AlreadyExists`` (40900) when the id exists otherwise.
        """
        call = _create_call(id, timeout, param, tags, idempotency_key, strict, headers)
        return _decode_promise(self._send(call))

    def get_promise(self, id: str) -> Promise:
        """Read a promise; raises ``NotFound`` (40400)."""
        return _decode_promise(self._send(_get_call(id)))

    def wait_promise(self, id: str, wait: float) -> Promise:
        """Read a promise once it is completed, or after ``wait`` seconds if still pending."""
        loop = _WaitLoop(wait)
        while True:
            p = _decode_promise(self._send(loop.next_call(id)))
            pause = loop.pause_after(p)
            if pause is None:
                return p
            time.sleep(pause)

    def resolve_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Promise:
        """Resolve a pending promise; raises ``AlreadyCompleted`` / ``NotFound``."""
        call = _complete_call(id, State.RESOLVED, value, idempotency_key, strict, headers)
        return _decode_promise(self._send(call))

    def reject_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Promise:
        """Reject a pending promise; raises ``AlreadyCompleted`` / ``NotFound``."""
        call = _complete_call(id, State.REJECTED, value, idempotency_key, strict, headers)
        return _decode_promise(self._send(call))

    def cancel_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Promise:
        """Cancel (REJECTED_CANCELED) a pending promise; raises ``AlreadyCompleted``."""
        call = _complete_call(id, State.REJECTED_CANCELED, value, idempotency_key, strict, headers)
        return _decode_promise(self._send(call))

    def search_promises(
        self,
        id: str = "*",
        *,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SearchPage:
        """One page of promises matching ``id`` (``*`` wildcard), newest first."""
        return _decode_page(self._send(_search_call(id, state, tags, limit, cursor)))

    def iter_promises(
        self,
        id: str = "*",
        *,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Iterator[Promise]:
        """Every matching promise, following cursors page by page (``limit`` per page)."""
        while True:
            page = self.search_promises(id, state=state, tags=tags, limit=limit, cursor=cursor)
            yield from page.promises
            if page.cursor is None:
                return
            cursor = page.cursor

    def ping(self) -> bool:
        """True when the server answers ``GET /ping`` with 200."""
        try:
            return _ping_ok(self._send(_PING))
        except ConnectionFailed:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- async -------------------------------------------------------------------------------


class AsyncClient(_Base):
    """The asyncio twin of ``Client`` (``httpx.AsyncClient``); same methods, awaited.

    Use ``async with AsyncClient(...)`` or ``await client.close()``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(url, timeout)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            transport=transport,
            timeout=timeout,
            headers=_default_headers(token, headers),
        )

    async def _send(self, call: _Call) -> httpx.Response:
        try:
            return await self._http.request(call.method, call.path, **self._request_kwargs(call))
        except httpx.TransportError as exc:
            raise _connection_failed(self.url, exc) from exc

    async def create_promise(
        self,
        id: str,
        timeout: int,
        *,
        param: ParamLike = None,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Promise:
        """See ``Client.create_promise``."""
        call = _create_call(id, timeout, param, tags, idempotency_key, strict, headers)
        return _decode_promise(await self._send(call))

    async def get_promise(self, id: str) -> Promise:
        """See ``Client.get_promise``."""
        return _decode_promise(await self._send(_get_call(id)))

    async def wait_promise(self, id: str, wait: float) -> Promise:
        """See ``Client.wait_promise``."""
        loop = _WaitLoop(wait)
        while True:
            p = _decode_promise(await self._send(loop.next_call(id)))
            pause = loop.pause_after(p)
            if pause is None:
                return p
            await asyncio.sleep(pause)

    async def resolve_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Promise:
        """See ``Client.resolve_promise``."""
        call = _complete_call(id, State.RESOLVED, value, idempotency_key, strict, headers)
        return _decode_promise(await self._send(call))

    async def reject_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Promise:
        """See ``Client.reject_promise``."""
        call = _complete_call(id, State.REJECTED, value, idempotency_key, strict, headers)
        return _decode_promise(await self._send(call))

    async def cancel_promise(
        self,
        id: str,
        *,
        value: ParamLike = None,
        idempotency_key: str | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Promise:
        """See ``Client.cancel_promise``."""
        call = _complete_call(id, State.REJECTED_CANCELED, value, idempotency_key, strict, headers)
        return _decode_promise(await self._send(call))

    async def search_promises(
        self,
        id: str = "*",
        *,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SearchPage:
        """See ``Client.search_promises``."""
        return _decode_page(await self._send(_search_call(id, state, tags, limit, cursor)))

    async def iter_promises(
        self,
        id: str = "*",
        *,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> AsyncIterator[Promise]:
        """See ``Client.iter_promises`` (an async generator)."""
        while True:
            page = await self.search_promises(
                id, state=state, tags=tags, limit=limit, cursor=cursor
            )
            for p in page.promises:
                yield p
            if page.cursor is None:
                return
            cursor = page.cursor

    async def ping(self) -> bool:
        """See ``Client.ping``."""
        try:
            return _ping_ok(await self._send(_PING))
        except ConnectionFailed:
            return False

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
