"""Authentication (API.md 6): HTTP basic users or static bearer tokens, optionally scoped.

A ``Principal`` is who a request authenticated as: a user name or a token's label — never
the secret itself, which is compared with ``hmac.compare_digest`` and never logged. A token
may be *scoped* to an id prefix: it may then only touch promises, tasks, schedules and locks
whose id starts with that prefix (403 otherwise). ``scoped_ids`` names, for each route, where
the ids of a request are (path, query, JSON body), so the check lives in one place.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

#: Routes that answer without credentials even when auth is on (API.md 0 and 6). The
#: dashboard's static files hold no data (every datum comes from the authenticated API).
PUBLIC_PATHS: Final = frozenset({"/ping", "/healthz", "/readyz", "/openapi.json"})
PUBLIC_PREFIXES: Final = ("/ui/static/",)
UI_PAGES: Final = frozenset({"/ui", "/ui/"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request authenticated as; ``prefix`` limits the ids it may touch."""

    name: str
    prefix: str | None = None

    def allows(self, id: str) -> bool:
        return self.prefix is None or id.startswith(self.prefix)


class AuthFailed(Exception):
    """401 (no or bad credentials) or 403 (authenticated but not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class _Token:
    secret: bytes
    principal: Principal


def parse_token(spec: str, index: int) -> tuple[str, str | None]:
    """``TOKEN`` or ``TOKEN:PREFIX`` → (token, prefix)."""
    token, sep, prefix = spec.partition(":")
    if not token:
        raise ValueError(f"auth token #{index + 1} is empty (expected TOKEN or TOKEN:PREFIX)")
    return token, (prefix if sep else None)


def parse_user(spec: str) -> tuple[str, str]:
    """``USER:PASSWORD`` → (user, password); the password may contain ``:``."""
    user, sep, password = spec.partition(":")
    if not user or not sep or not password:
        name = user or "?"
        raise ValueError(f"auth user {name!r} must be given as USER:PASSWORD")
    return user, password


class Authenticator:
    """Checks the ``Authorization`` header of a request.

    Args:
        mode: ``basic`` or ``token``.
        users: ``USER:PASSWORD`` strings (basic).
        tokens: ``TOKEN`` or ``TOKEN:PREFIX`` strings (token).
    """

    def __init__(self, mode: str, users: Iterable[str] = (), tokens: Iterable[str] = ()) -> None:
        if mode not in ("basic", "token"):
            raise ValueError(f"auth must be none, basic or token, got {mode!r}")
        self.mode = mode
        self._users: dict[str, bytes] = {}
        for spec in users:
            user, password = parse_user(spec)
            self._users[user] = password.encode()
        self._tokens: list[_Token] = []
        for i, spec in enumerate(tokens):
            token, prefix = parse_token(spec, i)
            label = f"token#{i + 1}" + (f"[{prefix}]" if prefix is not None else "")
            self._tokens.append(_Token(token.encode(), Principal(label, prefix)))
        if mode == "basic" and not self._users:
            raise ValueError("--auth basic needs at least one --auth-user USER:PASSWORD")
        if mode == "token" and not self._tokens:
            raise ValueError("--auth token needs at least one --auth-token TOKEN[:PREFIX]")
        self.challenge = b'Basic realm="troth"' if mode == "basic" else b'Bearer realm="troth"'

    def authenticate(self, header: bytes | None) -> Principal:
        """The principal of an ``Authorization`` header value; raises ``AuthFailed`` (401)."""
        if not header:
            raise AuthFailed(401, self._missing())
        scheme, _, credentials = header.partition(b" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if self.mode == "token":
            if scheme != b"bearer":
                raise AuthFailed(401, self._missing())
            found: Principal | None = None
            # Compare against every token (no early exit), each in constant time.
            for t in self._tokens:
                if hmac.compare_digest(credentials, t.secret) and found is None:
                    found = t.principal
            if found is None:
                raise AuthFailed(401, "invalid bearer token")
            return found
        if scheme != b"basic":
            raise AuthFailed(401, self._missing())
        try:
            user_b, sep, password = base64.b64decode(credentials, validate=True).partition(b":")
            user = user_b.decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthFailed(
                401, "malformed basic credentials (expected base64 of user:password)"
            ) from None
        expected = self._users.get(user) if sep else None
        # Compare even for an unknown user, so that its answer takes as long.
        ok = hmac.compare_digest(password, expected if expected is not None else b"\0" * 16)
        if expected is None or not ok:
            raise AuthFailed(401, "invalid user name or password")
        return Principal(user)

    def _missing(self) -> str:
        if self.mode == "token":
            return "authentication required: send Authorization: Bearer <token>"
        return "authentication required: send Authorization: Basic <base64 of user:password>"


# -- scope checks (prefix-scoped tokens) ---------------------------------------------------

_TASK_KIND: Final = ("__invoke:", "__resume:", "__notify:")


def task_promise_id(task_id: str) -> str:
    """The promise id a task id starts with (``__invoke:orders/1`` → ``orders/1``)."""
    for kind in _TASK_KIND:
        if task_id.startswith(kind):
            return task_id[len(kind) :]
    return task_id


def _task_ref_path(rest: str) -> str:
    """``/tasks/claim/{id}/{counter}``'s ``rest`` → the task's promise id."""
    id, _, _counter = rest.rpartition("/")
    return task_promise_id(id or rest)


#: POST routes whose JSON body carries ids: path → (field path, is a task id).
_BODY_IDS: Final[dict[str, tuple[tuple[tuple[str, ...], bool], ...]]] = {
    "/promises": ((("id",), False),),
    "/promises/task": ((("promise", "id"), False),),
    "/callbacks": ((("promiseId",), False), (("rootPromiseId",), False)),
    "/subscriptions": ((("promiseId",), False),),
    "/tasks/claim": ((("id",), True),),
    "/tasks/complete": ((("id",), True),),
    "/tasks/drop": ((("id",), True),),
    "/locks/acquire": ((("resourceId",), False),),
    "/locks/release": ((("resourceId",), False),),
    "/schedules": ((("id",), False), (("promiseId",), False)),
}
_PATH_IDS: Final = (
    "/promises/callback/",
    "/promises/subscribe/",
    "/promises/",
    "/schedules/",
)
# (``GET /tasks/heartbeat/{rest}`` renews the leases of a process: it names no task.)
_PATH_TASKS: Final = ("/tasks/claim/", "/tasks/complete/", "/tasks/drop/")


def needs_body(method: str, path: str) -> bool:
    """Whether the scope check of this request must read its JSON body."""
    return method == "POST" and (path in _BODY_IDS or path.startswith("/promises/callback/"))


def check_scope(
    principal: Principal,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any = None,
) -> None:
    """Raise ``AuthFailed(403)`` unless every id the request names starts with the principal's
    prefix. Search routes must give an ``id`` pattern inside the prefix."""
    prefix = principal.prefix
    if prefix is None:
        return
    ids: list[str] = []
    if method == "GET" and path in ("/promises", "/schedules"):
        pattern = query.get("id")
        if not pattern or not pattern.startswith(prefix):
            raise AuthFailed(
                403,
                f"this token may only search ids that start with {prefix!r}: "
                f"add id={prefix}* to the query",
            )
        return
    for p in _PATH_TASKS:
        if path.startswith(p) and method == "GET":
            ids.append(_task_ref_path(path[len(p) :]))
            break
    else:
        if not (method == "POST" and path in _BODY_IDS):
            for p in _PATH_IDS:
                if path.startswith(p) and len(path) > len(p):
                    ids.append(path[len(p) :])
                    break
    for fields, is_task in _BODY_IDS.get(path, ()) if method == "POST" else ():
        value = _dig(body, fields)
        if isinstance(value, str):
            ids.append(task_promise_id(value) if is_task else value)
    if method == "POST" and path.startswith("/promises/callback/"):
        value = _dig(body, ("rootPromiseId",))
        if isinstance(value, str):
            ids.append(value)
    for id in ids:
        if not id.startswith(prefix):
            raise AuthFailed(
                403, f"this token may only touch ids that start with {prefix!r}, not {id!r}"
            )


def _dig(body: Any, fields: Sequence[str]) -> Any:
    for f in fields:
        if not isinstance(body, dict):
            return None
        body = body.get(f)
    return body


__all__ = [
    "PUBLIC_PATHS",
    "AuthFailed",
    "Authenticator",
    "Principal",
    "check_scope",
    "needs_body",
    "task_promise_id",
]
