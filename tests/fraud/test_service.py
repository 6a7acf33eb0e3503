"""The live fraud service end to end: the real HTTP API, the pipeline (relay, fraud worker,
processor) and the bank simulator over HTTP."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from paygate.fraud.counters import MemoryCounterStore, bucket_keys
from paygate.fraud.tables import fraud_assessments
from paygate.fraud.worker import FraudWorker
from paygate.pipeline import Pipeline
from paygate.platform.db.tables import outbox
from paygate.runtime import Runtime
from tests.e2e.conftest import operations
from tests.fraud.live import (
    REVIEW_CARD,
    FailingScorer,
    FixedScorer,
    SlowScorer,
    pay,
    stored_assessments,
)
from tests.support import ADMIN_KEY, idem, payment_body

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_every_payment_is_scored_by_the_model_and_stored(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline, runtime: Runtime
) -> None:
    p = await pay(client, auth)
    assert p["status"] == "succeeded"
    assert p["risk"]["decision"] == "approve" and p["risk"]["level"] == "normal"
    assert 0 <= p["risk"]["score"] < 65
    [stored] = await stored_assessments(runtime, p["id"])
    assert stored["source"] == "model" and stored["score"] == p["risk"]["score"]
    assert pipeline.fraud is not None
    assert stored["model_version"] == pipeline.fraud.scorer.model.version  # type: ignore[attr-defined]


async def test_assessments_are_append_only(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline, runtime: Runtime
) -> None:
    p = await pay(client, auth)
    with pytest.raises(sa.exc.DBAPIError):
        async with runtime.db.transaction() as conn:
            await conn.execute(fraud_assessments.update().values(score=99))
    with pytest.raises(sa.exc.DBAPIError):
        async with runtime.db.transaction() as conn:
            await conn.execute(fraud_assessments.delete())
    assert len(await stored_assessments(runtime, p["id"])) == 1


@pytest.mark.parametrize(
    ("score", "status", "failure", "bank_ops"),
    [
        (64, "succeeded", None, ["sale"]),
        (65, "requires_review", None, ["authorize"]),
        (75, "failed", "fraud_suspected", []),
    ],
)
async def test_the_score_decides_by_the_default_thresholds(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
    score: int,
    status: str,
    failure: str | None,
    bank_ops: list[str],
) -> None:
    assert pipeline.fraud is not None
    pipeline.fraud.scorer = FixedScorer(score)
    p = await pay(client, auth)
    assert (p["status"], p["failure_code"]) == (status, failure)
    assert p["risk"]["score"] == score
    assert [o["operation"] for o in await operations(bank, p["id"])] == bank_ops


async def test_merchant_thresholds(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline
) -> None:
    assert pipeline.fraud is not None
    pipeline.fraud.scorer = FixedScorer(40)
    r = await client.post(
        "/v1/fraud/settings", json={"review_threshold": 30, "decline_threshold": 50}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert (await pay(client, auth))["status"] == "requires_review"
    bad = await client.post("/v1/fraud/settings", json={"review_threshold": 60}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "review_threshold"


@pytest.mark.parametrize("scorer", [FailingScorer(), SlowScorer(2.0)], ids=["raises", "slow"])
@pytest.mark.parametrize(("mode", "status"), [("open", "succeeded"), ("closed", "requires_review")])
async def test_fail_open_and_fail_closed(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, str],
    pipeline: Pipeline,
    runtime: Runtime,
    scorer: object,
    mode: str,
    status: str,
) -> None:
    runtime.settings.fraud_timeout_ms = 100
    assert pipeline.fraud is not None
    pipeline.fraud.scorer = scorer  # type: ignore[assignment]
    r = await client.post(
        "/v1/fraud/settings", json={"fail_mode": mode, "merchant": merchant["id"]}, headers=ADMIN
    )
    assert r.status_code == 200 and r.json()["fail_mode"] == mode
    p = await pay(client, auth)
    assert p["status"] == status
    assert p["risk"]["reasons"] == ["fraud_unavailable"]
    [stored] = await stored_assessments(runtime, p["id"])
    assert stored["source"] == f"fail_{mode}" and stored["score"] is None


async def test_settings_endpoint(
    client: httpx.AsyncClient, auth: dict[str, str], merchant: dict[str, str]
) -> None:
    r = await client.get("/v1/fraud/settings", headers=auth)
    assert r.json()["fail_mode"] == "open"  # the default
    assert r.json()["merchant"] == merchant["id"]
    r = await client.post("/v1/fraud/settings", json={"fail_mode": "closed"}, headers=auth)
    assert r.status_code == 200
    r = await client.get("/v1/fraud/settings", params={"merchant": merchant["id"]}, headers=ADMIN)
    assert r.json()["fail_mode"] == "closed"
    for body, param in (
        ({"fail_mode": "sideways"}, "fail_mode"),
        ({"review_threshold": 0}, "review_threshold"),
        ({"decline_threshold": "75"}, "decline_threshold"),
    ):
        r = await client.post("/v1/fraud/settings", json=body, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    r = await client.post("/v1/fraud/settings", json={"fail_mode": "open"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "merchant"
    r = await client.post(
        "/v1/fraud/settings", json={"fail_mode": "open", "merchant": "mer_nobody"}, headers=ADMIN
    )
    assert r.status_code == 404
    other = await client.post(
        "/v1/fraud/settings", json={"fail_mode": "open", "merchant": "mer_other"}, headers=auth
    )
    assert other.status_code == 404


async def test_test_cards_keep_their_behaviour(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline
) -> None:
    assert pipeline.fraud is not None
    pipeline.fraud.scorer = FixedScorer(0)
    review = await pay(client, auth, card={"number": REVIEW_CARD})
    assert review["status"] == "requires_review"
    assert review["risk"]["reasons"] == ["test_card_review"]
    blocked = await pay(client, auth, card={"number": "4100000000000019"})
    assert (blocked["status"], blocked["failure_code"]) == ("failed", "fraud_suspected")


async def test_a_redelivered_payment_is_assessed_and_counted_once(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    """No pipeline runs: the payment stays `pending` while its event is delivered three times."""
    r = await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
    p = r.json()
    async with runtime.db.read() as conn:
        created = await conn.scalar(
            sa.select(outbox.c.payload).where(
                outbox.c.object_id == p["id"], outbox.c.type == "payment.created"
            )
        )
    store = MemoryCounterStore()
    worker = FraudWorker(runtime, store=store)
    for _ in range(3):
        await worker.on_event(created)
    [stored] = await stored_assessments(runtime, p["id"])
    async with runtime.db.read() as conn:
        emitted = (
            (
                await conn.execute(
                    sa.select(outbox.c.payload).where(
                        outbox.c.object_id == p["id"], outbox.c.type == "payment.fraud_assessed"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert {e["data"]["object"]["assessment"] for e in emitted} == {stored["id"]}
    fingerprint = p["payment_method"]["card"]["fingerprint"]
    hour = p["created"] // 3600
    counts = await store.get_many(bucket_keys(f"fraud:card:{fingerprint}:n", hour))
    assert counts == [1, 1, 1]
