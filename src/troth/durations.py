"""Durations as people type them: ``1500`` (ms), ``250ms``, ``30s``, ``5m``, ``1h``, ``2d``,
or combinations (``1m30s``). Shared by the server (``?wait=``) and the CLI (``--timeout``)."""

from __future__ import annotations

import re
from typing import Final

_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """Return the duration in milliseconds; raise ``ValueError`` naming the input."""
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    pos, total = 0, 0.0
    for m in _PART.finditer(raw):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if not raw or pos != len(raw):
        raise ValueError(f"{text!r} is not a duration like 1500 (ms), 250ms, 30s, 5m, 1h, 1m30s")
    if total >= 2**63:  # also infinity: float('9' * 400) overflows
        raise ValueError(f"{text!r} is too long a duration")
    return int(total)
