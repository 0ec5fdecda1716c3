"""Errors of troth, each carrying the wire code of API.md section 0.

The five-digit ``code`` starts with the HTTP status, so one mapping serves the server
(exception -> response), the client (response -> exception) and the CLI (exit code 1 with
the server's message).

    TrothError                     base; code 50000
    ├── ValidationError            40000  bad input: names the field and the problem
    ├── Unauthenticated            40100
    ├── Forbidden                  40300
    │   └── AlreadyCompleted       40301..40304 by the stored state
    ├── NotFound                   40400
    ├── AlreadyExists              40900
    ├── FencingFailed              41200
    ├── PayloadTooLarge            41300
    ├── Overloaded                 42900
    └── StoreUnavailable           50300  storage cannot be reached; retry later
"""

from __future__ import annotations

from typing import Any, ClassVar


class TrothError(Exception):
    """Something went wrong inside troth; the message says what to do next."""

    default_code: ClassVar[int] = 50000

    def __init__(
        self,
        message: str | None = None,
        *,
        code: int | None = None,
        details: list[Any] | None = None,
    ) -> None:
        self.message = message or (self.__doc__ or "error").strip()
        self.code = code if code is not None else self.default_code
        self.details: list[Any] = details or []
        super().__init__(self.message)

    @property
    def status(self) -> int:
        """The HTTP status this error maps to: the first three digits of its code."""
        return self.code // 100

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.code, self.details))


def _rebuild(cls: type[TrothError], message: str, code: int, details: list[Any]) -> TrothError:
    return cls(message, code=code, details=details)


class ValidationError(TrothError):
    """The request is invalid; fix the named field and send it again."""

    default_code = 40000


class Unauthenticated(TrothError):
    """Credentials are missing or wrong."""

    default_code = 40100


class Forbidden(TrothError):
    """The request is not allowed in the current state."""

    default_code = 40300


class AlreadyCompleted(Forbidden):
    """The promise is already completed; read its state instead of completing it again."""

    default_code = 40301


class NotFound(TrothError):
    """No such resource; create it first."""

    default_code = 40400


class AlreadyExists(TrothError):
    """A resource with this id already exists and the idempotency key does not match."""

    default_code = 40900


class FencingFailed(TrothError):
    """The fencing task is not claimed with that counter; nothing was written."""

    default_code = 41200


class PayloadTooLarge(TrothError):
    """The request body is larger than the server accepts."""

    default_code = 41300


class Overloaded(TrothError):
    """The server is overloaded; retry with backoff."""

    default_code = 42900


class StoreUnavailable(TrothError):
    """Storage is unavailable; the request was not applied. Retry later."""

    default_code = 50300


_BY_STATUS: dict[int, type[TrothError]] = {
    400: ValidationError,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: AlreadyExists,
    412: FencingFailed,
    413: PayloadTooLarge,
    429: Overloaded,
    503: StoreUnavailable,
}


def error_from_code(code: int, message: str, details: list[Any] | None = None) -> TrothError:
    """Rebuild the most specific error class for a wire code (used by the client)."""
    if 40301 <= code <= 40304:
        return AlreadyCompleted(message, code=code, details=details)
    cls = _BY_STATUS.get(code // 100, TrothError)
    return cls(message, code=code, details=details)
