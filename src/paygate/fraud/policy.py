"""Per-merchant screening settings: all SQL of `fraud_settings`. A merchant without a row has
the defaults (fail open, review from 65, decline from 75). `setups` reads them for the fraud
worker's batch together with each merchant's rule-set revisions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.errors import InvalidRequest
from paygate.fraud.decide import Policy
from paygate.fraud.rules_tables import fraud_rule_sets
from paygate.fraud.tables import fraud_settings
from paygate.ids import now_s
from paygate.platform.db.tables import merchants

_GET = sa.select(fraud_settings).where(fraud_settings.c.merchant_id == sa.bindparam("match_id"))


async def get(conn: AsyncConnection, merchant_id: str) -> Policy:
    row = (await conn.execute(_GET, {"match_id": merchant_id})).mappings().one_or_none()
    return _policy(row)


def _policy(row: Mapping[Any, Any] | None) -> Policy:
    """The settings of a row of `fraud_settings`; the defaults for no row (or a row of NULLs)."""
    default = Policy()
    if row is None or row["fail_mode"] is None:
        return default
    return Policy(
        fail_mode=row["fail_mode"],
        review_threshold=row["review_threshold"] or default.review_threshold,
        decline_threshold=row["decline_threshold"] or default.decline_threshold,
    )


@dataclass(frozen=True, slots=True)
class Setup:
    """What screening needs of a merchant: its settings, and the revision of its rule set in
    each mode (None: it never had a rule or a list there; paygate.fraud.rules.rules_at)."""

    policy: Policy
    revisions: dict[bool, str | None]


def _revision(livemode: bool) -> sa.ScalarSelect[Any]:
    return (
        sa.select(fraud_rule_sets.c.revision)
        .where(fraud_rule_sets.c.merchant_id == merchants.c.id)
        .where(fraud_rule_sets.c.livemode.is_(livemode))
        .scalar_subquery()
    )


_SETUPS = (
    sa.select(
        merchants.c.id,
        fraud_settings.c.fail_mode,
        fraud_settings.c.review_threshold,
        fraud_settings.c.decline_threshold,
        _revision(True).label("live_revision"),
        _revision(False).label("test_revision"),
    )
    .select_from(merchants.outerjoin(fraud_settings))
    .where(merchants.c.id.in_(sa.bindparam("match_ids", expanding=True)))
)


async def setups(conn: AsyncConnection, merchant_ids: Iterable[str]) -> dict[str, Setup]:
    """The `Setup` of each of these merchants, in one statement, keyed by merchant id (an
    unknown id is left out)."""
    ids = sorted(set(merchant_ids))
    if not ids:
        return {}
    rows = (await conn.execute(_SETUPS, {"match_ids": ids})).mappings()
    return {
        row["id"]: Setup(_policy(row), {True: row["live_revision"], False: row["test_revision"]})
        for row in rows
    }


async def update(
    conn: AsyncConnection, merchant_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Apply the given fields over the current settings; returns the settings object. The
    merchant's row is locked first, so that two first changes never race to insert."""
    await conn.execute(
        sa.select(merchants.c.id).where(merchants.c.id == merchant_id).with_for_update()
    )
    current = await get(conn, merchant_id)
    values = {
        "fail_mode": changes.get("fail_mode", current.fail_mode),
        "review_threshold": changes.get("review_threshold", current.review_threshold),
        "decline_threshold": changes.get("decline_threshold", current.decline_threshold),
    }
    if values["review_threshold"] > values["decline_threshold"]:
        raise InvalidRequest(
            "review_threshold must not be above decline_threshold.",
            param="review_threshold" if "review_threshold" in changes else "decline_threshold",
        )
    now = now_s()
    where = fraud_settings.c.merchant_id == merchant_id
    exists = await conn.scalar(sa.select(sa.func.count()).select_from(fraud_settings).where(where))
    if exists:
        await conn.execute(fraud_settings.update().where(where).values(**values, updated=now))
    else:
        await conn.execute(
            fraud_settings.insert().values(merchant_id=merchant_id, **values, updated=now)
        )
    return render(merchant_id, Policy(**values), now)


def render(merchant_id: str, policy: Policy, updated: int | None = None) -> dict[str, Any]:
    return {
        "object": "fraud_settings",
        "merchant": merchant_id,
        "fail_mode": policy.fail_mode,
        "review_threshold": policy.review_threshold,
        "decline_threshold": policy.decline_threshold,
        "updated": updated,
    }
