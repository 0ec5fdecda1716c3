"""CPU cost per request of the front layer (request id, metrics, auth, access log).

    .venv/bin/python benchmarks/front.py [--requests 50000] [--rounds 5]

Calls ``troth.server.front.Front`` around a trivial ASGI app in-process (no sockets, no HTTP
parsing, no storage), so the numbers are the layer's own CPU time (``time.process_time``),
best and median of the rounds. See docs/metrics.md and docs/logging.md for the results.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from troth.engine import Engine
from troth.logs import AccessLog
from troth.server.auth import Authenticator
from troth.server.front import Front
from troth.server.metrics import Metrics
from troth.store.memory import MemoryStore

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


async def bare(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _send(message: Message) -> None:
    return None


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


HEADERS = [
    (b"host", b"127.0.0.1:8001"),
    (b"content-type", b"application/json"),
    (b"content-length", b"60"),
    (b"authorization", b"Bearer t"),
]


async def run(app: App, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        scope = {"type": "http", "method": "POST", "path": "/promises", "headers": HEADERS}
        await app(scope, _receive, _send)
    return (time.process_time() - start) / n * 1e6


async def measure(args: argparse.Namespace, devnull: Any) -> None:
    metrics = Metrics(Engine(MemoryStore()))
    variants: dict[str, App] = {
        "bare ASGI app": bare,
        "front: metrics": Front(bare, auth=None, metrics=metrics, access_log=None),
        "front: metrics + bearer auth": Front(
            bare, auth=Authenticator("token", tokens=["t"]), metrics=metrics, access_log=None
        ),
        "front: metrics + access log (text)": Front(
            bare, auth=None, metrics=metrics, access_log=AccessLog("text", devnull)
        ),
        "front: metrics + access log (json)": Front(
            bare, auth=None, metrics=metrics, access_log=AccessLog("json", devnull)
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, app in variants.items():
            results[name].append(await run(app, args.requests))
    for name, xs in results.items():
        xs.sort()
        print(f"{name:38s} best {xs[0]:6.2f} us   median {xs[len(xs) // 2]:6.2f} us CPU/request")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with open("/dev/null", "w") as devnull:
        asyncio.run(measure(args, devnull))


if __name__ == "__main__":
    main()
