"""Start, kill -9 and restart ``troth serve`` processes on loopback (for the reliability tools).

Like ``tests/server_process.py``, but usable outside pytest and able to start the server
through a wrapper module (``tools.linearize.buggy_server``) that plants a bug first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``troth serve`` process on 127.0.0.1 (same port across restarts)."""

    def __init__(
        self,
        store: str,
        *,
        port: int | None = None,
        log: Path | None = None,
        bug: str | None = None,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.port = port or free_port()
        self.log = log
        self.bug = bug
        self.extra = extra
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        head = [sys.executable, "-m", "troth"]
        if self.bug is not None:
            head = [sys.executable, "-m", "tools.linearize.buggy_server", self.bug]
        return [
            *head,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--store",
            self.store,
            "--log-level",
            "warning",
            *self.extra,
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait (polling ``/readyz``) until it serves."""
        env = dict(os.environ)
        env.pop("TROTH_STORE", None)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        env.update(self.env or {})
        out: int | IO[bytes] = subprocess.DEVNULL
        if self.log is not None:
            self._log = out = open(self.log, "ab")  # noqa: SIM115 (closed in _close_log)
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_log()
                raise RuntimeError(f"troth serve exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"troth serve on {self.url} did not become ready in {timeout} s")

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self._close_log()

    def terminate(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._close_log()

    def rss_kib(self) -> int:
        """Resident set size of the server process (from /proc), KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill9()
