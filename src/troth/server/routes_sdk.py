"""Routes for the durable-function SDK: batched writes and batched claims.

- ``POST /sdk/batch`` ``{"ops": [Op, ...]}`` → ``200 {"results": [OpResult, ...]}``: the ops
  applied in order in one transaction (``troth.engine.sdkops.apply_ops``). Each op has its
  own result; the request fails as a whole (4xx/5xx with the usual error body) only when it
  is malformed or the store is unavailable.
- ``POST /sdk/claim`` ``{"tasks": [{"id", "counter"}, ...], "processId", "ttl"}`` →
  ``200 {"results": [ClaimResult, ...]}``: each task claimed as ``POST /tasks/claim`` would,
  in one transaction.

Decode, call the engine, encode — no rules here. See docs/api.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from troth.engine import Engine
from troth.engine.sdkops import ClaimRef, ClaimResult, Op, OpResult, apply_ops, claim_tasks
from troth.errors import ValidationError

JSON: Final = "application/json"
B = TypeVar("B")


class BatchBody(msgspec.Struct):
    ops: list[Op]


class BatchAnswer(msgspec.Struct):
    results: list[OpResult]


class ClaimBody(msgspec.Struct, rename="camel"):
    tasks: list[ClaimRef]
    process_id: str
    ttl: int


class ClaimAnswer(msgspec.Struct):
    results: list[ClaimResult]


_batch = msgspec.json.Decoder(BatchBody)
_claim = msgspec.json.Decoder(ClaimBody)
_encode = msgspec.json.encode


def _decode(decoder: msgspec.json.Decoder[B], body: bytes) -> B:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}") from None


class SdkApi:
    def __init__(self, engine: Engine, read_body: Callable[[Request], Awaitable[bytes]]) -> None:
        self.engine = engine
        self.body = read_body

    async def batch(self, request: Request) -> Response:
        req = _decode(_batch, await self.body(request))
        results = await apply_ops(self.engine, req.ops)
        return Response(_encode(BatchAnswer(results)), media_type=JSON)

    async def claim(self, request: Request) -> Response:
        req = _decode(_claim, await self.body(request))
        results = await claim_tasks(self.engine, req.tasks, process_id=req.process_id, ttl=req.ttl)
        return Response(_encode(ClaimAnswer(results)), media_type=JSON)

    def routes(self) -> list[Route]:
        return [
            Route("/sdk/batch", self.batch, methods=["POST"]),
            Route("/sdk/claim", self.claim, methods=["POST"]),
        ]
