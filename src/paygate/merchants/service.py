"""Merchant use cases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.edge import versions
from paygate.errors import NotFound
from paygate.ids import new_id, now_s
from paygate.merchants import keys, repository


def render(m: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": m["id"],
        "object": "merchant",
        "name": m["name"],
        "email": m["email"],
        "tier": m["tier"],
        "api_version": m["api_version"],
        "created": m["created"],
    }


async def create_merchant(
    conn: AsyncConnection,
    hmac_key: bytes,
    *,
    name: str,
    email: str | None,
    tier: str,
    api_version: str = versions.BASE,
) -> dict[str, Any]:
    """A merchant with a test-mode secret and publishable key, shown only in this answer; its
    requests default to `api_version` (paygate.edge.versions)."""
    now = now_s()
    merchant = {
        "id": new_id("acct"),
        "name": name,
        "email": email,
        "tier": tier,
        "api_version": api_version,
        "created": now,
    }
    await repository.insert_merchant(conn, merchant)
    shown = {}
    for kind in ("secret", "publishable"):
        key = keys.generate(kind, livemode=False)
        await repository.insert_key(
            conn,
            {
                "id": new_id("key"),
                "merchant_id": merchant["id"],
                "kind": kind,
                "livemode": False,
                "key_hash": keys.key_hash(hmac_key, key),
                "last4": key[-4:],
                "created": now,
            },
        )
        shown[kind] = key
    return {**render(merchant), "api_key": shown["secret"], "publishable_key": shown["publishable"]}


async def get_merchant(conn: AsyncConnection, merchant_id: str) -> dict[str, Any]:
    row = await repository.get_merchant(conn, merchant_id)
    if row is None:
        # Messages never quote request values (paygate.errors): an id may be anything, card data
        # included.
        raise NotFound("No such merchant.", param="id")
    return render(row)
