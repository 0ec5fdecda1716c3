"""Logging setup for ``troth serve``: text or JSON lines on stderr.

The access log is the logger ``troth.access``: one line per request at info, written by the
server's front middleware (``troth.server.front``) with the arguments ``(method, path,
status, milliseconds, request id, route)``; the JSON formatter turns those into fields.
Credentials never reach a log line: the front middleware logs neither headers nor query
strings, only the principal's name (a user name or a token's label) at debug.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
from typing import Any, Final

import msgspec

ACCESS: Final = "troth.access"
_ACCESS_FIELDS: Final = ("method", "path", "status", "ms", "request_id", "route")
_encode: Final = msgspec.json.encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and for access lines their fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        args = record.args
        if record.name == ACCESS and isinstance(args, tuple) and len(args) == 6:
            out["msg"] = "request"
            out.update(zip(_ACCESS_FIELDS, args, strict=True))
        else:
            out["msg"] = record.getMessage()
        context = getattr(record, "context", None)
        if isinstance(context, dict):
            out.update(context)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _encode(out).decode()


TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger (replacing its handlers) for ``level`` and ``fmt``."""
    name = level.upper()
    numeric = 5 if name == "TRACE" else logging.getLevelName(name)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # uvicorn's loggers propagate to ours (uvicorn is started with log_config=None).
    for noisy in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(noisy).handlers.clear()
        logging.getLogger(noisy).propagate = True


def log_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log exceptions that escape background tasks with the task's name as context."""
    log = logging.getLogger("troth.loop")

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        task = context.get("task") or context.get("future")
        name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
        log.error(
            "background task %s failed: %s",
            name,
            context.get("message", "unhandled exception"),
            exc_info=exc if isinstance(exc, BaseException) else None,
            extra={"context": {"task": name}},
        )

    loop.set_exception_handler(handler)


__all__ = ["ACCESS", "JsonFormatter", "log_loop_errors", "setup_logging"]
