"""Deferred inserts (`paygate.platform.db.deferred`): inside a block, rows wait and go at its end,
in the order the tables were first written, inside the transaction: on SQLite one multi-row
insert per table, on PostgreSQL one statement for every table and row, of one shape whatever the
number of rows; a block that raises sends nothing; outside a block, rows go at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from paygate.platform.db import Database, deferred
from paygate.platform.db.tables import Json
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
values = sa.Table(
    "deferred_values",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("body", Json, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    sa.Column("rate", sa.Float, nullable=False),
    sa.Column("flag", sa.Boolean, nullable=False),
    sa.Column("big", sa.BigInteger, nullable=False),
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
            if db.is_sqlite:
                assert inserted(sent) == [
                    "deferred_parents",
                    "deferred_children",
                    "deferred_children",
                ]
            else:  # one statement: the parents' insert a WITH of the children's
                assert sent[-1].lstrip().upper().startswith("WITH")
                assert inserted(sent) == []  # no INSERT of its own: all in the WITH
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


async def test_an_inner_block_that_raises_drops_only_its_own_rows(db: Database) -> None:
    async with db.transaction() as conn, deferred.deferred(conn):
        await deferred.insert(conn, parents, {"id": "outer"})
        await deferred.insert(conn, children, {"id": "c0", "parent_id": "outer"})
        with pytest.raises(RuntimeError):
            async with deferred.deferred(conn):
                await deferred.insert(conn, parents, {"id": "inner"})  # a table already waiting
                await deferred.insert(conn, children, {"id": "c1", "parent_id": "inner"})
                await deferred.insert(
                    conn,
                    values,
                    {"id": "v", "body": {}, "blob": b"", "rate": 0.0, "flag": True, "big": 1},
                )
                raise RuntimeError("refused")
        await deferred.insert(conn, parents, {"id": "after"})
    async with db.read() as conn:
        assert set((await conn.execute(sa.select(parents.c.id))).scalars()) == {"outer", "after"}
        assert list((await conn.execute(sa.select(children.c.id))).scalars()) == ["c0"]
    assert await count(db, values) == 0


async def test_every_row_goes_in_one_statement_of_one_shape_on_postgresql(db: Database) -> None:
    async def write(n: int) -> list[str]:
        async with db.transaction() as conn:
            with statements(db) as sent:
                async with deferred.deferred(conn):
                    for i in range(n):
                        await deferred.insert(conn, parents, {"id": f"p{n}_{i}"})
                        await deferred.insert(
                            conn, children, {"id": f"c{n}_{i}", "parent_id": f"p{n}_{i}"}
                        )
        return sent

    one, two, five = await write(1), await write(2), await write(5)
    if db.is_sqlite:
        assert len(one) == len(two) == len(five) == 2  # a call into the library each
    else:
        for sent in (one, two, five):
            assert len(sent) == 1 and sent[0].lstrip().upper().startswith("WITH")
        assert two == five  # the same statement (and prepared form) for any number of rows
        # A row a table: the same statement with plain values, no arrays to send.
        assert "unnest" in two[0] and "unnest" not in one[0]
    assert await count(db, parents) == 8 and await count(db, children) == 8


@pytest.mark.parametrize("per_block", [3, 1], ids=["arrays", "one-row-values"])
async def test_each_kind_of_value_is_kept_as_given(db: Database, per_block: int) -> None:
    # JSON, bytes, floats, flags, big integers and NULLs go through the arrays, or as plain
    # values when a block has one row a table, unchanged.
    rows = [
        {
            "id": "v0",
            "body": [["a", 1], {"b": None}],
            "blob": b"x",
            "rate": 0.0,
            "flag": False,
            "big": 0,
            "note": "",
        },
        {
            "id": "v1",
            "body": {"amount": 1099, "nested": ["é", None]},
            "blob": b"\x00\xffsealed",
            "rate": 0.25,
            "flag": True,
            "big": 2**62,
            "note": None,
        },
        {
            "id": "v2",
            "body": [],  # a JSON list, not one more dimension of the array
            "blob": b"",
            "rate": -1.5,
            "flag": False,
            "big": -(2**62),
            "note": "text, with 'quotes' and {braces}",
        },
    ]
    for start in range(0, len(rows), per_block):
        async with db.transaction() as conn, deferred.deferred(conn):
            await deferred.insert(conn, values, rows[start : start + per_block])
            await deferred.insert(conn, parents, {"id": f"p{start}"})
    async with db.read() as conn:
        kept = [dict(r) for r in (await conn.execute(sa.select(values))).mappings()]
    assert sorted(kept, key=lambda r: r["id"]) == rows


@pytest.mark.parametrize("rows", [1, 2], ids=["one-row-values", "arrays"])
async def test_a_broken_key_in_the_one_statement_fails_it_whole(db: Database, rows: int) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        async with db.transaction() as conn, deferred.deferred(conn):
            for i in range(rows):
                await deferred.insert(conn, parents, {"id": f"orphaned{i}"})
                await deferred.insert(conn, children, {"id": f"lost{i}", "parent_id": "nobody"})
    assert await count(db, parents) == 0 and await count(db, children) == 0


async def test_on_sqlite_the_rows_go_to_the_driver_past_sqlalchemy_s_execution(
    db: Database,
) -> None:
    # The statement is SQLAlchemy's own, its listeners hear it with the rows' values in order,
    # but no execution context of SQLAlchemy's is made for it.
    if not db.is_sqlite:
        pytest.skip("PostgreSQL sends one statement for every table (above)")
    seen: list[tuple[str, object, object]] = []

    def record(
        _conn: object, _cursor: object, statement: str, params: object, context: object, *_: object
    ) -> None:
        seen.append((statement, params, context))

    sa.event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.transaction() as conn, deferred.deferred(conn):
            await deferred.insert(conn, parents, [{"id": "p1"}, {"id": "p2"}])
            await deferred.insert(conn, children, {"id": "c", "parent_id": "p1", "note": None})
    finally:
        sa.event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert seen == [
        ("INSERT INTO deferred_parents (id) VALUES (?)", [("p1",), ("p2",)], None),
        (
            "INSERT INTO deferred_children (id, parent_id, note) VALUES (?, ?, ?)",
            [("c", "p1", None)],
            None,
        ),
    ]
    assert await count(db, parents) == 2 and await count(db, children) == 1


async def _ids(db: Database, table: sa.Table) -> set[str]:
    async with db.read() as conn:
        return set((await conn.execute(sa.select(table.c.id))).scalars())


async def test_deletes_wait_for_the_blocks_end_and_go_with_its_inserts(db: Database) -> None:
    async with db.transaction() as conn:
        await deferred.insert(conn, parents, [{"id": f"old{i}"} for i in range(4)])
    with statements(db) as sent:
        async with db.transaction() as conn:
            async with deferred.deferred(conn):
                await deferred.delete(conn, parents, "id", "old0")
                await deferred.delete(conn, parents, "id", "old2")
                await deferred.insert(conn, parents, {"id": "new"})
                # Not yet: the block's own reads still find the row.
                assert await conn.scalar(sa.select(parents.c.id).where(parents.c.id == "old0"))
            writes = [s for s in sent if not s.startswith("SELECT")]
            if db.is_sqlite:  # one delete for both keys, then the insert
                assert [s.split()[0].upper() for s in writes] == ["DELETE", "INSERT"]
            else:  # one statement: the delete a WITH of the insert
                assert len(writes) == 1 and "DELETE FROM deferred_parents" in writes[0]
    assert await _ids(db, parents) == {"old1", "old3", "new"}


@pytest.mark.parametrize("rows", [1, 2], ids=["one-row-values", "arrays"])
async def test_a_deferred_delete_never_reaches_the_blocks_own_rows(db: Database, rows: int) -> None:
    """On both databases: the delete sees the rows from before the block's end."""
    async with db.transaction() as conn, deferred.deferred(conn):
        for i in range(rows):
            await deferred.insert(conn, parents, {"id": f"p{i}"})
        await deferred.delete(conn, parents, "id", "p0")
    assert await _ids(db, parents) == {f"p{i}" for i in range(rows)}


async def test_an_inner_block_that_raises_drops_its_deletes(db: Database) -> None:
    async with db.transaction() as conn:
        await deferred.insert(conn, parents, [{"id": "a"}, {"id": "b"}, {"id": "c"}])
    async with db.transaction() as conn, deferred.deferred(conn):
        await deferred.delete(conn, parents, "id", "a")
        with pytest.raises(RuntimeError):
            async with deferred.deferred(conn):
                await deferred.delete(conn, parents, "id", "b")
                await deferred.delete(conn, children, "id", "nothing")
                raise RuntimeError("refused")
    assert await _ids(db, parents) == {"b", "c"}
    # Outside a block, a delete goes at once.
    async with db.transaction() as conn:
        await deferred.delete(conn, parents, "id", "c")
        assert await conn.scalar(sa.select(sa.func.count()).select_from(parents)) == 1
    assert await _ids(db, parents) == {"b"}


VALUES_ROW = {"body": {}, "blob": b"", "rate": 0.0, "flag": False, "big": 0, "note": None}


async def _values(db: Database) -> dict[str, dict[str, object]]:
    async with db.read() as conn:
        return {r["id"]: dict(r) for r in (await conn.execute(sa.select(values))).mappings()}


@pytest.mark.parametrize("keys", [1, 3], ids=["one-row-values", "arrays"])
async def test_updates_wait_for_the_blocks_end_merged_a_row(db: Database, keys: int) -> None:
    ids = [f"v{i}" for i in range(keys)]
    async with db.transaction() as conn:
        await deferred.insert(conn, values, [{"id": i, **VALUES_ROW} for i in ids])
    with statements(db) as sent:
        async with db.transaction() as conn:
            async with deferred.deferred(conn):
                for n, i in enumerate(ids):
                    await deferred.update(conn, values, "id", i, {"big": 2**62 + n, "rate": 0.5})
                    # A second update of the row: its values over the first's, the rest kept.
                    body = {"n": n, "list": [1, None]}
                    await deferred.update(conn, values, "id", i, {"rate": -1.5, "body": body})
                await deferred.insert(conn, parents, {"id": "p"})
                assert await conn.scalar(sa.select(values.c.big).where(values.c.id == "v0")) == 0
            writes = [s for s in sent if not s.startswith("SELECT")]
            if db.is_sqlite:  # one update for the rows of one set of columns, then the insert
                assert [s.split()[0].upper() for s in writes] == ["UPDATE", "INSERT"]
            else:
                assert len(writes) == 1 and "UPDATE deferred_values" in writes[0]
                assert ("unnest" in writes[0]) == (keys > 1)
    kept = await _values(db)
    for n, i in enumerate(ids):
        assert kept[i] == {
            **VALUES_ROW,
            "id": i,
            "big": 2**62 + n,
            "rate": -1.5,
            "body": {"n": n, "list": [1, None]},
        }


async def test_an_inner_block_that_raises_drops_its_updates(db: Database) -> None:
    async with db.transaction() as conn:
        await deferred.insert(conn, values, [{"id": i, **VALUES_ROW} for i in ("a", "b")])
    async with db.transaction() as conn, deferred.deferred(conn):
        await deferred.update(conn, values, "id", "a", {"big": 1})
        with pytest.raises(RuntimeError):
            async with deferred.deferred(conn):
                await deferred.update(conn, values, "id", "a", {"big": 2, "note": "x"})
                await deferred.update(conn, values, "id", "b", {"big": 3})
                raise RuntimeError("refused")
    kept = await _values(db)
    assert (kept["a"]["big"], kept["a"]["note"], kept["b"]["big"]) == (1, None, 0)
    # Outside a block, an update goes at once.
    async with db.transaction() as conn:
        await deferred.update(conn, values, "id", "b", {"note": "now"})
        assert await conn.scalar(sa.select(values.c.note).where(values.c.id == "b")) == "now"


async def test_a_deferred_update_refuses_its_blocks_own_rows_and_its_key(db: Database) -> None:
    async with db.transaction() as conn, deferred.deferred(conn):
        await deferred.insert(conn, values, {"id": "new", **VALUES_ROW})
        with pytest.raises(ValueError, match="its own block inserts"):
            await deferred.update(conn, values, "id", "new", {"big": 1})
        with pytest.raises(ValueError, match="key column"):
            await deferred.update(conn, values, "id", "other", {"id": "renamed"})
    assert set(await _values(db)) == {"new"}
