"""PostgreSQL migrations, applied in order by ``troth.store.postgres``."""
