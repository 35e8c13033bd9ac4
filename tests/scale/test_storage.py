"""govml.storage: one set of statements on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from govml.errors import ConfigError
from govml.storage import Database, StorageError, parse_storage_url

_TABLE = ("CREATE TABLE IF NOT EXISTS items (id {serial}, name TEXT NOT NULL UNIQUE, score {real}, data {blob})",)


def postgres_url(server, database: str) -> str:  # type: ignore[no-untyped-def]
    """A libpq URL for a fresh database on the test server (the fixture returns SQLAlchemy's form)."""
    return server.uri(database).replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(tmp_path / "items.db")
    else:
        db = Database(postgres_url(request.getfixturevalue("postgres"), "storage_items"))
        db.execute("DROP TABLE IF EXISTS items")
    db.create(_TABLE)
    yield db
    db.close()


def test_same_statements_on_both(database: Database) -> None:
    with database.transaction():
        first = database.execute(
            "INSERT INTO items (name, score, data) VALUES (?, ?, ?) RETURNING id", ("a", 1.5, b"\x00\x01")
        )
        database.executemany(
            "INSERT INTO items (name, score) VALUES (?, ?)", [("b", 1_764_000_000.123456), ("c", None)]
        )
    assert database.execute("SELECT name, score, data FROM items WHERE id = ?", (first[0][0],)) == [
        ("a", 1.5, b"\x00\x01")
    ]
    # a timestamp keeps its microseconds: {real} is 64-bit on both
    assert database.execute("SELECT score FROM items WHERE name = ?", ("b",)) == [(1_764_000_000.123456,)]
    assert (
        database.execute("INSERT INTO items (name) VALUES (?) ON CONFLICT (name) DO NOTHING RETURNING id", ("a",)) == []
    )
    assert len(database.execute("DELETE FROM items WHERE name IN (?, ?) RETURNING id", ("a", "zzz"))) == 1


def test_columns_added_to_an_older_table_once(database: Database) -> None:
    database.execute("INSERT INTO items (name) VALUES (?)", ("old row",))
    for _ in range(2):  # a second open finds the column and leaves it
        database.ensure_columns("items", {"extra": "{blob}"})
    database.execute("UPDATE items SET extra = ? WHERE name = ?", (b"\x07", "old row"))
    assert database.execute("SELECT name, extra FROM items") == [("old row", b"\x07")]


def test_rollback_and_errors(database: Database) -> None:
    with pytest.raises(RuntimeError), database.transaction():
        database.execute("INSERT INTO items (name) VALUES (?)", ("gone",))
        raise RuntimeError("abort")
    assert database.execute("SELECT COUNT(*) FROM items WHERE name = ?", ("gone",)) == [(0,)]
    database.execute("INSERT INTO items (name) VALUES (?)", ("x",))
    with pytest.raises(StorageError):
        database.execute("INSERT INTO items (name) VALUES (?)", ("x",))
    assert database.execute("SELECT COUNT(*) FROM items") == [(1,)]  # the connection still works


def test_ids_unique_across_connections(postgres) -> None:  # type: ignore[no-untyped-def]
    url = postgres_url(postgres, "storage_ids")
    one, two = Database(url), Database(url)
    one.execute("DROP TABLE IF EXISTS items")
    one.create(_TABLE)
    two.create(_TABLE)
    ids = [
        db.execute("INSERT INTO items (name) VALUES (?) RETURNING id", (f"n{i}",))[0][0]
        for i, db in enumerate([one, two] * 5)
    ]
    assert len(set(ids)) == 10 and ids == sorted(ids)
    one.close()
    two.close()


def test_replicas_creating_the_tables_together(postgres) -> None:  # type: ignore[no-untyped-def]
    url = postgres_url(postgres, "storage_create")
    Database(url).execute("DROP TABLE IF EXISTS items")
    replicas = [Database(url) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda db: db.create(_TABLE), replicas))  # no duplicate-type error
    for db in replicas:
        db.close()


def test_lost_connection_is_reopened(postgres) -> None:  # type: ignore[no-untyped-def]
    url = postgres_url(postgres, "storage_reconnect")
    db, admin = Database(url), Database(url)
    (pid,) = db.execute("SELECT pg_backend_pid()")[0]
    admin.execute("SELECT pg_terminate_backend(?)", (pid,))  # what a server restart does to it
    with pytest.raises(StorageError):
        db.execute("SELECT 1")  # the statement that meets the loss fails...
    assert db.execute("SELECT 1") == [(1,)]  # ...the next one reconnects
    db.close()
    admin.close()


@pytest.mark.parametrize(
    ("url", "dialect", "location"),
    [
        ("postgresql://govml@db:5432/govml", "postgresql", "postgresql://govml@db:5432/govml"),
        (
            "postgresql+psycopg://govml@db/govml?sslmode=require",
            "postgresql",
            "postgresql://govml@db/govml?sslmode=require",
        ),
        ("postgres://db/govml", "postgresql", "postgresql://db/govml"),
        ("sqlite:///rel/cache.db", "sqlite", "rel/cache.db"),
        ("sqlite:////abs/cache.db", "sqlite", "/abs/cache.db"),
    ],
)
def test_parse_storage_url(url: str, dialect: str, location: str) -> None:
    target = parse_storage_url(url)
    assert (target.dialect, target.location) == (dialect, location)
    assert target.shared == (dialect == "postgresql")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/govml", "expected postgresql://"),
        ("db.internal:5432/govml", "expected postgresql://"),
        ("postgresql://db:port/govml", "Port could not be cast"),
        ("postgresql://db:5432", "name the database"),
        ("sqlite://cache.db", "sqlite:///relative"),
    ],
)
def test_bad_storage_url(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_storage_url(url)


def test_password_never_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        parse_storage_url("postgresql://govml:s3cret@db:x/govml")
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in str(parse_storage_url("postgresql://govml:s3cret@db/govml"))
