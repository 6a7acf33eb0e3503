"""Operations through the HTTP API: captures, voids, refunds, idempotency, look-ups, audit."""

from __future__ import annotations

import asyncio

import pytest

from paygate.banksim.models import payment_of


async def test_authorize_then_full_capture(ops) -> None:
    auth = await ops.pay("pay_a", 1000)
    assert auth["status"] == "approved" and auth["payment"] == "pay_a"
    cap = await ops.capture("pay_a", 1000)
    assert (cap["status"], cap["amount"], cap["currency"]) == ("approved", 1000, "usd")
    assert cap["authorization"] == "pay_a:authorize"


async def test_partial_capture_releases_the_rest(ops) -> None:
    await ops.pay("pay_p", 1000)
    assert (await ops.capture("pay_p", 600))["status"] == "approved"
    second = await ops.capture("pay_p", 400, ref="capture2")
    assert (second["status"], second["decline_code"]) == ("declined", "already_captured")
    late_void = await ops.void("pay_p")
    assert (late_void["status"], late_void["decline_code"]) == ("declined", "already_captured")


async def test_capture_above_the_authorized_amount_is_declined(ops) -> None:
    await ops.pay("pay_over", 1000)
    cap = await ops.capture("pay_over", 1001)
    assert (cap["status"], cap["decline_code"]) == ("declined", "amount_exceeds_authorized")
    # A refused capture takes nothing: a good one may follow.
    assert (await ops.capture("pay_over", 1000, ref="capture2"))["status"] == "approved"


async def test_capture_of_unknown_or_declined_authorization(ops) -> None:
    cap = await ops.capture("pay_none", 100)
    assert (cap["status"], cap["decline_code"]) == ("declined", "unknown_authorization")
    await ops.pay("pay_dec", 1000, number="4000000000000002")
    cap = await ops.capture("pay_dec", 100)
    assert cap["decline_code"] == "unknown_authorization"


async def test_void_releases_and_blocks_capture(ops) -> None:
    await ops.pay("pay_v", 1500)
    void = await ops.void("pay_v")
    assert (void["status"], void["amount"], void["authorization"]) == (
        "approved",
        1500,
        "pay_v:authorize",
    )
    assert (await ops.void("pay_v", ref="void2"))["decline_code"] == "already_voided"
    assert (await ops.capture("pay_v", 100))["decline_code"] == "already_voided"


async def test_void_after_capture_is_refused(ops) -> None:
    await ops.pay("pay_vc", 1000)
    await ops.capture("pay_vc", 1000)
    void = await ops.void("pay_vc")
    assert (void["status"], void["decline_code"]) == ("declined", "already_captured")


async def test_partial_refunds_then_over_refund(ops) -> None:
    await ops.pay("pay_r", 1000)
    await ops.capture("pay_r", 1000)
    assert (await ops.refund("pay_r", "re_1", 300))["status"] == "approved"
    assert (await ops.refund("pay_r", "re_2", 500))["status"] == "approved"
    over = await ops.refund("pay_r", "re_3", 201)
    assert (over["status"], over["decline_code"]) == ("declined", "amount_exceeds_captured")
    last = await ops.refund("pay_r", "re_4", 200)
    assert (last["status"], last["payment_reference"]) == ("approved", "pay_r:capture")


async def test_refund_of_a_sale_and_of_nothing(ops) -> None:
    await ops.pay("pay_s", 700, operation="sale")
    assert (await ops.refund("pay_s", "re_1", 700, of="sale"))["status"] == "approved"
    missing = await ops.refund("pay_none", "re_1", 1)
    assert missing["decline_code"] == "unknown_payment"
    await ops.pay("pay_auth_only", 700)
    not_captured = await ops.refund("pay_auth_only", "re_1", 1, of="authorize")
    assert not_captured["decline_code"] == "unknown_payment"


async def test_replay_returns_the_first_answer_and_applies_nothing(ops, bank) -> None:
    first = await ops.pay("pay_i", 1000)
    response = await bank.post(
        "/v1/authorize",
        json={
            "reference": "pay_i:authorize",
            "amount": 1000,
            "currency": "usd",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030},
        },
    )
    assert response.json() == first
    assert response.headers["bank-replayed"] == "true"
    await ops.capture("pay_i", 1000)
    await ops.refund("pay_i", "re_1", 400)
    again = await ops.refund("pay_i", "re_1", 400)
    assert again["status"] == "approved"
    assert [line["reference"] for line in await ops.listing("pay_i")] == [
        "pay_i:authorize",
        "pay_i:capture",
        "pay_i:refund:re_1",
    ]


async def test_a_declined_answer_is_replayed_too(ops) -> None:
    first = await ops.refund("pay_x", "re_1", 100)
    assert first["status"] == "declined"
    assert await ops.refund("pay_x", "re_1", 100) == first


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 999},
        {"currency": "eur"},
        {"card": {"number": "5555555555554444", "exp_month": 12, "exp_year": 2030}},
    ],
)
async def test_same_reference_different_request_is_409(ops, bank, change) -> None:
    await ops.pay("pay_c", 1000)
    body = {
        "reference": "pay_c:authorize",
        "amount": 1000,
        "currency": "usd",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030},
    }
    response = await bank.post("/v1/authorize", json={**body, **change})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "reference_conflict"
    # The same reference under another operation is a conflict as well.
    response = await bank.post("/v1/sale", json=body)
    assert response.status_code == 409


async def test_status_lookup(ops, bank) -> None:
    await ops.pay("pay_l", 1000, number="4000000000009995")
    found = await bank.get("/v1/operations/pay_l:authorize")
    assert found.status_code == 200
    assert (found.json()["status"], found.json()["decline_code"]) == (
        "declined",
        "insufficient_funds",
    )
    missing = await bank.get("/v1/operations/pay_l:capture")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "resource_missing"
    unauthorized = await bank.get("/v1/operations/pay_l:authorize", headers={"Authorization": ""})
    assert unauthorized.status_code == 401


async def test_audit_listing_needs_no_key(ops, bank) -> None:
    await ops.pay("pay_list", 1000)
    await ops.capture("pay_list", 800)
    await ops.refund("pay_list", "re_9", 100)
    await ops.pay("pay_other", 5)
    lines = await ops.listing("pay_list")
    assert [(x["operation"], x["amount"], x["status"]) for x in lines] == [
        ("authorize", 1000, "approved"),
        ("capture", 800, "approved"),
        ("refund", 100, "approved"),
    ]
    assert set(lines[0]) >= {"reference", "operation", "amount", "currency", "status", "created"}
    assert (await bank.get("/v1/operations", headers={"Authorization": ""})).status_code == 400


async def test_key_required_for_operations(bank) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        response = await bank.post("/v1/authorize", json={}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    "body",
    [
        {"reference": "pay_m:authorize", "amount": "10", "currency": "usd"},
        {"reference": "pay_m:authorize", "amount": 10.5, "currency": "usd"},
        {"reference": "pay_m:authorize", "amount": 0, "currency": "usd"},
        {"reference": "pay_m:authorize", "amount": 10, "currency": "USD"},
        {"reference": "pay_m:authorize", "amount": 10, "currency": "xyz"},
        {"reference": "", "amount": 10, "currency": "usd"},
        {"reference": "pay m", "amount": 10, "currency": "usd"},
    ],
)
async def test_malformed_requests_are_400(bank, body) -> None:
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    response = await bank.post("/v1/authorize", json={**body, "card": card})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "card",
    [
        {"number": "4242-4242-4242-4242", "exp_month": 12, "exp_year": 2030},
        {"number": "4242424242424242", "exp_month": 13, "exp_year": 2030},
        {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "12a"},
        {"number": 4242424242424242, "exp_month": 12, "exp_year": 2030},
    ],
)
async def test_malformed_card_is_400_and_never_echoed(bank, card) -> None:
    body = {"reference": "pay_m:authorize", "amount": 10, "currency": "usd", "card": card}
    response = await bank.post("/v1/authorize", json=body)
    assert response.status_code == 400
    assert "4242424242424242" not in response.text
    assert "12a" not in response.text
    not_json = await bank.post("/v1/authorize", content=b"{not json")
    assert not_json.status_code == 400


async def test_concurrent_refunds_never_exceed_the_capture(ops) -> None:
    await ops.pay("pay_cc", 1000)
    await ops.capture("pay_cc", 1000)
    answers = await asyncio.gather(*(ops.refund("pay_cc", f"re_{i}", 400) for i in range(8)))
    assert sum(a["status"] == "approved" for a in answers) == 2
    assert {a["decline_code"] for a in answers if a["status"] == "declined"} == {
        "amount_exceeds_captured"
    }


async def test_concurrent_captures_capture_once(ops) -> None:
    await ops.pay("pay_cap", 1000)
    answers = await asyncio.gather(
        *(ops.capture("pay_cap", 600, ref=f"capture{i}") for i in range(6)),
        ops.void("pay_cap"),
    )
    assert sum(a["status"] == "approved" for a in answers) == 1


def test_payment_id_is_before_the_first_colon() -> None:
    assert payment_of("pay_01ABC:refund:re_01XYZ") == "pay_01ABC"
    assert payment_of("pay_01ABC") == "pay_01ABC"
