"""Dry run of a proposed rule over the merchant's payments of the last N days: how many and
which would have matched, how many of those are known fraud, and the amounts affected.

Each payment's attributes are rebuilt from what is stored with it (paygate.fraud.attributes),
and its velocity from the payments before it only (no look-ahead): the payments are read once,
oldest first, from a day before the period (so the first payments of the period have their full
24-hour history), and sliding windows count each card, e-mail and IP address as they pass. Known
fraud: failed as `fraud_suspected`, or reported as fraud afterwards (`fraud_reports`).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.fraud.attributes import DAY, VELOCITY, attributes_of, facts_of, facts_query
from paygate.fraud.rules import list_items
from paygate.fraud.rules_eval import compile_rule
from paygate.fraud.rules_lang import attribute_names, list_names, unparse
from paygate.fraud.rules_schemas import DryRunIn
from paygate.fraud.rules_service import check_expression
from paygate.fraud.tables import fraud_reports
from paygate.ids import now_s
from paygate.platform.db.tables import payments

SAMPLE_SIZE = 100
FRAUD_CODE = "fraud_suspected"


class SlidingWindow:
    """Counts and amount sums per key over the `seconds` before the current time: events leave
    once they are `seconds` old, so memory holds one window of payments, not the period."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self._events: deque[tuple[int, str, str, int]] = deque()
        self._count: dict[str, int] = defaultdict(int)
        self._sum: dict[tuple[str, str], int] = defaultdict(int)

    def advance(self, now: int) -> None:
        events = self._events
        while events and events[0][0] <= now - self.seconds:
            _, key, currency, amount = events.popleft()
            self._count[key] -= 1
            if not self._count[key]:
                del self._count[key]
            self._sum[key, currency] -= amount
            if not self._sum[key, currency]:
                del self._sum[key, currency]

    def add(self, created: int, key: str, currency: str, amount: int) -> None:
        self._events.append((created, key, currency, amount))
        self._count[key] += 1
        self._sum[key, currency] += amount

    def count(self, key: str) -> int:
        return self._count.get(key, 0)

    def total(self, key: str, currency: str) -> int:
        return self._sum.get((key, currency), 0)


class VelocityReplay:
    """The velocity attributes `names` (default: all) of payments fed in creation order, each
    from the ones before."""

    def __init__(self, names: Iterable[str] | None = None) -> None:
        wanted = set(VELOCITY if names is None else names) & set(VELOCITY)
        self.velocity = {name: v for name, v in VELOCITY.items() if name in wanted}
        self.windows = {
            (v.entity, v.window_s): SlidingWindow(v.window_s) for v in self.velocity.values()
        }

    def before(self, created: int, currency: str, keys: Mapping[str, str | None]) -> dict[str, int]:
        for window in self.windows.values():
            window.advance(created)
        out: dict[str, int] = {}
        for name, v in self.velocity.items():
            key = keys.get(v.entity)
            if key is None:
                continue  # unknown e-mail or IP: so is its velocity
            window = self.windows[v.entity, v.window_s]
            out[name] = window.count(key) if v.metric == "count" else window.total(key, currency)
        return out

    def add(self, created: int, currency: str, amount: int, keys: Mapping[str, str | None]) -> None:
        for (entity, _), window in self.windows.items():
            key = keys.get(entity)
            if key is not None:
                window.add(created, key, currency, amount)


async def dry_run(
    conn: AsyncConnection, merchant_id: str, livemode: bool, body: DryRunIn
) -> dict[str, Any]:
    node = await check_expression(conn, merchant_id, livemode, body.expression)
    predicate = compile_rule(node, await list_items(conn, merchant_id, livemode, list_names(node)))
    start = now_s() - body.days * DAY
    reported = sa.exists().where(fraud_reports.c.payment_id == payments.c.id).label("reported")
    query = (
        facts_query()
        .add_columns(reported)
        .where(
            payments.c.merchant_id == merchant_id,
            payments.c.livemode == livemode,
            payments.c.created >= start - DAY,
        )
        .order_by(payments.c.id)
    )
    replay = VelocityReplay(attribute_names(node))  # only the windows the rule reads
    evaluated = matched = matched_fraud = fraud = 0
    amounts: dict[str, int] = defaultdict(int)
    sample: deque[dict[str, Any]] = deque(maxlen=SAMPLE_SIZE)
    result = await conn.stream(query)
    async for row in result.mappings():
        facts = facts_of(row)
        email = facts.email.lower() if facts.email else None
        keys = {"card": facts.card_fingerprint, "email": email, "ip": facts.ip_address}
        if facts.created >= start:
            velocity = replay.before(facts.created, facts.currency, keys)
            is_fraud = row["failure_code"] == FRAUD_CODE or bool(row["reported"])
            evaluated += 1
            fraud += is_fraud
            if predicate(attributes_of(facts, velocity)):
                matched += 1
                matched_fraud += is_fraud
                amounts[facts.currency] += facts.amount
                sample.append(
                    {
                        "id": row["id"],
                        "amount": facts.amount,
                        "currency": facts.currency,
                        "status": row["status"],
                        "failure_code": row["failure_code"],
                        "created": facts.created,
                    }
                )
        replay.add(facts.created, facts.currency, facts.amount, keys)
    return {
        "object": "fraud_rule_dry_run",
        "action": body.action,
        "expression": unparse(node),
        "days": body.days,
        "evaluated": evaluated,
        "matched": matched,
        "matched_amount": [{"amount": amounts[c], "currency": c} for c in sorted(amounts)],
        "matched_fraud": matched_fraud,
        "fraud": fraud,
        "sample": list(reversed(sample)),
        "has_more": matched > len(sample),
    }
