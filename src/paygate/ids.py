"""Object ids: a type prefix and a time-ordered random body (`pay_01J…`).

The body is 48 bits of milliseconds then 80 random bits, Crockford base32, so ids sort by
creation time. Lists page by id (keyset pagination) without a separate sort column.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return f"{prefix}_{''.join(reversed(chars))}"


def now_s() -> int:
    return int(time.time())
