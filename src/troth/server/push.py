"""HTTP push: task messages POSTed to ``http(s)://`` receivers (API.md 3).

A send counts as delivered on any 2xx answer. Anything else (refused connection, timeout,
non-2xx) is a failure: the dispatcher puts the task back with exponential backoff and sends
it again, until the receiver answers or the task times out.
"""

from __future__ import annotations

import logging

import httpx

from troth.model import Recv
from troth.server.stream import StreamConn, StreamRegistry

log = logging.getLogger("troth.push")


class ServerDelivery:
    """The server's ``Delivery``: SSE worker streams for ``poll``, HTTP POST for ``http``."""

    def __init__(self, streams: StreamRegistry, timeout_s: float = 10.0) -> None:
        self.streams = streams
        self._http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    def stream_for(self, recv: Recv) -> StreamConn | None:
        return self.streams.stream_for(recv)

    async def push(self, recv: Recv, message: bytes) -> bool:
        assert recv.url is not None
        headers = {"content-type": "application/json", **(recv.headers or {})}
        try:
            resp = await self._http.post(recv.url, content=message, headers=headers)
        except httpx.HTTPError as exc:
            log.info("push to %s failed: %s", recv.url, exc)
            return False
        if not resp.is_success:
            log.info("push to %s answered %d", recv.url, resp.status_code)
        return resp.is_success

    async def aclose(self) -> None:
        await self._http.aclose()
