"""Logging setup for ``troth serve``: text or JSON lines on stderr.

The access log (``AccessLog``) writes one line per request, as the logger ``troth.access``
at info would, in the same text or JSON format — but without the ``logging`` machinery on
the hot path: a ``LogRecord``, a ``Formatter`` pass and a flushed write cost more CPU than
the durable write itself at 15k requests/s. Lines are formatted with one f-string (the
timestamp prefix is cached per second), buffered, and written in blocks: when 256 lines are
waiting or 0.1 s after the first one, whichever comes first, and at shutdown. It is off when
``troth.access`` is not enabled for info (``--log-level warning``). Credentials never reach
a log line: the front middleware logs neither headers nor query strings.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import logging
import sys
import time
from typing import Any, Final, TextIO

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


class AccessLog:
    """Buffered access-log lines (see the module docstring).

    Args:
        fmt: ``text`` (the ``TEXT_FORMAT`` layout) or ``json`` (``JsonFormatter``'s fields).
        stream: where lines go; default ``sys.stderr`` at the time of each write.
    """

    FLUSH_LINES: Final = 256
    FLUSH_AFTER_S: Final = 0.1

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.json = fmt == "json"
        self._stream = stream
        self._buf: list[str] = []
        self._armed = False
        self._second = -1
        self._prefix = ""
        atexit.register(self.flush)

    @staticmethod
    def enabled() -> bool:
        """Whether the ``troth.access`` logger would log at info."""
        return logging.getLogger(ACCESS).isEnabledFor(logging.INFO)

    def __call__(
        self, method: str, path: str, status: int, ms: float, request_id: str, route: str
    ) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            if self.json:
                self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            else:
                self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        msec = int((now - second) * 1000)
        if self.json:
            ts = f"{self._prefix}.{msec:03d}+00:00"
            line = _encode(
                {
                    "ts": ts,
                    "level": "info",
                    "logger": ACCESS,
                    "msg": "request",
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": ms,
                    "request_id": request_id,
                    "route": route,
                }
            ).decode()
        else:
            # A percent-encoded newline in a path must not forge a second log line.
            if not path.isprintable():
                path = path.encode("unicode_escape").decode()
            if not request_id.isprintable():
                request_id = request_id.encode("unicode_escape").decode()
            line = (
                f"{self._prefix},{msec:03d} INFO {ACCESS} {method} {path} {status} "
                f"{ms:.2f}ms id={request_id} route={route}"
            )
        buf = self._buf
        buf.append(line)
        if len(buf) >= self.FLUSH_LINES:
            self.flush()
        elif not self._armed:
            self._armed = True
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_AFTER_S, self.flush)
            except RuntimeError:  # no loop (a synchronous caller): write at once
                self.flush()

    def flush(self) -> None:
        self._armed = False
        if not self._buf:
            return
        text = "\n".join(self._buf) + "\n"
        self._buf.clear()
        stream = self._stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # stderr closed at exit
            pass


__all__ = ["ACCESS", "AccessLog", "JsonFormatter", "log_loop_errors", "setup_logging"]
