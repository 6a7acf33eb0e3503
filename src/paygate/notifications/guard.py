"""Server-side request forgery guard for webhook URLs.

A URL's name is checked where the connection is made: aiohttp's connector asks `GuardedResolver`
for the addresses of the host, every address it resolves to must be public
(`models.address_refused`), and the connector connects only to those checked addresses, so a
name that resolves differently a moment later (DNS rebinding) cannot reach an internal address.
TLS still verifies the certificate and sends SNI for the name (each address carries the name it
was resolved from). aiohttp never asks a resolver about an address written in the URL itself:
`literal_refused` checks those before the request. Redirects are never followed.

The API runs the same check when an endpoint is created or changed, so a merchant hears of a
refused URL at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from paygate.notifications.models import address_refused, host_name_refused

RESOLVE_TIMEOUT_S = 5.0
MAX_URL_LENGTH = 2048
_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class DestinationRefused(OSError):
    """The destination is not a public address; the attempt is refused before connecting."""


async def _look_up(host: str, port: int, family: int = socket.AF_UNSPEC) -> list[Any]:
    """`getaddrinfo` of `host` for a TCP connection, within `RESOLVE_TIMEOUT_S`."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT_S):
        return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of `host`, in the resolver's order, without duplicates."""
    return list(dict.fromkeys(str(info[4][0]) for info in await _look_up(host, port)))


def _refusal(host: str, addresses: list[str]) -> str | None:
    for address in addresses:
        reason = address_refused(address)
        if reason is not None:
            return f"the host {host} resolves to {reason}"
    return None


def literal_refused(host: str) -> str | None:
    """Why a URL whose host is an IP address (`[::1]` without its brackets) may not be reached,
    or None (None too for a name: `GuardedResolver` checks those)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    return _refusal(host, [host])


class GuardedResolver(AbstractResolver):
    """Resolves a webhook host for aiohttp's connector and refuses it unless every address is
    public; the connector then connects to the addresses returned, and only to those."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        named = host_name_refused(host)
        if named is not None:
            raise DestinationRefused(f"the host is {named}")
        infos = await _look_up(host, port, family)
        reason = _refusal(host, [str(info[4][0]) for info in infos])
        if reason is not None:
            raise DestinationRefused(reason)
        return [
            ResolveResult(
                hostname=host,
                host=str(address[0]),
                port=int(address[1]),
                family=fam,
                proto=proto,
                flags=_NUMERIC,
            )
            for fam, _type, proto, _name, address in infos
        ]

    async def close(self) -> None:
        """Nothing to release: the look-ups are the event loop's."""


def refused_by_guard(exc: BaseException) -> str | None:
    """The guard's reason when `exc` (as aiohttp raised it) is a refused destination."""
    seen: BaseException | None = exc
    for _ in range(8):  # the error, what it wraps, and their causes
        if seen is None:
            break
        if isinstance(seen, DestinationRefused):
            return str(seen)
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return None


async def url_refused(url: str, *, allow_private: bool) -> str | None:
    """Why an endpoint URL is refused, or None. A name that does not resolve (yet) is accepted:
    the same check runs again on every connection."""
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("https", "http"):
        return "must be an https:// or http:// URL"
    host = parts.hostname
    if not host:
        return "must name a host"
    if parts.fragment:
        return "must not have a fragment"
    if allow_private:
        return None
    named = host_name_refused(host)
    if named is not None:
        return f"must not point at {named}"
    try:
        addresses = await resolve(host, port or (443 if parts.scheme == "https" else 80))
    except (OSError, TimeoutError, UnicodeError):
        return None
    reason = _refusal(host, addresses)
    return f"must not point at a non-public address: {reason}" if reason else None
