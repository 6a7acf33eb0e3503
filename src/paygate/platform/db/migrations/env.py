"""Alembic environment: runs migrations on SQLite and PostgreSQL (asyncpg) alike, through the
drivers the gateway itself uses."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import paygate.fraud.rules_tables
import paygate.fraud.tables
import paygate.ledger.tables
import paygate.notifications.tables
import paygate.reconciliation.tables
import paygate.settlements.tables  # noqa: F401
from paygate.platform.db.sqlite_inline import inline_url
from paygate.platform.db.tables import metadata

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    if url.startswith("sqlite"):
        url = inline_url(url)
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    asyncio.run(_run_async(url))
