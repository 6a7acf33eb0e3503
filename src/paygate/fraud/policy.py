"""Per-merchant screening settings: all SQL of `fraud_settings`. A merchant without a row has
the defaults (fail open, review from 65, decline from 75)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.errors import InvalidRequest
from paygate.fraud.decide import Policy
from paygate.fraud.tables import fraud_settings
from paygate.ids import now_s
from paygate.platform.db.tables import merchants


async def get(conn: AsyncConnection, merchant_id: str) -> Policy:
    row = (
        (
            await conn.execute(
                sa.select(fraud_settings).where(fraud_settings.c.merchant_id == merchant_id)
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        return Policy()
    default = Policy()
    return Policy(
        fail_mode=row["fail_mode"],
        review_threshold=row["review_threshold"] or default.review_threshold,
        decline_threshold=row["decline_threshold"] or default.decline_threshold,
    )


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
