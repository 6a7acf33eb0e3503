"""Rules in the live service: a matching rule overrides the score (allow approves whatever the
score, block declines, review reviews), and velocity attributes are counted live."""

from __future__ import annotations

from typing import Any

import httpx

from paygate.pipeline import Pipeline
from tests.e2e.conftest import operations
from tests.fraud.live import FixedScorer, pay


async def rule(client: httpx.AsyncClient, auth: dict[str, str], action: str, expr: str) -> str:
    r = await client.post(
        "/v1/fraud/rules", json={"action": action, "expression": expr}, headers=auth
    )
    assert r.status_code == 201, r.text
    rule_id: str = r.json()["id"]
    return rule_id


async def test_rules_override_the_score(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline, bank: httpx.AsyncClient
) -> None:
    assert pipeline.fraud is not None
    blocked = await rule(client, auth, "block", "amount > 5000")
    allowed = await rule(client, auth, "allow", "amount == 777")
    pipeline.fraud.scorer = FixedScorer(0)
    p = await pay(client, auth, amount=6000)
    assert (p["status"], p["failure_code"]) == ("failed", "fraud_suspected")
    assert p["risk"]["reasons"] == [blocked] and p["risk"]["score"] == 0
    assert await operations(bank, p["id"]) == []
    pipeline.fraud.scorer = FixedScorer(99)
    p = await pay(client, auth, amount=777)
    assert p["status"] == "succeeded" and p["risk"]["reasons"] == [allowed]
    assert p["risk"]["score"] == 99 and p["risk"]["level"] == "highest"
    p = await pay(client, auth, amount=778)  # no rule: the score declines
    assert p["status"] == "failed" and p["risk"]["reasons"] == ["amount"]


async def test_velocity_is_counted_live(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline
) -> None:
    assert pipeline.fraud is not None
    pipeline.fraud.scorer = FixedScorer(0)
    review = await rule(client, auth, "review", "total_payments_per_card_hourly >= 2")
    card: dict[str, Any] = {"number": "5555555555554444"}
    first = await pay(client, auth, card=card)
    second = await pay(client, auth, card=card)
    third = await pay(client, auth, card=card)
    other = await pay(client, auth)  # another card
    assert [x["status"] for x in (first, second, third, other)] == [
        "succeeded",
        "succeeded",
        "requires_review",
        "succeeded",
    ]
    assert third["risk"]["reasons"] == [review]
