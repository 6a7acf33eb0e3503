"""Pure rules of the notification service: the signature, the retry schedule, which events an
endpoint takes, and which network addresses a webhook may reach. No I/O here."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import secrets
from collections.abc import Iterable, Sequence

from paygate.platform.outbox import PUBLIC_TYPES

SIGNATURE_HEADER = "Paygate-Signature"
SECRET_PREFIX = "whsec_"
# After a rotation the previous secret keeps signing this long, so that receivers can switch over.
ROTATION_WINDOW_S = 24 * 3600
# Retries stop this long after the first try (DESIGN.md section 4: up to 3 days), then the
# delivery is dead-lettered (`dead`) and can be replayed.
RETRY_WINDOW_S = 3 * 86400.0
FIRST_RETRY_S = 30.0
MAX_RETRY_S = 6 * 3600.0
ALL_EVENTS = "*"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def new_secret() -> str:
    # Hex only: the log redactor recognises `whsec_` followed by letters and digits.
    return SECRET_PREFIX + secrets.token_hex(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """HMAC-SHA256 of `"<timestamp>.<body>"` keyed by the secret (its UTF-8 bytes), in hex."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secrets_: Sequence[str], timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex>[,v1=<hex>]`: one `v1` per secret that signs (two during a rotation)."""
    parts = [f"t={timestamp}", *(f"v1={sign(s, timestamp, body)}" for s in secrets_)]
    return ",".join(parts)


def retry_delay(failures: int, scale: float = 1.0, rng: random.Random | None = None) -> float:
    """Seconds before the next try after `failures` failed ones: exponential (30 s, 1 min, 2 min,
    … capped at 6 h) with jitter over its upper half, so that endpoints that failed together do
    not all come back at the same instant. `scale` shrinks the schedule (tests)."""
    ceiling = min(FIRST_RETRY_S * 2 ** max(failures - 1, 0), MAX_RETRY_S)
    draw = (rng or random).uniform(ceiling / 2, ceiling)
    return draw * scale


def next_try(now: float, failures: int, give_up_at: float, scale: float = 1.0) -> float | None:
    """When to try again, or None when the retry window is over (dead-letter)."""
    at = now + retry_delay(failures, scale)
    return None if at > give_up_at else at


def takes(enabled_events: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint subscribed to `enabled_events` takes an event of `event_type`. Only
    public types ever go out, whatever the subscription."""
    if event_type not in PUBLIC_TYPES:
        return False
    events = set(enabled_events)
    return ALL_EVENTS in events or event_type in events


def address_refused(address: str) -> str | None:
    """Why a webhook may not connect to `address`, or None when it may: only globally routable
    unicast addresses are reachable (no private, loopback, link-local, multicast, reserved or
    shared ranges), so that an endpoint URL cannot reach the gateway's own network (SSRF)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address written as IPv6 (::ffff:10.0.0.1, 64:ff9b::10.0.0.1) is judged as IPv4.
        mapped = ip.ipv4_mapped or ip.sixtofour
        if ip in _NAT64:
            mapped = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if mapped is not None:
            ip = mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved address"
    return None


def host_name_refused(host: str) -> str | None:
    """Names that always mean this machine (RFC 6761), refused before any look-up."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return "a loopback name"
    return None
