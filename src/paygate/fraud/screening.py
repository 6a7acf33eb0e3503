"""The screening decision, pure. Until the full risk engine lands this is a pass-through that
approves, except for the published test cards in test mode (DESIGN.md section 4): one always
declined as fraud, one sent to review."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DECLINE_TEST_CARD = "4100000000000019"
REVIEW_TEST_CARD = "4000000000009235"


@dataclass(frozen=True, slots=True)
class Assessment:
    score: int
    level: str  # normal | elevated | highest
    decision: str  # approve | review | decline
    reasons: tuple[str, ...]

    def as_risk(self) -> dict[str, Any]:
        risk = asdict(self)
        risk["reasons"] = list(self.reasons)
        return risk


def assess(*, livemode: bool, test_card: str | None) -> Assessment:
    """`test_card` is the test number the payment's card matched, if any."""
    if not livemode and test_card == DECLINE_TEST_CARD:
        return Assessment(100, "highest", "decline", ("test_card_fraud",))
    if not livemode and test_card == REVIEW_TEST_CARD:
        return Assessment(70, "elevated", "review", ("test_card_review",))
    return Assessment(0, "normal", "approve", ())
