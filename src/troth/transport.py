"""A lean HTTP/1.1 keep-alive transport for ``httpx.AsyncClient`` (plain ``http://`` only).

Why: the SDK's workers and clients make many small sequential requests to one server.
httpcore's connection pool re-examines every pooled connection for every request (several
socket calls each), which profiled at ~1.7 ms of client CPU per request — more than the
server spends. This transport keeps a list of idle connections per origin and does nothing
else per request: write the request, read the status line and headers, read the body by
``Content-Length`` (or stream it: chunked / until close, for worker streams).

Semantics kept: httpx's timeouts (connect / read / write) and its exception types, so
callers see ``httpx.ConnectError`` / ``httpx.ReadTimeout`` as before. A request on a reused
connection that the server had already closed (keep-alive race) is retried once on a new
connection, but only when no byte of a response arrived. ``https://`` goes to httpx's own
transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Final

import httpx

_MAX_HEAD: Final = 64 * 1024
#: Idle connections older than this are not reused: servers close idle keep-alive
#: connections (uvicorn after 5 s), and a request sent into a closing one is wasted.
_MAX_IDLE_S: Final = 3.0


class _Closed(Exception):
    """The connection closed before a response began (safe to retry on a new one)."""


class _Conn:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def _timeouts(request: httpx.Request) -> tuple[float | None, float | None, float | None]:
    t = request.extensions.get("timeout", {})
    return t.get("connect"), t.get("read"), t.get("write")


class _BodyStream(httpx.AsyncByteStream):
    """A streamed response body; gives the connection back when fully read."""

    def __init__(
        self,
        transport: LeanTransport,
        key: tuple[str, int],
        conn: _Conn,
        chunked: bool,
        read_timeout: float | None,
    ) -> None:
        self._t = transport
        self._key = key
        self._conn = conn
        self._chunked = chunked
        self._timeout = read_timeout
        self._done = False

    async def _read(self, coro: object) -> bytes:
        try:
            return await asyncio.wait_for(coro, self._timeout)  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise httpx.ReadTimeout("timed out reading the response") from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise httpx.ReadError(str(exc) or "connection closed") from exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        r = self._conn.reader
        if not self._chunked:
            while True:
                chunk = await self._read(r.read(65536))
                if not chunk:
                    self._done = True
                    return
                yield chunk
        while True:
            size_line = await self._read(r.readline())
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                await self._read(r.readline())  # the final CRLF (no trailers expected)
                self._done = True
                self._t._release(self._key, self._conn)
                return
            data = await self._read(r.readexactly(size + 2))
            yield data[:-2]

    async def aclose(self) -> None:
        if not self._done or not self._chunked:
            self._conn.close()


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_idle_per_origin: int = 64) -> None:
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._max_idle = max_idle_per_origin
        self._fallback: httpx.AsyncHTTPTransport | None = None

    def _release(self, key: tuple[str, int], conn: _Conn) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < self._max_idle and not conn.reader.at_eof():
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.close()

    def _take(self, key: tuple[str, int]) -> _Conn | None:
        """The most recently used idle connection that is still fresh, if any."""
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < _MAX_IDLE_S and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def _connect(self, key: tuple[str, int], timeout: float | None) -> _Conn:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(key[0], key[1], limit=_MAX_HEAD), timeout
            )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {key[0]}:{key[1]}") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        return _Conn(reader, writer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            if self._fallback is None:
                self._fallback = httpx.AsyncHTTPTransport()
            return await self._fallback.handle_async_request(request)
        key = (url.host, url.port or 80)
        body = await request.aread()
        head = self._head(request, body)
        connect_t, read_t, write_t = _timeouts(request)
        for attempt in range(2):
            conn = self._take(key) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, connect_t)
            try:
                return await self._exchange(conn, key, head + body, read_t, write_t)
            except _Closed:
                conn.close()
                if not reused or attempt:
                    raise httpx.RemoteProtocolError("server closed the connection") from None
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    async def send_raw(
        self, host: str, port: int, head: bytes, body: bytes, timeout: float | None
    ) -> tuple[int, bytes]:
        """Send a request whose head (request line and headers, without the blank line and
        ``content-length``) is already encoded; return the status and the whole body.

        For callers that send many requests of one shape (the SDK's batches): no
        ``httpx.Request``/``Response`` objects, no URL merging, no cookie jar.
        """
        key = (host, port)
        data = head + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        for attempt in range(2):
            conn = self._take(key) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, timeout)
            try:
                response = await self._exchange(conn, key, data, timeout, timeout)
                return response.status_code, await response.aread()
            except _Closed:
                conn.close()
                if not reused or attempt:
                    raise httpx.RemoteProtocolError("server closed the connection") from None
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    @staticmethod
    def _head(request: httpx.Request, body: bytes) -> bytes:
        url = request.url
        lines = [f"{request.method} ".encode() + url.raw_path + b" HTTP/1.1"]
        has_length = False
        for name, value in request.headers.raw:
            lower = name.lower()
            if lower == b"content-length":
                has_length = True
            if lower == b"transfer-encoding":
                continue  # we always send the body with a length
            lines.append(name + b": " + value)
        if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
            lines.append(b"content-length: " + str(len(body)).encode())
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _exchange(
        self,
        conn: _Conn,
        key: tuple[str, int],
        data: bytes,
        read_t: float | None,
        write_t: float | None,
    ) -> httpx.Response:
        try:
            conn.writer.write(data)
            await asyncio.wait_for(conn.writer.drain(), write_t)
        except TimeoutError as exc:
            raise httpx.WriteTimeout("timed out sending the request") from exc
        except OSError as exc:
            raise _Closed from exc
        try:
            raw = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), read_t)
        except TimeoutError as exc:
            raise httpx.ReadTimeout("timed out waiting for the response") from exc
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _Closed from exc
            raise httpx.RemoteProtocolError("incomplete response head") from exc
        except (OSError, asyncio.LimitOverrunError) as exc:
            raise httpx.ReadError(str(exc) or "connection error") from exc
        status_line, *header_lines = raw[:-4].split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise httpx.RemoteProtocolError(f"bad status line {status_line[:80]!r}")
        status = int(parts[1])
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = close = False
        for line in header_lines:
            name, _, value = line.partition(b":")
            value = value.strip()
            lower = name.strip().lower()
            headers.append((lower, value))
            if lower == b"content-length":
                length = int(value)
            elif lower == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif lower == b"connection" and value.lower() == b"close":
                close = True
        if chunked or (length is None and status not in (204, 304)):
            stream = _BodyStream(self, key, conn, chunked, read_t)
            return httpx.Response(status, headers=headers, stream=stream)
        content = b""
        if length:
            try:
                content = await asyncio.wait_for(conn.reader.readexactly(length), read_t)
            except TimeoutError as exc:
                raise httpx.ReadTimeout("timed out reading the response body") from exc
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise httpx.ReadError("connection closed in the response body") from exc
        if close:
            conn.close()
        else:
            self._release(key, conn)
        return httpx.Response(status, headers=headers, content=content)

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        if self._fallback is not None:
            await self._fallback.aclose()
