"""The payment state machine of DESIGN.md section 4, pure.

A rule-based machine applies random operations, legal and not, to a payment and checks each
answer against an oracle written here from the contract table (not from `models.ALLOWED`): an
accepted operation gives exactly the predicted state, a refused one raises and changes nothing.
After every step the money invariants hold. Example tests then walk each row of the table.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from paygate.money import MAX_AMOUNT
from paygate.payments.models import (
    ALLOWED,
    FAILURE_CODES,
    FAILURE_MESSAGES,
    RESTING,
    PaymentState,
    Status,
    TransitionRefused,
)

S = Status

# The contract table of DESIGN.md section 4, row by row, copied here so that a change to the
# model's table shows up as a test failure rather than silently redefining the contract.
CONTRACT = {
    (S.PENDING, S.FAILED),  # fraud declines
    (S.PENDING, S.PROCESSING),  # fraud approves or sends to review
    (S.PENDING, S.CANCELED),  # cancel before processing
    (S.PROCESSING, S.SUCCEEDED),  # sale, or authorize + capture
    (S.PROCESSING, S.REQUIRES_CAPTURE),  # authorize, capture false
    (S.PROCESSING, S.REQUIRES_REVIEW),  # authorize, capture held for review
    (S.PROCESSING, S.FAILED),  # bank declines, or the auth deadline passes
    (S.REQUIRES_REVIEW, S.SUCCEEDED),  # review approved, capture true
    (S.REQUIRES_REVIEW, S.REQUIRES_CAPTURE),  # review approved, capture false
    (S.REQUIRES_REVIEW, S.FAILED),  # review rejected or expired fail-closed
    (S.REQUIRES_REVIEW, S.CANCELED),  # cancel, or the authorization expires
    (S.REQUIRES_CAPTURE, S.CANCELED),  # cancel, or the authorization expires
    (S.REQUIRES_CAPTURE, S.SUCCEEDED),  # capture
    (S.SUCCEEDED, S.SUCCEEDED),  # a refund succeeds
    # The paragraph under the table: a capture the bank refuses for good fails the payment.
    (S.REQUIRES_CAPTURE, S.FAILED),
}
CONTRACT_CODES = {
    "card_declined",
    "insufficient_funds",
    "expired_card",
    "incorrect_cvc",
    "processing_error",
    "lost_card",
    "stolen_card",
    "fraud_suspected",
}
TERMINAL = {S.FAILED, S.CANCELED}
HOLDS_AUTHORIZATION = {S.REQUIRES_CAPTURE, S.REQUIRES_REVIEW}

codes = st.one_of(
    st.sampled_from(sorted(CONTRACT_CODES)),
    st.sampled_from(["", "declined", "CARD_DECLINED", "fraud", "do_not_honor"]),
)


def amounts_around(limit: int) -> st.SearchStrategy[int | None]:
    """None (the default amount), the edges around `limit`, and anything in between or beyond."""
    return st.one_of(
        st.none(),
        st.sampled_from([-1, 0, 1, limit - 1, limit, limit + 1]),
        st.integers(min_value=1, max_value=max(1, limit)),
        st.integers(min_value=-MAX_AMOUNT, max_value=2 * MAX_AMOUNT),
    )


def check_invariants(p: PaymentState) -> None:
    assert p.amount_refunded >= 0
    assert p.amount_refund_pending >= 0
    assert p.amount_refunded + p.amount_refund_pending <= p.amount_captured <= p.amount
    assert 0 <= p.amount_capturable <= p.amount
    if p.status not in HOLDS_AUTHORIZATION:
        assert p.amount_capturable == 0
    if p.status == S.FAILED:
        assert p.failure_code in CONTRACT_CODES
    else:
        assert p.failure_code is None
    if p.status != S.SUCCEEDED:
        # Money moves only once the payment succeeded.
        assert p.amount_captured == 0
        assert p.amount_refunded == p.amount_refund_pending == 0
    assert p.status != S.REQUIRES_ACTION  # reserved for 3-D Secure, never reached yet


class PaymentMachine(RuleBasedStateMachine):
    """Random operations on one payment; each answer is checked against the oracle.

    Each operation is an `op_*` method taking its arguments; the rules draw them at random, and
    the initializer uses the same methods to walk a legal path first, so that runs start from
    every reachable state instead of mostly dying young in `canceled` or `failed`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.p = PaymentState(status=S.PENDING, amount=1, capture=True)
        self.history: list[Status] = []

    @initialize(
        amount=st.integers(min_value=1, max_value=MAX_AMOUNT),
        capture=st.booleans(),
        stage=st.sampled_from(
            ["pending", "processing", "review", "authorized", "sold", "captured", "refunding"]
        ),
        data=st.data(),
    )
    def create(self, amount: int, capture: bool, stage: str, data: st.DataObject) -> None:
        self.p = PaymentState(status=S.PENDING, amount=amount, capture=capture)
        self.history = [S.PENDING]
        if stage == "pending":
            return
        self.op_start_processing()
        part = st.integers(min_value=1, max_value=amount)
        if stage == "review":
            self.op_authorized(review=True)
        elif stage in ("authorized", "captured"):
            self.op_authorized(review=False)
        elif stage in ("sold", "refunding"):
            self.op_captured(data.draw(part, label="sale"))
        if stage == "captured":
            self.op_captured(data.draw(part, label="capture"))
        if stage == "refunding":
            for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="refunds")):
                if self.p.refundable > 0:
                    share = st.integers(min_value=1, max_value=self.p.refundable)
                    self.op_reserve_refund(data.draw(share, label="refund"))

    def attempt(
        self, expected: PaymentState | type[Exception], op: Any, *args: Any, **kw: Any
    ) -> Any:
        """Run `op` on the current state: it must give `expected`, or raise it and change
        nothing."""
        before = self.p
        if isinstance(expected, type):
            with pytest.raises(expected):
                op(before, *args, **kw)
            assert self.p == before
            return None
        result = op(before, *args, **kw)
        after = result[0] if isinstance(result, tuple) else result
        assert after == expected
        if after.status != before.status or before.status == S.SUCCEEDED:
            assert (before.status, after.status) in CONTRACT
        assert before.status not in TERMINAL, "a terminal payment changed"
        self.p = after
        self.history.append(after.status)
        return result

    # The operations, each with the oracle's prediction.

    def op_start_processing(self) -> None:
        p = self.p
        ok = p.status == S.PENDING
        expected = replace(p, status=S.PROCESSING) if ok else TransitionRefused
        self.attempt(expected, PaymentState.start_processing)

    def op_fail(self, code: str) -> None:
        p = self.p
        expected: PaymentState | type[Exception]
        if code not in CONTRACT_CODES:
            expected = ValueError
        elif p.status in {S.PENDING, S.PROCESSING, S.REQUIRES_REVIEW, S.REQUIRES_CAPTURE}:
            expected = replace(p, status=S.FAILED, failure_code=code, amount_capturable=0)
        else:
            expected = TransitionRefused
        self.attempt(expected, PaymentState.fail, code)

    def op_authorized(self, review: bool) -> None:
        p = self.p
        target = S.REQUIRES_REVIEW if review else S.REQUIRES_CAPTURE
        expected: PaymentState | type[Exception] = TransitionRefused
        if p.status == S.PROCESSING:
            expected = replace(p, status=target, amount_capturable=p.amount)
        self.attempt(expected, PaymentState.authorized, review=review)

    def capture_limit(self) -> int:
        return self.p.amount if self.p.status == S.PROCESSING else self.p.amount_capturable

    def op_captured(self, amount: int | None) -> None:
        p = self.p
        limit = self.capture_limit()
        resolved = limit if amount is None else amount
        expected: PaymentState | type[Exception] = TransitionRefused
        # A sale from `processing` or a capture of (part of) a held authorization; a payment
        # under review is captured only through `approve_review`.
        can_capture = p.status in {S.PROCESSING, S.REQUIRES_CAPTURE}
        if can_capture and 0 < resolved <= limit:
            expected = replace(p, status=S.SUCCEEDED, amount_captured=resolved, amount_capturable=0)
        self.attempt(expected, PaymentState.captured, amount)

    def op_approve_review(self) -> None:
        p = self.p
        expected: PaymentState | type[Exception] = TransitionRefused
        if p.status == S.REQUIRES_REVIEW and p.capture:
            expected = replace(
                p, status=S.SUCCEEDED, amount_captured=p.amount_capturable, amount_capturable=0
            )
        elif p.status == S.REQUIRES_REVIEW:
            expected = replace(p, status=S.REQUIRES_CAPTURE)
        self.attempt(expected, PaymentState.approve_review)

    def op_cancel(self) -> None:
        p = self.p
        expected: PaymentState | type[Exception] = TransitionRefused
        if p.status in {S.PENDING, *HOLDS_AUTHORIZATION}:
            expected = replace(p, status=S.CANCELED, amount_capturable=0)
        self.attempt(expected, PaymentState.cancel)

    def op_reserve_refund(self, amount: int | None) -> None:
        p = self.p
        refundable = p.amount_captured - p.amount_refunded - p.amount_refund_pending
        resolved = refundable if amount is None else amount
        expected: PaymentState | type[Exception] = TransitionRefused
        if p.status == S.SUCCEEDED and 0 < resolved <= refundable:
            expected = replace(p, amount_refund_pending=p.amount_refund_pending + resolved)
        result = self.attempt(expected, PaymentState.reserve_refund, amount)
        if result is not None:
            assert result[1] == resolved

    def op_refund_settled(self, amount: int, succeeded: bool) -> None:
        p = self.p
        expected: PaymentState | type[Exception] = TransitionRefused
        if p.status == S.SUCCEEDED and 0 < amount <= p.amount_refund_pending:
            expected = replace(
                p,
                amount_refunded=p.amount_refunded + (amount if succeeded else 0),
                amount_refund_pending=p.amount_refund_pending - amount,
            )
        self.attempt(expected, PaymentState.refund_settled, amount, succeeded=succeeded)

    # The rules: random arguments, legal or not.

    @rule()
    def start_processing(self) -> None:
        self.op_start_processing()

    @rule(code=codes)
    def fail(self, code: str) -> None:
        self.op_fail(code)

    @rule(review=st.booleans())
    def authorized(self, review: bool) -> None:
        self.op_authorized(review)

    @rule(data=st.data())
    def captured(self, data: st.DataObject) -> None:
        self.op_captured(data.draw(amounts_around(self.capture_limit()), label="amount"))

    @rule(data=st.data())
    def check_capture(self, data: st.DataObject) -> None:
        p = self.p
        amount = data.draw(amounts_around(p.amount_capturable), label="amount")
        resolved = p.amount_capturable if amount is None else amount
        if p.status == S.REQUIRES_CAPTURE and 0 < resolved <= p.amount_capturable:
            assert p.check_capture(amount) == resolved
        else:
            with pytest.raises(TransitionRefused) as refused:
                p.check_capture(amount)
            if p.status == S.REQUIRES_CAPTURE:
                assert refused.value.param == "amount"
        assert self.p == p  # a check, never a change

    @rule()
    def approve_review(self) -> None:
        self.op_approve_review()

    @rule()
    def cancel(self) -> None:
        self.op_cancel()

    @rule(data=st.data())
    def reserve_refund(self, data: st.DataObject) -> None:
        self.op_reserve_refund(data.draw(amounts_around(self.p.refundable), label="amount"))

    @rule(data=st.data(), succeeded=st.booleans())
    def refund_settled(self, data: st.DataObject, succeeded: bool) -> None:
        pending = self.p.amount_refund_pending
        amount = data.draw(
            st.one_of(
                st.sampled_from([1, pending, pending + 1]).filter(lambda a: a > 0),
                st.integers(min_value=1, max_value=max(1, pending)),
                st.integers(min_value=1, max_value=2 * MAX_AMOUNT),
                st.integers(min_value=-MAX_AMOUNT, max_value=0),
            ),
            label="amount",
        )
        self.op_refund_settled(amount, succeeded)

    @invariant()
    def money_and_status_invariants(self) -> None:
        check_invariants(self.p)

    @invariant()
    def path_stays_in_the_contract(self) -> None:
        for before, after in zip(self.history, self.history[1:], strict=False):
            assert before not in TERMINAL
            assert before != S.SUCCEEDED or after == S.SUCCEEDED
            assert (before, after) in CONTRACT


PaymentMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)
TestPaymentMachine = PaymentMachine.TestCase


# The tables themselves.


def test_allowed_is_the_contract_table() -> None:
    assert set(ALLOWED) == CONTRACT


def test_failure_codes_are_the_contract_codes_each_with_a_message() -> None:
    assert set(FAILURE_CODES) == CONTRACT_CODES
    assert set(FAILURE_MESSAGES) == CONTRACT_CODES
    for message in FAILURE_MESSAGES.values():
        assert message.endswith(".")


def test_resting_states_are_those_prefer_wait_answers_on() -> None:
    assert set(RESTING) == {
        S.SUCCEEDED,
        S.FAILED,
        S.REQUIRES_CAPTURE,
        S.REQUIRES_REVIEW,
        S.CANCELED,
    }


# One example per row of the contract table.


def pending(amount: int = 1000, *, capture: bool = True) -> PaymentState:
    return PaymentState(status=S.PENDING, amount=amount, capture=capture)


def test_pending_to_failed_when_fraud_declines() -> None:
    p = pending().fail("fraud_suspected")
    assert (p.status, p.failure_code, p.amount_capturable) == (S.FAILED, "fraud_suspected", 0)


def test_pending_to_processing() -> None:
    assert pending().start_processing().status == S.PROCESSING


def test_pending_to_canceled() -> None:
    p = pending().cancel()
    assert p.status == S.CANCELED and p.amount_captured == 0


def test_processing_to_succeeded_by_a_sale() -> None:
    p = pending().start_processing().captured()
    assert (p.status, p.amount_captured, p.amount_capturable) == (S.SUCCEEDED, 1000, 0)


def test_processing_to_requires_capture() -> None:
    p = pending(capture=False).start_processing().authorized(review=False)
    assert (p.status, p.amount_capturable, p.amount_captured) == (S.REQUIRES_CAPTURE, 1000, 0)


def test_processing_to_requires_review() -> None:
    p = pending().start_processing().authorized(review=True)
    assert (p.status, p.amount_capturable, p.amount_captured) == (S.REQUIRES_REVIEW, 1000, 0)


@pytest.mark.parametrize("code", sorted(CONTRACT_CODES - {"fraud_suspected"}))
def test_processing_to_failed_with_the_banks_code(code: str) -> None:
    p = pending().start_processing().fail(code)
    assert (p.status, p.failure_code) == (S.FAILED, code)


def test_requires_review_to_succeeded_when_approved_with_capture() -> None:
    p = pending(capture=True).start_processing().authorized(review=True).approve_review()
    assert (p.status, p.amount_captured, p.amount_capturable) == (S.SUCCEEDED, 1000, 0)


def test_requires_review_to_requires_capture_when_approved_without_capture() -> None:
    p = pending(capture=False).start_processing().authorized(review=True).approve_review()
    assert (p.status, p.amount_captured, p.amount_capturable) == (S.REQUIRES_CAPTURE, 0, 1000)


def test_requires_review_to_failed_when_rejected() -> None:
    p = pending().start_processing().authorized(review=True).fail("fraud_suspected")
    assert (p.status, p.failure_code, p.amount_capturable) == (S.FAILED, "fraud_suspected", 0)


@pytest.mark.parametrize("review", [True, False])
def test_held_authorization_to_canceled(review: bool) -> None:
    p = pending(capture=False).start_processing().authorized(review=review).cancel()
    assert (p.status, p.amount_capturable, p.amount_captured) == (S.CANCELED, 0, 0)


def test_requires_capture_to_succeeded_by_a_full_capture() -> None:
    p = pending(capture=False).start_processing().authorized(review=False)
    assert p.check_capture(None) == 1000
    p = p.captured(None)
    assert (p.status, p.amount_captured, p.amount_capturable) == (S.SUCCEEDED, 1000, 0)


def test_requires_capture_to_failed_when_the_bank_refuses_the_capture() -> None:
    p = pending(capture=False).start_processing().authorized(review=False).fail("processing_error")
    assert (p.status, p.failure_code, p.amount_capturable) == (S.FAILED, "processing_error", 0)


def test_succeeded_to_succeeded_when_a_refund_succeeds() -> None:
    p = pending().start_processing().captured()
    p, amount = p.reserve_refund(300)
    assert amount == 300 and (p.amount_refund_pending, p.refundable) == (300, 700)
    p = p.refund_settled(300, succeeded=True)
    assert (p.status, p.amount_refunded, p.amount_refund_pending) == (S.SUCCEEDED, 300, 0)


def test_a_failed_refund_releases_its_reservation() -> None:
    p, _ = pending().start_processing().captured().reserve_refund(None)
    assert p.refundable == 0
    with pytest.raises(TransitionRefused):
        p.reserve_refund(1)
    p = p.refund_settled(1000, succeeded=False)
    assert (p.amount_refunded, p.amount_refund_pending, p.refundable) == (0, 0, 1000)


def test_partial_capture_releases_the_rest() -> None:
    p = pending(capture=False).start_processing().authorized(review=False)
    assert p.check_capture(600) == 600
    p = p.captured(600)
    assert (p.status, p.amount_captured, p.amount_capturable) == (S.SUCCEEDED, 600, 0)
    # The released 400 can be neither captured again nor refunded.
    with pytest.raises(TransitionRefused):
        p.captured(400)
    with pytest.raises(TransitionRefused) as over:
        p.reserve_refund(601)
    assert over.value.param == "amount"
    p, amount = p.reserve_refund(None)
    assert amount == 600


@pytest.mark.parametrize("amount", [0, -1, 1001])
def test_capture_outside_what_is_capturable_is_refused(amount: int) -> None:
    p = pending(capture=False).start_processing().authorized(review=False)
    for op in (p.check_capture, p.captured):
        with pytest.raises(TransitionRefused) as refused:
            op(amount)
        assert refused.value.param == "amount"


def test_a_fully_refunded_payment_refuses_more_refunds() -> None:
    p, _ = pending().start_processing().captured().reserve_refund(None)
    p = p.refund_settled(1000, succeeded=True)
    with pytest.raises(TransitionRefused, match="in full"):
        p.reserve_refund(None)


def test_unknown_failure_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown failure code"):
        pending().fail("do_not_honor")


@pytest.mark.parametrize("terminal", ["failed", "canceled"])
def test_terminal_states_refuse_every_operation(terminal: str) -> None:
    p = pending().fail("card_declined") if terminal == "failed" else pending().cancel()
    ops = [
        lambda: p.start_processing(),
        lambda: p.fail("card_declined"),
        lambda: p.authorized(review=False),
        lambda: p.authorized(review=True),
        lambda: p.captured(None),
        lambda: p.check_capture(None),
        lambda: p.approve_review(),
        lambda: p.cancel(),
        lambda: p.reserve_refund(None),
        lambda: p.refund_settled(1, succeeded=True),
    ]
    for op in ops:
        with pytest.raises(TransitionRefused):
            op()


@given(
    amount=st.integers(min_value=1, max_value=MAX_AMOUNT),
    settle=st.integers(-MAX_AMOUNT, 0),
    succeeded=st.booleans(),
)
def test_refund_settled_refuses_non_positive_amounts(
    amount: int, settle: int, succeeded: bool
) -> None:
    p = pending(amount).start_processing().captured()
    with pytest.raises(TransitionRefused):
        p.refund_settled(settle, succeeded=succeeded)


# Bank outcomes must not move a payment past a review: only a person's decision (approve_review,
# or fail) leaves `requires_review`, and a payment with `capture: false` waits for the merchant.


def test_authorized_cannot_skip_a_review() -> None:
    p = pending(capture=False).start_processing().authorized(review=True)
    with pytest.raises(TransitionRefused):
        p.authorized(review=False)


def test_captured_cannot_skip_a_review_and_the_hold() -> None:
    p = pending(capture=False).start_processing().authorized(review=True)
    with pytest.raises(TransitionRefused):
        p.captured(None)
