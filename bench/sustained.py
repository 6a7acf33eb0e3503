"""The sustained rate: the most payments a second the gateway keeps up with while its create
call answers within the goal's p99.

The scenarios' clients each wait for their answer before sending again (a closed loop). The
rate they reach is the gateway's most, and their latency is mostly their own queue: 32 clients
÷ the rate, by Little's law. The goal (docs/performance.md) is of another kind, a rate held with
the create call's p99 under 50 ms. So here payments are offered on a clock (`paced_accept`, an
open loop) at one rate per step, and a step holds when

- every payment offered was accepted: no error, none shed;
- the create call's p99, counted from when each payment was due, is at most `GOAL_P99_MS`;
- the pipeline kept up: at the step's end, the payments not yet at rest are at most
  `BEHIND_S` seconds of arrivals (by Little's law, a payment spends under about that long
  between its accept and its outcome; a pipeline that falls behind grows this with every second).

The first step offers half the closed loop's end-to-end rate. While steps hold, the rate grows by
a quarter; while they fail before any held, it halves. Once one rate held and one failed, one
more step between them. Each step ends by draining the pipeline, so the next starts with nothing
in flight.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import loadgen
import servers
from measure import drain, measure

GOAL_P99_MS = 50.0
BEHIND_S = 1.0
GROW = 1.25
LEAST = 1.0  # payments a second: below this there is nothing left to learn


def verdict(fig: dict[str, Any], rate: float, in_flight: int) -> list[str]:
    """Why a step did not hold; empty when it held."""
    why = []
    offered = fig["outcomes"].get("offered", 0)
    if fig["ops"] < offered:
        why.append(f"{offered - fig['ops']} of {offered} not accepted {fig['errors'] or ''}")
    p99 = (fig["create_ms"] or {}).get("p99")
    if p99 is None or p99 > GOAL_P99_MS:
        why.append(f"create p99 {p99} ms")
    if in_flight > rate * BEHIND_S:
        why.append(f"{in_flight} payments in flight at the end")
    return why


def search(step: Callable[[float], dict[str, Any]], start: float, most: int) -> dict[str, Any]:
    """Steps of `step(rate)` (each returns its figures with `held`), as the module says."""
    steps: list[dict[str, Any]] = []

    def holds(rate: float) -> bool:
        steps.append(step(round(rate, 1)))
        return bool(steps[-1]["held"])

    held: float | None = None
    failed: float | None = None
    rate = start
    while len(steps) < most and rate >= LEAST:
        if holds(rate):
            held = rate
            if failed is not None:
                break
            rate *= GROW
        else:
            failed = rate
            if held is not None:
                break
            rate /= 2
    if held is not None and failed is not None and failed / held > 1.1 and len(steps) < most:
        middle = math.sqrt(held * failed)
        if holds(middle):
            held = middle
        else:
            failed = middle
    return {
        "held_per_s": None if held is None else round(held, 1),
        "first_failed_per_s": None if failed is None else round(failed, 1),
        "steps": steps,
    }


def run(
    gw: servers.Gateway, a: argparse.Namespace, closed_loop_per_s: float
) -> tuple[dict[str, Any], list[str]]:
    """The search on a running gateway: its figures, and the ids of the payments it made."""
    seconds = min(a.seconds, 10.0)
    acked: list[str] = []

    def step(rate: float) -> dict[str, Any]:
        job = loadgen.Job(
            "paced_accept", gw.url, gw.merchant_key, seconds, a.clients // a.processes, rate=rate
        )
        fig, out = measure(job, a.processes, gw.sample, gw.db_counters)
        acked.extend(out.tally.acked)
        in_flight = gw.backlog()
        fig["offered_per_s"] = rate
        fig["in_flight_at_end"] = in_flight
        fig["drain"] = drain(gw.backlog, timeout=max(30.0, 6 * seconds))
        why = verdict(fig, rate, in_flight)
        fig["held"], fig["why_not"] = not why, why
        return fig

    start = max(2 * LEAST, closed_loop_per_s / 2)
    found = search(step, start, most=1 if a.smoke else 8)
    found["criteria"] = {
        "create_p99_ms": GOAL_P99_MS,
        "in_flight_at_end_s": BEHIND_S,
        "none_refused": True,
        "seconds_per_step": seconds,
    }
    return found, acked
