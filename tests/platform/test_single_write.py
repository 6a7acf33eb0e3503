"""`Database.single_write()`: one write statement that is its own transaction. On PostgreSQL it
goes with no BEGIN and COMMIT around it (two round trips fewer: the settled answer of a
`Prefer: wait` request, the relay's mark of what it published), and it is committed when the
block ends, on either database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from paygate.platform.db import Database

metadata = sa.MetaData()
notes = sa.Table("single_write_notes", metadata, sa.Column("id", sa.String, primary_key=True))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=1)
    async with database.transaction() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


async def sent_to_postgresql(db: Database) -> list[str]:
    """The queries the (one) pooled PostgreSQL connection sends as text from now on, as asyncpg
    logs them: BEGIN, COMMIT and the like (prepared statements are not logged)."""
    seen: list[str] = []

    def note(record: Any) -> None:
        seen.append(record.query.strip().upper())

    async with db.read() as conn:
        raw = await conn.get_raw_connection()
        raw.driver_connection.add_query_logger(note)
    return seen


async def ids(db: Database) -> set[str]:
    async with db.read() as conn:
        return set((await conn.execute(sa.select(notes.c.id))).scalars())


async def test_a_single_write_is_committed_as_its_block_ends(db: Database) -> None:
    async with db.single_write() as conn:
        await conn.execute(notes.insert(), {"id": "one"})
    assert await ids(db) == {"one"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
async def test_a_single_write_sends_no_begin_or_commit(db: Database) -> None:
    sent = await sent_to_postgresql(db)
    async with db.single_write() as conn:
        await conn.execute(notes.insert(), {"id": "alone"})
    assert sent == []
    async with db.transaction() as conn:  # what it saves
        await conn.execute(notes.insert(), {"id": "wrapped"})
    assert [q.split()[0].rstrip(";") for q in sent] == ["BEGIN", "COMMIT"]
    assert await ids(db) == {"alone", "wrapped"}
