"""Object ids: a type prefix and a time-ordered random body (`pay_01J…`).

The body is 48 bits of milliseconds then 80 random bits, Crockford base32, so ids sort by
creation time. Lists page by id (keyset pagination) without a separate sort column.

Within one process ids also sort in the order they were made: an id that would sort before
the one made last (the same millisecond, or a clock that stepped back) is that one's body plus
one. A payment's log is read in id order, and two of its entries are often written in the same
millisecond.
"""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80

_lock = threading.Lock()
_last = 0  # the body of the last id made by the clock


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """A new id; `now_ms` dates it (test data spread over time), outside the ordering above."""
    if now_ms is not None:
        return f"{prefix}_{_encode((now_ms << _RANDOM_BITS) | secrets.randbits(_RANDOM_BITS))}"
    global _last
    value = ((time.time_ns() // 1_000_000) << _RANDOM_BITS) | secrets.randbits(_RANDOM_BITS)
    with _lock:
        if value <= _last:
            value = _last + 1  # a random part at its end carries into the milliseconds
        _last = value
    return f"{prefix}_{_encode(value)}"


def now_s() -> int:
    return int(time.time())
