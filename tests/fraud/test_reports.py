"""Fraud reports end to end: appended, idempotent, tenant-scoped, moving no money, and fed to
the features (the merchant's fraud share, visible once the label delay has passed)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from paygate.fraud.features import OnlineFeatures, Txn
from paygate.pipeline import Pipeline
from tests.e2e.conftest import operations
from tests.fraud.live import get, pay
from tests.support import idem

DAY = 86_400


async def report(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    return await client.post(
        "/v1/fraud_reports", json=body, headers={**auth, **(headers or idem())}
    )


async def _share(
    pipeline: Pipeline, merchant_id: str, at: float, probe: str
) -> tuple[float, float]:
    """The merchant's 1-day payment count and fraud share as a payment at `at` would see them."""
    assert pipeline.fraud is not None
    scorer: Any = pipeline.fraud.scorer
    online = OnlineFeatures(pipeline.fraud.store, scorer.model.features())
    vector = await online.observe(Txn(probe, "probe_card", merchant_id, at, 100))
    names = online.feature_names
    return (
        float(vector[names.index("terminal_tx_1d")]),
        float(vector[names.index("terminal_fraud_share_1d")]),
    )


async def test_a_report_labels_the_payment_and_moves_no_money(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
) -> None:
    p = await pay(client, auth)
    later = p["created"] + 8 * DAY  # past the 7-day label delay
    assert await _share(pipeline, merchant["id"], later, "probe_before") == (1.0, 0.0)

    key = idem()
    r = await report(client, auth, key, payment=p["id"], type="chargeback", reason="10.4")
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["object"] == "fraud_report" and created["id"].startswith("frp_")
    assert (created["payment"], created["type"], created["reason"]) == (
        p["id"],
        "chargeback",
        "10.4",
    )
    replay = await report(client, auth, key, payment=p["id"], type="chargeback", reason="10.4")
    assert replay.content == r.content and replay.headers["Idempotent-Replayed"] == "true"
    await pipeline.settle()

    assert await _share(pipeline, merchant["id"], later, "probe_after") == (1.0, 1.0)
    # Inside the delay the label is not visible yet (the model was trained that way).
    tx, share = await _share(pipeline, merchant["id"], p["created"] + DAY, "probe_early")
    assert tx == 0.0 and np.isnan(share)

    # A second report of the same payment is kept, and counted once.
    r = await report(client, auth, payment=p["id"], type="card_network_notice")
    assert r.status_code == 200
    await pipeline.settle()
    assert await _share(pipeline, merchant["id"], later, "probe_again") == (1.0, 1.0)

    after = await get(client, auth, p["id"])
    assert (after["status"], after["amount_captured"], after["amount_refunded"]) == (
        "succeeded",
        1999,
        0,
    )
    assert [o["operation"] for o in await operations(bank, p["id"])] == ["sale"]
    listed = (await client.get("/v1/fraud_reports", headers=auth)).json()
    assert [x["type"] for x in listed["data"]] == ["card_network_notice", "chargeback"]
    only = await client.get("/v1/fraud_reports", params={"payment": "pay_x"}, headers=auth)
    assert only.json()["data"] == []


async def test_bad_reports_are_refused(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    from tests.conftest import new_merchant
    from tests.support import payment_body

    p = (await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})).json()
    r = await client.post("/v1/fraud_reports", json={"payment": p["id"], "type": "x"}, headers=auth)
    assert r.status_code == 400  # without a key too
    for body, param in (
        ({"payment": p["id"], "type": "refund"}, "type"),
        ({"type": "chargeback"}, "payment"),
        ({"payment": p["id"], "type": "chargeback", "reason": "x" * 501}, "reason"),
    ):
        r = await report(client, auth, **body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert (await report(client, auth, payment="pay_none", type="chargeback")).status_code == 404
    other = await new_merchant(client, "Other")
    other_auth = {"Authorization": f"Bearer {other['api_key']}"}
    r = await report(client, other_auth, payment=p["id"], type="chargeback")
    assert r.status_code == 404
    assert (await client.get("/v1/fraud_reports", headers=auth)).json()["data"] == []
