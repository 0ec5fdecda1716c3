"""Record a history: concurrent clients issue random promise operations over real HTTP.

Each client is an asyncio task with its own connection (to ``urls[client % len(urls)]``, so
several server processes on one database are exercised together). Clients pick from a small
sliding window of ids (``<prefix>/<k:06d>``), so that operations on one id overlap in time; the
window moves on as the run proceeds so that ids are not all completed after the first
second. Idempotency keys come from a tiny set (so keys match often), ``Strict`` is random,
some promises are timers and some have deadlines a few hundred ms away (so lazy timeouts race
with completions).

Every operation is recorded with the client's wall-clock invocation and return times (ms)
and the full response. A request that failed without an answer, or answered 5xx, has an
unknown outcome (``ret = inf``): it may or may not have taken effect.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from tools.linearize.model import TARGETS, TIMER_TAG, Op

FAR = 3_600_000  # a deadline an hour away: never reached during a run


@dataclass
class RunConfig:
    urls: list[str]
    clients: int = 8
    ops: int = 1000
    ids: int = 4  # size of the sliding window of ids
    advance_every: int = 30  # the window moves by one id every this many operations
    seed: int = 0
    prefix: str = ""
    request_timeout: float = 10.0
    #: weights of create, complete, get, wait, search
    mix: tuple[int, int, int, int, int] = (30, 35, 17, 5, 13)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


PARAMS: list[dict[str, Any] | None] = [
    None,
    {"data": _b64("p1")},
    {"data": _b64("p2"), "headers": {"h": "1"}},
]
VALUES: list[dict[str, Any] | None] = [None, {"data": _b64("v1")}, {"data": _b64("v2")}, {}]
KEYS: list[str | None] = [None, "a", "b"]


class Recorder:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.prefix = cfg.prefix or f"lin-{secrets.token_hex(4)}"
        self.ops: list[Op] = []
        self.issued = 0

    def _pick_id(self, rng: random.Random) -> str:
        base = self.issued // self.cfg.advance_every
        return f"{self.prefix}/{base + rng.randrange(self.cfg.ids):06d}"

    def _plan(self, rng: random.Random) -> tuple[str, str, str, dict[str, Any], dict[str, Any]]:
        """(kind, id, method+path, args for the model, request kwargs)."""
        kind = rng.choices(["create", "complete", "get", "wait", "search"], self.cfg.mix)[0]
        id = self._pick_id(rng)
        headers: dict[str, str] = {}
        ikey = rng.choice(KEYS)
        strict = rng.random() < 0.5
        if ikey is not None:
            headers["Idempotency-Key"] = ikey
        if strict:
            headers["Strict"] = rng.choice(["true", "1", "T"])
        elif rng.random() < 0.3:
            headers["Strict"] = "false"
        if kind == "create":
            now = int(time.time() * 1000)
            timeout = now + FAR if rng.random() < 0.75 else now + rng.randint(-50, 400)
            tags: dict[str, str] = {}
            if rng.random() < 0.25:
                tags[TIMER_TAG] = "true"
            if rng.random() < 0.3:
                tags["team"] = rng.choice(["x", "y"])
            param = rng.choice(PARAMS)
            body: dict[str, Any] = {"id": id, "timeout": timeout}
            if param is not None or rng.random() < 0.5:
                body["param"] = param
            if tags:
                body["tags"] = tags
            args = {"ikey": ikey, "strict": strict, "timeout": timeout, "param": param}
            args["tags"] = tags
            return "create", id, "POST /promises", args, {"json": body, "headers": headers}
        if kind == "complete":
            target = rng.choice(TARGETS)
            value = rng.choice(VALUES)
            wire_state = target if rng.random() < 0.8 else target.lower()
            body = {"state": wire_state}
            if value is not None:
                body["value"] = value
            args = {"ikey": ikey, "strict": strict, "state": target, "value": value}
            return (
                "complete",
                id,
                f"PATCH /promises/{id}",
                args,
                {"json": body, "headers": headers},
            )
        if kind == "get":
            return "get", id, f"GET /promises/{id}", {}, {}
        if kind == "wait":
            wait = rng.randint(0, 150)
            return "get", id, f"GET /promises/{id}", {"wait": wait}, {"params": {"wait": wait}}
        state = rng.choice([None, "pending", "resolved", "rejected"])
        # A search covers the ten ids that share the id's first five digits (the window and
        # its recent past), so that the per-id expansion of a search stays small in long runs.
        group = f"{self.prefix}/{id.rsplit('/', 1)[1][:5]}"
        params: dict[str, Any] = {"id": f"{group}*", "limit": 1000}
        if state is not None:
            params["state"] = rng.choice([state, state.upper()])
        return (
            "search",
            group,
            "GET /promises",
            {"prefix": group, "state": state},
            {"params": params},
        )

    async def _client(self, client: int) -> None:
        cfg = self.cfg
        rng = random.Random(cfg.seed * 1_000_003 + client)
        url = cfg.urls[client % len(cfg.urls)]
        async with httpx.AsyncClient(base_url=url, timeout=cfg.request_timeout) as http:
            while self.issued < cfg.ops:
                self.issued += 1
                kind, id, route, args, kwargs = self._plan(rng)
                method, path = route.split(" ", 1)
                inv = time.time() * 1000
                status: int | None = None
                body: Any = None
                try:
                    resp = await http.request(method, path, **kwargs)
                    ret = time.time() * 1000
                    status = resp.status_code
                    try:
                        body = resp.json()
                    except ValueError:
                        body = {"unparsable": resp.text[:200]}
                    if status >= 500:
                        ret = math.inf
                except httpx.HTTPError as exc:
                    ret = math.inf
                    body = {"exception": repr(exc)}
                self.ops.append(
                    Op(
                        index=len(self.ops),
                        client=client,
                        kind=kind,  # type: ignore[arg-type]
                        id=id,
                        inv=inv,
                        ret=ret,
                        args=args,
                        status=status,
                        body=body,
                    )
                )

    async def run(self) -> list[Op]:
        await asyncio.gather(*(self._client(c) for c in range(self.cfg.clients)))
        return self.ops


async def record(cfg: RunConfig) -> list[Op]:
    """Run the clients against ``cfg.urls`` and return the history."""
    return await Recorder(cfg).run()


def save(ops: list[Op], path: Path) -> None:
    rows = []
    for op in ops:
        row = asdict(op)
        row["ret"] = None if not op.known else op.ret
        rows.append(row)
    path.write_text(json.dumps(rows))


def load(path: Path) -> list[Op]:
    ops = []
    for row in json.loads(path.read_text()):
        row["ret"] = math.inf if row["ret"] is None else row["ret"]
        ops.append(Op(**row))
    return ops
