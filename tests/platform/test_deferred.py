"""Deferred inserts (`paygate.platform.db.deferred`): inside a block, rows wait and go as one
multi-row insert per table at its end, in the order the tables were first written, inside the
transaction (on PostgreSQL, one row a table goes as a single statement); a block that raises
sends nothing; outside a block, rows go at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from paygate.platform.db import Database, deferred
from tests.support import statements

metadata = sa.MetaData()
parents = sa.Table("deferred_parents", metadata, sa.Column("id", sa.String, primary_key=True))
children = sa.Table(
    "deferred_children",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("parent_id", sa.String, sa.ForeignKey("deferred_parents.id"), nullable=False),
    sa.Column("note", sa.String),
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.transaction() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


def inserted(sent: list[str]) -> list[str]:
    """The tables of the inserts among `sent`, in order."""
    return [s.split("(")[0].split()[-1] for s in sent if s.upper().startswith("INSERT")]


async def count(db: Database, table: sa.Table) -> int:
    async with db.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


async def test_rows_go_as_one_insert_per_table_at_the_blocks_end(db: Database) -> None:
    with statements(db) as sent:
        async with db.transaction() as conn:
            async with deferred.deferred(conn):
                for i in range(3):
                    await deferred.insert(conn, parents, {"id": f"p{i}"})
                    pair = [{"id": f"c{i}{x}", "parent_id": f"p{i}"} for x in "ab"]
                    await deferred.insert(conn, children, pair)
                # A row with other columns goes in an insert of its own.
                await deferred.insert(conn, children, {"id": "c9", "parent_id": "p0", "note": "n"})
                assert inserted(sent) == []  # nothing sent yet
                assert await conn.scalar(sa.select(sa.func.count()).select_from(parents)) == 0
            # Sent at the block's end, parents first (the children's foreign key needs them).
            assert inserted(sent) == ["deferred_parents", "deferred_children", "deferred_children"]
        assert await count(db, parents) == 3
        assert await count(db, children) == 7


async def test_a_block_that_raises_sends_nothing(db: Database) -> None:
    with statements(db) as sent:
        async with db.transaction() as conn:
            await deferred.insert(conn, parents, {"id": "kept"})  # outside a block: sent at once
            with pytest.raises(RuntimeError):
                async with deferred.deferred(conn):
                    await deferred.insert(conn, parents, {"id": "dropped"})
                    raise RuntimeError("the batch failed")
            # The connection is no longer deferring.
            await deferred.insert(conn, parents, {"id": "after"})
        assert inserted(sent) == ["deferred_parents", "deferred_parents"]
        async with db.read() as conn:
            ids = set((await conn.execute(sa.select(parents.c.id))).scalars())
        assert ids == {"kept", "after"}


async def test_an_inner_block_leaves_its_rows_to_the_outer_one(db: Database) -> None:
    with statements(db) as sent:
        async with db.transaction() as conn, deferred.deferred(conn):
            async with deferred.deferred(conn):
                await deferred.insert(conn, parents, {"id": "a"})
            assert inserted(sent) == []
            await deferred.insert(conn, parents, {"id": "b"})
        assert inserted(sent) == ["deferred_parents"]
        assert await count(db, parents) == 2


async def test_one_row_a_table_goes_as_one_statement_on_postgresql(db: Database) -> None:
    async with db.transaction() as conn:
        with statements(db) as sent:
            async with deferred.deferred(conn):
                await deferred.insert(conn, parents, {"id": "solo"})
                await deferred.insert(
                    conn, children, {"id": "kid", "parent_id": "solo", "note": "n"}
                )
    if db.is_sqlite:
        assert len(sent) == 2  # a call into the library each: nothing to save
    else:
        assert len(sent) == 1 and sent[0].lstrip().upper().startswith("WITH")
    async with db.read() as conn:
        row = (await conn.execute(sa.select(children))).one()
    assert (row.id, row.parent_id, row.note) == ("kid", "solo", "n")


async def test_a_broken_key_in_the_one_statement_fails_it_whole(db: Database) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        async with db.transaction() as conn, deferred.deferred(conn):
            await deferred.insert(conn, parents, {"id": "orphaned"})
            await deferred.insert(conn, children, {"id": "lost", "parent_id": "nobody"})
    assert await count(db, parents) == 0 and await count(db, children) == 0
