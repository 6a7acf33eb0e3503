"""The screening decision, pure: the model's score (or its failure), a rule's verdict and the
merchant's settings in, one `Assessment` out.

Precedence, first that applies: the published test cards in test mode; a matching rule (`allow`
approves whatever the score, `block` declines, `review` reviews); scoring unavailable (raised or
too slow): the merchant's fail mode (`open` approves, `closed` reviews), reason
`fraud_unavailable`; else the score against the merchant's thresholds (default: ≥ 75 declines,
≥ 65 reviews).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from paygate.fraud.screening import Assessment, assess, level_of

FailMode = Literal["open", "closed"]
FAIL_MODES: tuple[FailMode, ...] = ("open", "closed")
DEFAULT_REVIEW_FROM = 65
DEFAULT_DECLINE_FROM = 75
UNAVAILABLE = "fraud_unavailable"


@dataclass(frozen=True, slots=True)
class Policy:
    """A merchant's screening settings."""

    fail_mode: FailMode = "open"
    review_threshold: int = DEFAULT_REVIEW_FROM
    decline_threshold: int = DEFAULT_DECLINE_FROM


@dataclass(frozen=True, slots=True)
class Scored:
    """What the model said of one payment."""

    score: int
    reasons: tuple[str, ...]
    model_version: str


class RuleVerdict(Protocol):
    """A matching rule, as the rules engine reports it."""

    @property
    def action(self) -> str: ...  # allow | block | review

    @property
    def rule_id(self) -> str: ...


RULE_DECISIONS = {"allow": "approve", "block": "decline", "review": "review"}


def decide(
    scored: Scored | None,
    policy: Policy,
    *,
    rule: RuleVerdict | None = None,
    livemode: bool = False,
    test_card: str | None = None,
) -> Assessment:
    """`scored` is None when scoring raised or timed out."""
    fixed = assess(livemode=livemode, test_card=test_card)
    if fixed is not None:
        return fixed
    score = scored.score if scored is not None else 0
    version = scored.model_version if scored is not None else None
    if rule is not None and rule.action in RULE_DECISIONS:
        return Assessment(
            score,
            level_of(score),
            RULE_DECISIONS[rule.action],
            (rule.rule_id,),
            source="rule",
            model_version=version,
        )
    if scored is None:
        if policy.fail_mode == "closed":
            return Assessment(0, "normal", "review", (UNAVAILABLE,), source="fail_closed")
        return Assessment(0, "normal", "approve", (UNAVAILABLE,), source="fail_open")
    if score >= policy.decline_threshold:
        decision = "decline"
    elif score >= policy.review_threshold:
        decision = "review"
    else:
        decision = "approve"
    return Assessment(
        score, level_of(score), decision, scored.reasons, source="model", model_version=version
    )
