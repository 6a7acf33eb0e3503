"""`Database.single_write()`: one write statement that is its own transaction. On PostgreSQL it
goes with no BEGIN and COMMIT around it (two round trips fewer: the settled answer of a
`Prefer: wait` request, the relay's mark of what it published), and it is committed when the
block ends, on either database. And `Database.savepoint()` on PostgreSQL: a plain statement,
never released (the COMMIT releases it), each block rolling back to its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from paygate.platform.db import Database
from tests.platform.conftest import cut_connections
from tests.support import statements

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


async def test_one_statement_for_many_rows_is_written_whole_or_not_at_all(db: Database) -> None:
    # Settled answers and webhook outcomes go as one statement with many parameter sets: on
    # PostgreSQL, with no transaction around it, they still commit together or not at all.
    async with db.single_write() as conn:
        await conn.execute(notes.insert(), {"id": "taken"})
    with pytest.raises(sa.exc.IntegrityError):
        async with db.single_write() as conn:
            await conn.execute(notes.insert(), [{"id": "a"}, {"id": "b"}, {"id": "taken"}])
    assert await ids(db) == {"taken"}
    async with db.single_write() as conn:
        await conn.execute(notes.insert(), [{"id": "a"}, {"id": "b"}])
    assert await ids(db) == {"taken", "a", "b"}


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


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
async def test_a_savepoint_that_succeeds_is_left_for_the_commit_to_release(db: Database) -> None:
    sent = await sent_to_postgresql(db)
    with statements(db) as seen:
        async with db.transaction() as conn:
            await conn.execute(notes.insert(), {"id": "first"})  # the transaction begun
            async with db.savepoint(conn):
                await conn.execute(notes.insert(), {"id": "kept"})
    assert [s.split()[0].upper() for s in seen] == ["INSERT", "SAVEPOINT", "INSERT"]  # no RELEASE
    assert [q.split()[0].rstrip(";") for q in sent] == ["BEGIN", "COMMIT"]
    assert await ids(db) == {"first", "kept"}


class Refused(Exception):
    pass


async def test_savepoints_inside_savepoints_roll_back_to_their_own(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute(notes.insert(), {"id": "first"})
        async with db.savepoint(conn):
            await conn.execute(notes.insert(), {"id": "outer"})
            with pytest.raises(Refused):
                async with db.savepoint(conn):
                    await conn.execute(notes.insert(), {"id": "inner, undone"})
                    raise Refused
            async with db.savepoint(conn):
                await conn.execute(notes.insert(), {"id": "inner, kept"})
        with pytest.raises(Refused):
            async with db.savepoint(conn):
                async with db.savepoint(conn):
                    await conn.execute(notes.insert(), {"id": "inside an undone one"})
                raise Refused
        async with db.savepoint(conn):
            await conn.execute(notes.insert(), {"id": "after"})
    assert await ids(db) == {"first", "outer", "inner, kept", "after"}


async def test_a_savepoint_may_come_first_in_its_transaction(db: Database) -> None:
    async with db.transaction() as conn:
        with pytest.raises(Refused):
            async with db.savepoint(conn):
                await conn.execute(notes.insert(), {"id": "undone"})
                raise Refused
        async with db.savepoint(conn):
            await conn.execute(notes.insert(), {"id": "kept"})
    assert await ids(db) == {"kept"}


@pytest.mark.postgres
async def test_a_connection_lost_inside_a_savepoint_reports_its_own_error(
    own_pg_database: str,
) -> None:
    """The server cut the connection while the block ran (as a crash or a restart does): the
    block's own error comes out, a lost connection (a 503 to an API caller), not the refusal
    of the rollback to the savepoint on a connection that is gone (a 500)."""
    db = Database(own_pg_database, pool_size=1)
    try:
        async with db.transaction() as conn:
            await conn.run_sync(metadata.create_all)
        with pytest.raises(sa.exc.DBAPIError) as raised:
            async with db.transaction() as conn, db.savepoint(conn):
                await conn.execute(notes.insert(), {"id": "lost"})
                assert await cut_connections(own_pg_database) == 1
                await conn.execute(notes.insert(), {"id": "never"})
        assert raised.value.connection_invalidated, raised.value
        assert await ids(db) == set()  # and the pool serves again
    finally:
        await db.dispose()
