"""All SQL of webhooks: endpoints, the public events (read from the outbox), deliveries and
their attempts."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import new_id, now_s
from paygate.notifications.tables import webhook_attempts, webhook_deliveries, webhook_endpoints
from paygate.platform.db.pagination import Page, fetch_page
from paygate.platform.db.tables import outbox

E = webhook_endpoints.c
D = webhook_deliveries.c
A = webhook_attempts.c
OB = outbox.c


async def insert_ignoring_duplicates(
    conn: AsyncConnection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    unique: Sequence[str],
    *,
    returning: sa.ColumnElement[Any] | None = None,
) -> list[Any]:
    """Insert `rows` (each with the same keys), skipping those that collide on `unique`
    (consumers are idempotent). With `returning`, its value for each row inserted (none for a
    row skipped).

    One statement for any number of rows: sent as many parameter sets, which SQLAlchemy writes
    as multi-row inserts, each within the database's limit on values. Its compiled form is
    cached; a statement carrying the rows as values was compiled anew on every call
    (docs/performance.md)."""
    if not rows:
        return []
    stmt = _ignoring_duplicates(conn.dialect.name, table, tuple(unique), returning)
    result = await conn.execute(stmt, rows)
    return [] if returning is None else list(result.scalars())


@functools.cache
def _ignoring_duplicates(
    dialect: str,
    table: sa.Table,
    unique: tuple[str, ...],
    returning: sa.ColumnElement[Any] | None,
) -> sa.Insert:
    insert = (postgresql if dialect == "postgresql" else sqlite).insert
    stmt: sa.Insert = insert(table).on_conflict_do_nothing(index_elements=unique)
    return stmt if returning is None else stmt.returning(returning)


# Endpoints


async def insert_endpoint(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(webhook_endpoints.insert(), row)


async def get_endpoint(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    endpoint_id: str,
    *,
    for_update: bool = False,
) -> sa.RowMapping | None:
    query = sa.select(webhook_endpoints).where(
        E.id == endpoint_id, E.merchant_id == merchant_id, E.livemode == livemode
    )
    if for_update:
        query = query.with_for_update()
    return (await conn.execute(query)).mappings().one_or_none()


async def list_endpoints(
    conn: AsyncConnection, merchant_id: str, livemode: bool, page: Page
) -> list[sa.RowMapping]:
    query = sa.select(webhook_endpoints).where(E.merchant_id == merchant_id, E.livemode == livemode)
    return await fetch_page(conn, query, E.id, page)


async def count_endpoints(conn: AsyncConnection, merchant_id: str, livemode: bool) -> int:
    query = sa.select(sa.func.count()).where(E.merchant_id == merchant_id, E.livemode == livemode)
    return int(await conn.scalar(query) or 0)


_ENABLED = sa.select(E.id, E.enabled_events).where(
    E.merchant_id == sa.bindparam("match_merchant"),
    E.livemode == sa.bindparam("match_livemode"),
    E.enabled.is_(True),
)


async def enabled_endpoints(
    conn: AsyncConnection, merchant_id: str, livemode: bool
) -> list[sa.RowMapping]:
    params = {"match_merchant": merchant_id, "match_livemode": livemode}
    return list((await conn.execute(_ENABLED, params)).mappings().all())


async def update_endpoint(conn: AsyncConnection, endpoint_id: str, values: dict[str, Any]) -> None:
    await conn.execute(webhook_endpoints.update().where(E.id == endpoint_id).values(**values))


async def delete_endpoint(conn: AsyncConnection, endpoint_id: str) -> None:
    """The endpoint, and with it (cascades) its deliveries and their attempts."""
    await conn.execute(webhook_endpoints.delete().where(E.id == endpoint_id))


# Events: the public rows of the outbox, as committed


# What a send needs of its endpoint: where, in which version, signed with which secrets.
_SENDING = (
    E.url,
    E.api_version,
    E.secret_key_id,
    E.secret_sealed,
    E.previous_key_id,
    E.previous_sealed,
    E.previous_expires_at,
)
# Each event's row with its merchant's enabled endpoints beside it: a row per endpoint, or one
# with no endpoint (an internal event, or a merchant with none). The event's JSON as stored
# (`body`: what a webhook sends) and each endpoint's URL, version and secrets (a delivery the
# loop takes at once needs no claim: `DeliveryLoop.reserve`).
_EVENTS_WITH_ENDPOINTS = (
    sa.select(
        OB.id,
        OB.merchant_id,
        OB.livemode,
        OB.type,
        OB.public,
        sa.type_coerce(OB.payload, sa.Text).label("body"),
        OB.trace_context,
        E.id.label("endpoint_id"),
        E.enabled_events,
        *_SENDING,
    )
    .select_from(
        outbox.outerjoin(
            webhook_endpoints,
            sa.and_(
                E.merchant_id == OB.merchant_id,
                E.livemode == OB.livemode,
                E.enabled.is_(True),
                OB.public.is_(True),
            ),
        )
    )
    .where(OB.id.in_(sa.bindparam("match_ids", expanding=True)))
)


async def events_with_endpoints(
    conn: AsyncConnection, event_ids: list[str]
) -> dict[str, tuple[sa.RowMapping, list[sa.RowMapping]]]:
    """The stored rows of these events, by id, each with its merchant's enabled endpoints
    (`endpoint_id`, `enabled_events`, what a send needs of the endpoint; none for an internal
    event), in one statement; an unknown id is left out."""
    found: dict[str, tuple[sa.RowMapping, list[sa.RowMapping]]] = {}
    if not event_ids:
        return found
    for row in (
        await conn.execute(_EVENTS_WITH_ENDPOINTS, {"match_ids": list(event_ids)})
    ).mappings():
        _, endpoints = found.setdefault(row["id"], (row, []))
        if row["endpoint_id"] is not None:
            endpoints.append(row)
    return found


async def get_event(
    conn: AsyncConnection, merchant_id: str, livemode: bool, event_id: str
) -> sa.RowMapping | None:
    query = sa.select(OB.id, OB.type, OB.payload).where(
        OB.id == event_id,
        OB.merchant_id == merchant_id,
        OB.livemode == livemode,
        OB.public.is_(True),
    )
    return (await conn.execute(query)).mappings().one_or_none()


async def list_events(
    conn: AsyncConnection, merchant_id: str, livemode: bool, page: Page, *, type: str | None
) -> list[sa.RowMapping]:
    query = sa.select(OB.id, OB.payload).where(
        OB.merchant_id == merchant_id, OB.livemode == livemode, OB.public.is_(True)
    )
    if type is not None:
        query = query.where(OB.type == type)
    return await fetch_page(conn, query, OB.id, page)


# Deliveries


def delivery_rows(
    event_id: str,
    event_type: str,
    endpoint_ids: Iterable[str],
    *,
    due: float,
    give_up_at: float,
) -> list[dict[str, Any]]:
    """The pending deliveries of one event to `endpoint_ids`."""
    now = now_s()
    return [
        {
            "id": new_id("whq"),
            "event_id": event_id,
            "endpoint_id": endpoint_id,
            "event_type": event_type,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": due,
            "give_up_at": give_up_at,
            "locked_until": None,
            "created": now,
            "updated": now,
        }
        for endpoint_id in endpoint_ids
    ]


async def insert_deliveries(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert deliveries (`delivery_rows`), skipping those already there for their (event,
    endpoint): a redelivered event adds none. Returns the ids of those inserted."""
    unique = ("event_id", "endpoint_id")
    inserted = await insert_ignoring_duplicates(
        conn, webhook_deliveries, rows, unique, returning=D.id
    )
    return set(inserted)


async def add_deliveries(
    conn: AsyncConnection,
    event_id: str,
    event_type: str,
    endpoint_ids: Iterable[str],
    *,
    due: float,
    give_up_at: float,
) -> None:
    rows = delivery_rows(event_id, event_type, endpoint_ids, due=due, give_up_at=give_up_at)
    await insert_deliveries(conn, rows)


async def reopen_deliveries(
    conn: AsyncConnection, event_id: str, endpoint_ids: list[str], *, due: float, give_up_at: float
) -> None:
    """Make the deliveries of `event_id` to `endpoint_ids` due again, dead ones included."""
    await conn.execute(
        webhook_deliveries.update()
        .where(D.event_id == event_id, D.endpoint_id.in_(endpoint_ids))
        .values(
            status="pending",
            next_attempt_at=due,
            give_up_at=give_up_at,
            locked_until=None,
            updated=now_s(),
        )
    )


async def due_deliveries(
    conn: AsyncConnection, now: float, limit: int, busy: Iterable[str]
) -> list[sa.RowMapping]:
    """Pending deliveries to enabled endpoints not in `busy`, soonest due first (the first one
    not due yet tells the loop how long it may sleep), with the endpoint's URL and secrets and
    the event's body exactly as stored. On PostgreSQL the rows are locked and rows locked by
    another process are skipped, so several processes share the work."""
    query = (
        sa.select(
            D.id,
            D.event_id,
            D.endpoint_id,
            D.attempts,
            D.next_attempt_at,
            D.give_up_at,
            *_SENDING,
            # The stored JSON text itself, not a decoded copy: the bytes that were committed.
            sa.type_coerce(OB.payload, sa.Text).label("body"),
            OB.trace_context,
        )
        .select_from(
            webhook_deliveries.join(webhook_endpoints, E.id == D.endpoint_id).join(
                outbox, OB.id == D.event_id
            )
        )
        .where(
            D.status == "pending",
            sa.or_(D.locked_until.is_(None), D.locked_until <= now),
            E.enabled.is_(True),
        )
        .order_by(D.next_attempt_at)
        .limit(limit)
    )
    busy = list(busy)
    if busy:
        query = query.where(D.endpoint_id.not_in(busy))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=webhook_deliveries)
    return list((await conn.execute(query)).mappings().all())


async def lease_deliveries(conn: AsyncConnection, ids: list[str], until: float | None) -> None:
    if ids:
        await conn.execute(
            webhook_deliveries.update().where(D.id.in_(ids)).values(locked_until=until)
        )


# An attempt's outcome: its delivery's new state, and the attempt kept beside it. Built once,
# their values passed with each call (a statement built per call costs its cache key each time).
_OUTCOME = {
    "status": sa.bindparam("o_status", type_=D.status.type),
    "attempts": sa.bindparam("o_attempts", type_=D.attempts.type),
    "next_attempt_at": sa.bindparam("o_next_attempt_at", type_=D.next_attempt_at.type),
    "locked_until": sa.null(),
    "updated": sa.bindparam("o_updated", type_=D.updated.type),
}
_ATTEMPT_COLUMNS = [c.name for c in webhook_attempts.c if c.name != "delivery_id"]
_ATTEMPT = {name: sa.bindparam(f"a_{name}", type_=A[name].type) for name in _ATTEMPT_COLUMNS}
_DELIVERY = sa.bindparam("o_delivery_id", type_=D.id.type)
_SET_OUTCOME = webhook_deliveries.update().where(D.id == _DELIVERY).values(_OUTCOME)


def _outcome_together() -> sa.Insert:
    """PostgreSQL: the delivery's update and its attempt's insert in one statement, the attempt
    kept only when the update found its delivery."""
    updated = _SET_OUTCOME.returning(D.id).cte("updated")
    attempt = sa.select(updated.c.id, *_ATTEMPT.values()).select_from(updated)
    return webhook_attempts.insert().from_select(["delivery_id", *_ATTEMPT], attempt)


def _attempt_if_delivered() -> sa.Insert:
    """SQLite: the attempt, kept only when its delivery is still there."""
    there = sa.exists().where(D.id == _DELIVERY)
    attempt = sa.select(_DELIVERY, *_ATTEMPT.values()).where(there)
    return webhook_attempts.insert().from_select(["delivery_id", *_ATTEMPT], attempt)


_RECORD_TOGETHER = _outcome_together()
_RECORD_ATTEMPT = _attempt_if_delivered()


async def record_outcomes(conn: AsyncConnection, outcomes: Sequence[dict[str, Any]]) -> None:
    """Write attempts' outcomes on their deliveries and keep the attempts; an outcome whose
    delivery is gone (its endpoint was deleted meanwhile) is dropped. Each outcome: the
    delivery's `delivery_id`, `status`, `attempts` and `next_attempt_at` (now when None), and
    `attempt`, the attempt's row.

    On PostgreSQL this is one statement (sent for every outcome at once, atomic by itself: run
    it in `Database.single_write()`, one round trip); on SQLite two, to run in one transaction."""
    if not outcomes:
        return
    now = now_s()
    params = [
        {
            "o_delivery_id": o["delivery_id"],
            "o_status": o["status"],
            "o_attempts": o["attempts"],
            "o_next_attempt_at": now if o["next_attempt_at"] is None else o["next_attempt_at"],
            "o_updated": now,
            **{f"a_{name}": o["attempt"].get(name) for name in _ATTEMPT_COLUMNS},
        }
        for o in outcomes
    ]
    if conn.dialect.name == "postgresql":
        await conn.execute(_RECORD_TOGETHER, params)
        return
    await conn.execute(_SET_OUTCOME, params)
    await conn.execute(_RECORD_ATTEMPT, params)


async def list_attempts(
    conn: AsyncConnection, endpoint_id: str, page: Page, *, event: str | None
) -> list[sa.RowMapping]:
    query = sa.select(webhook_attempts).where(A.endpoint_id == endpoint_id)
    if event is not None:
        query = query.where(A.event_id == event)
    return await fetch_page(conn, query, A.id, page)


async def deliveries_of(conn: AsyncConnection, event_id: str) -> list[sa.RowMapping]:
    query = sa.select(D.endpoint_id, D.status).where(D.event_id == event_id)
    return list((await conn.execute(query)).mappings().all())
