"""The velocity attributes of fraud rules (paygate.fraud.attributes.VELOCITY), counted live
over the counter store: per merchant and mode, the earlier payments of the same card, e-mail or
IP address in the last hour or 24 hours, as a count or as a sum of amounts in the payment's
currency.

Counters are bucketed by minute with the same three-level scheme as the features
(paygate.fraud.counters: buckets of 24, 6 and 1 units, here minutes), so a window is exact to the
minute and reads at most a few dozen keys. As with the features, a payment is counted once,
keyed by its id, and a redelivery leaves itself out of what it reads."""

from __future__ import annotations

from collections.abc import Sequence

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
    [out] = await observe_many(store, [(payment_id, merchant_id, livemode, facts)])
    return out


Observed = tuple[str, str, bool, PaymentFacts]  # payment id, merchant id, livemode, facts


async def observe_many(store: CounterStore, payments: Sequence[Observed]) -> list[dict[str, int]]:
    """`observe` of each payment in order, in one call of the store
    (`CounterStore.read_and_count`): the batch's earlier payments are added to what the later
    ones read."""
    plans = [_plan(*payment) for payment in payments]
    unique = list(dict.fromkeys(k for plan in plans for _, _, keys in plan for k in keys))
    counts = [_counts(merchant_id, livemode, facts) for _, merchant_id, livemode, facts in payments]
    marks = [f"{NAMESPACE}:seen:{p[0]}" for p in payments]
    read, firsts = await store.read_and_count(
        unique, list(zip(marks, counts, strict=True)), TTL_S, TTL_S
    )
    values = dict(zip(unique, read, strict=True))
    found: list[dict[str, int]] = []
    for payment, plan, first, added in zip(payments, plans, firsts, counts, strict=True):
        facts = payment[3]
        out = {name: sum(values[k] for k in keys) for name, _, keys in plan}
        if first:
            for key, amount in added:
                if key in values:  # a later payment of the batch reads it
                    values[key] += amount
        else:
            # A redelivery: the payment is in its own windows (its minute ends each). Take it out.
            for name, metric, _ in plan:
                out[name] = max(0, out[name] - (1 if metric == "count" else facts.amount))
        found.append(out)
    return found


def _plan(
    payment_id: str, merchant_id: str, livemode: bool, facts: PaymentFacts
) -> list[tuple[str, str, list[str]]]:
    """(attribute, metric, keys of its window) of each velocity attribute the payment has."""
    minute = facts.created // 60
    currency = facts.currency.lower()
    entities = _entities(facts)
    plan: list[tuple[str, str, list[str]]] = []
    for name, v in VELOCITY.items():
        value = entities.get(v.entity)
        if value is None:
            continue  # an unknown e-mail or IP has no velocity
        metric = "n" if v.metric == "count" else f"s_{currency}"
        series = _series(merchant_id, livemode, v.entity, value, metric)
        plan.append((name, v.metric, window_keys(series, minute - v.window_s // 60 + 1, minute)))
    return plan


def _counts(merchant_id: str, livemode: bool, facts: PaymentFacts) -> list[tuple[str, int]]:
    """What counting a payment adds, in the buckets of its minute."""
    minute = facts.created // 60
    currency = facts.currency.lower()
    counts: list[tuple[str, int]] = []
    for entity, value in _entities(facts).items():
        for metric, amount in (("n", 1), (f"s_{currency}", facts.amount)):
            series = _series(merchant_id, livemode, entity, value, metric)
            counts += [(k, amount) for k in bucket_keys(series, minute)]
    return counts
