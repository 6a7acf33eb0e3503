"""The Alembic migrations build exactly the declared schema on both databases, run again as a
no-op, and go down and up again; SQLite connections get WAL, full sync and foreign keys."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import paygate.fraud.rules_tables
import paygate.fraud.tables
import paygate.ledger.tables
import paygate.notifications.tables
import paygate.reconciliation.tables
import paygate.settlements.tables  # noqa: F401  (every table on the metadata)
from paygate.platform.db import Database
from paygate.platform.db.migrate import alembic_config, upgrade
from paygate.platform.db.sqlite_inline import inline_url
from paygate.platform.db.tables import merchants, metadata
from tests.conftest import _admin_sql, _with_database

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend: the migrations start from nothing."""
    if request.param == "sqlite":
        # A folder that does not exist yet: `upgrade` creates it, as `paygate migrate` must.
        yield f"sqlite:///{tmp_path / 'new' / 'paygate.db'}"
        return
    server: str = request.getfixturevalue("postgres_server")
    name = f"m_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin_sql(server, f"CREATE DATABASE {name}"))
    yield _with_database(server, name)
    asyncio.run(_admin_sql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def inspect_db(url: str, fn: Any) -> Any:
    """Run `fn(sync_connection)` on the database at `url` (the tests are sync: Alembic runs its
    own event loop)."""

    async def run() -> Any:
        engine = create_async_engine(inline_url(url) if url.startswith("sqlite") else url)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def schema_diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(ctx, metadata))


def check_constraints(conn: Connection) -> set[tuple[str, str]]:
    # Autogenerate does not compare CHECK constraints: the money invariants are checked here.
    inspector = sa.inspect(conn)
    return {
        (table, ck["name"])
        for table in inspector.get_table_names()
        for ck in inspector.get_check_constraints(table)
    }


def declared_check_constraints() -> set[tuple[str, str]]:
    return {
        (table.name, str(c.name))
        for table in metadata.sorted_tables
        for c in table.constraints
        if isinstance(c, sa.CheckConstraint)
    }


def version(conn: Connection) -> list[str]:
    return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


def test_one_head() -> None:
    # Two migrations written in parallel from the same parent would fork the history.
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert heads == [HEAD]


def test_migrations_build_the_declared_schema(empty_url: str) -> None:
    upgrade(empty_url)
    assert inspect_db(empty_url, schema_diff) == []
    assert inspect_db(empty_url, check_constraints) == declared_check_constraints()
    assert ("payments", "ck_payments_refunds_within_captured") in declared_check_constraints()
    assert inspect_db(empty_url, version) == [HEAD]


def test_upgrade_again_is_a_no_op(empty_url: str) -> None:
    upgrade(empty_url)

    def add_merchant(conn: Connection) -> None:
        conn.execute(merchants.insert().values(id="mer_1", name="Acme", tier="standard", created=1))

    inspect_db(empty_url, add_merchant)
    upgrade(empty_url)
    assert inspect_db(empty_url, version) == [HEAD]
    assert inspect_db(empty_url, schema_diff) == []
    names = inspect_db(empty_url, lambda c: list(c.execute(sa.select(merchants.c.name)).scalars()))
    assert names == ["Acme"]


def test_downgrade_to_base_then_upgrade(empty_url: str) -> None:
    upgrade(empty_url)
    command.downgrade(alembic_config(empty_url), "base")
    tables = inspect_db(empty_url, lambda c: set(sa.inspect(c).get_table_names()))
    assert tables == {"alembic_version"}
    assert inspect_db(empty_url, version) == []
    upgrade(empty_url)
    assert inspect_db(empty_url, schema_diff) == []
    assert inspect_db(empty_url, version) == [HEAD]


async def test_sqlite_connections_run_wal_full_sync_and_foreign_keys(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        # Every pooled connection gets the pragmas, not only the first: hold two at once.
        async with db.read() as a, db.read() as b:
            for conn in (a, b):
                pragma = conn.exec_driver_sql
                assert (await pragma("PRAGMA journal_mode")).scalar() == "wal"
                assert (await pragma("PRAGMA synchronous")).scalar() == 2  # FULL
                assert (await pragma("PRAGMA foreign_keys")).scalar() == 1
                assert (await pragma("PRAGMA busy_timeout")).scalar() == 30000
        # Foreign keys are enforced, not only declared.
        with pytest.raises(sa.exc.IntegrityError):
            async with db.transaction() as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO api_keys (id, merchant_id, kind, livemode, key_hash, last4,"
                        " created) VALUES ('key_1', 'mer_missing', 'secret', 0, 'h', '1234', 1)"
                    )
                )
    finally:
        await db.dispose()


async def test_sqlite_write_transactions_take_the_write_lock_at_begin(sqlite_url: str) -> None:
    # BEGIN IMMEDIATE: a writer holds the lock from its first statement, so it never fails
    # later with SQLITE_BUSY when a deferred read would have had to upgrade to a write.
    db = Database(sqlite_url)
    path = sqlite_url.split("///", 1)[1]
    try:
        async with db.transaction() as conn:
            await conn.execute(sa.select(merchants.c.id))  # a read only, yet the lock is held
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
    finally:
        await db.dispose()
