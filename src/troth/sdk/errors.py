"""Errors and control-flow signals of the SDK.

TrothError (troth.errors)
└── SdkError                      misuse of the SDK (say what to do instead)
    ├── NotRegistered             a function name (and version) this process does not know
    └── NonDeterminismError       a replay called a different function at a recorded step
BaseException
└── Suspended                     control flow, not an error (see below)
"""

from __future__ import annotations

from troth.errors import TrothError


class SdkError(TrothError):
    """The SDK was used in a way it cannot honour."""

    default_code = 40000


class NotRegistered(SdkError):
    """No function is registered under that name (and version) in this process."""


class NonDeterminismError(SdkError):
    """A replay reached a recorded step with a different function.

    Durable functions are replayed from the top after a crash or a suspension; the calls
    they make must come in the same order. Check that the function does not branch on
    wall-clock time, randomness or I/O outside ``ctx.run`` (use ``ctx.now()``,
    ``ctx.random()`` and steps instead), or start a new version with
    ``@troth.register(version=2)``.
    """


class Suspended(BaseException):
    """The execution waits for a promise another process completes; it is unloaded and will
    be resumed, by replay, on a resume task.

    Derives from ``BaseException`` so that a user's ``except Exception`` cannot swallow it.
    """

    def __init__(self, promise_id: str) -> None:
        super().__init__(promise_id)
        self.promise_id = promise_id


class PlatformError(BaseException):
    """troth itself (the server or the store) failed under an execution: not an outcome of
    the user's function. The execution stops and is run again later (remote: its task is
    dropped for another attempt; embedded: retried with backoff), so a brief outage never
    becomes a recorded failure. A ``BaseException``: ``except Exception`` cannot swallow it,
    and retry policies do not retry it.
    """


class LeaseLost(PlatformError):
    """The worker's task was fenced out (its lease expired and another worker has it); this
    worker must stop writing for the execution at once."""
