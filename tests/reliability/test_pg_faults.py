"""PostgreSQL: kill -9 cycles, and the database going away under a running server.

The database is taken away through a loopback TCP proxy (``tools/tcpproxy.py``) that drops
every connection, rather than by stopping the shared PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from tools.crash import run
from tools.serverproc import Server
from tools.tcpproxy import TcpProxy

from tests.pg import drop_schema, fresh_schema, pg_url

FAR = 2**62


@pytest.fixture
def schema() -> Iterator[str]:
    name = fresh_schema()
    yield name
    with contextlib.suppress(Exception):
        drop_schema(name)


def test_kill_9_cycles_on_postgresql_lose_nothing(tmp_path: Path, schema: str) -> None:
    summary = asyncio.run(run(pg_url(schema), None, cycles=2, seed=5, log=tmp_path / "log"))
    assert summary.ok, (summary.problems, [c.problems for c in summary.cycles])
    assert summary.promises > 30
    assert summary.owed_tasks > 0


def _via(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    netloc = (
        f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    )
    return urlunsplit(parts._replace(netloc=netloc))


def test_postgresql_down_answers_503_and_recovers(tmp_path: Path, schema: str) -> None:
    real = urlsplit(pg_url(schema))
    proxy = TcpProxy(real.hostname or "127.0.0.1", real.port or 5432)
    proxy.up()
    # requests wait for the database at most 2 s, then 503
    server = Server(_via(proxy, pg_url(schema, timeout_ms=2000)), log=tmp_path / "log")
    try:
        server.start()
        for i in range(5):
            r = httpx.post(f"{server.url}/promises", json={"id": f"p{i}", "timeout": FAR})
            assert r.status_code == 201
        proxy.down()
        r = httpx.post(f"{server.url}/promises", json={"id": "q", "timeout": FAR}, timeout=60)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == 50300
        r = httpx.get(f"{server.url}/promises/p0", timeout=60)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == 50300
        assert httpx.get(f"{server.url}/readyz", timeout=60).status_code == 503
        assert server.proc is not None and server.proc.poll() is None  # still serving
        proxy.up()
        deadline = time.monotonic() + 60
        while True:  # recovers by itself: no restart
            r = httpx.post(
                f"{server.url}/promises", json={"id": "after", "timeout": FAR}, timeout=60
            )
            if r.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 201, r.text
        for i in range(5):
            assert httpx.get(f"{server.url}/promises/p{i}").status_code == 200
        assert httpx.get(f"{server.url}/promises/q").status_code == 404  # refused = not written
    finally:
        server.kill9()
        proxy.close()
