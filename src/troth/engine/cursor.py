"""Opaque, signed search cursors (API.md 1.5).

A cursor carries the whole query plus the position, and an HMAC over both, so a client
cannot edit one to read outside the query it started with. The key lives in the store's
metadata, so cursors survive restarts and work across server processes on one database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec

from troth.errors import ValidationError
from troth.store.base import PromiseQuery


class _Payload(msgspec.Struct, array_like=True):
    kind: str  # what the cursor pages: "promises" or "schedules" (not interchangeable)
    pattern: str
    state: str | None
    tags: dict[str, str]
    limit: int
    before: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Cursors:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]

    def encode(self, query: PromiseQuery, before: int, kind: str = "promises") -> str:
        body = msgspec.msgpack.encode(
            _Payload(kind, query.pattern, query.state, query.tags, query.limit, before)
        )
        return f"{_b64(body)}.{_b64(self._sign(body))}"

    def decode(self, cursor: str, kind: str = "promises") -> PromiseQuery:
        """Return the query a cursor continues, or raise 400 if it is not one of ours."""
        try:
            body_text, sig_text = cursor.split(".", 1)
            body, sig = _unb64(body_text), _unb64(sig_text)
        except ValueError:
            raise ValidationError(
                "invalid cursor - at cursor", details=[{"field": "cursor"}]
            ) from None
        if not hmac.compare_digest(sig, self._sign(body)):
            raise ValidationError(
                "cursor signature does not match (edited, or from another server) - at cursor",
                details=[{"field": "cursor"}],
            )
        p = msgspec.msgpack.decode(body, type=_Payload)
        if p.kind != kind:
            raise ValidationError(
                f"this cursor pages {p.kind}, not {kind} - at cursor",
                details=[{"field": "cursor"}],
            )
        return PromiseQuery(p.pattern, p.state, p.tags, p.limit, p.before)
