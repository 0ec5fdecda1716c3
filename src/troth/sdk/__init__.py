"""Durable functions: distributed async/await on durable promises."""

from __future__ import annotations

from troth.sdk.codec import Codec, JsonCodec, RemoteError
from troth.sdk.context import Context, DurablePromise
from troth.sdk.errors import (
    LeaseLost,
    NonDeterminismError,
    NotRegistered,
    PlatformError,
    SdkError,
    Suspended,
)
from troth.sdk.retry import Retry
from troth.sdk.runtime import Handle, PromiseCanceled, PromiseTimedOut, Troth

__all__ = [
    "Codec",
    "Context",
    "DurablePromise",
    "Handle",
    "JsonCodec",
    "LeaseLost",
    "NonDeterminismError",
    "NotRegistered",
    "PlatformError",
    "PromiseCanceled",
    "PromiseTimedOut",
    "RemoteError",
    "Retry",
    "SdkError",
    "Suspended",
    "Troth",
]
