"""Vault storage: sealed card numbers and per-payment CVCs."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import new_id, now_s
from paygate.platform.db import deferred
from paygate.platform.db.tables import payment_methods, payments, vault_cards, vault_cvcs
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
_PAYMENT_CARDS = (
    sa.select(
        payments.c.id,
        vault_cards.c.token,
        vault_cards.c.key_id,
        vault_cards.c.pan_sealed,
        vault_cvcs.c.key_id.label("cvc_key_id"),
        vault_cvcs.c.data_key_sealed,
        vault_cvcs.c.cvc_sealed,
        vault_cvcs.c.expires_at,
    )
    .select_from(
        payments.join(payment_methods, payment_methods.c.id == payments.c.payment_method_id)
        .join(vault_cards, vault_cards.c.token == payment_methods.c.card_token)
        .outerjoin(vault_cvcs, vault_cvcs.c.payment_id == payments.c.id)
    )
    .where(payments.c.id.in_(sa.bindparam("match_payments", expanding=True)))
)
_CVCS = sa.select(vault_cvcs).where(
    vault_cvcs.c.payment_id.in_(sa.bindparam("match_payments", expanding=True))
)


async def reveal_payment_cards(
    conn: AsyncConnection, keyring: Keyring, payment_ids: Collection[str]
) -> dict[str, tuple[str, str | None]]:
    """Each payment's card number and CVC (None once destroyed or expired), by payment id, in
    one statement: for the payments' bank calls only. A payment not found is left out."""
    now = now_s()
    found: dict[str, tuple[str, str | None]] = {}
    for row in await conn.execute(_PAYMENT_CARDS, {"match_payments": list(payment_ids)}):
        number = keyring.open(row.key_id, row.pan_sealed, aad=row.token.encode()).decode()
        cvc = None
        if row.cvc_sealed is not None and row.expires_at >= now:
            cvc = _open_cvc(keyring, row.id, row.cvc_key_id, row.data_key_sealed, row.cvc_sealed)
        found[row.id] = (number, cvc)
    return found


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
        if row.expires_at >= now:
            found[row.payment_id] = _open_cvc(
                keyring, row.payment_id, row.key_id, row.data_key_sealed, row.cvc_sealed
            )
    return found


def _open_cvc(
    keyring: Keyring, payment_id: str, key_id: str, data_key_sealed: bytes, cvc_sealed: bytes
) -> str:
    aad = payment_id.encode()
    return open_with_data_key(keyring.open(key_id, data_key_sealed, aad), cvc_sealed, aad).decode()


async def read_cvc(conn: AsyncConnection, keyring: Keyring, payment_id: str) -> str | None:
    return (await read_cvcs(conn, keyring, [payment_id])).get(payment_id)


async def destroy_cvc(conn: AsyncConnection, payment_id: str) -> None:
    """Delete the CVC and its data key together: once committed it cannot be recovered. Inside
    a `deferred` block the delete goes with the block's inserts (the processor's answers: on
    PostgreSQL in their one statement), so the block must not read the CVC after this."""
    await deferred.delete(conn, vault_cvcs, "payment_id", payment_id)


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
