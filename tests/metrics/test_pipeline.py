"""`/metrics` of the API after real payments through the HTTP API, the outbox, the relay,
screening, the processor and the bank simulator over HTTP: the counters move by exactly what
happened, once per committed change."""

from __future__ import annotations

from typing import Any

import httpx

from paygate.pipeline import Pipeline
from tests.metrics.support import Samples, scrape
from tests.support import idem, payment_body

WAIT = {"Prefer": "wait=10"}
APPROVED = "4242424242424242"
DECLINED = "4000000000000002"
FRAUD = "4100000000000019"


async def pay(client: httpx.AsyncClient, auth: dict[str, str], number: str) -> dict[str, Any]:
    body = payment_body(card={"number": number})
    r = await client.post("/v1/payments", json=body, headers={**auth, **idem(), **WAIT})
    assert r.status_code == 200, r.text
    payment: dict[str, Any] = r.json()
    return payment


async def test_payments_move_the_counters_once(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline
) -> None:
    before = await scrape(client)
    ok = await pay(client, auth, APPROVED)
    declined = await pay(client, auth, DECLINED)
    fraud = await pay(client, auth, FRAUD)
    assert [p["status"] for p in (ok, declined, fraud)] == ["succeeded", "failed", "failed"]
    await pipeline.settle()
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return after.delta(before, name, **labels)

    # Payments by status and failure code: each committed transition once.
    assert moved("paygate_payments_total", status="pending") == 3
    assert moved("paygate_payments_total", status="processing") == 2
    assert moved("paygate_payments_total", status="succeeded", failure_code="") == 1
    assert moved("paygate_payments_total", status="failed", failure_code="card_declined") == 1
    assert moved("paygate_payments_total", status="failed", failure_code="fraud_suspected") == 1
    assert moved("paygate_payments_total", status="failed") == 2
    # Creation to outcome, observed once per payment at its first resting status.
    assert moved("paygate_payment_outcome_seconds_count", status="succeeded") == 1
    assert moved("paygate_payment_outcome_seconds_count", status="failed") == 2
    assert moved("paygate_payment_outcome_seconds_bucket", status="failed", le="+Inf") == 2
    # Screening decisions as the processor applied them.
    assert moved("paygate_fraud_decisions_total", decision="approve") == 2
    assert moved("paygate_fraud_decisions_total", decision="decline") == 1
    # The bank: one sale approved, one declined, no errors; the fraud case never reached it.
    sales = "paygate_bank_request_duration_seconds_count"
    assert moved(sales, operation="sale", outcome="approved") == 1
    assert moved(sales, operation="sale", outcome="declined") == 1
    assert moved(sales) == 2
    assert moved("paygate_bank_errors_total") == 0
    assert after.get("paygate_bank_circuit_state", state="closed") >= 1
    # HTTP by route template; the scrape before counts itself once it is answered.
    created = after.delta(
        before, "paygate_http_requests_total", method="POST", route="/v1/payments", status="200"
    )
    assert created == 3
    assert moved("paygate_http_request_duration_seconds_count", route="/v1/payments") == 3
    assert moved("paygate_http_requests_total", route="/metrics") == 1
    # Everything relayed and applied: no backlog.
    assert after.get("paygate_outbox_unpublished_events") == 0
    assert after.get("paygate_outbox_oldest_unpublished_age_seconds") == 0
    assert after.get("paygate_bus_consumer_pending_messages", stream="local") == 0
    assert after.get("paygate_db_pool_size_connections") >= 1


async def test_the_second_read_is_a_cache_hit(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline
) -> None:
    p = await pay(client, auth, APPROVED)
    await pipeline.settle()
    before = await scrape(client)
    for _ in range(2):
        r = await client.get(f"/v1/payments/{p['id']}", headers=auth)
        assert r.status_code == 200 and r.json()["status"] == "succeeded"
    after = await scrape(client)
    assert after.delta(before, "paygate_read_cache_misses_total", object="payment") == 1
    assert after.delta(before, "paygate_read_cache_hits_total", object="payment") == 1
    route = "/v1/payments/{payment_id}"
    assert after.delta(before, "paygate_http_requests_total", route=route, status="200") == 2


async def test_a_redelivered_decision_counts_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline
) -> None:
    p = await pay(client, auth, DECLINED)
    await pipeline.settle()
    before = await scrape(client)
    # The screening decision again, as a redelivery brings it: the payment is no longer pending.
    await pipeline.processor.on_assessed(p["id"], {**p["risk"], "decision": "approve"})
    await pipeline.processor.drive_payment(p["id"])
    after = await scrape(client)
    assert after.delta(before, "paygate_fraud_decisions_total") == 0
    assert after.delta(before, "paygate_payments_total") == 0
    assert after.delta(before, "paygate_bank_request_duration_seconds_count") == 0


async def test_an_unrelayed_event_shows_as_outbox_and_consumer_lag(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    # No pipeline: the payment's event stays in the outbox.
    r = await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    samples = await scrape(client)
    assert samples.get("paygate_outbox_unpublished_events") == 1
    assert 0 <= samples.get("paygate_outbox_oldest_unpublished_age_seconds") < 60
    assert samples.get("paygate_bus_consumer_pending_messages", stream="local") == 1


async def test_routes_are_templates_never_ids(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    before = await scrape(client)
    r = await client.get("/v1/payments/pay_doesnotexist", headers=auth)
    assert r.status_code == 404
    r = await client.get("/no/such/path/pay_123")
    assert r.status_code == 404
    after = await scrape(client)
    route = "/v1/payments/{payment_id}"
    assert after.delta(before, "paygate_http_requests_total", route=route, status="404") == 1
    assert after.delta(before, "paygate_http_requests_total", route="unmatched") == 1
    routes = after.label_values("paygate_http_requests_total", "route")
    assert not [r for r in routes if "pay_" in r], routes


def test_samples_parse_the_exposition_text() -> None:
    text = (
        "# HELP paygate_payments_total x\n# TYPE paygate_payments_total counter\n"
        'paygate_payments_total{status="failed",failure_code="card_declined"} 2.0\n'
        'paygate_payments_total{status="failed",failure_code="lost_card"} 1.0\n'
    )
    samples = Samples.parse(text)
    assert samples.get("paygate_payments_total", status="failed") == 3
    assert samples.get("paygate_payments_total", failure_code="lost_card") == 1
    assert samples.get("paygate_payments_total", status="succeeded") == 0
