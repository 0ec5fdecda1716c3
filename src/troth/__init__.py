"""troth: durable promises and distributed async/await for Python."""

from __future__ import annotations

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
    "Context",
    "Handle",
    "NonDeterminismError",
    "PromiseCanceled",
    "PromiseTimedOut",
    "RemoteError",
    "Retry",
    "Troth",
]
