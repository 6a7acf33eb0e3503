"""Vault storage: sealed card numbers and per-payment CVCs."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import new_id, now_s
from paygate.platform.db import deferred
from paygate.platform.db.tables import payment_methods, vault_cards, vault_cvcs
from paygate.vault.crypto import Keyring, open_with_data_key, seal_with_data_key


async def store_card(conn: AsyncConnection, keyring: Keyring, pan: str, fingerprint: str) -> str:
    """Seal `pan` and return its vault token."""
    token = new_id("vc")
    key_id, sealed = keyring.seal(pan.encode(), aad=token.encode())
    await deferred.insert(
        conn,
        vault_cards,
        dict(
            token=token, key_id=key_id, pan_sealed=sealed, fingerprint=fingerprint, created=now_s()
        ),
    )
    return token


async def reveal_card(conn: AsyncConnection, keyring: Keyring, token: str) -> str:
    """The card number behind `token`, for the bank call only."""
    row = (
        await conn.execute(
            sa.select(vault_cards.c.key_id, vault_cards.c.pan_sealed).where(
                vault_cards.c.token == token
            )
        )
    ).one()
    return keyring.open(row.key_id, row.pan_sealed, aad=token.encode()).decode()


# What every customer-initiated bank call reads and deletes, built once (docs/performance.md). The
# reads take a batch's payments at once (`IN` lists as expanding parameters).
_METHOD_CARDS = (
    sa.select(
        payment_methods.c.id, vault_cards.c.token, vault_cards.c.key_id, vault_cards.c.pan_sealed
    )
    .join(payment_methods, payment_methods.c.card_token == vault_cards.c.token)
    .where(payment_methods.c.id.in_(sa.bindparam("match_methods", expanding=True)))
)
_CVCS = sa.select(vault_cvcs).where(
    vault_cvcs.c.payment_id.in_(sa.bindparam("match_payments", expanding=True))
)
_DESTROY_CVC = vault_cvcs.delete().where(vault_cvcs.c.payment_id == sa.bindparam("match_payment"))


async def reveal_method_cards(
    conn: AsyncConnection, keyring: Keyring, method_ids: Collection[str]
) -> dict[str, str]:
    """`reveal_card` of payment methods' cards, by method id, in one statement: for the bank
    calls of a batch of payments only."""
    rows = await conn.execute(_METHOD_CARDS, {"match_methods": list(method_ids)})
    return {
        row.id: keyring.open(row.key_id, row.pan_sealed, aad=row.token.encode()).decode()
        for row in rows
    }


async def reveal_method_card(conn: AsyncConnection, keyring: Keyring, method_id: str) -> str:
    """`reveal_card` of a payment method's card."""
    return (await reveal_method_cards(conn, keyring, [method_id]))[method_id]


async def store_cvc(
    conn: AsyncConnection, keyring: Keyring, payment_id: str, cvc: str, expires_at: int
) -> None:
    aad = payment_id.encode()
    data_key, cvc_sealed = seal_with_data_key(cvc.encode(), aad)
    key_id, key_sealed = keyring.seal(data_key, aad)
    await deferred.insert(
        conn,
        vault_cvcs,
        dict(
            payment_id=payment_id,
            key_id=key_id,
            data_key_sealed=key_sealed,
            cvc_sealed=cvc_sealed,
            expires_at=expires_at,
        ),
    )


async def read_cvcs(
    conn: AsyncConnection, keyring: Keyring, payment_ids: Collection[str]
) -> dict[str, str]:
    """The CVCs of payments, by payment id, in one statement; a payment whose CVC is gone
    (destroyed after its bank call, or expired) is left out."""
    now = now_s()
    found: dict[str, str] = {}
    for row in await conn.execute(_CVCS, {"match_payments": list(payment_ids)}):
        if row.expires_at < now:
            continue
        aad = row.payment_id.encode()
        data_key = keyring.open(row.key_id, row.data_key_sealed, aad)
        found[row.payment_id] = open_with_data_key(data_key, row.cvc_sealed, aad).decode()
    return found


async def read_cvc(conn: AsyncConnection, keyring: Keyring, payment_id: str) -> str | None:
    return (await read_cvcs(conn, keyring, [payment_id])).get(payment_id)


async def destroy_cvc(conn: AsyncConnection, payment_id: str) -> None:
    """Delete the CVC and its data key together: from then on it cannot be recovered."""
    await conn.execute(_DESTROY_CVC, {"match_payment": payment_id})


async def destroy_expired_cvcs(conn: AsyncConnection) -> int:
    result = await conn.execute(vault_cvcs.delete().where(vault_cvcs.c.expires_at < now_s()))
    return result.rowcount


async def rotate(conn: AsyncConnection, keyring: Keyring, batch: int = 500) -> int:
    """Re-seal card numbers held under retired keys with the active key; returns how many."""
    rows = (
        await conn.execute(
            sa.select(vault_cards.c.token, vault_cards.c.key_id, vault_cards.c.pan_sealed)
            .where(vault_cards.c.key_id != keyring.active_id)
            .limit(batch)
        )
    ).all()
    for row in rows:
        pan = keyring.open(row.key_id, row.pan_sealed, aad=row.token.encode())
        key_id, sealed = keyring.seal(pan, aad=row.token.encode())
        await conn.execute(
            vault_cards.update()
            .where(vault_cards.c.token == row.token)
            .values(key_id=key_id, pan_sealed=sealed)
        )
    return len(rows)
