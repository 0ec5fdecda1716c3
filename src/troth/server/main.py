"""Run the server under uvicorn with graceful shutdown.

On SIGTERM/SIGINT uvicorn stops accepting connections and waits for in-flight requests; we
additionally wake every long-poll waiter and close every worker stream at once (each answers
with what it has), so shutdown is not held up by clients waiting for minutes. The app's
lifespan then stops the engine, which lets queued group commits finish before the store
closes. With ``poll_port``, a second listener in the same process serves only the worker
stream at ``GET /{group}/{id}`` and stops with the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
from collections.abc import Generator, Mapping
from types import FrameType
from typing import Any, Literal, cast

import uvicorn
import uvloop

from troth.engine import Engine
from troth.engine.dispatch import TaskSettings
from troth.logs import AccessLog, log_loop_errors, setup_logging
from troth.server.app import DEFAULT_MAX_BODY, create_app, create_poll_app
from troth.server.auth import Authenticator
from troth.server.cluster import Bus, ClusterDelivery
from troth.server.metrics import MeasuredDelivery, Metrics
from troth.server.push import ServerDelivery
from troth.server.stream import StreamRegistry
from troth.store import create_store


class _Server(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        engine: Engine,
        streams: StreamRegistry,
        followers: list[uvicorn.Server],
    ) -> None:
        super().__init__(config)
        self._engine = engine
        self._streams = streams
        self._followers = followers

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._engine.begin_shutdown()
        self._streams.close_all()
        for follower in self._followers:
            follower.should_exit = True
        super().handle_exit(sig, frame)


class _Follower(uvicorn.Server):
    """A listener that leaves signal handling to the main server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _config(
    app: Any, host: str, port: int, log_level: str, lifespan: Literal["on", "off"]
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        # Logging is configured by ``troth.logs.setup_logging`` (text or JSON lines).
        log_config=None,
        http="httptools",
        loop="none",
        lifespan=lifespan,
        timeout_graceful_shutdown=30,
        backlog=4096,
        # No X-Forwarded-* rewriting: troth does not use the client address (yet), and the
        # middleware costs CPU on every request.
        proxy_headers=False,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8001,
    store_url: str = "sqlite:///troth.db",
    log_level: str = "info",
    poll_port: int | None = None,
    public_url: str | None = None,
    receivers: Mapping[str, Any] | None = None,
    log_format: str = "text",
    access_log: bool = True,
    auth: Authenticator | None = None,
    metrics_public: bool = True,
    max_body: int = DEFAULT_MAX_BODY,
) -> None:
    """Serve the API until SIGTERM/SIGINT.

    Args:
        public_url: the base URL workers use to reach this server (task messages carry
            claim/complete/heartbeat links on it); default ``http://<host>:<port>``.
        receivers: logical receiver names, e.g. ``{"mailers": "poll://any@mailers"}``.
        log_format: ``text`` or ``json`` (one object per line).
        access_log: one line per request (``troth.logs.AccessLog``) while the
            ``troth.access`` logger is enabled for info.
        auth: credentials checked on every non-public route; ``None`` is auth off.
    """
    setup_logging(log_level, log_format)
    if auth is None and not _loopback(host):
        logging.getLogger("troth.server").warning(
            "listening on %s without authentication: anyone who reaches this port can read "
            "and complete promises (see --auth)",
            host,
        )
    streams = StreamRegistry()
    store = create_store(store_url)
    server_delivery: ServerDelivery | ClusterDelivery = ServerDelivery(streams)
    if getattr(store, "shared", False):  # other processes share this store: see cluster.py
        server_delivery = ClusterDelivery(server_delivery, streams, cast(Bus, store))
    settings = TaskSettings(base_url=(public_url or f"http://{host}:{port}").rstrip("/"))
    delivery = MeasuredDelivery(server_delivery, None)
    engine = Engine(store, delivery=delivery, task_settings=settings, receivers=receivers)
    if isinstance(server_delivery, ClusterDelivery):
        server_delivery.attach(engine)
    metrics = Metrics(engine, streams)
    delivery.metrics = metrics
    app = create_app(
        engine,
        streams=streams,
        auth=auth,
        metrics=metrics,
        access_log=AccessLog(log_format) if access_log and AccessLog.enabled() else False,
        metrics_public=metrics_public,
        max_body=max_body,
    )
    followers: list[uvicorn.Server] = []
    if poll_port is not None:
        followers.append(
            _Follower(_config(create_poll_app(app), host, poll_port, log_level, "off"))
        )
    server = _Server(_config(app, host, port, log_level, "on"), engine, streams, followers)

    async def main() -> None:
        log_loop_errors(asyncio.get_running_loop())
        try:
            await asyncio.gather(server.serve(), *(f.serve() for f in followers))
        finally:
            await server_delivery.aclose()

    # Requests allocate many short-lived objects: collect the young generation every 50,000
    # allocations instead of 700, and keep what exists at startup out of full collections.
    # Measured: about 10% less CPU per durable write (benchmarks/README.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
