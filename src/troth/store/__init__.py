"""Storage backends, chosen by URL and imported lazily."""

from __future__ import annotations

from troth.errors import ValidationError
from troth.store.base import PromiseQuery, Store, Tx

__all__ = ["PromiseQuery", "Store", "Tx", "create_store", "migrate_store"]


def create_store(url: str) -> Store:
    """Build (but do not open) the store for ``url``.

    ``memory://`` keeps everything in process memory; ``sqlite:///path.db`` (relative) or
    ``sqlite:////abs/path.db`` a SQLite file, created on first use;
    ``postgresql://user@host:port/database`` a PostgreSQL database shared by any number of
    server processes.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from troth.store.memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from troth.store.sqlite import SqliteStore

        return SqliteStore(url)
    if scheme in ("postgresql", "postgres"):
        from troth.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValidationError(
        f"unsupported store URL {url!r}: use memory://, sqlite:///path.db or"
        " postgresql://user@host:port/database"
    )


async def migrate_store(url: str) -> list[int]:
    """Apply the migrations ``url``'s database lacks; return the versions applied now.

    PostgreSQL: safe while servers run (migrators are serialized by an advisory lock, each
    migration runs once). SQLite migrates whenever a store opens; this opens and closes one.
    """
    store = create_store(url)
    migrate = getattr(store, "migrate", None)
    if callable(migrate):
        import asyncio

        applied: list[int] = await asyncio.to_thread(migrate)
        return applied
    await store.open()
    await store.close()
    return []
