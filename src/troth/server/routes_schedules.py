"""Schedule routes (API.md 4): decode, call the engine, encode."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from troth.engine import Engine
from troth.model import Value
from troth.server import wire
from troth.server.wire_tasks import decode

JSON: Final = "application/json"
_encode = msgspec.json.encode


class CreateScheduleBody(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    cron: str
    promise_id: str
    promise_timeout: wire.Timeout
    description: str | None = None
    tags: dict[str, str] | None = None
    promise_param: Value | None = None
    promise_tags: dict[str, str] | None = None


def _json(content: Any, status: int = 200) -> Response:
    return Response(_encode(content), status_code=status, media_type=JSON)


class ScheduleApi:
    def __init__(self, engine: Engine, read_body: Callable[[Request], Awaitable[bytes]]) -> None:
        self.engine = engine
        self.body = read_body

    async def create(self, request: Request) -> Response:
        req: CreateScheduleBody = decode(CreateScheduleBody, await self.body(request))
        schedule, created = await self.engine.create_schedule(
            req.id,
            cron_expr=req.cron,
            promise_id=req.promise_id,
            promise_timeout=req.promise_timeout,
            description=req.description,
            tags=req.tags,
            promise_param=req.promise_param,
            promise_tags=req.promise_tags,
            ikey=request.headers.get("idempotency-key"),
        )
        return _json(schedule, 201 if created else 200)

    async def get(self, request: Request) -> Response:
        return _json(await self.engine.get_schedule(request.path_params["id"]))

    async def delete(self, request: Request) -> Response:
        await self.engine.delete_schedule(request.path_params["id"])
        return Response(status_code=204)

    async def search(self, request: Request) -> Response:
        params = request.query_params
        tags = wire.parse_tag_filters(params.multi_items())
        limit = params.get("limit")
        schedules, cursor = await self.engine.search_schedules(
            pattern=params.get("id") or "*",
            tags=tags,
            limit=wire.parse_int(limit, "limit") if limit else 100,
            cursor=params.get("cursor") or None,
        )
        return _json({"schedules": schedules, "cursor": cursor})

    def routes(self) -> list[Route]:
        return [
            Route("/schedules", self.create, methods=["POST"]),
            Route("/schedules", self.search, methods=["GET"]),
            Route("/schedules/{id:path}", self.get, methods=["GET"]),
            Route("/schedules/{id:path}", self.delete, methods=["DELETE"]),
        ]
