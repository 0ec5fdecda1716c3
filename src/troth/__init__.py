"""troth: durable promises and distributed async/await for Python."""

from __future__ import annotations
