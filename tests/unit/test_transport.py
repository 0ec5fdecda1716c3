"""The lean keep-alive transport: reuse, stale-connection retry, streaming, timeouts, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from troth.transport import LeanTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + (await reader.readexactly(length) if length else b"")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=2.0) as c:
        yield c


async def test_keep_alive_reuses_one_connection() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            request = await read_request(reader)
            body = request.split(b"\r\n\r\n", 1)[1] or b"empty"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    server, port = await serve(handler)
    async with server, httpx.AsyncClient(transport=LeanTransport()) as client:
        for i in range(20):
            r = await client.post(f"http://127.0.0.1:{port}/x", content=f"hello {i}".encode())
            assert r.status_code == 200
            assert r.text == f"hello {i}"
        assert (await client.get(f"http://127.0.0.1:{port}/y")).text == "empty"
    assert connections == 1


async def test_a_stale_keep_alive_connection_is_retried_once(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # answer one request, then close without saying so
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server, port = await serve(handler)
    async with server:
        for _ in range(3):
            r = await client.get(f"http://127.0.0.1:{port}/")
            assert r.text == "ok"
            await asyncio.sleep(0.05)


async def test_chunked_streaming_body(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server, port = await serve(handler)
    async with server, client.stream("GET", f"http://127.0.0.1:{port}/poll") as r:
        lines = [line async for line in r.aiter_lines() if line]
    assert lines == ["data: 1", "data: 2"]


async def test_read_timeout_and_connect_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server, port = await serve(silent)
    async with server, httpx.AsyncClient(transport=LeanTransport(), timeout=0.2) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(f"http://127.0.0.1:{port}/")
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(transport=LeanTransport(), timeout=1.0) as c:
            await c.get(f"http://127.0.0.1:{port}/")  # the server is gone
