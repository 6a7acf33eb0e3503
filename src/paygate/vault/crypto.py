"""Sealing with AES-256-GCM under a keyring of key ids, and keyed fingerprints.

A sealed value is `nonce (12 bytes) || ciphertext+tag`; the key id is stored beside it so keys
can be rotated: new values use the active key, old ones open with the key they name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class Keyring:
    def __init__(self, keys: dict[str, bytes], fingerprint_key: bytes) -> None:
        if not keys:
            raise ValueError("the vault needs at least one key")
        self._keys = dict(keys)
        self.active_id = next(iter(keys))
        self._fingerprint_key = fingerprint_key

    def seal(self, plaintext: bytes, aad: bytes, *, key_id: str | None = None) -> tuple[str, bytes]:
        """Encrypt under the active key (or `key_id`); `aad` binds the value to its row."""
        kid = key_id or self.active_id
        nonce = secrets.token_bytes(12)
        return kid, nonce + AESGCM(self._keys[kid]).encrypt(nonce, plaintext, aad)

    def open(self, key_id: str, sealed: bytes, aad: bytes) -> bytes:
        return AESGCM(self._keys[key_id]).decrypt(sealed[:12], sealed[12:], aad)

    def fingerprint(self, value: str, purpose: str) -> str:
        """A keyed, stable fingerprint: the same card gives the same value, and nobody without
        the key can test a guess against it."""
        mac = hmac.new(self._fingerprint_key, f"{purpose}:{value}".encode(), hashlib.sha256)
        return base64.b32encode(mac.digest()[:10]).decode().lower()


def seal_with_data_key(plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """Encrypt under a fresh 256-bit data key; returns (data key, sealed value)."""
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(12)
    return data_key, nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def open_with_data_key(data_key: bytes, sealed: bytes, aad: bytes) -> bytes:
    return AESGCM(data_key).decrypt(sealed[:12], sealed[12:], aad)
