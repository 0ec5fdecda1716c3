"""Store URLs: which backend, PostgreSQL options, and passwords never shown."""

from __future__ import annotations

import pytest

from troth.config import mask_url
from troth.errors import ValidationError
from troth.store import create_store
from troth.store.postgres import PostgresStore


def test_the_scheme_chooses_the_backend() -> None:
    assert type(create_store("postgresql://u@h/db")).__name__ == "PostgresStore"
    assert type(create_store("postgres://u@h/db")).__name__ == "PostgresStore"
    with pytest.raises(ValidationError, match="postgresql://"):
        create_store("mysql://h/db")


def test_postgres_options_are_taken_and_the_rest_goes_to_libpq() -> None:
    s = PostgresStore(
        "postgresql://u:pw@h:5433/db?schema=app&writers=2&batch=64&readers=3"
        "&timeout_ms=500&recheck_ms=250&sslmode=disable&migrate=false"
    )
    assert (s.schema, s.writers, s.batch, s.readers) == ("app", 2, 64, 3)
    assert (s.timeout_s, s.recheck_s, s.auto_migrate) == (0.5, 0.25, False)
    assert s.channel == "troth.app"
    assert s.dsn.startswith("postgresql://u:pw@h:5433/db?")
    assert "sslmode=disable" in s.dsn and "connect_timeout=5" in s.dsn
    assert "schema" not in s.dsn and "writers" not in s.dsn


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("writers=0", "writers must be at least 1"),
        ("batch=x", "batch must be an integer"),
        ("migrate=maybe", "migrate must be true or false"),
    ],
)
def test_bad_postgres_options_are_refused(query: str, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        PostgresStore(f"postgresql://h/db?{query}")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h:5432/db?x=1", "postgresql://u:***@h:5432/db?x=1"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///troth.db", "sqlite:///troth.db"),
    ],
)
def test_passwords_in_store_urls_are_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown
