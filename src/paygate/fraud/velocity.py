"""The velocity attributes of fraud rules (paygate.fraud.attributes.VELOCITY), counted live
over the counter store: per merchant and mode, the earlier payments of the same card, e-mail or
IP address in the last hour or 24 hours, as a count or as a sum of amounts in the payment's
currency.

Counters are bucketed by minute with the same three-level scheme as the features
(paygate.fraud.counters: buckets of 24, 6 and 1 units, here minutes), so a window is exact to the
minute and reads at most a few dozen keys. As with the features, a payment is counted once,
keyed by its id, and a redelivery leaves itself out of what it reads."""

from __future__ import annotations

from paygate.fraud.attributes import VELOCITY, PaymentFacts
from paygate.fraud.counters import CounterStore, bucket_keys, window_keys

NAMESPACE = "fraud:vel"
TTL_S = 2 * 86_400  # the longest window (a day) and a day of margin


def _entities(facts: PaymentFacts) -> dict[str, str]:
    found = {"card": facts.card_fingerprint, "email": facts.email, "ip": facts.ip_address}
    return {k: v.lower() for k, v in found.items() if v}


def _series(merchant_id: str, livemode: bool, entity: str, value: str, metric: str) -> str:
    mode = "live" if livemode else "test"
    return f"{NAMESPACE}:{merchant_id}:{mode}:{entity}:{value}:{metric}"


async def observe(
    store: CounterStore, payment_id: str, merchant_id: str, livemode: bool, facts: PaymentFacts
) -> dict[str, int]:
    """The payment's velocity values from the payments before it, then count it (once)."""
    minute = facts.created // 60
    currency = facts.currency.lower()
    entities = _entities(facts)
    plan: list[tuple[str, str, list[str]]] = []  # (attribute, metric, keys)
    for name, v in VELOCITY.items():
        value = entities.get(v.entity)
        if value is None:
            continue  # an unknown e-mail or IP has no velocity
        metric = "n" if v.metric == "count" else f"s_{currency}"
        series = _series(merchant_id, livemode, v.entity, value, metric)
        plan.append((name, v.metric, window_keys(series, minute - v.window_s // 60 + 1, minute)))
    unique = list(dict.fromkeys(k for _, _, keys in plan for k in keys))
    values = dict(zip(unique, await store.get_many(unique), strict=True))
    out = {name: sum(values[k] for k in keys) for name, _, keys in plan}

    if await store.add_once(f"{NAMESPACE}:seen:{payment_id}", TTL_S):
        updates: list[tuple[str, int]] = []
        for entity, value in entities.items():
            for metric, amount in (("n", 1), (f"s_{currency}", facts.amount)):
                series = _series(merchant_id, livemode, entity, value, metric)
                updates += [(k, amount) for k in bucket_keys(series, minute)]
        await store.incr_many(updates, TTL_S)
    else:
        # A redelivery: the payment is in its own windows (its minute ends each). Take it out.
        for name, metric, _ in plan:
            out[name] = max(0, out[name] - (1 if metric == "count" else facts.amount))
    return out
