"""The engine: rules applied in store transactions, plus waiters and background loops."""

from __future__ import annotations

from troth.engine.engine import Engine, Limits

__all__ = ["Engine", "Limits"]
