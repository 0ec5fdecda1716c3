"""The dashboard at ``/ui``: static files shipped in the package, and the few JSON routes
the public API lacks (``/ui/api/...``).

The page (``dashboard/index.html``, ``app.js``, ``style.css``) is plain HTML/JS/CSS: no build
step, no CDN. It reads promises and schedules through the public API (``GET /promises``,
``GET /schedules``) and completes promises with ``PATCH /promises/{id}``, sending the
credentials the user typed in (auth on); the routes here add what the API has no route for:
tasks and their leases, a promise's callbacks, and an overview of counts.
"""

from __future__ import annotations

import importlib.resources
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from troth.engine import Engine
from troth.errors import Forbidden, NotFound, ValidationError
from troth.model import TaskState
from troth.server.auth import Principal
from troth.server.front import PRINCIPAL
from troth.server.stream import StreamRegistry

_TYPES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_ALL_STATES: Final = tuple(TaskState)
MAX_TASKS: Final = 500


def _asset(name: str) -> bytes:
    return importlib.resources.files("troth.server").joinpath("dashboard", name).read_bytes()


def _json(content: Any) -> Response:
    return Response(msgspec.json.encode(content), media_type="application/json")


def _principal(request: Request) -> Principal | None:
    p = request.scope.get(PRINCIPAL)
    return p if isinstance(p, Principal) else None


def _check(request: Request, id: str) -> None:
    p = _principal(request)
    if p is not None and not p.allows(id):
        raise Forbidden(f"this token may only touch ids that start with {p.prefix!r}, not {id!r}")


class UiApi:
    def __init__(self, engine: Engine, streams: StreamRegistry, auth_mode: str) -> None:
        self.engine = engine
        self.streams = streams
        self.auth_mode = auth_mode
        self._assets = {name: _asset(name) for name in _TYPES}

    async def index(self, request: Request) -> Response:
        return Response(
            self._assets["index.html"],
            media_type=_TYPES["index.html"],
            headers={"cache-control": "no-cache"},
        )

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self._assets.get(name)
        if body is None:
            raise NotFound(f"no dashboard file {name!r}", code=40400)
        return Response(body, media_type=_TYPES[name], headers={"cache-control": "no-cache"})

    async def overview(self, request: Request) -> Response:
        pending, tasks = await self.engine.store.read(
            lambda tx: (tx.count_pending_promises(), tx.count_tasks_by_state())
        )
        principal = _principal(request)
        return _json(
            {
                "pending": pending,
                "tasks": tasks,
                "waiters": len(self.engine.waiters),
                "streams": len(self.streams),
                "now": self.engine.clock.now(),
                "auth": self.auth_mode,
                "prefix": principal.prefix if principal else None,
            }
        )

    async def tasks(self, request: Request) -> Response:
        """``?root=ID``: every task of that root promise; else unfinished tasks."""
        root = request.query_params.get("root")
        limit_text = request.query_params.get("limit") or "100"
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_TASKS:
            raise ValidationError(
                f"limit must be between 1 and {MAX_TASKS}", details=[{"field": "limit"}]
            )
        limit = int(limit_text)
        if root:
            _check(request, root)
            found = await self.engine.store.read(lambda tx: tx.tasks_of_root(root, _ALL_STATES))
        else:
            found = await self.engine.store.read(lambda tx: tx.active_tasks(limit))
            principal = _principal(request)
            if principal is not None and principal.prefix is not None:
                found = [t for t in found if t.root_promise_id.startswith(principal.prefix)]
        return _json({"tasks": [_task(t) for t in found[:limit]], "now": self.engine.clock.now()})

    async def callbacks(self, request: Request) -> Response:
        id = request.path_params["id"]
        _check(request, id)
        found = await self.engine.store.read(lambda tx: tx.callbacks_of(id))
        return _json({"callbacks": found})

    def routes(self) -> list[Route]:
        return [
            Route("/ui", self.index, methods=["GET"]),
            Route("/ui/", self.index, methods=["GET"]),
            Route("/ui/static/{name}", self.static, methods=["GET"]),
            Route("/ui/api/overview", self.overview, methods=["GET"]),
            Route("/ui/api/tasks", self.tasks, methods=["GET"]),
            Route("/ui/api/callbacks/{id:path}", self.callbacks, methods=["GET"]),
        ]


def _task(t: Any) -> dict[str, Any]:
    out: dict[str, Any] = t.to_wire()
    extra = {
        "processId": t.process_id,
        "ttl": t.ttl,
        "expiresAt": t.expires_at,
        "readyAt": t.ready_at,
        "attempt": t.attempt,
        "completedOn": t.completed_on,
        "recv": t.recv.to_wire(),
    }
    # Absent members are omitted (as everywhere on the wire), never null: the OpenAPI Task
    # schema types them as integer/string (found by schemathesis, tests/reliability).
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


__all__ = ["UiApi"]
