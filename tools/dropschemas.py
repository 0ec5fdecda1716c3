"""Drop the PostgreSQL schemas a reliability run made (``make reliability`` calls it last).

python -m tools.dropschemas DSN PREFIX
"""

from __future__ import annotations

import sys

import psycopg
from psycopg import sql


def drop(dsn: str, prefix: str) -> list[str]:
    """Drop every schema whose name starts with ``prefix``; return their names."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute("SELECT nspname FROM pg_namespace").fetchall()
            if str(row[0]).startswith(prefix)
        ]
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
    return names


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    dropped = drop(sys.argv[1], sys.argv[2])
    print(f"dropped {len(dropped)} schema(s)")
