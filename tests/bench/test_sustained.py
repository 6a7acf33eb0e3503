"""bench/sustained.py and its open loop: payments offered on a clock, latency counted from each
payment's due time, the search for the most a gateway holds, and the verdict on one step."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import sustained
from aiohttp import web
from client import Client
from scenarios import Ctx, Tally, paced_accept


@asynccontextmanager
async def payments_server(delay_s: float) -> AsyncIterator[tuple[str, list[float]]]:
    """A stand-in for the create call that answers after `delay_s`, one request at a time
    per connection; yields its URL and when each request arrived."""
    arrived: list[float] = []

    async def create(request: web.Request) -> web.Response:
        arrived.append(time.perf_counter())
        await request.read()
        await asyncio.sleep(delay_s)
        return web.json_response({"id": f"pay_{len(arrived)}"}, status=202)

    app = web.Application()
    app.router.add_post("/v1/payments", create)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", arrived
    finally:
        await runner.cleanup()


async def _paced(
    delay_s: float, rate: float, seconds: float, *, connections: int = 16, most: int = 64
) -> tuple[Tally, list[float]]:
    async with (
        payments_server(delay_s) as (url, arrived),
        Client(url, connections=connections) as client,
    ):
        tally = Tally()
        ctx = Ctx(client, "sk", time.perf_counter() + seconds, tally, [], random.Random(0))
        await paced_accept(ctx, rate, most)
        return tally, arrived


def test_payments_are_offered_on_the_clock() -> None:
    tally, arrived = asyncio.run(_paced(0.0, rate=100, seconds=1.0))
    # 100 fall due in the second; a host that stalls the test before the first takes a few.
    assert 95 <= tally.outcomes["offered"] <= 100
    assert tally.accepted == tally.ops == len(arrived) == tally.outcomes["offered"]
    assert not tally.errors
    # Sent at the rate, not as fast as the server answers: the sends span the second.
    assert arrived[-1] - arrived[0] > 0.9


def test_latency_runs_from_the_due_time_not_the_send() -> None:
    """One connection and a 50 ms answer: 50 payments due in half a second queue behind each
    other. A closed loop would report 50 ms each; from its due time, the last waited ~2 s."""
    tally, _ = asyncio.run(_paced(0.05, rate=100, seconds=0.5, connections=1))
    assert 48 <= tally.ops == tally.outcomes["offered"] <= 50
    assert min(tally.create_s) >= 0.05
    assert max(tally.create_s) > 1.5
    assert sorted(tally.create_s)[25] > 0.9


def test_payments_past_the_most_in_flight_are_shed() -> None:
    """A server that takes a second: with 5 in flight, the rest of the 20 due are not sent."""
    tally, arrived = asyncio.run(_paced(1.0, rate=50, seconds=0.4, most=5))
    offered = tally.outcomes["offered"]
    assert 18 <= offered <= 20
    assert len(arrived) == tally.ops == 5
    assert tally.errors == {"shed": offered - 5}


def _gateway(holds_up_to: float) -> tuple[Callable[[float], dict[str, Any]], list[float]]:
    tried: list[float] = []

    def step(rate: float) -> dict[str, Any]:
        tried.append(rate)
        return {"offered_per_s": rate, "held": rate <= holds_up_to}

    return step, tried


def test_search_grows_until_a_step_fails_then_tries_between() -> None:
    step, tried = _gateway(holds_up_to=70)
    found = sustained.search(step, 40, most=8)
    assert tried == [40, 50, 62.5, 78.1, 69.9]
    assert found["held_per_s"] == 69.9 and found["first_failed_per_s"] == 78.1
    assert [s["held"] for s in found["steps"]] == [True, True, True, False, True]


def test_search_halves_until_a_step_holds() -> None:
    step, tried = _gateway(holds_up_to=12)
    found = sustained.search(step, 40, most=8)
    assert tried == [40, 20, 10, 14.1]
    assert found["held_per_s"] == 10 and found["first_failed_per_s"] == 14.1


def test_search_stops_at_its_most_steps_and_at_the_least_rate() -> None:
    step, tried = _gateway(holds_up_to=10_000)
    found = sustained.search(step, 40, most=3)
    assert tried == [40, 50, 62.5] and found["first_failed_per_s"] is None
    step, tried = _gateway(holds_up_to=0)
    found = sustained.search(step, 4, most=8)
    assert tried == [4, 2, 1] and found["held_per_s"] is None


def _step(ops: int, offered: int, p99: float | None, errors: dict[str, int]) -> dict[str, Any]:
    return {
        "ops": ops,
        "outcomes": {"offered": offered},
        "errors": errors,
        "create_ms": None if p99 is None else {"p99": p99},
    }


@pytest.mark.parametrize(
    ("fig", "in_flight", "why"),
    [
        (_step(100, 100, 49.9, {}), 100, []),
        (_step(100, 100, 50.1, {}), 0, ["create p99 50.1 ms"]),
        (_step(100, 100, 10.0, {}), 101, ["101 payments in flight at the end"]),
        (_step(90, 100, 10.0, {"shed": 10}), 0, ["10 of 100 not accepted {'shed': 10}"]),
        (
            _step(0, 100, None, {"ClientError": 100}),
            0,
            ["100 of 100 not accepted {'ClientError': 100}", "create p99 None ms"],
        ),
    ],
)
def test_a_step_holds_only_when_every_criterion_does(
    fig: dict[str, Any], in_flight: int, why: list[str]
) -> None:
    assert sustained.verdict(fig, 100.0, in_flight) == why
