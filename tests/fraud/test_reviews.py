"""The review queue end to end: a review-card payment is held in `requires_review`, listed,
and approved (captured at the bank), rejected (voided, then failed as fraud), or expired by the
merchant's fail mode."""

from __future__ import annotations

import httpx
import pytest

from paygate.pipeline import Pipeline
from paygate.runtime import Runtime
from tests.e2e.conftest import operations
from tests.fraud.live import REVIEW_CARD, WAIT, get, pay, wait_status
from tests.support import idem


async def _reviews(client: httpx.AsyncClient, auth: dict[str, str]) -> list[str]:
    r = await client.get("/v1/reviews", headers=auth)
    assert r.status_code == 200, r.text
    return [item["payment"] for item in r.json()["data"]]


async def test_approve_captures_at_the_bank(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline, bank: httpx.AsyncClient
) -> None:
    p = await pay(client, auth, card={"number": REVIEW_CARD})
    assert p["status"] == "requires_review" and p["amount_capturable"] == 1999
    r = await client.get("/v1/reviews", headers=auth)
    [review] = r.json()["data"]
    assert review["payment"] == p["id"] and review["object"] == "review"
    assert review["score"] == 70 and review["reasons"] == ["test_card_review"]
    assert review["opened_at"] >= p["created"]

    r = await client.post(
        f"/v1/payments/{p['id']}/review", json={"decision": "approve"}, headers={**auth, **WAIT}
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert (done["status"], done["amount_captured"], done["amount_capturable"]) == (
        "succeeded",
        1999,
        0,
    )
    ops = [(o["operation"], o["amount"], o["status"]) for o in await operations(bank, p["id"])]
    assert ops == [("authorize", 1999, "approved"), ("capture", 1999, "approved")]
    assert await _reviews(client, auth) == []
    again = await client.post(
        f"/v1/payments/{p['id']}/review", json={"decision": "reject"}, headers=auth
    )
    assert again.status_code == 409
    log = (await client.get(f"/v1/payments/{p['id']}/transaction_log", headers=auth)).json()
    types = [e["type"] for e in log["data"]]
    assert "payment.review_approved" in types and types[-1] == "payment.succeeded"


async def test_reject_voids_and_fails_as_fraud(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline, bank: httpx.AsyncClient
) -> None:
    p = await pay(client, auth, card={"number": REVIEW_CARD})
    r = await client.post(
        f"/v1/payments/{p['id']}/review",
        json={"decision": "reject"},
        headers={**auth, **WAIT, **idem()},
    )
    assert r.status_code == 200, r.text
    failed = r.json()
    assert (failed["status"], failed["failure_code"]) == ("failed", "fraud_suspected")
    assert failed["amount_capturable"] == 0 and failed["amount_captured"] == 0
    assert [o["operation"] for o in await operations(bank, p["id"])] == ["authorize", "void"]
    assert await _reviews(client, auth) == []


async def test_approve_without_capture_waits_for_the_merchant(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline, bank: httpx.AsyncClient
) -> None:
    p = await pay(client, auth, card={"number": REVIEW_CARD}, capture=False)
    assert p["status"] == "requires_review"
    r = await client.post(
        f"/v1/payments/{p['id']}/review", json={"decision": "approve"}, headers=auth
    )
    assert r.status_code == 200 and r.json()["status"] == "requires_capture"
    assert [o["operation"] for o in await operations(bank, p["id"])] == ["authorize"]
    r = await client.post(f"/v1/payments/{p['id']}/capture", headers={**auth, **WAIT})
    assert r.json()["status"] == "succeeded"


async def test_a_payment_under_review_cannot_be_captured_by_the_merchant(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline
) -> None:
    p = await pay(client, auth, card={"number": REVIEW_CARD}, capture=False)
    r = await client.post(f"/v1/payments/{p['id']}/capture", headers=auth)
    assert r.status_code == 409


async def test_wrong_state_and_bad_input(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline
) -> None:
    ok = await pay(client, auth)
    r = await client.post(
        f"/v1/payments/{ok['id']}/review", json={"decision": "approve"}, headers=auth
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_state"
    held = await pay(client, auth, card={"number": REVIEW_CARD})
    for body in ({"decision": "maybe"}, {}, {"decision": "approve", "extra": 1}):
        r = await client.post(f"/v1/payments/{held['id']}/review", json=body, headers=auth)
        assert r.status_code == 400, r.text
    r = await client.post(
        "/v1/payments/pay_missing/review", json={"decision": "approve"}, headers=auth
    )
    assert r.status_code == 404
    assert (await get(client, auth, held["id"]))["status"] == "requires_review"


async def test_reviews_are_per_merchant(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline
) -> None:
    from tests.conftest import new_merchant

    p = await pay(client, auth, card={"number": REVIEW_CARD})
    other = await new_merchant(client, "Other")
    other_auth = {"Authorization": f"Bearer {other['api_key']}"}
    assert await _reviews(client, other_auth) == []
    r = await client.post(
        f"/v1/payments/{p['id']}/review", json={"decision": "approve"}, headers=other_auth
    )
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("mode", "status", "failure", "ops"),
    [
        ("open", "succeeded", None, ["authorize", "capture"]),
        ("closed", "failed", "fraud_suspected", ["authorize", "void"]),
    ],
)
async def test_an_undecided_review_expires_by_the_fail_mode(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    pipeline: Pipeline,
    runtime: Runtime,
    bank: httpx.AsyncClient,
    mode: str,
    status: str,
    failure: str | None,
    ops: list[str],
) -> None:
    r = await client.post("/v1/fraud/settings", json={"fail_mode": mode}, headers=auth)
    assert r.status_code == 200
    p = await pay(client, auth, card={"number": REVIEW_CARD})
    assert p["status"] == "requires_review"
    runtime.settings.review_expiry_s = 1
    ended = await wait_status(client, auth, p["id"], status, seconds=10)
    assert (ended["status"], ended["failure_code"]) == (status, failure)
    assert [o["operation"] for o in await operations(bank, p["id"])] == ops
