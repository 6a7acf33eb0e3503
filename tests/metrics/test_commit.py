"""Counting once per committed change: a transaction that rolls back, or a savepoint rolled back
inside one that commits, counts nothing of what it undid."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from paygate.api import errors
from paygate.payments import repository
from paygate.payments.service import state_of, transition
from paygate.platform import metrics
from paygate.platform.db.tables import dead_letters
from paygate.runtime import Runtime
from tests.metrics.support import scrape
from tests.support import idem, payment_body, statements


class Boom(Exception):
    pass


async def test_on_commit_runs_after_commit_only(runtime: Runtime) -> None:
    seen: list[str] = []
    with pytest.raises(Boom):
        async with runtime.db.transaction() as conn:
            metrics.on_commit(conn, lambda: seen.append("rolled back"))
            raise Boom
    async with runtime.db.transaction() as conn:
        metrics.on_commit(conn, lambda: seen.append("outer"))
        savepoint = await conn.begin_nested()
        metrics.on_commit(conn, lambda: seen.append("undone"))
        await savepoint.rollback()
        kept = await conn.begin_nested()
        metrics.on_commit(conn, lambda: seen.append("released"))
        await kept.commit()
        assert seen == []  # nothing before the commit
    assert seen == ["outer", "released"]
    # The connection goes back to the pool clean: a later transaction counts only its own.
    async with runtime.db.transaction() as conn:
        pass
    assert seen == ["outer", "released"]


async def test_a_failing_count_never_fails_the_commit(runtime: Runtime) -> None:
    def broken() -> None:
        raise RuntimeError("a metric bug")

    async with runtime.db.transaction() as conn:
        metrics.on_commit(conn, broken)
    async with runtime.db.read() as conn:
        assert await runtime.db.ping()


async def test_a_transition_rolled_back_is_not_counted(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    r = await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    payment_id = r.json()["id"]
    before = await scrape(client)
    with pytest.raises(Boom):
        async with runtime.db.transaction() as conn:
            row = await repository.get_by_id(conn, payment_id, for_update=True)
            assert row is not None
            await transition(conn, row, state_of(row).cancel(), event="payment.canceled")
            raise Boom
    middle = await scrape(client)
    assert middle.delta(before, "paygate_payments_total", status="canceled") == 0
    assert middle.delta(before, "paygate_payment_outcome_seconds_count") == 0
    # The same change through the API (inside the idempotency savepoint) commits: counted once.
    r = await client.post(f"/v1/payments/{payment_id}/cancel", headers={**auth, **idem()})
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    after = await scrape(client)
    assert after.delta(before, "paygate_payments_total", status="canceled") == 1
    assert after.delta(before, "paygate_payment_outcome_seconds_count", status="canceled") == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_lost_connection_fails_as_itself_with_counts_pending(runtime: Runtime) -> None:
    """A connection the server drops mid-transaction (a database restart) surfaces as the
    connection error that it is, which the API answers with 503 and Retry-After; the counts
    pending on it are dropped with it. Reading them while rolling back the dead connection
    used to raise SQLAlchemy's PendingRollbackError instead: a 500."""
    seen: list[str] = []
    with pytest.raises(DBAPIError) as raised:
        async with runtime.db.transaction() as conn:
            metrics.on_commit(conn, lambda: seen.append("counted"))
            savepoint = await conn.begin_nested()  # as an idempotent request's effects run
            metrics.on_commit(conn, lambda: seen.append("counted in the savepoint"))
            await conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
            await savepoint.commit()
    assert raised.value.connection_invalidated
    assert errors._unavailable(raised.value)
    assert seen == []
    async with runtime.db.transaction() as conn:  # the pool hands out a live connection
        metrics.on_commit(conn, lambda: seen.append("next"))
    assert seen == ["next"]


async def test_a_database_savepoint_undoes_its_block_and_its_counts(runtime: Runtime) -> None:
    """`Database.savepoint` (the idempotent request's unit of work): a block that raises rolls
    back its own rows and counts, the rest of the transaction keeps theirs. On SQLite it is the
    driver's own SAVEPOINT: no statement through SQLAlchemy (its nested transaction costs about
    240 us of CPU); on PostgreSQL a plain SAVEPOINT, and no RELEASE (the COMMIT releases it)."""

    def row(event_id: str) -> dict[str, object]:
        return dict(
            id=f"dl_{event_id}",
            consumer="test",
            event_id=event_id,
            event_type="payment.created",
            payload={},
            error="",
            attempts=1,
            created=0,
        )

    seen: list[str] = []
    with statements(runtime.db) as sent:
        async with runtime.db.transaction() as conn:
            await conn.execute(dead_letters.insert(), row("evt_outer"))
            metrics.on_commit(conn, lambda: seen.append("outer"))
            with pytest.raises(Boom):
                async with runtime.db.savepoint(conn):
                    await conn.execute(dead_letters.insert(), row("evt_undone"))
                    metrics.on_commit(conn, lambda: seen.append("undone"))
                    raise Boom
            async with runtime.db.savepoint(conn):
                await conn.execute(dead_letters.insert(), row("evt_kept"))
                metrics.on_commit(conn, lambda: seen.append("kept"))
    assert seen == ["outer", "kept"]
    async with runtime.db.read() as conn:
        kept = await conn.scalars(sa.select(dead_letters.c.event_id).order_by(dead_letters.c.id))
        assert sorted(kept) == ["evt_kept", "evt_outer"]
    words = [s.split()[0].upper() for s in sent]
    savepoints = [s for s in words if s in ("SAVEPOINT", "RELEASE", "ROLLBACK")]
    assert savepoints == ([] if runtime.db.is_sqlite else ["SAVEPOINT", "ROLLBACK", "SAVEPOINT"])
