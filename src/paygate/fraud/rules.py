"""Matching a payment against its merchant's fraud rules.

`match_rules` matches one payment: the merchant's enabled rules (of the payment's mode) are
compiled once and cached in this process, keyed by the merchant's rule-set `revision`
(paygate.fraud.rules_tables.fraud_rule_sets), which every change of a rule or a list replaces in
the same transaction. A call is then one primary-key read and the evaluation. The fraud worker
does the same in two steps: `rules_at` once per merchant of a batch, with the revision it read
for the batch (paygate.fraud.policy.setups), and `first_match` per payment.

Rules are tried `allow` first, then `block`, then `review`, each group oldest first; the first
that matches decides:

    match = await match_rules(conn, merchant_id, livemode, attributes)
    if match is not None and match.action == "block": ...
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.fraud.rules_eval import Predicate, compile_rule
from paygate.fraud.rules_lang import RuleSyntaxError, list_names, parse
from paygate.fraud.rules_tables import fraud_list_items, fraud_lists, fraud_rule_sets, fraud_rules
from paygate.ids import new_id, now_s
from paygate.platform.logging import log

ACTION_ORDER = ("allow", "block", "review")
CACHE_SIZE = 4_096


@dataclass(frozen=True, slots=True)
class RuleMatch:
    action: str  # allow | block | review
    rule_id: str
    expression: str


@dataclass(frozen=True, slots=True)
class CompiledRule:
    action: str
    rule_id: str
    expression: str
    predicate: Predicate


@dataclass(frozen=True, slots=True)
class _RuleSet:
    revision: str
    rules: tuple[CompiledRule, ...]


_cache: OrderedDict[tuple[str, bool], _RuleSet] = OrderedDict()


def first_match(rules: tuple[CompiledRule, ...], attributes: dict[str, Any]) -> RuleMatch | None:
    """The first rule (in evaluation order) whose expression holds."""
    for rule in rules:
        if rule.predicate(attributes):
            return RuleMatch(rule.action, rule.rule_id, rule.expression)
    return None


async def match_rules(
    conn: AsyncConnection, merchant_id: str, livemode: bool, attributes: dict[str, Any]
) -> RuleMatch | None:
    """The rule that decides this payment, or None when no rule matches (or there are none).
    `attributes` as built by paygate.fraud.attributes.payment_attributes."""
    rules = await compiled_rules(conn, merchant_id, livemode)
    return first_match(rules, attributes)


_REVISION = sa.select(fraud_rule_sets.c.revision).where(
    fraud_rule_sets.c.merchant_id == sa.bindparam("match_merchant"),
    fraud_rule_sets.c.livemode == sa.bindparam("match_livemode"),
)


async def compiled_rules(
    conn: AsyncConnection, merchant_id: str, livemode: bool
) -> tuple[CompiledRule, ...]:
    revision = await conn.scalar(
        _REVISION, {"match_merchant": merchant_id, "match_livemode": livemode}
    )
    return await rules_at(conn, merchant_id, livemode, revision)


async def rules_at(
    conn: AsyncConnection, merchant_id: str, livemode: bool, revision: str | None
) -> tuple[CompiledRule, ...]:
    """The merchant's compiled rules at `revision`, just read on `conn` (the cached set when it
    is that revision's)."""
    if revision is None:
        return ()  # never had a rule or a list
    key = (merchant_id, livemode)
    cached = _cache.get(key)
    if cached is not None and cached.revision == revision:
        _cache.move_to_end(key)
        return cached.rules
    # Read after the revision: the rules are at least as new as it (a change writes both in
    # one transaction), so a stale set is never cached under a newer revision.
    rules = await load_rules(conn, merchant_id, livemode)
    _cache[key] = _RuleSet(revision, rules)
    _cache.move_to_end(key)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return rules


async def load_rules(
    conn: AsyncConnection, merchant_id: str, livemode: bool
) -> tuple[CompiledRule, ...]:
    """The merchant's enabled rules, compiled, in evaluation order."""
    r = fraud_rules.c
    rows = (
        await conn.execute(
            sa.select(r.id, r.action, r.expression)
            .where(
                r.merchant_id == merchant_id,
                r.livemode == livemode,
                r.enabled.is_(True),
                r.deleted.is_(False),
            )
            .order_by(r.id)
        )
    ).all()
    if not rows:
        return ()
    kinds = await list_kinds(conn, merchant_id, livemode)
    parsed = []
    for row in rows:
        try:
            parsed.append((row, parse(row.expression, kinds)))
        except RuleSyntaxError as exc:  # stored rules were checked: only a changed catalogue
            log.error("fraud.rule_unparseable", rule_id=row.id, error=exc.message)
    wanted = set().union(*(list_names(node) for _, node in parsed))
    items = await list_items(conn, merchant_id, livemode, wanted)
    compiled = [
        CompiledRule(row.action, row.id, row.expression, compile_rule(node, items))
        for row, node in parsed
    ]
    compiled.sort(key=lambda c: ACTION_ORDER.index(c.action))  # stable: oldest first in each
    return tuple(compiled)


async def list_kinds(conn: AsyncConnection, merchant_id: str, livemode: bool) -> dict[str, str]:
    """The merchant's lists: name → kind."""
    rows = await conn.execute(
        sa.select(fraud_lists.c.name, fraud_lists.c.kind).where(
            fraud_lists.c.merchant_id == merchant_id, fraud_lists.c.livemode == livemode
        )
    )
    return {name: kind for name, kind in rows.all()}


async def list_items(
    conn: AsyncConnection, merchant_id: str, livemode: bool, names: set[str]
) -> dict[str, frozenset[str]]:
    if not names:
        return {}
    rows = await conn.execute(
        sa.select(fraud_lists.c.name, fraud_list_items.c.value)
        .select_from(fraud_lists)
        .join(fraud_list_items, fraud_list_items.c.list_id == fraud_lists.c.id)
        .where(
            fraud_lists.c.merchant_id == merchant_id,
            fraud_lists.c.livemode == livemode,
            fraud_lists.c.name.in_(sorted(names)),
        )
    )
    found: dict[str, set[str]] = {name: set() for name in names}
    for name, value in rows.all():
        found[name].add(value)
    return {name: frozenset(values) for name, values in found.items()}


async def bump_revision(conn: AsyncConnection, merchant_id: str, livemode: bool) -> None:
    """Mark the merchant's rules changed, in the caller's transaction: every process recompiles
    them at its next match."""
    values = {"revision": new_id("frs"), "updated": now_s()}
    insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    stmt = insert(fraud_rule_sets).values(merchant_id=merchant_id, livemode=livemode, **values)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["merchant_id", "livemode"], set_=values)
    )
