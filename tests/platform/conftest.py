"""PostgreSQL fixtures of the platform tests: a database of a test's own, and what a restart
does to its connections."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg", "postgresql")


@pytest.fixture
async def own_pg_database(postgres_server: str) -> AsyncIterator[str]:
    """A database of its own, so that cutting its connections touches nothing else."""
    name = f"own_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(postgres_server))
    await admin.execute(f"CREATE DATABASE {name}")
    base, _, query = postgres_server.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    try:
        yield url
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def cut_connections(url: str, *, keep: int | None = None) -> int:
    """Terminate every session of the database but ours (and `keep`): what a restart does to
    them. Returns how many were cut."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        cut: int = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND pid IS DISTINCT FROM $1",
            keep,
        )
        return cut
    finally:
        await conn.close()
