"""Request bodies and header/query parsing of the HTTP API (API.md 0 and 1).

Decoding is done by msgspec against these structs, so wrong types and bad base64 are
reported with the path of the offending field (``Expected `int`, got `str` - at
`$.timeout```). Unknown fields are ignored, as the contract requires.
"""

from __future__ import annotations

from typing import Annotated, Final, TypeVar

import msgspec

from troth.durations import parse_duration_ms as parse_duration_ms_text
from troth.errors import ValidationError
from troth.model import MAX_TIMEOUT, State, Value

D = TypeVar("D")

Timeout = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIMEOUT)]


class CreatePromise(msgspec.Struct, frozen=True):
    id: str
    timeout: Timeout
    param: Value | None = None
    tags: dict[str, str] | None = None


class CompletePromise(msgspec.Struct, frozen=True):
    state: str
    value: Value | None = None


_create_decoder: Final = msgspec.json.Decoder(CreatePromise)
_complete_decoder: Final = msgspec.json.Decoder(CompletePromise)

_STRICT: Final = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}
_COMPLETE_STATES: Final = {
    "RESOLVED": State.RESOLVED,
    "REJECTED": State.REJECTED,
    "REJECTED_CANCELED": State.REJECTED_CANCELED,
}


def decode_json(decoder: msgspec.json.Decoder[D], body: bytes) -> D:
    """Decode a body, turning msgspec's errors into 400s that keep its path."""
    if not body:
        raise ValidationError("request body is empty; expected a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ValidationError(str(exc), details=[{"reason": str(exc)}]) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"malformed JSON: {exc}", details=[{"reason": str(exc)}]) from None


def decode_create(body: bytes) -> CreatePromise:
    return decode_json(_create_decoder, body)


def decode_complete(body: bytes) -> tuple[State, Value | None]:
    result = decode_json(_complete_decoder, body)
    state = _COMPLETE_STATES.get(result.state.upper())
    if state is None:
        raise ValidationError(
            f"state must be RESOLVED, REJECTED or REJECTED_CANCELED, got {result.state!r}"
            " - at `$.state`",
            details=[{"field": "$.state"}],
        )
    return state, result.value


def parse_strict(raw: str | None) -> bool:
    """``Strict`` header: true/false/t/f/1/0, any case; absent means false."""
    if raw is None:
        return False
    value = _STRICT.get(raw.strip().lower())
    if value is None:
        raise ValidationError(
            f"Strict header must be true or false (or t/f/1/0), got {raw!r} - at header Strict",
            details=[{"field": "Strict"}],
        )
    return value


def parse_duration_ms(raw: str, field: str = "wait") -> int:
    """``30000`` (ms) or a duration such as ``30s``, ``1m30s``, ``250ms``, ``1h``."""
    try:
        return parse_duration_ms_text(raw)
    except ValueError as exc:
        raise ValidationError(f"{exc} - at {field}", details=[{"field": field}]) from None


def parse_int(raw: str, field: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(
            f"{field} must be an integer, got {raw!r} - at {field}", details=[{"field": field}]
        ) from None


def parse_tag_filters(items: list[tuple[str, str]]) -> dict[str, str]:
    """``tags[k]=v`` query parameters of a search; a malformed ``tags…`` key is a 400."""
    tags: dict[str, str] = {}
    for key, value in items:
        if key.startswith("tags[") and key.endswith("]") and len(key) > 6:
            tags[key[5:-1]] = value
        elif key.startswith("tags"):
            raise ValidationError(
                f"tag filters are written tags[key]=value, got {key!r} - at {key}",
                details=[{"field": key}],
            )
    return tags
