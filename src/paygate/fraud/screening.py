"""The screening result, pure: an assessment's score, level, decision and reasons, and the
published test cards (DESIGN.md section 4): in test mode one is always declined as fraud and
one is sent to review, whatever the model says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DECLINE_TEST_CARD = "4100000000000019"
REVIEW_TEST_CARD = "4000000000009235"

# Score bands of the public `risk.level` (fixed; a merchant's thresholds move decisions only).
ELEVATED_FROM = 65
HIGHEST_FROM = 75


def level_of(score: int) -> str:
    if score >= HIGHEST_FROM:
        return "highest"
    if score >= ELEVATED_FROM:
        return "elevated"
    return "normal"


@dataclass(frozen=True, slots=True)
class Assessment:
    score: int
    level: str  # normal | elevated | highest
    decision: str  # approve | review | decline
    reasons: tuple[str, ...]
    # What decided: model | rule | test_card | fail_open | fail_closed.
    source: str = "model"
    model_version: str | None = None

    def as_risk(self) -> dict[str, Any]:
        """The payment's public `risk` object (DESIGN.md section 4)."""
        return {
            "score": self.score,
            "level": self.level,
            "decision": self.decision,
            "reasons": list(self.reasons),
        }


def assess(*, livemode: bool, test_card: str | None) -> Assessment | None:
    """The test card's fixed assessment, or None when `test_card` (the test number the
    payment's card matched, if any) has none in this mode."""
    if not livemode and test_card == DECLINE_TEST_CARD:
        return Assessment(100, "highest", "decline", ("test_card_fraud",), source="test_card")
    if not livemode and test_card == REVIEW_TEST_CARD:
        return Assessment(70, "elevated", "review", ("test_card_review",), source="test_card")
    return None
