"""troth: durable promises and distributed async/await for Python."""

from __future__ import annotations

from troth.errors import AlreadyCompleted, NotFound, TrothError
from troth.sdk import (
    Context,
    Handle,
    NonDeterminismError,
    PromiseCanceled,
    PromiseTimedOut,
    RemoteError,
    Retry,
    Troth,
)

__all__ = [
    "AlreadyCompleted",
    "Context",
    "Handle",
    "NonDeterminismError",
    "NotFound",
    "PromiseCanceled",
    "PromiseTimedOut",
    "RemoteError",
    "Retry",
    "Troth",
    "TrothError",
]
