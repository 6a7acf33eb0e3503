"""What one client of the load generator does, per scenario.

Each scenario is a coroutine that loops until the deadline and records into a `Tally`:
`accept` (POST /v1/payments, 202), `end_to_end` (the same with `Prefer: wait`, counted only when
the answer is `succeeded`), `status_reads` (GET of existing payments), `mixed_day` (sales,
authorize-then-capture, cancels, refunds, declines, reads), bench/growth.py's `spread_accept`,
`spread_reads`, `list_first` and `list_deep` (each request as a random merchant), the peer's
`accept` and `end_to_end` (localstripe PaymentIntents), and the limits' `bare_json` and
`durable_insert`. `paced_accept` is the one open loop: `accept` sent on a clock by one coroutine
per generator process (bench/sustained.py).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from client import ERRORS, Client, Reply

WAIT = "wait=10"
GOOD, DECLINED, NO_FUNDS = "4242424242424242", "4000000000000002", "4000000000009995"


def payment_body(card: str = GOOD, *, capture: bool = True) -> dict[str, Any]:
    return {
        "amount": 1999,
        "currency": "usd",
        "capture": capture,
        "payment_method": {
            "card": {"number": card, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
        },
    }


@dataclass
class Tally:
    """What one load-generator process saw."""

    create_s: list[float] = field(default_factory=list)
    outcome_s: list[float] = field(default_factory=list)
    ops: int = 0  # requests that did what the scenario asks
    requests: int = 0
    accepted: int = 0  # payments the API acknowledged with an id (2xx)
    completed: int = 0  # payments seen `succeeded`
    acked: list[str] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def code(self, status: int) -> None:
        self.requests += 1
        self.codes[str(status)] = self.codes.get(str(status), 0) + 1

    def bump(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


@dataclass
class Ctx:
    client: Client
    key: str
    until: float
    tally: Tally
    ids: list[str]
    rng: random.Random
    keys: list[str] = field(default_factory=list)  # several merchants: each request picks one
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (merchant key, payment id)


Scenario = Callable[[Ctx], Awaitable[None]]


def _headers(ctx: Ctx, *, wait: bool = False, idem: bool = True) -> dict[str, str]:
    h = {"Authorization": f"Bearer {ctx.key}"}
    if idem:
        h["Idempotency-Key"] = uuid.uuid4().hex
    if wait:
        h["Prefer"] = WAIT
    return h


async def _loop(ctx: Ctx, one: Callable[[], Awaitable[None]]) -> None:
    while time.perf_counter() < ctx.until:
        try:
            await one()
        except ERRORS as exc:
            ctx.tally.bump(ctx.tally.errors, type(exc).__name__)
            await asyncio.sleep(0.05)  # a gateway that is down is not hammered


async def _create(ctx: Ctx, body: dict[str, Any], *, wait: bool) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    r = await ctx.client.post("/v1/payments", json=body, headers=_headers(ctx, wait=wait))
    elapsed = time.perf_counter() - t0
    ctx.tally.code(r.status_code)
    data: dict[str, Any] = r.json() if r.status_code < 300 else {}
    if data.get("id"):
        ctx.tally.accepted += 1
        ctx.tally.acked.append(data["id"])
    return elapsed, data


def _accepted(ctx: Ctx, r: Reply, elapsed: float) -> None:
    """Count the answer to a create sent without waiting: an operation, with its latency,
    when the API acknowledged the payment with an id."""
    ctx.tally.code(r.status_code)
    pid = r.json().get("id") if r.status_code < 300 else None
    if pid:
        ctx.tally.accepted += 1
        ctx.tally.acked.append(pid)
        ctx.tally.ops += 1
        ctx.tally.create_s.append(elapsed)


async def accept(ctx: Ctx) -> None:
    async def one() -> None:
        elapsed, data = await _create(ctx, payment_body(), wait=False)
        if data.get("id"):
            ctx.tally.ops += 1
            ctx.tally.create_s.append(elapsed)

    await _loop(ctx, one)


async def end_to_end(ctx: Ctx) -> None:
    async def one() -> None:
        elapsed, data = await _create(ctx, payment_body(), wait=True)
        status = data.get("status", "error")
        ctx.tally.bump(ctx.tally.outcomes, status)
        if status == "succeeded":
            ctx.tally.ops += 1
            ctx.tally.completed += 1
            ctx.tally.outcome_s.append(elapsed)

    await _loop(ctx, one)


async def paced_accept(ctx: Ctx, rate: float, most: int) -> None:
    """`accept` on a clock: a payment is due every 1/`rate` s whatever the answers before it
    (an open loop; bench/sustained.py). Its latency runs from when it was due, so a request that
    waited for a connection or for the generator counts that wait. With `most` in flight, a due
    payment is not sent but counted `shed`: the gateway is too far behind to measure."""
    start = time.perf_counter()
    flying: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        try:
            r = await ctx.client.post(
                "/v1/payments", json=payment_body(), headers=_headers(ctx, wait=False)
            )
        except ERRORS as exc:
            ctx.tally.bump(ctx.tally.errors, type(exc).__name__)
            return
        _accepted(ctx, r, time.perf_counter() - due)

    n = 0
    while (due := start + n / rate) < ctx.until:
        n += 1
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        ctx.tally.bump(ctx.tally.outcomes, "offered")
        if len(flying) >= most:
            ctx.tally.bump(ctx.tally.errors, "shed")
            continue
        task = asyncio.create_task(one(due))
        flying.add(task)
        task.add_done_callback(flying.discard)
    if flying:
        await asyncio.wait(flying)


async def status_reads(ctx: Ctx) -> None:
    async def one() -> None:
        pid = ctx.rng.choice(ctx.ids)
        t0 = time.perf_counter()
        r = await ctx.client.get(f"/v1/payments/{pid}", headers=_headers(ctx, idem=False))
        elapsed = time.perf_counter() - t0
        ctx.tally.code(r.status_code)
        if r.status_code == 200:
            ctx.tally.ops += 1
            ctx.tally.create_s.append(elapsed)

    await _loop(ctx, one)


# mixed_day: the share of each operation in a day of a merchant's traffic.
MIX = (
    ("sale", 45),
    ("authorize_capture", 15),
    ("refund", 10),
    ("decline", 10),
    ("insufficient_funds", 5),
    ("authorize_cancel", 5),
    ("read", 10),
)
EXPECTED = {
    "sale": "succeeded",
    "authorize_capture": "succeeded",
    "refund": "succeeded",
    "decline": "failed",
    "insufficient_funds": "failed",
    "authorize_cancel": "canceled",
    "read": "read",
}


async def _follow(ctx: Ctx, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await ctx.client.post(path, json=body, headers=_headers(ctx, wait=True))
    ctx.tally.code(r.status_code)
    data: dict[str, Any] = r.json() if r.status_code < 300 else {}
    return data


async def mixed_day(ctx: Ctx) -> None:
    names = [n for n, _ in MIX]
    weights = [w for _, w in MIX]
    captured: list[str] = list(ctx.ids)

    async def one() -> None:
        op = ctx.rng.choices(names, weights)[0]
        if op == "refund" and not captured:
            op = "sale"
        t0 = time.perf_counter()
        status = "error"
        if op == "read":
            pid = ctx.rng.choice(captured) if captured else None
            if pid:
                r = await ctx.client.get(f"/v1/payments/{pid}", headers=_headers(ctx, idem=False))
                ctx.tally.code(r.status_code)
                status = "read" if r.status_code == 200 else "error"
        elif op == "refund":
            data = await _follow(ctx, "/v1/refunds", {"payment": captured.pop()})
            status = data.get("status", "error")
        else:
            card = {"decline": DECLINED, "insufficient_funds": NO_FUNDS}.get(op, GOOD)
            capture = op not in ("authorize_capture", "authorize_cancel")
            created, data = await _create(ctx, payment_body(card, capture=capture), wait=True)
            ctx.tally.create_s.append(created)
            status = data.get("status", "error")
            if status == "requires_capture":
                verb = "capture" if op == "authorize_capture" else "cancel"
                data = await _follow(ctx, f"/v1/payments/{data['id']}/{verb}", {})
                status = data.get("status", "error")
            if status == "succeeded" and data.get("id"):
                captured.append(data["id"])
                ctx.tally.completed += 1
        elapsed = time.perf_counter() - t0
        ctx.tally.bump(ctx.tally.by_op, op)
        ctx.tally.bump(ctx.tally.outcomes, f"{op}:{status}")
        if status == EXPECTED[op]:
            ctx.tally.ops += 1
            ctx.tally.outcome_s.append(elapsed)

    await _loop(ctx, one)


# bench/growth.py: the same calls spread over many merchants, and the list pages.


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def spread_accept(ctx: Ctx) -> None:
    """`accept`, each payment for a merchant picked at random among `ctx.keys`."""

    async def one() -> None:
        key = ctx.rng.choice(ctx.keys)
        headers = {**_bearer(key), "Idempotency-Key": uuid.uuid4().hex}
        t0 = time.perf_counter()
        r = await ctx.client.post("/v1/payments", json=payment_body(), headers=headers)
        _accepted(ctx, r, time.perf_counter() - t0)

    await _loop(ctx, one)


async def _get(ctx: Ctx, key: str, path: str, params: dict[str, Any] | None = None) -> None:
    """One GET; a list's page is counted `full` (10 rows) or `short` in the outcomes, so that a
    deep page that found nothing cannot pass for a fast one."""
    t0 = time.perf_counter()
    r = await ctx.client.get(path, params=params, headers=_bearer(key))
    elapsed = time.perf_counter() - t0
    ctx.tally.code(r.status_code)
    if r.status_code != 200:
        return
    ctx.tally.ops += 1
    ctx.tally.create_s.append(elapsed)
    if params is not None:
        rows = len(r.json().get("data", []))
        ctx.tally.bump(ctx.tally.outcomes, "page_full" if rows >= 10 else "page_short")


async def spread_reads(ctx: Ctx) -> None:
    """`GET /v1/payments/{id}` of a random stored payment, with its merchant's key."""

    async def one() -> None:
        key, pid = ctx.rng.choice(ctx.pairs)
        await _get(ctx, key, f"/v1/payments/{pid}")

    await _loop(ctx, one)


async def list_first(ctx: Ctx) -> None:
    """The first page of a random merchant's payments, newest first."""

    async def one() -> None:
        await _get(ctx, ctx.rng.choice(ctx.keys), "/v1/payments", {"limit": 10})

    await _loop(ctx, one)


async def list_deep(ctx: Ctx) -> None:
    """A page after a random stored payment of its merchant (keyset: `starting_after`)."""

    async def one() -> None:
        key, pid = ctx.rng.choice(ctx.pairs)
        await _get(ctx, key, "/v1/payments", {"limit": 10, "starting_after": pid})

    await _loop(ctx, one)


# The peer: localstripe speaks Stripe's form-encoded API.


async def _intent(ctx: Ctx, *, confirm: bool) -> tuple[float, dict[str, Any]]:
    form = {"amount": "1999", "currency": "usd", "payment_method": "pm_card_visa"}
    if confirm:
        form["confirm"] = "true"
    t0 = time.perf_counter()
    r = await ctx.client.post("/v1/payment_intents", data=form, headers=_headers(ctx))
    elapsed = time.perf_counter() - t0
    ctx.tally.code(r.status_code)
    data: dict[str, Any] = r.json() if r.status_code < 300 else {}
    if data.get("id"):
        ctx.tally.accepted += 1
    return elapsed, data


async def peer_accept(ctx: Ctx) -> None:
    async def one() -> None:
        elapsed, data = await _intent(ctx, confirm=False)
        if data.get("id"):
            ctx.tally.ops += 1
            ctx.tally.create_s.append(elapsed)

    await _loop(ctx, one)


async def peer_end_to_end(ctx: Ctx) -> None:
    async def one() -> None:
        elapsed, data = await _intent(ctx, confirm=True)
        status = data.get("status", "error")
        ctx.tally.bump(ctx.tally.outcomes, status)
        if status == "succeeded":
            ctx.tally.ops += 1
            ctx.tally.completed += 1
            ctx.tally.outcome_s.append(elapsed)

    await _loop(ctx, one)


# The limits: the same server stack doing nothing, then one durable INSERT per request.


async def bare_json(ctx: Ctx) -> None:
    async def one() -> None:
        t0 = time.perf_counter()
        r = await ctx.client.get("/json")
        ctx.tally.code(r.status_code)
        if r.status_code == 200:
            ctx.tally.ops += 1
            ctx.tally.create_s.append(time.perf_counter() - t0)

    await _loop(ctx, one)


async def durable_insert(ctx: Ctx) -> None:
    async def one() -> None:
        t0 = time.perf_counter()
        r = await ctx.client.post("/insert", json=payment_body())
        ctx.tally.code(r.status_code)
        if r.status_code == 200:
            ctx.tally.ops += 1
            ctx.tally.create_s.append(time.perf_counter() - t0)

    await _loop(ctx, one)


SCENARIOS: dict[str, Scenario] = {
    "accept": accept,
    "end_to_end": end_to_end,
    "status_reads": status_reads,
    "mixed_day": mixed_day,
    "peer_accept": peer_accept,
    "peer_end_to_end": peer_end_to_end,
    "bare_json": bare_json,
    "durable_insert": durable_insert,
    "spread_accept": spread_accept,
    "spread_reads": spread_reads,
    "list_first": list_first,
    "list_deep": list_deep,
}
