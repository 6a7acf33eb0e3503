"""`POST /v1/fraud/rules/dry_run` over payments made through the API (SQLite and PostgreSQL),
and the sliding-window velocity replay it uses, against a brute-force count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from paygate.config import Settings
from paygate.fraud import rules_dryrun
from paygate.fraud.attributes import VELOCITY
from paygate.fraud.rules_dryrun import VelocityReplay
from paygate.fraud.tables import fraud_reports
from paygate.ids import new_id, now_s
from paygate.payments import repository, service
from paygate.runtime import Runtime
from tests.conftest import make_settings, new_merchant
from tests.support import idem, payment_body

MINUTE, HOUR, DAY = 60, 3_600, 86_400


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url, default_tier="unlimited")


# --- the velocity replay -------------------------------------------------------------------

payments_st = st.lists(
    st.tuples(
        # The step from the previous payment: ties, and sums that land exactly on the windows'
        # edges, which a loose bound gets wrong.
        st.sampled_from([0, 1, 1_800, HOUR - 1, HOUR, DAY - HOUR, DAY - 1, DAY]),
        st.sampled_from(["c1", "c2", None]),
        st.sampled_from(["e1", None]),
        st.sampled_from(["usd", "eur"]),
        st.integers(1, 1000),
    ),
    max_size=40,
)


@hsettings(max_examples=300)
@given(payments_st)
def test_replay_counts_only_earlier_payments_in_the_window(
    raw: list[tuple[int, str | None, str | None, str, int]],
) -> None:
    events = []
    t = 1_700_000_000
    for step, card, email, currency, amount in raw:
        t += step
        events.append((t, {"card": card, "email": email, "ip": None}, currency, amount))
    replay = VelocityReplay()
    for i, (created, keys, currency, amount) in enumerate(events):
        got = replay.before(created, currency, keys)
        for name, v in VELOCITY.items():
            key = keys[v.entity]
            if key is None:
                assert name not in got
                continue
            earlier = [
                e for e in events[:i] if e[1][v.entity] == key and e[0] > created - v.window_s
            ]
            want = (
                len(earlier)
                if v.metric == "count"
                else sum(e[3] for e in earlier if e[2] == currency)
            )
            assert got[name] == want, (name, i)
        replay.add(created, currency, amount, keys)


# --- the endpoint --------------------------------------------------------------------------


async def _pay(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    created: int,
    **body: Any,
) -> str:
    # The payment as if made at `created` (payments are made oldest first, so id order and
    # time order agree as they do in production).
    monkeypatch.setattr(service, "now_s", lambda: created)
    r = await client.post("/v1/payments", json=payment_body(**body), headers={**auth, **idem()})
    monkeypatch.undo()
    assert r.status_code == 202, r.text
    payment_id: str = r.json()["id"]
    return payment_id


async def _dry_run(
    client: httpx.AsyncClient, auth: dict[str, str], expression: str, days: int = 7
) -> dict[str, Any]:
    r = await client.post(
        "/v1/fraud/rules/dry_run",
        json={"action": "block", "expression": expression, "days": days},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def matched_ids(result: dict[str, Any]) -> list[str]:
    return [m["id"] for m in result["sample"]]


async def test_dry_run_over_real_payments(
    client: httpx.AsyncClient,
    runtime: Runtime,
    merchant: dict[str, Any],
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = now_s()
    mastercard = {"number": "5555555555554444"}
    fraud_card = {"number": "4100000000000019"}
    old = await _pay(client, auth, monkeypatch, now - 10 * DAY, amount=100)
    b = await _pay(
        client,
        auth,
        monkeypatch,
        now - 3 * HOUR,
        amount=200,
        customer={"email": "x@y.co"},
        ip_address="203.0.113.5",
    )
    c = await _pay(client, auth, monkeypatch, now - 30 * MINUTE, amount=300)
    d = await _pay(
        client, auth, monkeypatch, now - 10 * MINUTE, amount=400, ip_address="203.0.113.5"
    )
    e = await _pay(
        client, auth, monkeypatch, now - 5 * MINUTE, amount=5000, currency="eur", card=mastercard
    )
    f = await _pay(client, auth, monkeypatch, now - MINUTE, amount=700, card=fraud_card)
    # Another merchant's payments are never seen.
    stranger = await new_merchant(client, "Other")
    await _pay(client, {"Authorization": f"Bearer {stranger['api_key']}"}, monkeypatch, now)

    # f fails as fraud (as the screening does), c is reported as fraud afterwards.
    async with runtime.db.transaction() as conn:
        row = await repository.get_by_id(conn, f, for_update=True)
        assert row is not None
        await service.transition(
            conn, row, service.state_of(row).fail("fraud_suspected"), event="payment.failed"
        )
        await conn.execute(
            fraud_reports.insert().values(
                id=new_id("frp"),
                payment_id=c,
                merchant_id=merchant["id"],
                livemode=False,
                type="chargeback",
                reason=None,
                created=now,
            )
        )

    everything = await _dry_run(client, auth, "amount > 0")
    assert everything["object"] == "fraud_rule_dry_run" and everything["days"] == 7
    assert (everything["evaluated"], everything["matched"]) == (5, 5)
    assert matched_ids(everything) == [f, e, d, c, b]  # newest first
    assert everything["matched_amount"] == [
        {"amount": 5000, "currency": "eur"},
        {"amount": 200 + 300 + 400 + 700, "currency": "usd"},
    ]
    assert (everything["fraud"], everything["matched_fraud"]) == (2, 2)
    assert everything["sample"][0] == {
        "id": f,
        "amount": 700,
        "currency": "usd",
        "status": "failed",
        "failure_code": "fraud_suspected",
        "created": now - MINUTE,
    }
    assert (await _dry_run(client, auth, "amount > 0", days=30))["evaluated"] == 6

    # Velocity from earlier payments only: c has no earlier card payment within the hour (d,
    # after it, does not count for it); d has c.
    assert matched_ids(await _dry_run(client, auth, "total_payments_per_card_hourly >= 1")) == [d]
    assert matched_ids(await _dry_run(client, auth, "total_payments_per_card_daily == 2")) == [d]
    assert matched_ids(await _dry_run(client, auth, "total_amount_per_card_daily > 400")) == [d]
    assert matched_ids(await _dry_run(client, auth, "payments_per_ip_daily >= 1")) == [d]
    # Old payments are history for the period's velocity only, never matched themselves.
    assert old not in matched_ids(await _dry_run(client, auth, "amount == 100", days=7))

    # Stored facts: countries of the test BIN and address tables, the customer's e-mail.
    r = await _dry_run(client, auth, "ip_country == 'de' and card_country == 'us'")
    assert matched_ids(r) == [d, b]
    assert matched_ids(await _dry_run(client, auth, "card_brand == 'mastercard'")) == [e]
    picky = await _dry_run(client, auth, "amount > 250 and not (currency == 'eur')")
    assert (picky["matched"], picky["matched_fraud"], picky["fraud"]) == (3, 2, 2)

    r = await client.post(
        "/v1/fraud/lists", json={"name": "suspects", "kind": "email"}, headers={**auth, **idem()}
    )
    r = await client.post(
        f"/v1/fraud/lists/{r.json()['id']}/items",
        json={"value": "X@Y.CO"},
        headers={**auth, **idem()},
    )
    assert r.status_code == 201, r.text
    assert matched_ids(await _dry_run(client, auth, "email in @suspects")) == [b]

    # The sample is capped; the counts are not.
    monkeypatch.setattr(rules_dryrun, "SAMPLE_SIZE", 2)
    capped = await _dry_run(client, auth, "amount > 0")
    assert (matched_ids(capped), capped["matched"], capped["has_more"]) == ([f, e], 5, True)


async def test_dry_run_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str]
) -> None:
    from paygate.fraud.rules_tables import fraud_rule_sets, fraud_rules

    result = await _dry_run(client, auth, "amount > 0")
    assert (result["evaluated"], result["matched"], result["sample"]) == (0, 0, [])
    async with runtime.db.read() as conn:
        for table in (fraud_rules, fraud_rule_sets):
            assert await conn.scalar(sa.select(sa.func.count()).select_from(table)) == 0
