"""The operation rules, pure: no store, no HTTP."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from paygate.banksim.models import DeclineCode, Operation
from paygate.banksim.service import decide_capture, decide_refund, decide_void, refundable


def op(
    kind: str, amount: int, *, status: str = "approved", ref: str | None = None, parent=None
) -> Operation:
    return Operation(
        id="bop_1",
        reference=ref or f"pay_1:{kind}",
        payment="pay_1",
        operation=kind,  # type: ignore[arg-type]
        parent=parent,
        amount=amount,
        currency="usd",
        status=status,  # type: ignore[arg-type]
        decline_code=None,
        card_brand=None,
        card_last4=None,
        card_fingerprint=None,
        request_hash="h",
        created_ms=0,
    )


AUTH = op("authorize", 1000)


def test_capture_rules() -> None:
    assert decide_capture(AUTH, [], 1000, None).status == "approved"
    assert decide_capture(AUTH, [], 400, "usd").amount == 400
    assert (
        decide_capture(AUTH, [], 1001, None).decline_code is DeclineCode.AMOUNT_EXCEEDS_AUTHORIZED
    )
    assert decide_capture(None, [], 10, None).decline_code is DeclineCode.UNKNOWN_AUTHORIZATION
    declined_auth = op("authorize", 1000, status="declined")
    assert (
        decide_capture(declined_auth, [], 10, None).decline_code
        is DeclineCode.UNKNOWN_AUTHORIZATION
    )
    assert decide_capture(AUTH, [], 10, "eur").decline_code is DeclineCode.CURRENCY_MISMATCH
    captured = [op("capture", 10)]
    assert decide_capture(AUTH, captured, 10, None).decline_code is DeclineCode.ALREADY_CAPTURED
    refused = [op("capture", 10, status="declined")]
    assert decide_capture(AUTH, refused, 10, None).status == "approved"
    voided = [op("void", 1000)]
    assert decide_capture(AUTH, voided, 10, None).decline_code is DeclineCode.ALREADY_VOIDED


def test_void_rules() -> None:
    assert decide_void(AUTH, []).amount == 1000
    assert decide_void(AUTH, [op("capture", 5)]).decline_code is DeclineCode.ALREADY_CAPTURED
    assert decide_void(AUTH, [op("void", 1000)]).decline_code is DeclineCode.ALREADY_VOIDED
    assert decide_void(None, []).decline_code is DeclineCode.UNKNOWN_AUTHORIZATION


def test_refund_rules() -> None:
    sale = op("sale", 1000)
    assert decide_refund(sale, [], 1000, None).status == "approved"
    assert decide_refund(sale, [op("refund", 600)], 500, None).decline_code is (
        DeclineCode.AMOUNT_EXCEEDS_CAPTURED
    )
    assert decide_refund(AUTH, [], 10, None).decline_code is DeclineCode.UNKNOWN_PAYMENT
    assert decide_refund(None, [], 10, None).decline_code is DeclineCode.UNKNOWN_PAYMENT


@given(st.integers(1, 10_000), st.lists(st.integers(1, 5_000), max_size=20))
def test_refunds_never_exceed_the_captured_amount(captured: int, asks: list[int]) -> None:
    paid = op("capture", captured)
    children: list[Operation] = []
    for i, amount in enumerate(asks):
        decision = decide_refund(paid, children, amount, None)
        if decision.status == "approved":
            children.append(op("refund", amount, ref=f"pay_1:refund:re_{i}"))
        else:
            assert amount > refundable(paid, children)
        assert refundable(paid, children) >= 0
    assert sum(c.amount for c in children) <= captured
