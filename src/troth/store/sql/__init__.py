"""SQL migrations per dialect: ``<dialect>/NNNN_name.sql``, applied in version order."""

from __future__ import annotations

import importlib.resources


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """Every migration shipped for ``dialect`` (``sqlite``, ``postgres``): (version, name,
    SQL), in order."""
    found = []
    for entry in importlib.resources.files(f"troth.store.sql.{dialect}").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name[5:-4], entry.read_text()))
    return sorted(found)
