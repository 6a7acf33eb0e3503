"""Vault storage on both databases: sealed card numbers, key rotation, per-payment CVCs."""

from __future__ import annotations

import secrets

import httpx
import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag

from paygate.ids import now_s
from paygate.platform.db.tables import vault_cards, vault_cvcs
from paygate.runtime import Runtime
from paygate.vault import repository as vault
from paygate.vault.crypto import Keyring
from tests.support import idem, payment_body, statements

PAN = "4242424242424242"


def rotated_keyring(rt: Runtime) -> Keyring:
    """The runtime's keyring with a new active key in front of the old ones."""
    return Keyring(
        {"k2": secrets.token_bytes(32), **rt.settings.vault_keyring()}, fingerprint_key=rt.hmac_key
    )


async def store(rt: Runtime, pan: str = PAN, keyring: Keyring | None = None) -> str:
    keyring = keyring or rt.keyring
    async with rt.db.transaction() as conn:
        return await vault.store_card(conn, keyring, pan, keyring.fingerprint(pan, "card"))


async def reveal(rt: Runtime, token: str, keyring: Keyring | None = None) -> str:
    async with rt.db.read() as conn:
        return await vault.reveal_card(conn, keyring or rt.keyring, token)


async def card_rows(rt: Runtime) -> dict[str, sa.Row]:
    async with rt.db.read() as conn:
        rows = (await conn.execute(sa.select(vault_cards))).all()
    return {r.token: r for r in rows}


async def test_store_and_reveal_a_card(runtime: Runtime) -> None:
    token = await store(runtime)
    assert token.startswith("vc_")
    assert await reveal(runtime, token) == PAN
    row = (await card_rows(runtime))[token]
    assert row.key_id == runtime.keyring.active_id
    assert row.fingerprint == runtime.keyring.fingerprint(PAN, "card")
    # Nothing in the row holds the number in plain text.
    assert PAN.encode() not in row.pan_sealed
    assert all(PAN not in str(value) for value in row)


async def test_the_same_card_stored_twice_shares_the_fingerprint_not_the_ciphertext(
    runtime: Runtime,
) -> None:
    a, b = await store(runtime), await store(runtime)
    rows = await card_rows(runtime)
    assert a != b
    assert rows[a].fingerprint == rows[b].fingerprint
    assert rows[a].pan_sealed != rows[b].pan_sealed


async def test_a_sealed_number_moved_to_another_row_does_not_open(runtime: Runtime) -> None:
    a = await store(runtime, PAN)
    b = await store(runtime, "5555555555554444")
    rows = await card_rows(runtime)
    async with runtime.db.transaction() as conn:
        await conn.execute(
            vault_cards.update()
            .where(vault_cards.c.token == b)
            .values(pan_sealed=rows[a].pan_sealed)
        )
    with pytest.raises(InvalidTag):
        await reveal(runtime, b)


async def test_an_unknown_token_is_not_revealed(runtime: Runtime) -> None:
    with pytest.raises(sa.exc.NoResultFound):
        await reveal(runtime, "vc_missing")


async def test_rotate_reseals_cards_under_the_new_key(runtime: Runtime) -> None:
    pans = ["4242424242424242", "5555555555554444", "378282246310005"]
    tokens = [await store(runtime, pan) for pan in pans]
    before = await card_rows(runtime)
    new = rotated_keyring(runtime)
    # A rotated keyring still reads what the old key sealed, before any re-sealing.
    assert [await reveal(runtime, t, new) for t in tokens] == pans
    # A card stored after the rotation is sealed under the new key at once.
    fresh = await store(runtime, "6011111111111117", keyring=new)

    async with runtime.db.transaction() as conn:
        assert await vault.rotate(conn, new, batch=2) == 2
    async with runtime.db.transaction() as conn:
        assert await vault.rotate(conn, new, batch=2) == 1
    async with runtime.db.transaction() as conn:
        assert await vault.rotate(conn, new) == 0

    after = await card_rows(runtime)
    assert {r.key_id for r in after.values()} == {"k2"}
    for token, pan in zip(tokens, pans, strict=True):
        assert after[token].pan_sealed != before[token].pan_sealed
        assert after[token].fingerprint == before[token].fingerprint
        assert await reveal(runtime, token, new) == pan
        # The retired key alone can no longer open it.
        with pytest.raises(KeyError):
            await reveal(runtime, token, runtime.keyring)
    assert await reveal(runtime, fresh, new) == "6011111111111117"


async def test_rotate_rolls_back_with_its_transaction(runtime: Runtime) -> None:
    token = await store(runtime)
    new = rotated_keyring(runtime)
    with pytest.raises(RuntimeError):
        async with runtime.db.transaction() as conn:
            assert await vault.rotate(conn, new) == 1
            raise RuntimeError("crash before commit")
    assert (await card_rows(runtime))[token].key_id == runtime.keyring.active_id
    assert await reveal(runtime, token) == PAN


async def read_cvc(rt: Runtime, payment_id: str) -> str | None:
    async with rt.db.read() as conn:
        return await vault.read_cvc(conn, rt.keyring, payment_id)


async def cvc_ids(rt: Runtime) -> set[str]:
    async with rt.db.read() as conn:
        return set((await conn.execute(sa.select(vault_cvcs.c.payment_id))).scalars())


async def test_cvc_round_trip(runtime: Runtime) -> None:
    async with runtime.db.transaction() as conn:
        await vault.store_cvc(conn, runtime.keyring, "pay_1", "123", expires_at=now_s() + 300)
        await vault.store_cvc(conn, runtime.keyring, "pay_2", "4567", expires_at=now_s() + 300)
    assert await read_cvc(runtime, "pay_1") == "123"
    assert await read_cvc(runtime, "pay_2") == "4567"
    assert await read_cvc(runtime, "pay_3") is None
    async with runtime.db.read() as conn:
        rows = {r.payment_id: r for r in (await conn.execute(sa.select(vault_cvcs))).all()}
    # Each CVC is sealed under its own data key, which is itself sealed by the vault key.
    assert rows["pay_1"].key_id == runtime.keyring.active_id
    assert rows["pay_1"].data_key_sealed != rows["pay_2"].data_key_sealed


async def test_a_cvc_moved_to_another_payment_does_not_open(runtime: Runtime) -> None:
    async with runtime.db.transaction() as conn:
        await vault.store_cvc(conn, runtime.keyring, "pay_1", "123", expires_at=now_s() + 300)
        row = (await conn.execute(sa.select(vault_cvcs))).one()
        await conn.execute(
            vault_cvcs.insert().values(
                payment_id="pay_2",
                key_id=row.key_id,
                data_key_sealed=row.data_key_sealed,
                cvc_sealed=row.cvc_sealed,
                expires_at=row.expires_at,
            )
        )
    with pytest.raises(InvalidTag):
        await read_cvc(runtime, "pay_2")


async def test_an_expired_cvc_is_not_read(runtime: Runtime) -> None:
    async with runtime.db.transaction() as conn:
        await vault.store_cvc(conn, runtime.keyring, "pay_1", "123", expires_at=now_s() - 1)
    assert await read_cvc(runtime, "pay_1") is None


async def test_destroy_cvc_deletes_the_row(runtime: Runtime) -> None:
    async with runtime.db.transaction() as conn:
        await vault.store_cvc(conn, runtime.keyring, "pay_1", "123", expires_at=now_s() + 300)
        await vault.store_cvc(conn, runtime.keyring, "pay_2", "456", expires_at=now_s() + 300)
    async with runtime.db.transaction() as conn:
        await vault.destroy_cvc(conn, "pay_1")
        await vault.destroy_cvc(conn, "pay_missing")  # destroying nothing is not an error
    assert await read_cvc(runtime, "pay_1") is None
    assert await cvc_ids(runtime) == {"pay_2"}
    assert await read_cvc(runtime, "pay_2") == "456"


async def test_destroy_expired_cvcs_keeps_the_live_ones(runtime: Runtime) -> None:
    now = now_s()
    async with runtime.db.transaction() as conn:
        await vault.store_cvc(conn, runtime.keyring, "pay_old", "111", expires_at=now - 3600)
        await vault.store_cvc(conn, runtime.keyring, "pay_late", "222", expires_at=now - 1)
        await vault.store_cvc(conn, runtime.keyring, "pay_live", "333", expires_at=now + 3600)
    async with runtime.db.transaction() as conn:
        assert await vault.destroy_expired_cvcs(conn) == 2
    assert await cvc_ids(runtime) == {"pay_live"}
    assert await read_cvc(runtime, "pay_live") == "333"
    async with runtime.db.transaction() as conn:
        assert await vault.destroy_expired_cvcs(conn) == 0


async def test_a_cvc_stored_before_a_rotation_still_reads(runtime: Runtime) -> None:
    async with runtime.db.transaction() as conn:
        await vault.store_cvc(conn, runtime.keyring, "pay_1", "123", expires_at=now_s() + 300)
    new = rotated_keyring(runtime)
    async with runtime.db.read() as conn:
        assert await vault.read_cvc(conn, new, "pay_1") == "123"


async def test_a_batch_of_payments_reveals_its_cards_and_cvcs_in_one_statement(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    cards = [("4242424242424242", "123"), ("5555555555554444", "4567"), ("4000056655665556", "999")]
    ids = []
    for number, cvc in cards:
        body = payment_body(card={"number": number, "cvc": cvc})
        r = await client.post("/v1/payments", json=body, headers={**auth, **idem()})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    async with runtime.db.transaction() as conn:
        await vault.destroy_cvc(conn, ids[1])  # used by a bank call already
        await conn.execute(
            vault_cvcs.update().where(vault_cvcs.c.payment_id == ids[2]).values(expires_at=1)
        )
    with statements(runtime.db) as seen:
        async with runtime.db.read() as conn:
            found = await vault.reveal_payment_cards(conn, runtime.keyring, [*ids, "pay_none"])
    assert len([s for s in seen if s.startswith("SELECT")]) == 1
    assert found == {
        ids[0]: ("4242424242424242", "123"),
        ids[1]: ("5555555555554444", None),
        ids[2]: ("4000056655665556", None),
    }
