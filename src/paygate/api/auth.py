"""Who is calling: `Authorization: Bearer <key>` → a principal (DESIGN.md section 4, Auth).

The admin key (from settings) runs platform operations; merchant keys see only their merchant's
objects, in the mode (test or live) of the key, within their scopes (paygate.edge.scopes). Each
authenticated request is also where the edge resolves its API version and checks its rate limits
(paygate.edge): one key look-up (cached) and one limiter round trip at most.
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import Request

from paygate.edge import keys, ratelimit, scopes
from paygate.edge.principal import Principal
from paygate.edge.state import edge_of, exchange
from paygate.errors import AuthenticationFailed, PermissionDenied
from paygate.runtime import Runtime

__all__ = ["Principal", "admin", "authenticate", "card_intake", "key_manager", "merchant"]


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed(
            "No valid API key provided: send `Authorization: Bearer <key>`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def authenticate(request: Request) -> Principal:
    rt = runtime(request)
    edge = edge_of(request)
    client = request.client.host if request.client else "unknown"
    edge.auth_failures.check_blocked(client, edge.clock())
    try:
        principal = await keys.resolve(rt, edge.keys, _bearer(request))
    except AuthenticationFailed:
        await edge.auth_failures.failed(edge.limiter, client, edge.clock())
        raise
    xch = exchange(request)
    version = xch.requested_version or principal.api_version or rt.settings.default_api_version
    principal = replace(principal, api_version=version)
    xch.api_version = version
    decision = await ratelimit.check(
        edge.limiter, edge.tiers, principal, request.method, request.url.path, edge.clock
    )
    if decision is not None:
        xch.limits = decision.states
    ratelimit.enforce(decision)
    return principal


async def merchant(request: Request) -> Principal:
    """A merchant's secret key, or a restricted key within its permissions; publishable keys
    only tokenize cards."""
    principal = await authenticate(request)
    if principal.kind == "admin":
        raise PermissionDenied("This endpoint takes a merchant's secret key, not the admin key.")
    if principal.kind == "publishable":
        raise PermissionDenied("A publishable key cannot call this endpoint; use a secret key.")
    scopes.require(principal, request.method, request.url.path)
    return principal


async def admin(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal.kind != "admin":
        raise PermissionDenied("This endpoint needs the admin key.")
    return principal


async def key_manager(request: Request) -> Principal:
    """Managing keys and reading the audit log: the admin key or a merchant's secret key."""
    principal = await authenticate(request)
    if principal.kind not in ("admin", "secret"):
        raise PermissionDenied("This endpoint needs a secret key or the admin key.")
    return principal


async def card_intake(request: Request) -> Principal:
    """Card tokenization: a publishable key (from a browser) or a secret key."""
    principal = await authenticate(request)
    if principal.kind not in ("publishable", "secret"):
        raise PermissionDenied("This endpoint takes a publishable or secret key.")
    return principal
