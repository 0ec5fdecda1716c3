"""Logging (docs/logging.md): one access line per request with its request id, JSON lines,
background errors with context."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path

import httpx
import pytest

from tests.server_process import running_server
from troth.engine import Engine
from troth.logs import ACCESS, AccessLog, JsonFormatter, log_loop_errors
from troth.server import create_app

FAR = 2**63 - 1


async def test_one_access_line_per_request_with_request_id(engine: Engine) -> None:
    out = io.StringIO()
    access = AccessLog("text", stream=out)
    app = create_app(engine, manage=False, access_log=access)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://troth"
    ) as c:
        r1 = await c.post(
            "/promises", json={"id": "a/1", "timeout": FAR}, headers={"X-Request-Id": "rid-1"}
        )
        r2 = await c.get("/promises/a/1", headers={"Request-Id": "rid-2"})
        r3 = await c.get("/promises/none")
        r4 = await c.get("/promises/none")
    assert r1.headers["x-request-id"] == "rid-1"
    assert r2.headers["x-request-id"] == "rid-2"
    made = r3.headers["x-request-id"], r4.headers["x-request-id"]
    assert made[0] and made[1] and made[0] != made[1]
    access.flush()
    lines = out.getvalue().splitlines()
    pattern = re.compile(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO troth\.access "
        r"(\S+) (\S+) (\d+) \d+\.\d\dms id=(\S+) route=(\S+)$"
    )
    parsed = [m.groups() for line in lines if (m := pattern.match(line))]
    assert len(parsed) == len(lines) == 4, lines
    assert parsed == [
        ("POST", "/promises", "201", "rid-1", "/promises"),
        ("GET", "/promises/a/1", "200", "rid-2", "/promises/{id}"),
        ("GET", "/promises/none", "404", made[0], "/promises/{id}"),
        ("GET", "/promises/none", "404", made[1], "/promises/{id}"),
    ]


async def test_access_lines_are_flushed_without_more_traffic(engine: Engine) -> None:
    out = io.StringIO()
    app = create_app(engine, manage=False, access_log=AccessLog("json", stream=out))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://troth"
    ) as c:
        await c.get("/ping", headers={"X-Request-Id": "lonely"})
    for _ in range(500):  # the 0.1 s flush timer, on a loaded machine
        if out.getvalue():
            break
        await asyncio.sleep(0.01)
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["request_id"] == "lonely" and record["logger"] == ACCESS
    assert (record["method"], record["path"], record["status"]) == ("GET", "/ping", 200)


async def test_access_log_off_writes_nothing(engine: Engine) -> None:
    app = create_app(engine, manage=False, access_log=False)
    assert app.state.access_log is None
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://troth"
    ) as c:
        resp = await c.get("/ping")
    assert resp.headers["x-request-id"]


def test_access_log_follows_the_logger_level() -> None:
    logger = logging.getLogger(ACCESS)
    old = logger.level
    try:
        logger.setLevel(logging.WARNING)
        assert not AccessLog.enabled()
        logger.setLevel(logging.INFO)
        assert AccessLog.enabled()
    finally:
        logger.setLevel(old)


def test_json_formatter_fields() -> None:
    fmt = JsonFormatter()
    record = logging.LogRecord(
        ACCESS, logging.INFO, __file__, 1, "%s %s %d %.2fms id=%s route=%s",
        ("GET", "/promises/x", 200, 1.25, "rid", "/promises/{id}"), None,
    )  # fmt: skip
    out = json.loads(fmt.format(record))
    assert out["msg"] == "request" and out["level"] == "info" and out["logger"] == ACCESS
    assert (out["method"], out["path"], out["status"], out["ms"]) == (
        "GET", "/promises/x", 200, 1.25,
    )  # fmt: skip
    assert (out["request_id"], out["route"]) == ("rid", "/promises/{id}")
    assert out["ts"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        err = logging.LogRecord("troth.x", logging.ERROR, __file__, 1, "failed %s", ("a",),
                                sys.exc_info())  # fmt: skip
    out = json.loads(fmt.format(err))
    assert out["msg"] == "failed a" and "ValueError: boom" in out["exc"]


async def test_background_task_errors_are_logged_with_the_task_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    old = loop.get_exception_handler()
    log_loop_errors(loop)
    try:

        async def fail() -> None:
            raise RuntimeError("loop went wrong")

        task = loop.create_task(fail(), name="troth-test-loop")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert task.done()
        loop.call_exception_handler(
            {"message": "Task exception was never retrieved", "exception": task.exception(),
             "task": task}
        )  # fmt: skip
    finally:
        loop.set_exception_handler(old)
    [record] = [r for r in caplog.records if r.name == "troth.loop"]
    assert "troth-test-loop" in record.getMessage()
    assert record.context == {"task": "troth-test-loop"}  # type: ignore[attr-defined]
    assert record.exc_info is not None and "loop went wrong" in str(record.exc_info[1])


def test_serve_writes_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with running_server("memory://", log_path=log, extra_args=("--log-format", "json")) as server:
        resp = httpx.post(
            f"{server.url}/promises",
            json={"id": "j/1", "timeout": FAR},
            headers={"X-Request-Id": "json-rid-7", "Authorization": "Bearer not-logged"},
        )
        assert resp.status_code == 201
        server.terminate()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    access = [x for x in lines if x["logger"] == ACCESS and x.get("request_id") == "json-rid-7"]
    assert len(access) == 1
    assert access[0]["method"] == "POST" and access[0]["status"] == 201
    assert access[0]["route"] == "/promises" and isinstance(access[0]["ms"], float)
    assert any(x["logger"].startswith("uvicorn") for x in lines)  # uvicorn's lines too
    assert "not-logged" not in log.read_text()


def test_only_loopback_listeners_go_without_a_warning() -> None:
    from troth.server.main import _loopback

    assert _loopback("127.0.0.1") and _loopback("localhost") and _loopback("::1")
    assert not _loopback("0.0.0.0") and not _loopback("10.1.2.3") and not _loopback("example")


def test_a_newline_in_a_path_cannot_forge_a_log_line() -> None:
    out = io.StringIO()
    access = AccessLog("text", stream=out)
    access("GET", "/promises/a\n2026-01-01 INFO troth.access forged", 404, 0.1, "r\x01", "x")
    access.flush()
    [line] = out.getvalue().splitlines()
    assert "/promises/a\\n2026-01-01 INFO troth.access forged" in line
    assert "id=r\\x01" in line
