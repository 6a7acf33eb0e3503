"""Rate-limit tiers: how many requests per second a key may send, how many of them may bring
card data (payment creation and card tokenization), and how many requests a merchant may send
per UTC day in each mode.

The built-in tiers follow what the large processors publish: 100 requests per second per key
in live mode, stricter on payment creation. `PAYGATE_TIERS` (JSON) changes any field of any
tier or adds tiers; `null` lifts a limit. A merchant's tier is `merchants.tier`
(`PAYGATE_DEFAULT_TIER` for new merchants); the admin key has the `admin` tier.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paygate.config import Settings


class Tier(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Every request of a key; `burst` requests may come at once (GCRA's tolerance).
    requests_per_s: float | None = Field(100.0, gt=0)
    burst: int | None = Field(None, ge=1)
    # Requests that bring card data: `POST /v1/payments` and `POST /v1/tokens`.
    payments_per_s: float | None = Field(25.0, gt=0)
    payments_burst: int | None = Field(None, ge=1)
    # Requests per merchant, mode and UTC day, all keys together.
    daily_quota: int | None = Field(1_000_000, ge=1)

    @property
    def request_burst(self) -> int:
        return self.burst or math.ceil(self.requests_per_s or 1)

    @property
    def payment_burst(self) -> int:
        return self.payments_burst or math.ceil(self.payments_per_s or 1)


BUILT_IN: dict[str, dict[str, Any]] = {
    "standard": {},
    "premium": {
        "requests_per_s": 500.0,
        "payments_per_s": 100.0,
        "daily_quota": 10_000_000,
    },
    # Load tests and trusted callers: no limit at all, and no round trip to check one.
    "unlimited": {"requests_per_s": None, "payments_per_s": None, "daily_quota": None},
    "admin": {"requests_per_s": 50.0, "burst": 100, "payments_per_s": None, "daily_quota": None},
}
ADMIN = "admin"


class Tiers:
    def __init__(self, tiers: dict[str, Tier], default: str) -> None:
        if default not in tiers:
            raise ValueError(f"PAYGATE_DEFAULT_TIER {default!r} is not a configured tier")
        self._tiers = tiers
        self.default = default

    @classmethod
    def from_settings(cls, settings: Settings) -> Tiers:
        merged = {name: dict(fields) for name, fields in BUILT_IN.items()}
        for name, fields in settings.tiers.items():
            merged.setdefault(name, {}).update(fields)
        try:
            tiers = {name: Tier.model_validate(fields) for name, fields in merged.items()}
        except ValidationError as exc:
            raise ValueError(f"PAYGATE_TIERS is invalid: {exc}") from None
        return cls(tiers, settings.default_tier)

    def __contains__(self, name: object) -> bool:
        return name in self._tiers

    def get(self, name: str) -> Tier:
        """The tier called `name`; a merchant left on a tier that no longer exists gets the
        default one rather than none."""
        return self._tiers.get(name) or self._tiers[self.default]

    @property
    def names(self) -> list[str]:
        return sorted(self._tiers)
