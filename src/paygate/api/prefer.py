"""`Prefer: wait=N` (RFC 7240): answer once the object rests, or after N seconds (at most 30),
with the object as it then is."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.payments import service as payments
from paygate.payments.models import RESTING
from paygate.refunds import service as refunds
from paygate.runtime import Runtime

MAX_WAIT_S = 30.0
# Without word of the workers' changes (a process whose workers run elsewhere, unheard), look
# again this often; with it (Runtime.hears_every_change), only in case a word was lost, or (on
# the embedded default) for a change made by another API request, which wakes no waiter.
POLL_S = 0.2
HEARD_POLL_S = 1.0
# The events after which a waiter's object may rest: a payment's move to a resting status, a
# refund's outcome. A scale-out API process hears only these (NatsBus.watch); any other change
# a waiter's next look finds, at most `HEARD_POLL_S` later.
SETTLING_EVENTS = frozenset(
    {f"payment.{status}" for status in RESTING} | {"refund.succeeded", "refund.failed"}
)
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)

Settle = Callable[[int, Any], Awaitable[tuple[int, Any, dict[str, str]] | None]]


def requested_wait(request: Request) -> float | None:
    return wait_of(request.headers.get("prefer", ""))


def wait_of(prefer: str) -> float | None:
    """The wait a `Prefer` header asks for, capped at `MAX_WAIT_S`."""
    match = _WAIT.search(prefer)
    return min(float(match.group(1)), MAX_WAIT_S) if match else None


async def _until(
    rt: Runtime,
    object_id: str,
    seconds: float,
    read: Callable[[AsyncConnection], Awaitable[tuple[bool, Any]]],
    *,
    moving: bool,
) -> Any:
    """`read` until it says done, or until `seconds` have passed. `moving`: the object as just
    written is known not to rest (its status says so), so the first read waits for a change."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    poll = HEARD_POLL_S if rt.hears_every_change else POLL_S
    if moving:
        await rt.wait_change(object_id, min(seconds, poll))
    while True:
        async with rt.db.read() as conn:
            done, obj = await read(conn)
        remaining = deadline - loop.time()
        if done or remaining <= 0:
            return obj
        await rt.wait_change(object_id, min(remaining, poll))


def payment_waiter(
    request: Request, rt: Runtime, merchant_id: str, livemode: bool
) -> Settle | None:
    """A settle step for endpoints that answer a payment, when the caller asked to wait."""
    seconds = requested_wait(request)
    if seconds is None:
        return None

    async def settle(status: int, body: Any) -> tuple[int, Any, dict[str, str]] | None:
        if status != 202:
            return None

        async def read(conn: AsyncConnection) -> tuple[bool, Any]:
            payment, rests = await payments.get_with_rest(conn, merchant_id, livemode, body["id"])
            return rests, payment

        moving = body["status"] not in RESTING
        return 200, await _until(rt, body["id"], seconds, read, moving=moving), _applied(seconds)

    return settle


def refund_waiter(request: Request, rt: Runtime, merchant_id: str, livemode: bool) -> Settle | None:
    seconds = requested_wait(request)
    if seconds is None:
        return None

    async def settle(status: int, body: Any) -> tuple[int, Any, dict[str, str]] | None:
        if status != 202:
            return None

        async def read(conn: AsyncConnection) -> tuple[bool, Any]:
            refund = await refunds.get(conn, merchant_id, livemode, body["id"])
            return refund["status"] != "pending", refund

        moving = body["status"] == "pending"
        return 200, await _until(rt, body["id"], seconds, read, moving=moving), _applied(seconds)

    return settle


def _applied(seconds: float) -> dict[str, str]:
    return {"Preference-Applied": f"wait={seconds:g}"}
