"""Worker streams across server processes that share one PostgreSQL database.

A worker's stream is connected to one process, but any process's dispatcher may pick up a
task for that worker's group. Each process therefore tells the others which streams it has
(``presence``: on every change and every ``PRESENCE_EVERY_S``, forgotten after
``PRESENCE_TTL_S`` without news), and a dispatcher with no local stream for a task hands the
message to the process that has one (``deliver``), through the store's notification channel.

Delivery keeps the dispatcher's contract: the task was marked ENQUEUED in a committed
transaction before the message leaves, so a message lost on the way (the other process died
or its stream closed) only delays the task until its claim time runs out and it is sent
again with ``counter + 1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final, Protocol

import msgspec

from troth.engine import Engine
from troth.engine.dispatch import Sink
from troth.errors import TrothError
from troth.model import Recv
from troth.server.stream import StreamRegistry

log = logging.getLogger("troth.cluster")

PRESENCE_EVERY_S: Final = 1.0
PRESENCE_TTL_S: Final = 5.0
_recv_decode = msgspec.json.Decoder(Recv).decode


class Bus(Protocol):
    """What a shared store offers for talking to the other processes."""

    origin: str

    def subscribe(self, listener: Callable[[dict[str, Any] | None], None]) -> None: ...

    def publish(self, event: dict[str, Any]) -> Future[None]: ...


class Inner(Protocol):
    def stream_for(self, recv: Recv) -> Sink | None: ...

    async def push(self, recv: Recv, message: bytes) -> bool: ...

    async def aclose(self) -> None: ...


class _RemoteSink:
    """A stream connected to another process: messages go there as notifications."""

    def __init__(self, bus: Bus, origin: str, recv: Recv) -> None:
        self._bus = bus
        self._origin = origin
        self._recv = recv

    def send(self, message: bytes) -> bool:
        event = {
            "x": "deliver",
            "to": self._origin,
            "r": msgspec.json.encode(self._recv).decode(),
            "m": message.decode(),
        }
        try:
            self._bus.publish(event)
        except TrothError as exc:  # too large for a notification: its claim time runs out
            log.warning("cannot hand a task message to process %s: %s", self._origin, exc)
            return False
        return True


class ClusterDelivery:
    """The server's ``Delivery`` when several processes share the store."""

    def __init__(self, inner: Inner, streams: StreamRegistry, bus: Bus) -> None:
        self.inner = inner
        self.streams = streams
        self.bus = bus
        #: origin -> (monotonic time the news expires, group -> stream ids)
        self._remote: dict[str, tuple[float, dict[str, list[str]]]] = {}
        self._last: dict[str, list[str]] | None = None

    def attach(self, engine: Engine) -> None:
        """Run presence with the engine and announce before parked tasks are released."""
        engine.extra_loops.append(("troth-cluster-presence", self._presence_loop))
        if engine.dispatcher is not None:
            engine.dispatcher.announce = self.announce

    # -- Delivery ------------------------------------------------------------------------

    def stream_for(self, recv: Recv) -> Sink | None:
        local = self.inner.stream_for(recv)
        if local is not None:
            return local
        origin = self._holder(recv)
        return _RemoteSink(self.bus, origin, recv) if origin is not None else None

    async def push(self, recv: Recv, message: bytes) -> bool:
        return await self.inner.push(recv, message)

    async def aclose(self) -> None:
        await self.inner.aclose()

    # -- presence ------------------------------------------------------------------------

    def _holder(self, recv: Recv) -> str | None:
        """A process with a stream for ``recv`` (its preferred id first, for ``any``)."""
        now = time.monotonic()
        fallback = None
        for origin, (expires, groups) in list(self._remote.items()):
            if expires < now:
                del self._remote[origin]
                continue
            ids = groups.get(recv.group or "")
            if not ids:
                continue
            if recv.id is not None and recv.id in ids:
                return origin
            if recv.mode != "uni" and fallback is None:
                fallback = origin
        return fallback

    async def announce(self) -> None:
        """Tell the other processes which streams this one has, and wait until it is sent."""
        groups = self.streams.groups()
        self._last = groups
        try:
            await asyncio.wrap_future(self.bus.publish({"x": "streams", "g": groups}))
        except TrothError as exc:
            log.warning("announcing worker streams: %s", exc)

    def _on_event(self, event: dict[str, Any] | None) -> None:
        if event is None:
            return
        kind = event.get("x")
        if kind == "streams":
            groups = event.get("g")
            origin = event.get("o")
            if isinstance(groups, dict) and isinstance(origin, str):
                self._remote[origin] = (time.monotonic() + PRESENCE_TTL_S, groups)
        elif kind == "deliver" and event.get("to") == self.bus.origin:
            try:
                recv = _recv_decode(event["r"])
                message = str(event["m"]).encode()
            except (KeyError, msgspec.DecodeError):
                log.warning("ignoring a malformed deliver event")
                return
            sink = self.inner.stream_for(recv)
            if sink is None or not sink.send(message):
                log.info("stream for %s gone; its task is sent again after its claim time", recv)

    async def _presence_loop(self) -> None:
        self.bus.subscribe(self._on_event)
        beat = 0.0
        while True:
            groups = self.streams.groups()
            now = time.monotonic()
            if groups != self._last or now - beat >= PRESENCE_EVERY_S:
                beat = now
                with contextlib.suppress(Exception):
                    await self.announce()
            await asyncio.sleep(0.2)
