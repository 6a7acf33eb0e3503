"""Sealing under the keyring (AES-256-GCM with key ids), per-value data keys, fingerprints."""

from __future__ import annotations

import base64
import secrets

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given
from hypothesis import strategies as st

from paygate.config import Settings
from paygate.vault.crypto import Keyring, open_with_data_key, seal_with_data_key
from tests.support import VAULT_KEYS

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
FP_KEY = b"fingerprint-key"
PAN = b"4242424242424242"


def ring(*ids: str, fingerprint_key: bytes = FP_KEY) -> Keyring:
    keys = {"k1": K1, "k2": K2}
    return Keyring({i: keys[i] for i in ids}, fingerprint_key=fingerprint_key)


def test_seal_open_round_trip_under_the_active_key() -> None:
    keyring = ring("k1")
    kid, sealed = keyring.seal(PAN, aad=b"vc_1")
    assert kid == "k1" == keyring.active_id
    assert PAN not in sealed
    # nonce (12 bytes) || ciphertext || tag (16 bytes)
    assert len(sealed) == 12 + len(PAN) + 16
    assert keyring.open(kid, sealed, aad=b"vc_1") == PAN


@given(st.binary(max_size=256), st.binary(max_size=64))
def test_round_trip_of_any_value(plaintext: bytes, aad: bytes) -> None:
    keyring = ring("k1")
    kid, sealed = keyring.seal(plaintext, aad)
    assert keyring.open(kid, sealed, aad) == plaintext


def test_each_seal_uses_a_fresh_nonce() -> None:
    keyring = ring("k1")
    sealed = {keyring.seal(PAN, aad=b"vc_1")[1] for _ in range(50)}
    assert len(sealed) == 50
    assert len({s[:12] for s in sealed}) == 50


def test_aad_binds_the_value_to_its_row() -> None:
    keyring = ring("k1")
    kid, sealed = keyring.seal(PAN, aad=b"vc_1")
    # A sealed number copied into another row does not open there.
    with pytest.raises(InvalidTag):
        keyring.open(kid, sealed, aad=b"vc_2")
    with pytest.raises(InvalidTag):
        keyring.open(kid, sealed, aad=b"")


@given(st.data())
def test_any_flipped_bit_is_detected(data: st.DataObject) -> None:
    keyring = ring("k1")
    kid, sealed = keyring.seal(PAN, aad=b"vc_1")
    bit = data.draw(st.integers(min_value=0, max_value=len(sealed) * 8 - 1), label="bit")
    tampered = bytearray(sealed)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidTag):
        keyring.open(kid, bytes(tampered), aad=b"vc_1")


def test_truncated_or_extended_values_are_refused() -> None:
    keyring = ring("k1")
    kid, sealed = keyring.seal(PAN, aad=b"vc_1")
    for bad in (sealed[:-1], sealed + b"\x00", sealed[:12] + sealed[13:]):
        with pytest.raises(InvalidTag):
            keyring.open(kid, bad, aad=b"vc_1")


def test_opening_under_another_key_fails() -> None:
    keyring = ring("k1", "k2")
    _, sealed = keyring.seal(PAN, aad=b"vc_1")
    with pytest.raises(InvalidTag):
        keyring.open("k2", sealed, aad=b"vc_1")


def test_an_unknown_key_id_is_refused() -> None:
    kid, sealed = ring("k2").seal(PAN, aad=b"vc_1")
    with pytest.raises(KeyError):
        ring("k1").open(kid, sealed, aad=b"vc_1")


def test_rotation_new_values_use_the_new_key_old_ones_still_open() -> None:
    old = ring("k1")
    old_kid, old_sealed = old.seal(PAN, aad=b"vc_1")
    rotated = Keyring({"k2": K2, "k1": K1}, fingerprint_key=FP_KEY)  # the first key is active
    assert rotated.active_id == "k2"
    assert rotated.open(old_kid, old_sealed, aad=b"vc_1") == PAN
    new_kid, new_sealed = rotated.seal(PAN, aad=b"vc_1")
    assert new_kid == "k2"
    assert rotated.open(new_kid, new_sealed, aad=b"vc_1") == PAN
    # A retired keyring cannot read what the new key sealed.
    with pytest.raises(KeyError):
        old.open(new_kid, new_sealed, aad=b"vc_1")


def test_seal_under_a_named_key() -> None:
    keyring = ring("k2", "k1")
    kid, sealed = keyring.seal(PAN, aad=b"vc_1", key_id="k1")
    assert kid == "k1"
    assert ring("k1").open(kid, sealed, aad=b"vc_1") == PAN


def test_a_keyring_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        Keyring({}, fingerprint_key=FP_KEY)


def test_settings_put_the_first_listed_key_first() -> None:
    # PAYGATE_VAULT_KEYS lists the active key first: rotation prepends the new key.
    new = base64.b64encode(K2).decode()
    settings = Settings(vault_keys=f"k2:{new},{VAULT_KEYS}", hmac_secret="x")
    keys = settings.vault_keyring()
    assert list(keys) == ["k2", "k1"]
    assert keys["k2"] == K2
    assert Keyring(keys, fingerprint_key=b"x").active_id == "k2"


def test_settings_refuse_a_key_of_the_wrong_size() -> None:
    short = base64.b64encode(b"\x00" * 16).decode()
    with pytest.raises(ValueError, match="32 bytes"):
        Settings(vault_keys=f"k1:{short}", hmac_secret="x").vault_keyring()


def test_fingerprint_is_stable_and_keyed() -> None:
    a = ring("k1").fingerprint("4242424242424242", "card")
    assert a == ring("k1").fingerprint("4242424242424242", "card")
    # The vault key does not matter (rotation keeps fingerprints); the fingerprint key does.
    assert a == ring("k2").fingerprint("4242424242424242", "card")
    assert a != ring("k1", fingerprint_key=b"another key").fingerprint("4242424242424242", "card")
    assert a != ring("k1").fingerprint("5555555555554444", "card")
    # A purpose separates fingerprints of the same value used for different things.
    assert a != ring("k1").fingerprint("4242424242424242", "email")
    assert "4242" not in a
    assert len(a) == 16 and a == a.lower() and a.isalnum()


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_different_values_give_different_fingerprints(a: str, b: str) -> None:
    keyring = ring("k1")
    assert (keyring.fingerprint(a, "card") == keyring.fingerprint(b, "card")) is (a == b)


def test_data_key_round_trip_and_binding() -> None:
    data_key, sealed = seal_with_data_key(b"123", aad=b"pay_1")
    assert len(data_key) == 32
    assert open_with_data_key(data_key, sealed, aad=b"pay_1") == b"123"
    with pytest.raises(InvalidTag):
        open_with_data_key(data_key, sealed, aad=b"pay_2")
    with pytest.raises(InvalidTag):
        open_with_data_key(secrets.token_bytes(32), sealed, aad=b"pay_1")


def test_every_value_gets_its_own_data_key() -> None:
    keys = {seal_with_data_key(b"123", aad=b"pay_1")[0] for _ in range(20)}
    assert len(keys) == 20
