"""Results of executions awaited through a server, all on one stream.

``Handle.result()`` against a server used to hold one long poll (``GET
/promises/{id}?wait=…``) per awaited execution. Instead, a remote ``Troth`` opens one results
stream (``GET /sdk/results/{session}``) and *watches* each awaited promise with a ``watch``
op, which rides in the same ``POST /sdk/batch`` requests as the runtime's other writes; the
server answers a completed promise at once and sends the others on the stream when they
complete. Watches live in the server's memory only: when the stream breaks, the runtime
reconnects and watches every promise it still waits for again. Against a server without
these routes (or if anything else goes wrong) ``wait`` answers ``None`` and the caller falls
back to the long poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from typing import TYPE_CHECKING, Final

import httpx
import msgspec

from troth.client import _EventParser
from troth.engine.sdkops import Op, OpResult
from troth.model import Promise

if TYPE_CHECKING:
    from troth.sdk.runtime import Troth

log = logging.getLogger("troth.sdk")

#: The code of a watch op whose session has no open stream (``troth.server.routes_sdk``).
SESSION_UNKNOWN: Final = 40410


class _Results(msgspec.Struct):
    promises: list[Promise]


_decode_results = msgspec.json.Decoder(_Results).decode


class RemoteResults:
    def __init__(self, troth: Troth) -> None:
        self.t = troth
        self.session = uuid.uuid4().hex
        self.waiting: dict[str, list[asyncio.Future[Promise | None]]] = {}
        self.connected = asyncio.Event()
        self.unsupported = False
        #: promises received on the stream (for tests and benchmarks)
        self.received = 0

    # -- waiting ---------------------------------------------------------------------------

    async def wait(self, id: str, timeout: float) -> Promise | None:
        """The promise once completed; ``None`` when the stream cannot tell (the caller
        then long-polls) or ``timeout`` seconds passed."""
        if self.unsupported:
            return None
        if not self.connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.connected.wait(), min(timeout, 5.0))
            if not self.connected.is_set() or self.unsupported:
                return None
        fut: asyncio.Future[Promise | None] = asyncio.get_running_loop().create_future()
        futs = self.waiting.setdefault(id, [])
        futs.append(fut)
        if len(futs) == 1:
            self._watch(id)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return None
        finally:
            futs.remove(fut)
            if not futs and self.waiting.get(id) is futs:
                del self.waiting[id]

    def _watch(self, id: str) -> None:
        op = Op(kind="watch", id=id, session=self.session)
        self.t.submit(op).add_done_callback(functools.partial(self._watched, id))

    def _watched(self, id: str, answer: asyncio.Future[OpResult]) -> None:
        if answer.cancelled():
            return self._resolve(id, None)
        exc = answer.exception()
        if exc is not None:
            return self._resolve(id, None)
        result = answer.result()
        if result.status == 200 and result.promise is not None:
            self._resolve(id, result.promise)
        elif result.status == 404 and result.code == SESSION_UNKNOWN:
            pass  # the stream broke: the reconnect watches everything again
        elif result.status != 202:
            self._resolve(id, None)  # not found, or the server cannot watch: long-poll

    def _resolve(self, id: str, p: Promise | None) -> None:
        for fut in self.waiting.get(id, ()):
            if not fut.done():
                fut.set_result(p)

    # -- the stream ------------------------------------------------------------------------

    async def listen(self) -> None:
        client = self.t._client
        path = f"/sdk/results/{self.session}"
        backoff = 0.1
        while True:
            try:
                timeout = httpx.Timeout(client.timeout, read=None)
                headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
                async with client._http.stream(
                    "GET", path, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code in (403, 404, 405):
                        self.unsupported = True  # an older server: long polls it is
                        self.connected.set()
                        return
                    response.raise_for_status()
                    parser = _EventParser()
                    async for line in response.aiter_lines():
                        if line.startswith(": connected"):
                            self._connected()
                            backoff = 0.1
                            continue
                        data = parser.feed(line)
                        if data is not None:
                            for p in _decode_results(data).promises:
                                self.received += 1
                                self._resolve(p.id, p)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("results stream: %s; reconnecting in %.1fs", exc, backoff)
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _connected(self) -> None:
        self.connected.set()
        for id in list(self.waiting):  # after a reconnect: watch again what we wait for
            self._watch(id)
