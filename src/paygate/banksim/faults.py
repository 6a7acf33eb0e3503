"""Fault injection: latency, slow calls, errors, hangs and outages, drawn per call.

One seeded generator draws for every call in a fixed order, so a run with `seed` set replays the
same faults for the same sequence of calls.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist

from paygate.banksim.settings import FaultConfig


@dataclass(frozen=True, slots=True)
class CallFaults:
    """What happens to one call: wait `delay_s` first; answer 503 without applying if `error`;
    otherwise apply, then wait `hang_s` more before answering."""

    delay_s: float
    error: bool
    hang_s: float


class FaultInjector:
    """The fault settings in force, replaceable at run time, and the draws."""

    def __init__(self, config: FaultConfig, seed: int | None = None) -> None:
        self.config = config
        self._rng = random.Random(seed)

    @property
    def down(self) -> bool:
        return self.config.down

    def draw(self, *, can_hang: bool) -> CallFaults:
        """The faults of one call. Only operations hang: a hang models an answer lost after the
        bank applied the operation."""
        cfg, rng = self.config, self._rng
        latency, slow, error, hang = (rng.random() for _ in range(4))
        delay_ms = 0.0
        if cfg.latency_median_ms > 0:
            # A log-normal with median m has mu = ln(m); inverse-CDF sampling keeps one draw per
            # call whatever the settings, so seeded runs stay aligned.
            z = _normal_quantile(latency)
            mu = math.log(cfg.latency_median_ms)
            delay_ms = min(math.exp(mu + cfg.latency_sigma * z), _MAX_LATENCY_MS)
        if slow < cfg.slow_rate:
            delay_ms += cfg.slow_ms
        return CallFaults(
            delay_s=delay_ms / 1000,
            error=error < cfg.error_rate,
            hang_s=cfg.hang_s if can_hang and hang < cfg.timeout_rate else 0.0,
        )


_STANDARD_NORMAL = NormalDist()
# A latency draw never exceeds this, whatever sigma: the tail of a wide log-normal is absurd.
_MAX_LATENCY_MS = 60_000.0


def _normal_quantile(p: float) -> float:
    """The standard normal quantile, clamped away from the infinite tails."""
    return _STANDARD_NORMAL.inv_cdf(min(max(p, 1e-9), 1 - 1e-9))
