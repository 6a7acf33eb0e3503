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


# Two characters for each 10 bits: a body's 26 characters are 13 look-ups, most significant
# first (an id is made for every row a payment writes).
_PAIRS = [first + second for first in _ALPHABET for second in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))


def _encode(value: int) -> str:
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


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
