"""Merchant use cases."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.edge import versions
from paygate.errors import NotFound
from paygate.ids import new_id, now_s
from paygate.ledger.models import Pricing
from paygate.merchants import keys, profile, repository, terms
from paygate.vault.crypto import Keyring

# A merchant's own columns an admin may change.
OWN_FIELDS = ("name", "email", "tier", "api_version")


@dataclass
class Changes:
    """What an update sets: merchant columns, terms, and the bank account (`remove_bank_account`
    when the request sent `bank_account: null`)."""

    fields: dict[str, Any] = field(default_factory=dict)
    bank_account: profile.BankAccount | None = None
    remove_bank_account: bool = False
    pricing: dict[str, Any] | None = None
    payout_delay_days: int | None = None


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


async def render_full(
    conn: AsyncConnection, m: Mapping[Any, Any], default_delay_days: int
) -> dict[str, Any]:
    """The merchant with its payout terms; the bank account only as its last four and country."""
    t = await terms.terms_for(conn, m["id"], default_delay_days)
    return {
        **render(m),
        "bank_account": terms.render_bank_account(await terms.bank_account_row(conn, m["id"])),
        "pricing": profile.pricing_to_json(t.pricing),
        "payout_delay_days": t.payout_delay_days,
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


async def apply_changes(
    conn: AsyncConnection,
    keyring: Keyring,
    merchant_id: str,
    changes: Changes,
    default_delay_days: int,
) -> dict[str, Any]:
    """Apply an update in the caller's transaction; returns what changed, fit for the audit log
    (the bank account by its last four and country only)."""
    # Every value is checked before anything is written.
    new_pricing: Pricing | None = None
    if changes.pricing is not None:
        current = await terms.terms_for(conn, merchant_id, default_delay_days)
        new_pricing = profile.pricing(changes.pricing, current.pricing)
    delay = changes.payout_delay_days
    if delay is not None:
        profile.payout_delay_days(delay)
    done: dict[str, Any] = {}
    own = {k: v for k, v in changes.fields.items() if k in OWN_FIELDS}
    if own:
        await repository.update_merchant(conn, merchant_id, own)
        done.update(own)
    if changes.bank_account is not None:
        await terms.set_bank_account(conn, keyring, merchant_id, changes.bank_account)
        done["bank_account"] = {
            "iban_last4": changes.bank_account.last4,
            "country": changes.bank_account.country,
        }
    elif changes.remove_bank_account:
        await terms.remove_bank_account(conn, merchant_id)
        done["bank_account"] = None
    if new_pricing is not None or delay is not None:
        await terms.set_terms(conn, merchant_id, pricing=new_pricing, payout_delay_days=delay)
    if new_pricing is not None:
        done["pricing"] = profile.pricing_to_json(new_pricing)
    if delay is not None:
        done["payout_delay_days"] = delay
    return done


async def get_row(conn: AsyncConnection, merchant_id: str) -> Mapping[Any, Any]:
    row = await repository.get_merchant(conn, merchant_id)
    if row is None:
        # Messages never quote request values (paygate.errors): an id may be anything, card data
        # included.
        raise NotFound("No such merchant.", param="id")
    return row


async def get_merchant(
    conn: AsyncConnection, merchant_id: str, default_delay_days: int
) -> dict[str, Any]:
    return await render_full(conn, await get_row(conn, merchant_id), default_delay_days)
