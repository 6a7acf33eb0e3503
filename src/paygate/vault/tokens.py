"""Single-use card tokens (`tok_…`): card details a browser sent with a publishable key, kept so
that a merchant's server can pay with them without ever handling the card number.

The card number is sealed in the vault like a payment's; the CVC is sealed under a data key of
its own in `vault_cvcs`, under the token's id, until the token expires (then the recovery sweep
destroys it) or a payment uses it (then it moves to the payment and the token's copy is
destroyed). A token is used at most once: the claim is one conditional UPDATE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.errors import InvalidRequest
from paygate.ids import new_id, now_s
from paygate.platform.db.tables import card_tokens
from paygate.vault import cards
from paygate.vault import repository as vault
from paygate.vault.crypto import Keyring

PARAM = "payment_method.token"


@dataclass(frozen=True, slots=True)
class VaultedCard:
    """A card in the vault, as a payment method needs it."""

    token: str  # the vault's token of the sealed card number
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str
    cvc: str | None


def render(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "token",
        "livemode": row["livemode"],
        "type": "card",
        "card": {k: row[k] for k in ("brand", "last4", "exp_month", "exp_year", "fingerprint")},
        "created": row["created"],
        "expires_at": row["expires_at"],
        "used": row["used_at"] is not None,
    }


async def create(
    conn: AsyncConnection,
    keyring: Keyring,
    *,
    merchant_id: str,
    livemode: bool,
    number: str,
    exp_month: int,
    exp_year: int,
    cvc: str,
    ttl_s: int,
) -> dict[str, Any]:
    now = now_s()
    fingerprint = keyring.fingerprint(number, "card")
    row: dict[str, Any] = {
        "id": new_id("tok"),
        "merchant_id": merchant_id,
        "livemode": livemode,
        "card_token": await vault.store_card(conn, keyring, number, fingerprint),
        "brand": cards.brand(number),
        "last4": number[-4:],
        "exp_month": exp_month,
        "exp_year": exp_year,
        "fingerprint": fingerprint,
        "created": now,
        "expires_at": now + ttl_s,
        "used_at": None,
        "payment_id": None,
    }
    await conn.execute(card_tokens.insert(), row)
    await vault.store_cvc(conn, keyring, row["id"], cvc, expires_at=row["expires_at"])
    return render(row)


async def redeem(
    conn: AsyncConnection,
    keyring: Keyring,
    token_id: str,
    *,
    merchant_id: str,
    livemode: bool,
    payment_id: str,
) -> VaultedCard:
    """Use the token for `payment_id`, once: a used, expired or unknown token (or one of
    another merchant or mode) is a `400`."""
    now = now_s()
    c = card_tokens.c
    mine = sa.and_(c.id == token_id, c.merchant_id == merchant_id, c.livemode == livemode)
    claimed = await conn.execute(
        card_tokens.update()
        .where(mine, c.used_at.is_(None), c.expires_at > now)
        .values(used_at=now, payment_id=payment_id)
    )
    row = (await conn.execute(sa.select(card_tokens).where(mine))).mappings().one_or_none()
    if row is None:
        raise InvalidRequest("No such token.", param=PARAM, code="resource_missing")
    if claimed.rowcount != 1:
        if row["used_at"] is not None:
            raise InvalidRequest(
                "This token was already used; tokenize the card again.",
                param=PARAM,
                code="token_already_used",
            )
        raise InvalidRequest(
            "This token has expired; tokenize the card again.", param=PARAM, code="token_expired"
        )
    if cards.expired(row["exp_month"], row["exp_year"]):
        raise InvalidRequest(
            "The card's expiry date is in the past.", param=PARAM, code="invalid_expiry"
        )
    cvc = await vault.read_cvc(conn, keyring, token_id)
    await vault.destroy_cvc(conn, token_id)
    return VaultedCard(
        token=row["card_token"],
        brand=row["brand"],
        last4=row["last4"],
        exp_month=row["exp_month"],
        exp_year=row["exp_year"],
        fingerprint=row["fingerprint"],
        cvc=cvc,
    )
