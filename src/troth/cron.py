"""Cron expressions (API.md 4): 5 fields, an optional 6th for seconds, ``@hourly``-style
shortcuts, always UTC. Parsing and iteration are croniter's; this module only validates the
accepted forms and speaks epoch milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from croniter import CroniterError, croniter

from troth.errors import ValidationError

SHORTCUTS: Final = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _bad(expr: str, why: str) -> ValidationError:
    return ValidationError(
        f"invalid cron {expr!r}: {why} - at $.cron", details=[{"field": "$.cron"}]
    )


def validate(expr: str) -> str:
    """Return the expression (trimmed) or raise a 400 naming the problem."""
    text = expr.strip()
    if text.startswith("@"):
        if text.lower() not in SHORTCUTS:
            raise _bad(expr, f"unknown shortcut; use one of {', '.join(SHORTCUTS)}")
        return text.lower()
    fields = text.split()
    if len(fields) not in (5, 6):
        raise _bad(
            expr,
            f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 (plus "
            f"seconds), got {len(fields)}",
        )
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=UTC)).get_next(float)
    except (CroniterError, ValueError, KeyError) as exc:
        raise _bad(expr, str(exc)) from None
    return text


def next_after(expr: str, after_ms: int) -> int:
    """The first time strictly after ``after_ms`` (epoch ms, UTC) that ``expr`` matches."""
    start = datetime.fromtimestamp(after_ms / 1000, tz=UTC)
    nxt = croniter(expr, start).get_next(float)
    out = round(nxt * 1000)
    if out <= after_ms:  # sub-second start: croniter may land on the same second
        nxt = croniter(expr, datetime.fromtimestamp(out / 1000, tz=UTC)).get_next(float)
        out = round(nxt * 1000)
    return int(out)


def render(template: str, schedule_id: str, run_ms: int) -> str:
    """Fill a promise id template: ``{{.id}}`` the schedule id, ``{{.timestamp}}`` the run time
    in ms, ``{{.date}}`` its UTC date ``YYYY-MM-DD`` (for ``news_feed_{{.date}}`` ids)."""
    date = datetime.fromtimestamp(run_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    return (
        template.replace("{{.id}}", schedule_id)
        .replace("{{.timestamp}}", str(run_ms))
        .replace("{{.date}}", date)
    )
