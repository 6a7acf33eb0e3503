"""Server-side request forgery guard for webhook URLs.

A URL's name is checked where the connection is made: the host is resolved, every address it
resolves to must be public (`models.address_refused`), and the connection goes to one of those
checked addresses, so a name that resolves differently a moment later (DNS rebinding) cannot
reach an internal address. TLS still verifies the certificate and sends SNI for the name, since
the connection pool starts TLS with the URL's host. Redirects are never followed.

The check lives in an httpcore network backend under httpx's pooled transport; the API runs the
same check when an endpoint is created or changed, so a merchant hears of a refused URL at once.
"""

from __future__ import annotations

import asyncio
import socket
import typing
from urllib.parse import urlsplit

import httpcore
import httpx

from paygate.notifications.models import address_refused, host_name_refused

RESOLVE_TIMEOUT_S = 5.0
MAX_URL_LENGTH = 2048


class DestinationRefused(httpcore.ConnectError):
    """The destination is not a public address; the attempt is refused before connecting."""


async def resolve(host: str, port: int, within_s: float = RESOLVE_TIMEOUT_S) -> list[str]:
    """The addresses of `host`, in the resolver's order, without duplicates."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(within_s):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _refusal(host: str, addresses: list[str]) -> str | None:
    for address in addresses:
        reason = address_refused(address)
        if reason is not None:
            return f"the host {host} resolves to {reason}"
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, then connects to a checked address."""

    def __init__(self, allow_private: bool = False) -> None:
        self.allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self.allow_private:
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        named = host_name_refused(host)
        if named is not None:
            raise DestinationRefused(f"the host is {named}")
        try:
            addresses = await resolve(host, port, timeout or RESOLVE_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError("the host name could not be resolved") from exc
        reason = _refusal(host, addresses)
        if reason is not None:
            raise DestinationRefused(reason)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError("no address to connect to")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend interface)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("webhooks are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's pooled transport, every connection of which goes through `GuardedBackend`."""

    def __init__(self, *, allow_private: bool, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        # httpx offers no hook for the network backend: its pool is rebuilt here, the same one
        # with the guard, and httpx keeps mapping the pool's errors to its own.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_private),
        )


def refused_by_guard(exc: BaseException) -> str | None:
    """The guard's reason when `exc` (as httpx raised it) is a refused destination."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DestinationRefused):
            return str(seen)
        seen = seen.__cause__
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
