"""The screening decision, pure: thresholds, levels, rules, fail modes and the test cards."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygate.fraud.decide import Policy, Scored, decide
from paygate.fraud.screening import DECLINE_TEST_CARD, REVIEW_TEST_CARD, level_of


@dataclass(frozen=True)
class Rule:
    action: str
    rule_id: str = "rule_1"


def scored(score: int) -> Scored:
    return Scored(score, ("amount",), "v1")


@pytest.mark.parametrize(
    ("score", "level", "decision"),
    [
        (0, "normal", "approve"),
        (64, "normal", "approve"),
        (65, "elevated", "review"),
        (74, "elevated", "review"),
        (75, "highest", "decline"),
        (100, "highest", "decline"),
    ],
)
def test_default_thresholds_and_levels(score: int, level: str, decision: str) -> None:
    a = decide(scored(score), Policy())
    assert (a.score, a.level, a.decision, a.source) == (score, level, decision, "model")
    assert a.model_version == "v1" and a.reasons == ("amount",)


def test_merchant_thresholds_move_decisions_not_levels() -> None:
    strict = Policy(review_threshold=30, decline_threshold=50)
    assert decide(scored(40), strict).decision == "review"
    assert decide(scored(40), strict).level == "normal"
    assert decide(scored(50), strict).decision == "decline"


@pytest.mark.parametrize(
    ("action", "decision"), [("allow", "approve"), ("block", "decline"), ("review", "review")]
)
@pytest.mark.parametrize("score", [0, 70, 99])
def test_a_rule_overrides_the_score(action: str, decision: str, score: int) -> None:
    a = decide(scored(score), Policy(), rule=Rule(action, "rule_vip"))
    assert (a.decision, a.reasons, a.source, a.score) == (decision, ("rule_vip",), "rule", score)


def test_a_rule_decides_even_when_scoring_failed() -> None:
    a = decide(None, Policy(fail_mode="closed"), rule=Rule("allow"))
    assert a.decision == "approve" and a.source == "rule"


@pytest.mark.parametrize(("mode", "decision"), [("open", "approve"), ("closed", "review")])
def test_unavailable_scoring_follows_the_fail_mode(mode: str, decision: str) -> None:
    a = decide(None, Policy(fail_mode=mode))  # type: ignore[arg-type]
    assert (a.decision, a.reasons, a.source) == (decision, ("fraud_unavailable",), f"fail_{mode}")
    assert a.as_risk() == {
        "score": 0,
        "level": "normal",
        "decision": decision,
        "reasons": ["fraud_unavailable"],
    }


def test_test_cards_decide_in_test_mode_only() -> None:
    allow = Rule("allow")
    decline = decide(scored(0), Policy(), rule=allow, test_card=DECLINE_TEST_CARD)
    assert (decline.decision, decline.reasons) == ("decline", ("test_card_fraud",))
    review = decide(None, Policy(), test_card=REVIEW_TEST_CARD)
    assert (review.decision, review.level) == ("review", "elevated")
    live = decide(scored(3), Policy(), livemode=True, test_card=DECLINE_TEST_CARD)
    assert live.decision == "approve" and live.source == "model"


ORDER = {"approve": 0, "review": 1, "decline": 2}


@given(
    a=st.integers(0, 100),
    b=st.integers(0, 100),
    review=st.integers(1, 100),
    gap=st.integers(0, 100),
)
def test_a_higher_score_never_gets_a_milder_decision(a: int, b: int, review: int, gap: int) -> None:
    policy = Policy(review_threshold=review, decline_threshold=min(100, review + gap))
    low, high = sorted((a, b))
    assert (
        ORDER[decide(scored(low), policy).decision] <= ORDER[decide(scored(high), policy).decision]
    )
    assert level_of(low) <= level_of(high) or (level_of(low), level_of(high)) in {
        ("normal", "elevated"),
        ("normal", "highest"),
        ("elevated", "highest"),
    }
