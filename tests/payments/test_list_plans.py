"""Payment reads and lists cost the same at any table size: shown by the database's plans, not
by timing. The statements `repository.get` and `repository.list_page` really send (captured as
they go to the driver) are explained on a table of a few thousand payments over several
merchants: each must find its rows through an index of `payments` (never a full scan of the
table) and must not sort rows itself (keyset pagination reads the index in id order and stops
after `limit + 1` rows).

SQLite is explained as the gateway runs it, without statistics (it never runs ANALYZE);
PostgreSQL after ANALYZE, as autovacuum leaves a table a minute after a bulk load, so that its
planner chooses with real row counts (a plan forced by `enable_seqscan = off` would prove
nothing).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from paygate.customers import service as customer_service
from paygate.ids import new_id
from paygate.payments import repository
from paygate.platform.db.pagination import Page
from paygate.platform.db.tables import customers, payments
from paygate.runtime import Runtime
from tests.conftest import new_merchant
from tests.support import idem, payment_body

MERCHANTS = 8
ROWS = 4000  # half the big merchant's, the rest spread over the others
# Who each case reads as: the big merchant (half the rows), a small one (about 8 %), and a
# dormant one: about 6 % of the rows, all in the oldest tenth (a merchant that stopped selling).
WHO = {"big": 0, "small": 1, "dormant": MERCHANTS - 1}


async def _seed(client: httpx.AsyncClient, rt: Runtime) -> tuple[list[str], list[list[str]]]:
    """Merchants through the API, one real payment, then `ROWS` clones of its row spread over
    the merchants (see `WHO`), ids time-ordered over 90 days. Returns the merchant ids and each
    merchant's payment ids, oldest first."""
    made = [await new_merchant(client, f"Shop {i}") for i in range(MERCHANTS)]
    merchants = [m["id"] for m in made]
    r = await client.post(
        "/v1/payments",
        json=payment_body(),
        headers={"Authorization": f"Bearer {made[0]['api_key']}", **idem()},
    )
    assert r.status_code in (200, 202), r.text
    async with rt.db.read() as conn:
        template = dict((await repository.get_by_id(conn, r.json()["id"])) or {})
    rng = random.Random(1)
    end = template["created"] * 1000
    start = end - 90 * 86_400_000
    clones: list[dict[str, Any]] = []
    owned: list[list[str]] = [[] for _ in merchants]
    for i in range(ROWS):
        ms = start + i * (end - start) // ROWS
        if i < ROWS // 10 and rng.random() < 0.6:
            owner = WHO["dormant"]
        else:
            owner = 0 if rng.random() < 0.5 else rng.randrange(1, MERCHANTS - 1)
        pid = new_id("pay", now_ms=ms)
        status = rng.choice(["succeeded"] * 8 + ["failed", "canceled"])
        captured = template["amount"] if status == "succeeded" else 0
        clones.append(
            {
                **template,
                "id": pid,
                "merchant_id": merchants[owner],
                "status": status,
                "amount_capturable": 0,
                "amount_captured": captured,
                "created": ms // 1000,
                "updated": ms // 1000,
            }
        )
        owned[owner].append(pid)
    async with rt.db.transaction() as conn:
        await conn.execute(payments.insert(), clones)
    if not rt.db.is_sqlite:
        async with rt.db.engine.connect() as conn:
            await conn.execute(sa.text("ANALYZE payments"))
            await conn.commit()
    return merchants, owned


async def _statement(rt: Runtime, call: Callable[[Any], Awaitable[Any]]) -> tuple[str, Any]:
    """The SQL and parameters `call` sends to the driver."""
    sent: list[tuple[str, Any]] = []

    def capture(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):  # not the driver's BEGIN
            sent.append((statement, parameters))

    event.listen(rt.db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with rt.db.read() as conn:
            await call(conn)
    finally:
        event.remove(rt.db.engine.sync_engine, "before_cursor_execute", capture)
    assert len(sent) == 1, sent
    return sent[0]


async def _plan(rt: Runtime, statement: str, parameters: Any, *, analyze: bool = False) -> str:
    """The plan's text; `analyze` (PostgreSQL) runs the statement and counts the rows each step
    really read, which is no timing."""
    if rt.db.is_sqlite:
        prefix = "EXPLAIN QUERY PLAN "
    else:
        prefix = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " if analyze else "EXPLAIN "
    async with rt.db.read() as conn:
        rows = (await conn.exec_driver_sql(prefix + statement, parameters)).all()
    return "\n".join(str(row[-1]) for row in rows)


def _problems(plan: str, sqlite: bool, table: str = "payments") -> list[str]:
    """Why `plan` would grow with the table: a full scan of it, or a sort of more than a few
    pages of its rows."""
    out = []
    if sqlite:
        for line in plan.splitlines():
            if line.startswith(f"SCAN {table}"):
                out.append(f"full scan: {line}")
            if "TEMP B-TREE" in line:
                out.append(f"sort: {line}")
        if not any(line.startswith(f"SEARCH {table} USING") for line in plan.splitlines()):
            out.append(f"no index search of {table}")
    else:
        if f"Seq Scan on {table}" in plan:
            out.append(f"sequential scan of {table}")
        for line in plan.splitlines():
            # A sort of the few rows an id range bounds is a page's work; a sort of more than
            # ten pages' worth is a sort of the merchant's rows, which grows with them.
            sorted_rows = re.search(r"rows=(\d+)", line)
            if re.match(r"\s*(->\s*)?Sort\s+\(", line) and (
                sorted_rows is None or int(sorted_rows.group(1)) > 110
            ):
                out.append(f"sort step: {line.strip()}")
        if not any(
            f"{scan} on {table}" in plan or f"{scan} using" in plan
            for scan in ("Index Scan", "Index Only Scan", "Index Scan Backward")
        ):
            out.append(f"no index scan of {table}")
    return out


async def test_reads_and_lists_use_an_index_of_payments(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    merchants, owned = await _seed(client, runtime)
    cases: dict[str, Callable[[Any], Awaitable[Any]]] = {}
    for who, n in WHO.items():
        mid, ids = merchants[n], owned[n]
        middle = ids[len(ids) // 2]
        cases |= {
            f"{who}: get": lambda c, m=mid, p=middle: repository.get(c, m, False, p),
            f"{who}: first page": lambda c, m=mid: repository.list_page(c, m, False, Page(10)),
            f"{who}: starting_after": lambda c, m=mid, p=middle: repository.list_page(
                c, m, False, Page(10, starting_after=p)
            ),
            f"{who}: ending_before": lambda c, m=mid, p=middle: repository.list_page(
                c, m, False, Page(10, ending_before=p)
            ),
            f"{who}: status filter": lambda c, m=mid: repository.list_page(
                c, m, False, Page(10), status="failed"
            ),
            f"{who}: status filter, starting_after": lambda c, m=mid, p=middle: (
                repository.list_page(c, m, False, Page(10, starting_after=p), status="failed")
            ),
        }
    bad = {}
    for name, call in cases.items():
        statement, parameters = await _statement(runtime, call)
        plan = await _plan(runtime, statement, parameters)
        problems = _problems(plan, runtime.db.is_sqlite)
        if problems:
            bad[name] = f"{problems}\n{statement}\n{plan}"
    assert not bad, "\n\n".join(f"{k}: {v}" for k, v in bad.items())


async def test_customer_lists_use_the_merchants_index(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The customers list pages the same way: through (merchant_id, livemode, id), no sort."""
    merchants = [(await new_merchant(client, f"Shop {i}"))["id"] for i in range(MERCHANTS)]
    rng = random.Random(2)
    end = int(time.time() * 1000)
    rows = [
        {
            "id": new_id("cus", now_ms=end - rng.randrange(90 * 86_400_000)),
            "merchant_id": merchants[0 if rng.random() < 0.5 else rng.randrange(MERCHANTS)],
            "livemode": False,
            "email": f"c{i}@example.com",
            "name": None,
            "created": end // 1000,
        }
        for i in range(ROWS)
    ]
    async with runtime.db.transaction() as conn:
        await conn.execute(customers.insert(), rows)
    if not runtime.db.is_sqlite:
        async with runtime.db.engine.connect() as conn:
            await conn.execute(sa.text("ANALYZE customers"))
            await conn.commit()
    middle = sorted(r["id"] for r in rows if r["merchant_id"] == merchants[0])[ROWS // 4]
    bad = {}
    for page in (Page(10), Page(10, starting_after=middle), Page(10, ending_before=middle)):
        statement, parameters = await _statement(
            runtime,
            lambda c, p=page: customer_service.list_page(c, merchants[0], False, p, email=None),
        )
        plan = await _plan(runtime, statement, parameters)
        problems = _problems(plan, runtime.db.is_sqlite, "customers")
        if problems:
            bad[str(page)] = f"{problems}\n{statement}\n{plan}"
    assert not bad, "\n\n".join(f"{k}: {v}" for k, v in bad.items())


@pytest.mark.parametrize("who", list(WHO))
async def test_a_page_reads_a_page_not_a_share_of_the_table(
    client: httpx.AsyncClient, runtime: Runtime, who: str
) -> None:
    """The stronger property, per merchant: a page's work does not grow with the table.
    SQLite: the search is bounded by the merchant (its index condition names merchant_id).
    PostgreSQL: the rows the executor read and threw away (EXPLAIN ANALYZE's `Rows Removed by
    Filter`) stay under a tenth of the table; a plan that filters an id-ordered walk on the
    merchant reads about `page / merchant's share` rows when the merchant's payments are spread
    over time, and up to the whole table when they are not."""
    merchants, owned = await _seed(client, runtime)
    mid, ids = merchants[WHO[who]], owned[WHO[who]]
    for page in (Page(10), Page(10, starting_after=ids[len(ids) // 2])):
        statement, parameters = await _statement(
            runtime, lambda c, p=page: repository.list_page(c, mid, False, p)
        )
        plan = await _plan(runtime, statement, parameters, analyze=True)
        if runtime.db.is_sqlite:
            assert "USING INDEX ix_payments_merchant" in plan and "merchant_id=?" in plan, plan
        else:
            removed = sum(int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan))
            assert removed < ROWS // 10, f"{page}: {removed} rows read and dropped\n{plan}"


@pytest.mark.parametrize(
    ("plan", "sqlite", "ok"),
    [
        (
            "SEARCH payments USING INDEX ix_payments_merchant_id (merchant_id=? AND livemode=?)",
            True,
            True,
        ),
        ("SCAN payments", True, False),
        (
            "SEARCH payments USING INDEX ix_payments_merchant_created (merchant_id=?)\n"
            "USE TEMP B-TREE FOR ORDER BY",
            True,
            False,
        ),
        ("Limit\n  ->  Index Scan Backward using ix_payments_merchant_id on payments", False, True),
        ("Limit\n  ->  Seq Scan on payments", False, False),
        ("Limit\n  ->  Sort\n        ->  Bitmap Heap Scan on payments", False, False),
    ],
)
def test_the_plan_check_tells_a_flat_plan_from_a_growing_one(
    plan: str, sqlite: bool, ok: bool
) -> None:
    """The check itself: it would catch a scan or a sort."""
    assert (not _problems(plan, sqlite)) is ok
