"""Parsing receivers (``recv``, API.md 2) into the normalized ``Recv``.

Accepted forms:
- ``poll://any@<group>[/<id>]`` — a worker stream of the group (the named one if connected);
- ``poll://uni@<group>/<id>`` — only that stream;
- ``poll://<group>[/<id>]`` — short for ``any@``;
- ``http://…`` / ``https://…`` — an HTTP POST of the message;
- a logical name from configuration (``default`` → ``poll://any@default`` unless configured);
- an object ``{"type": "poll", "data": {"group", "id"?}}`` or
  ``{"type": "http", "data": {"url", "headers"?}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from troth.errors import ValidationError
from troth.model import Recv

DEFAULT_RECEIVERS: Final[Mapping[str, str]] = {"default": "poll://any@default"}


def _bad(field: str, why: str) -> ValidationError:
    return ValidationError(f"{why} - at {field}", details=[{"field": field}])


def _parse_poll(rest: str, field: str) -> Recv:
    mode = "any"
    if "@" in rest:
        mode, rest = rest.split("@", 1)
        if mode not in ("any", "uni"):
            raise _bad(field, f"poll receiver mode must be any or uni, got {mode!r}")
    group, _, id = rest.partition("/")
    if not group:
        raise _bad(field, "poll receiver needs a group: poll://any@<group>[/<id>]")
    if mode == "uni" and not id:
        raise _bad(field, "poll://uni@<group>/<id> needs an id")
    return Recv(type="poll", group=group, id=id or None, mode=mode)


def parse_recv(
    value: Any, field: str = "$.recv", receivers: Mapping[str, Any] = DEFAULT_RECEIVERS
) -> Recv:
    """Normalize a receiver, raising ``ValidationError`` (400) naming ``field``."""
    if isinstance(value, str):
        if value.startswith("poll://"):
            return _parse_poll(value[len("poll://") :], field)
        if value.startswith(("http://", "https://")):
            if len(value) <= len("https://"):
                raise _bad(field, "http receiver needs a URL")
            return Recv(type="http", url=value)
        if value in receivers:
            target = receivers[value]
            if isinstance(target, str) and target in receivers:
                raise _bad(field, f"receiver {value!r} is configured as another name")
            return parse_recv(target, field, {})
        raise _bad(
            field,
            f"unknown receiver {value!r}: use poll://any@<group>[/<id>], "
            "poll://uni@<group>/<id>, http(s)://… or a configured name",
        )
    if isinstance(value, dict):
        kind = value.get("type")
        data = value.get("data")
        if not isinstance(data, dict):
            raise _bad(field, "receiver object needs a data object")
        if kind == "poll":
            group, id = data.get("group"), data.get("id")
            mode = data.get("mode", "any")
            if not isinstance(group, str) or not group:
                raise _bad(f"{field}.data.group", "poll receiver needs a group string")
            if id is not None and not isinstance(id, str):
                raise _bad(f"{field}.data.id", "poll receiver id must be a string")
            if mode not in ("any", "uni") or (mode == "uni" and not id):
                raise _bad(f"{field}.data.mode", "mode must be any, or uni with an id")
            return Recv(type="poll", group=group, id=id or None, mode=mode)
        if kind == "http":
            url, headers = data.get("url"), data.get("headers")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise _bad(f"{field}.data.url", "http receiver needs an http(s) URL")
            if headers is not None and not (
                isinstance(headers, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
            ):
                raise _bad(f"{field}.data.headers", "headers must map strings to strings")
            return Recv(type="http", url=url, headers=headers or None)
        raise _bad(f"{field}.type", "receiver type must be poll or http")
    raise _bad(field, "receiver must be a string or an object")
