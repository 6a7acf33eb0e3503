"""The fraud worker applying a batch of `payment.created` events (one read, one write
transaction): each payment screened once, by its own merchant's settings, and a batch delivered
again adds no assessment and counts no payment twice. No pipeline runs, so payments stay
`pending` until the worker is called."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import sqlalchemy as sa

from paygate.fraud import rules
from paygate.fraud.counters import Counted, MemoryCounterStore, bucket_keys
from paygate.fraud.features import Txn
from paygate.fraud.scoring import ModelScorer
from paygate.fraud.worker import FraudWorker
from paygate.platform.db.tables import outbox, payments
from paygate.runtime import Runtime
from tests.conftest import new_merchant
from tests.fraud.live import FixedScorer, stored_assessments
from tests.support import idem, payment_body, statements


async def _created(
    client: httpx.AsyncClient, rt: Runtime, auth: dict[str, str], n: int
) -> list[dict[str, Any]]:
    """`n` new payments' `payment.created` events, as the outbox holds them."""
    ids = []
    for _ in range(n):
        r = await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    async with rt.db.read() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.object_id, outbox.c.payload).where(
                outbox.c.object_id.in_(ids), outbox.c.type == "payment.created"
            )
        )
        by_id = {object_id: payload for object_id, payload in rows}
    return [by_id[i] for i in ids]


async def _decisions(rt: Runtime, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    async with rt.db.read() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.object_id, outbox.c.payload, outbox.c.sequence)
            .where(outbox.c.object_id.in_(ids), outbox.c.type == "payment.fraud_assessed")
            .order_by(outbox.c.position)
        )
        found: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        for object_id, payload, sequence in rows:
            found[object_id].append({**payload["data"]["object"], "sequence": sequence})
    return found


async def test_a_batch_is_screened_per_payment_by_each_merchants_settings(
    client: httpx.AsyncClient, runtime: Runtime, merchant: dict[str, Any], auth: dict[str, str]
) -> None:
    other = await new_merchant(client, "Globex")
    other_auth = {"Authorization": f"Bearer {other['api_key']}"}
    r = await client.post(
        "/v1/fraud/settings",
        json={"review_threshold": 30, "decline_threshold": 50},
        headers=other_auth,
    )
    assert r.status_code == 200, r.text
    mine = await _created(client, runtime, auth, 3)
    theirs = await _created(client, runtime, other_auth, 2)
    batch = [mine[0], theirs[0], mine[1], theirs[1], mine[2]]
    ids = [e["data"]["object"]["id"] for e in batch]

    store = MemoryCounterStore()
    worker = FraudWorker(runtime, store=store, scorer=FixedScorer(40))
    await worker.on_events(batch)
    await worker.on_events(batch)  # delivered again

    decisions = await _decisions(runtime, ids)
    for event in batch:
        pid = event["data"]["object"]["id"]
        [stored] = await stored_assessments(runtime, pid)
        # 40 approves under the defaults (review from 65), reviews under the other's 30.
        expected = "review" if event in theirs else "approve"
        assert (stored["score"], stored["decision"]) == (40, expected)
        # A redelivery emits the stored assessment again, never a second one.
        assert {d["assessment"] for d in decisions[pid]} == {stored["id"]}
        assert {d["sequence"] for d in decisions[pid]} == {event["sequence"]}
    # Every payment used the same card: each counted once in its own merchant's velocity.
    for owner, event, count in ((merchant, mine[0], 3), (other, theirs[0], 2)):
        payment = event["data"]["object"]
        fingerprint = payment["payment_method"]["card"]["fingerprint"].lower()
        series = f"fraud:vel:{owner['id']}:test:card:{fingerprint}:n"
        counts = await store.get_many(bucket_keys(series, payment["created"] // 60))
        assert set(counts) == {count}


async def test_a_batch_skips_payments_already_decided_and_unknown_ids(
    client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str]
) -> None:
    events = await _created(client, runtime, auth, 3)
    decided = events[1]["data"]["object"]["id"]
    async with runtime.db.transaction() as conn:
        await conn.execute(
            payments.update().where(payments.c.id == decided).values(status="failed")
        )
    unknown = {**events[0], "data": {"object": {**events[0]["data"]["object"], "id": "pay_none"}}}
    worker = FraudWorker(runtime, store=MemoryCounterStore(), scorer=FixedScorer(10))
    await worker.on_events([*events, unknown])

    ids = [e["data"]["object"]["id"] for e in events]
    decisions = await _decisions(runtime, ids)
    assert [len(decisions[i]) for i in ids] == [1, 0, 1]
    assert await stored_assessments(runtime, decided) == []
    assert await stored_assessments(runtime, "pay_none") == []


class CountingStore(MemoryCounterStore):
    """A memory store that counts its calls: what a round trip to Redis each would cost (the
    calls one call makes inside the memory store are not round trips)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self._inside = False

    def _call(self, name: str) -> None:
        if not self._inside:
            self.calls.append(name)

    async def get_many(self, keys: Sequence[str]) -> list[int]:
        self._call("get_many")
        return await super().get_many(keys)

    async def incr_many(self, updates: Sequence[tuple[str, int]], ttl_s: int) -> None:
        self._call("incr_many")
        await super().incr_many(updates, ttl_s)

    async def add_once(self, key: str, ttl_s: int) -> bool:
        self._call("add_once")
        return await super().add_once(key, ttl_s)

    async def read_and_count(
        self, reads: Sequence[str], counted: Sequence[Counted], ttl_s: int, mark_ttl_s: int
    ) -> tuple[list[int], list[bool]]:
        self._call("read_and_count")
        self._inside = True
        try:
            return await super().read_and_count(reads, counted, ttl_s, mark_ttl_s)
        finally:
            self._inside = False


async def test_a_batch_is_counted_in_one_call_of_the_store_per_kind_of_counter(
    client: httpx.AsyncClient, runtime: Runtime, merchant: dict[str, Any], auth: dict[str, str]
) -> None:
    """The rules' velocities and the model's features of a whole batch: each one call of the
    store, its read, marks and increments together (over Redis, one round trip each), scored by
    the shipped model as one payment after the other would be."""
    batch = await _created(client, runtime, auth, 6)
    store = CountingStore()
    worker = FraudWorker(runtime, store=store)
    await worker.on_events(batch)
    assert store.calls == ["read_and_count"] * 2

    alone_store = MemoryCounterStore()
    for event in batch:
        row = event["data"]["object"]
        txn = Txn(
            row["id"],
            row["payment_method"]["card"]["fingerprint"],
            merchant["id"],
            float(row["created"]),
            int(row["amount"]),
        )
        expected = await ModelScorer(alone_store).score(txn)
        [stored] = await stored_assessments(runtime, row["id"])
        assert stored["score"] == expected.score


async def test_a_batch_reads_its_payments_and_merchants_in_two_statements(
    client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str]
) -> None:
    """The payments with their facts and whether they were screened, then every merchant's
    settings and rule-set revisions; a merchant's rules are read again only when its revision
    is new to this process. The write transaction locks and checks as before."""
    other = await new_merchant(client, "Globex")
    other_auth = {"Authorization": f"Bearer {other['api_key']}"}
    r = await client.post(
        "/v1/fraud/rules",
        json={"action": "block", "expression": "card_brand == 'visa'"},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    blocking_rule = r.json()["id"]
    rules._cache.clear()
    worker = FraudWorker(runtime, store=MemoryCounterStore(), scorer=FixedScorer(10))

    for round in range(2):
        mine = await _created(client, runtime, auth, 2)
        theirs = await _created(client, runtime, other_auth, 1)
        with statements(runtime.db) as seen:
            await worker.on_events([mine[0], theirs[0], mine[1]])
        reads = [s for s in seen if s.startswith("SELECT")]
        loads_rules = [s for s in reads if "FROM fraud_rules" in s or "FROM fraud_lists" in s]
        assert len(loads_rules) == (2 if round == 0 else 0), reads  # its rules, its lists
        # Two reads, a lock of the payments and a look for assessments stored meanwhile.
        assert len(reads) - len(loads_rules) == 4, reads
        decisions = await _decisions(runtime, [e["data"]["object"]["id"] for e in mine + theirs])
        for event in mine:  # the card's brand, from its payment method, matched the rule
            [decided] = decisions[event["data"]["object"]["id"]]
            assert decided["risk"]["reasons"] == [blocking_rule]
        [decided] = decisions[theirs[0]["data"]["object"]["id"]]
        assert decided["risk"]["reasons"] == ["amount"]
