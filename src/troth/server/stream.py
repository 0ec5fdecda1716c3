"""Worker streams: ``GET /poll/{group}/{id}`` as Server-Sent Events (API.md 3).

One stream per ``(group, id)``: a new connection replaces the old one, which is closed.
Messages are queued per stream and written as ``data: <json>`` events; a comment line every
``keepalive_s`` keeps proxies and load balancers from closing an idle stream. A message
queued on a stream that then disconnects is not lost for good: its task was marked ENQUEUED,
its claim time runs out, and it is sent again with ``counter + 1``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

from troth.model import Recv


class StreamConn:
    """One connected worker stream."""

    def __init__(self, group: str, id: str) -> None:
        self.group = group
        self.id = id
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def send(self, message: bytes) -> bool:
        if self.closed:
            return False
        self.queue.put_nowait(message)
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    async def events(self, keepalive_s: float) -> AsyncIterator[bytes]:
        """The SSE body: a first comment, then one event per message, keep-alives between."""
        yield b": connected\n\n"
        while True:
            try:
                message = await asyncio.wait_for(self.queue.get(), keepalive_s)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if message is None:
                return
            # Messages queued meanwhile go out in the same write (one send, not one each).
            chunk = [b"data: ", message, b"\n\n"]
            while not self.queue.empty():
                more = self.queue.get_nowait()
                if more is None:
                    yield b"".join(chunk)
                    return
                chunk += (b"data: ", more, b"\n\n")
            yield b"".join(chunk)


class StreamRegistry:
    """Connected worker streams by group and id; picks the stream for a ``poll`` receiver."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, StreamConn]] = {}
        self._turn = itertools.count()

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())

    def connect(self, group: str, id: str) -> StreamConn:
        members = self._groups.setdefault(group, {})
        old = members.get(id)
        if old is not None:
            old.close()  # the newer stream wins
        conn = members[id] = StreamConn(group, id)
        return conn

    def disconnect(self, conn: StreamConn) -> None:
        conn.close()
        members = self._groups.get(conn.group)
        if members is not None and members.get(conn.id) is conn:
            del members[conn.id]
            if not members:
                del self._groups[conn.group]

    def stream_for(self, recv: Recv) -> StreamConn | None:
        """``uni@group/id``: only that stream; ``any@group[/id]``: that one if connected,
        else the group's streams in turn."""
        members = self._groups.get(recv.group or "")
        if not members:
            return None
        if recv.id is not None and recv.id in members:
            return members[recv.id]
        if recv.mode == "uni":
            return None
        conns = list(members.values())
        return conns[next(self._turn) % len(conns)]

    def groups(self) -> dict[str, list[str]]:
        """The connected streams: group -> stream ids."""
        return {group: sorted(members) for group, members in self._groups.items()}

    def close_all(self) -> None:
        for members in list(self._groups.values()):
            for conn in list(members.values()):
                self.disconnect(conn)
