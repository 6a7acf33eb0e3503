"""Who is calling: `Authorization: Bearer <key>` → a principal (DESIGN.md section 4, Auth).

The admin key (from settings) runs platform operations; merchant keys see only their merchant's
objects, in the mode (test or live) of the key.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from paygate.errors import AuthenticationFailed, PermissionDenied
from paygate.merchants import keys, repository
from paygate.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # admin | secret | publishable | restricted
    merchant_id: str = ""
    livemode: bool = False
    key_id: str = ""


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
    token = _bearer(request)
    admin_key = rt.settings.admin_key
    if admin_key and hmac.compare_digest(token.encode(), admin_key.encode()):
        return Principal(kind="admin")
    if keys.parse(token) is None:
        raise AuthenticationFailed("Invalid API key provided.")
    async with rt.db.read() as conn:
        row = await repository.find_key(conn, keys.key_hash(rt.hmac_key, token))
    if row is None or row.revoked_at is not None:
        raise AuthenticationFailed("Invalid API key provided.")
    return Principal(
        kind=row.kind, merchant_id=row.merchant_id, livemode=row.livemode, key_id=row.id
    )


async def merchant(request: Request) -> Principal:
    """A merchant's secret key; publishable keys only tokenize cards."""
    principal = await authenticate(request)
    if principal.kind == "admin":
        raise PermissionDenied("This endpoint takes a merchant's secret key, not the admin key.")
    if principal.kind == "publishable":
        raise PermissionDenied("A publishable key cannot call this endpoint; use a secret key.")
    return principal


async def admin(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal.kind != "admin":
        raise PermissionDenied("This endpoint needs the admin key.")
    return principal
