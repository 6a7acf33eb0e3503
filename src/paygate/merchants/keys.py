"""API keys: `sk_test_…`/`pk_test_…` (and `_live_`), 24 random bytes, stored as a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIXES = {"secret": "sk", "publishable": "pk", "restricted": "rk"}


def generate(kind: str, livemode: bool) -> str:
    mode = "live" if livemode else "test"
    return (
        f"{PREFIXES[kind]}_{mode}_{secrets.token_urlsafe(24).replace('-', 'x').replace('_', 'y')}"
    )


def key_hash(hmac_key: bytes, key: str) -> str:
    return hmac.new(hmac_key, f"apikey:{key}".encode(), hashlib.sha256).hexdigest()


def parse(key: str) -> tuple[str, bool] | None:
    """(kind, livemode) from a key's prefix, or None when it is not shaped like one of ours."""
    prefix, _, rest = key.partition("_")
    mode, _, body = rest.partition("_")
    kind = next((k for k, p in PREFIXES.items() if p == prefix), None)
    if kind is None or mode not in ("test", "live") or not body:
        return None
    return kind, mode == "live"
