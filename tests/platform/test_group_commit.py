"""Group commit on SQLite: writers share commits, and each still gets exactly the guarantees of
a transaction of its own: its block's writes are committed when the block's exit returns, are
rolled back alone when the block raises, and never half written."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paygate.platform.db import Database, group_commit
from paygate.platform.db.group_commit import BatchAborted


class Boom(Exception):
    pass


async def _database(path: Path, **kwargs: int) -> tuple[Database, list[int]]:
    """A database with table `t`, and a list that grows by one for each COMMIT it runs."""
    db = Database(f"sqlite:///{path}", **kwargs)
    commits: list[int] = []
    sa.event.listen(db.engine.sync_engine, "commit", lambda _conn: commits.append(1))
    async with db.transaction() as conn:
        await conn.execute(sa.text("CREATE TABLE t (writer INTEGER, n INTEGER)"))
        await conn.execute(sa.text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        await conn.execute(
            sa.text(
                "CREATE TABLE child (id INTEGER, parent INTEGER REFERENCES parent(id)"
                " DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    commits.clear()
    return db, commits


def _committed(path: Path) -> set[tuple[int, int]]:
    """What another connection sees: only committed rows."""
    other = sqlite3.connect(path)
    try:
        return set(other.execute("SELECT writer, n FROM t").fetchall())
    finally:
        other.close()


async def _write(
    db: Database, path: Path, writer: int, rows: int, *, fail: bool = False, urgent: bool = False
) -> None:
    async with db.transaction(urgent=urgent) as conn:
        for n in range(rows):
            await conn.execute(sa.text("INSERT INTO t VALUES (:w, :n)"), {"w": writer, "n": n})
            await asyncio.sleep(0)  # let the others queue
        if fail:
            raise Boom(writer)
    # The block has returned: its rows are committed, visible to any other connection.
    assert {(writer, n) for n in range(rows)} <= _committed(path)


async def test_concurrent_writers_share_commits_and_each_returns_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "MAX_BATCH_AGE_S", 60.0)  # however slow the machine
    path = tmp_path / "g.db"
    db, commits = await _database(path)
    try:
        await asyncio.gather(*(_write(db, path, w, 3) for w in range(50)))
        assert len(_committed(path)) == 150
        assert 1 <= len(commits) < 50  # shared: far fewer commits than writers
    finally:
        await db.dispose()


async def test_a_batch_commits_once_it_is_old_even_with_writers_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "MAX_BATCH_AGE_S", 0.0)
    path = tmp_path / "g.db"
    db, commits = await _database(path)
    try:
        await asyncio.gather(*(_write(db, path, w, 2) for w in range(10)))
        assert len(commits) == 10  # every batch was old at once: one writer each
    finally:
        await db.dispose()


async def test_one_writer_alone_commits_at_once(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    db, commits = await _database(path)
    try:
        await _write(db, path, 1, 2)
        await _write(db, path, 2, 2)
        assert len(commits) == 2
    finally:
        await db.dispose()


async def test_group_commit_max_of_one_commits_every_writer_alone(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    db, commits = await _database(path, group_commit_max=1)
    try:
        await asyncio.gather(*(_write(db, path, w, 2) for w in range(10)))
        assert len(commits) == 10
    finally:
        await db.dispose()


async def test_a_failing_writer_rolls_back_alone(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    db, _ = await _database(path)
    try:
        results = await asyncio.gather(
            *(_write(db, path, w, 3, fail=w % 3 == 0) for w in range(30)), return_exceptions=True
        )
        failed = {w for w, r in enumerate(results) if isinstance(r, Boom)}
        assert failed == {w for w in range(30) if w % 3 == 0}
        assert all(r is None for w, r in enumerate(results) if w not in failed)
        assert {w for w, _ in _committed(path)} == set(range(30)) - failed
        assert len(_committed(path)) == 3 * (30 - len(failed))
    finally:
        await db.dispose()


async def test_a_failed_commit_fails_every_writer_of_its_batch_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deferred constraint is checked only at COMMIT: one writer's dangling row sinks the batch.
    # (The gateway's schema has none: its constraints fail the statement, inside the savepoint.)
    monkeypatch.setattr(group_commit, "MAX_BATCH_AGE_S", 60.0)  # the three share one batch
    path = tmp_path / "g.db"
    db, _ = await _database(path)
    gate = asyncio.Event()

    async def first() -> None:
        async with db.transaction() as conn:
            await conn.execute(sa.text("INSERT INTO t VALUES (1, 0)"))
            await gate.wait()  # the others queue meanwhile: they join this batch

    async def dangling() -> None:
        async with db.transaction() as conn:
            await conn.execute(sa.text("INSERT INTO child VALUES (1, 999)"))

    async def plain(writer: int) -> None:
        async with db.transaction() as conn:
            await conn.execute(sa.text("INSERT INTO t VALUES (:w, 0)"), {"w": writer})

    try:
        tasks = [asyncio.create_task(first())]
        await asyncio.sleep(0.05)
        tasks += [asyncio.create_task(dangling()), asyncio.create_task(plain(2))]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, BatchAborted) for r in results), results
        assert _committed(path) == set()
        await plain(3)  # the next batch is a new one
        assert _committed(path) == {(3, 0)}
    finally:
        await db.dispose()


async def test_a_writer_cancelled_in_its_block_or_its_queue_strands_nobody(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    db, _ = await _database(path)
    gate = asyncio.Event()

    async def holder() -> None:
        async with db.transaction() as conn:
            await conn.execute(sa.text("INSERT INTO t VALUES (1, 0)"))
            await gate.wait()

    async def stuck() -> None:
        async with db.transaction() as conn:
            await conn.execute(sa.text("INSERT INTO t VALUES (2, 0)"))
            await asyncio.Event().wait()  # never ends by itself

    try:
        a = asyncio.create_task(holder())
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(stuck()) for _ in range(3)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.sleep(0.05)
        for task in queued:  # one in its block, the others still queued
            task.cancel()
        await asyncio.wait_for(a, timeout=10)
        await asyncio.gather(*queued, return_exceptions=True)
        assert _committed(path) == {(1, 0)}
        await _write(db, path, 5, 1)  # the lock was handed on
    finally:
        await db.dispose()


async def _queue_behind_a_holder(
    db: Database, order: list[str], names: list[str]
) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    """A writer holding the lock in its block, then writers named `names` queued in turn
    ("u…" urgent): each appends its name to `order` as its block starts."""
    gate = asyncio.Event()

    async def holder() -> None:
        async with db.transaction() as conn:
            await conn.execute(sa.text("INSERT INTO t VALUES (0, 0)"))
            await gate.wait()

    async def writer(name: str, n: int) -> None:
        async with db.transaction(urgent=name.startswith("u")) as conn:
            order.append(name)
            await conn.execute(sa.text("INSERT INTO t VALUES (:w, 0)"), {"w": n})

    tasks = [asyncio.create_task(holder())]
    await asyncio.sleep(0.05)
    for n, name in enumerate(names, start=1):
        tasks.append(asyncio.create_task(writer(name, n)))
        await asyncio.sleep(0.01)
    return gate, tasks


async def test_an_urgent_writer_takes_its_turn_before_the_others_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "MAX_BATCH_AGE_S", 60.0)  # none waits too long here
    path = tmp_path / "g.db"
    db, commits = await _database(path)
    order: list[str] = []
    try:
        gate, tasks = await _queue_behind_a_holder(db, order, ["b1", "u1", "b2", "u2"])
        gate.set()
        await asyncio.gather(*tasks)
        assert order == ["u1", "u2", "b1", "b2"]
        # The urgent ones committed with the holder as soon as no urgent writer was left
        # waiting; the others shared the next commit.
        assert len(commits) == 2
        assert len(_committed(path)) == 5
    finally:
        await db.dispose()


async def test_a_writer_queued_too_long_goes_before_urgent_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "MAX_BATCH_AGE_S", 0.02)
    path = tmp_path / "g.db"
    db, _ = await _database(path)
    order: list[str] = []
    try:
        gate, tasks = await _queue_behind_a_holder(db, order, ["b1", "u1"])
        await asyncio.sleep(0.05)  # b1 has now waited longer than a batch may stay open
        gate.set()
        await asyncio.gather(*tasks)
        assert order == ["b1", "u1"]
    finally:
        await db.dispose()


async def test_an_urgent_writer_cancelled_in_its_queue_strands_nobody(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    db, _ = await _database(path)
    order: list[str] = []
    try:
        gate, tasks = await _queue_behind_a_holder(db, order, ["u1", "b1", "u2"])
        tasks[1].cancel()
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[1], asyncio.CancelledError)
        assert order == ["u2", "b1"]
        assert {w for w, _ in _committed(path)} == {0, 2, 3}
    finally:
        await db.dispose()


writers = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=4), st.booleans(), st.integers(0, 3), st.booleans()
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=writers)
def test_what_commits_is_exactly_the_writers_that_returned(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[int, bool, int, bool]]
) -> None:
    path = tmp_path_factory.mktemp("g") / "g.db"

    async def scenario() -> None:
        db, _ = await _database(path)
        try:

            async def one(writer: int, rows: int, fail: bool, delay: int, urgent: bool) -> None:
                for _ in range(delay):
                    await asyncio.sleep(0)
                await _write(db, path, writer, rows, fail=fail, urgent=urgent)

            results = await asyncio.gather(
                *(one(w, *p) for w, p in enumerate(plan)), return_exceptions=True
            )
            expected = {
                (w, n) for w, (rows, fail, _, _) in enumerate(plan) if not fail for n in range(rows)
            }
            assert _committed(path) == expected
            for (_, fail, _, _), result in zip(plan, results, strict=True):
                assert isinstance(result, Boom) if fail else result is None
        finally:
            await db.dispose()

    asyncio.run(scenario())
