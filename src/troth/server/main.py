"""Run the server under uvicorn with graceful shutdown.

On SIGTERM/SIGINT uvicorn stops accepting connections and waits for in-flight requests; we
additionally wake every long-poll waiter at once (each answers with the promise as it is),
so shutdown is not held up for minutes by clients waiting on promises. The app's lifespan
then stops the engine, which lets queued group commits finish before the store closes.
"""

from __future__ import annotations

import logging
from types import FrameType

import uvicorn

from troth.engine import Engine
from troth.server.app import create_app
from troth.store import create_store


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self._engine = engine

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._engine.begin_shutdown()
        super().handle_exit(sig, frame)


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8001,
    store_url: str = "sqlite:///troth.db",
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve the API until SIGTERM/SIGINT."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    engine = Engine(create_store(store_url))
    app = create_app(engine)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        http="httptools",
        loop="uvloop",
        lifespan="on",
        timeout_graceful_shutdown=30,
        backlog=4096,
        # No X-Forwarded-* rewriting: troth does not use the client address (yet), and the
        # middleware costs CPU on every request.
        proxy_headers=False,
    )
    _Server(config, engine).run()
