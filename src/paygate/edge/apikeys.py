"""`/v1/api_keys`: a merchant's keys, managed with its secret key (in that key's mode) or the
admin key (any merchant, either mode).

Kinds: `secret` (`sk_`, everything the merchant may do), `restricted` (`rk_`, per-resource
`read`/`write`/`none`, paygate.edge.scopes), `publishable` (`pk_`, card tokenization only). A key
is shown once, when created or rolled; afterwards only its last 4 characters. Rolling makes a new
key with the same rights and lets the old one work until `expires_at` (24 hours unless told);
revoking stops a key at once in this process and within `PAYGATE_KEY_CACHE_TTL_S` everywhere.
Every change is written to the audit log in the same transaction.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth, idempotency, openapi
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import ListOut, Strict, page
from paygate.edge import audit
from paygate.edge.principal import Principal
from paygate.edge.state import edge_of
from paygate.errors import InvalidRequest, NotFound, StateConflict
from paygate.ids import new_id, now_s
from paygate.merchants import keys
from paygate.platform.db.pagination import fetch_page
from paygate.platform.db.tables import api_keys, merchants

router = APIRouter(prefix="/v1/api_keys", tags=["keys"])
Manager = Annotated[Principal, Depends(auth.key_manager)]
MAX_GRACE_S = 7 * 86400
Level = Literal["none", "read", "write"]


class Permissions(Strict):
    """One level per resource of paygate.edge.scopes.RESOURCES; `none` unless given."""

    payments: Level = "none"
    refunds: Level = "none"
    customers: Level = "none"
    webhook_endpoints: Level = "none"
    events: Level = "none"
    balance: Level = "none"
    settlements: Level = "none"
    fraud: Level = "none"


class ApiKeyCreate(Strict):
    type: Literal["secret", "restricted", "publishable"]
    name: Annotated[StrictStr, Field(max_length=100)] | None = None
    permissions: Permissions | None = Field(None, description="Restricted keys only; required.")
    merchant: Annotated[StrictStr, Field(max_length=40)] | None = Field(
        None, description="Admin key only: whose key."
    )
    livemode: StrictBool | None = Field(None, description="Admin key only; default false.")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "type": "restricted",
                    "name": "reporting",
                    "permissions": {"payments": "read", "refunds": "read"},
                }
            ]
        }
    }


class RollIn(Strict):
    expires_in: Annotated[StrictInt, Field(ge=0, le=MAX_GRACE_S)] | None = Field(
        None, description="Seconds the old key keeps working (default 24 hours, at most 7 days)."
    )


class RevokeIn(Strict):
    reason: Literal["compromised", "unused", "other"] | None = None


class ApiKeyOut(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    type: str
    livemode: bool
    merchant: str
    name: str | None
    permissions: dict[str, str] | None
    last4: str
    created: int
    expires_at: int | None
    revoked_at: int | None
    last_used_at: int | None
    secret: str | None = Field(None, description="The key itself: shown once, at creation.")


class ApiKeyList(ListOut):
    data: list[ApiKeyOut]


def render(row: Any, secret: str | None = None) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "object": "api_key",
        "type": row["kind"],
        "livemode": row["livemode"],
        "merchant": row["merchant_id"],
        "name": row["name"],
        "permissions": row["permissions"],
        "last4": row["last4"],
        "created": row["created"],
        "expires_at": row["expires_at"],
        "revoked_at": row["revoked_at"],
        "last_used_at": row["last_used_at"],
    }
    if secret is not None:
        out["secret"] = secret
    return out


async def insert_key(
    conn: AsyncConnection,
    hmac_key: bytes,
    *,
    merchant_id: str,
    kind: str,
    livemode: bool,
    name: str | None = None,
    permissions: dict[str, str] | None = None,
) -> tuple[dict[str, Any], str]:
    """A new key's row (stored as a hash) and the key itself, to be shown once."""
    secret = keys.generate(kind, livemode)
    row = {
        "id": new_id("key"),
        "merchant_id": merchant_id,
        "kind": kind,
        "livemode": livemode,
        "key_hash": keys.key_hash(hmac_key, secret),
        "last4": secret[-4:],
        "created": now_s(),
        "revoked_at": None,
        "name": name,
        "permissions": permissions,
        "expires_at": None,
        "last_used_at": None,
    }
    await conn.execute(api_keys.insert(), row)
    return row, secret


async def _owned(conn: AsyncConnection, principal: Principal, key_id: str) -> sa.RowMapping:
    """A key the principal may manage: the admin's any key, a merchant's its own in its mode."""
    query = sa.select(api_keys).where(api_keys.c.id == key_id)
    if principal.kind != "admin":
        query = query.where(
            api_keys.c.merchant_id == principal.merchant_id,
            api_keys.c.livemode == principal.livemode,
        )
    row = (await conn.execute(query.with_for_update())).mappings().one_or_none()
    if row is None:
        raise NotFound("No such API key.", param="id")
    return row


def _target(principal: Principal, body: ApiKeyCreate) -> tuple[str, bool]:
    """(merchant, livemode) of a key to create; checked before the unit of work starts."""
    if principal.kind != "admin":
        for name in ("merchant", "livemode"):
            if getattr(body, name) is not None:
                raise InvalidRequest(
                    f"`{name}` is for the admin key; a merchant's key manages its own keys.",
                    param=name,
                )
        return principal.merchant_id, principal.livemode
    if body.merchant is None:
        raise InvalidRequest("The admin key names the key's `merchant`.", param="merchant")
    return body.merchant, bool(body.livemode)


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={201: {"model": ApiKeyOut, "description": "The key, with its `secret` once."}},
    summary="Create an API key",
    openapi_extra=openapi.idempotency_key(required=False),
)
async def create_key(body: ApiKeyCreate, request: Request, principal: Manager) -> Response:
    if (body.type == "restricted") != (body.permissions is not None):
        raise InvalidRequest(
            "`permissions` are required for restricted keys, and only for them.",
            param="permissions",
        )
    merchant_id, livemode = _target(principal, body)
    rt = auth.runtime(request)
    permissions = body.permissions.model_dump() if body.permissions else None

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        found = await conn.scalar(sa.select(merchants.c.id).where(merchants.c.id == merchant_id))
        if found is None:
            raise NotFound("No such merchant.", param="merchant")
        row, secret = await insert_key(
            conn,
            rt.hmac_key,
            merchant_id=merchant_id,
            kind=body.type,
            livemode=livemode,
            name=body.name,
            permissions=permissions,
        )
        details = {"type": body.type, "livemode": livemode, "permissions": permissions}
        await audit.record(
            conn,
            principal,
            "api_key.created",
            merchant_id=merchant_id,
            object_id=row["id"],
            details=details,
        )
        return 201, render(row, secret)

    return await idempotency.execute(request, principal, work)


@router.get(
    "",
    response_model=None,
    responses={200: {"model": ApiKeyList}},
    summary="List API keys, newest first (never the keys themselves)",
)
async def list_keys(
    request: Request,
    principal: Manager,
    p: Annotated[Page, Depends(page_params)],
    merchant: str | None = Query(None, max_length=40, description="Admin key only."),
) -> Response:
    query = sa.select(api_keys)
    if principal.kind != "admin":
        query = query.where(
            api_keys.c.merchant_id == principal.merchant_id,
            api_keys.c.livemode == principal.livemode,
        )
    elif merchant:
        query = query.where(api_keys.c.merchant_id == merchant)
    async with auth.runtime(request).db.read() as conn:
        rows = await fetch_page(conn, query, api_keys.c.id, p)
    return json_response(page([render(r) for r in rows], p.limit, backwards=bool(p.ending_before)))


@router.get(
    "/{key_id}",
    response_model=None,
    responses={200: {"model": ApiKeyOut}},
    summary="Retrieve an API key (never the key itself)",
)
async def get_key(key_id: str, request: Request, principal: Manager) -> Response:
    async with auth.runtime(request).db.read() as conn:
        query = sa.select(api_keys).where(api_keys.c.id == key_id)
        row = (await conn.execute(query)).mappings().one_or_none()
    if row is None or (
        principal.kind != "admin"
        and (row["merchant_id"], row["livemode"]) != (principal.merchant_id, principal.livemode)
    ):
        raise NotFound("No such API key.", param="id")
    return json_response(render(row))


ROLL_EXAMPLES = {
    "roll": {"summary": "The old key works 24 more hours", "value": {}},
    "leaked": {"summary": "The old key stops at once", "value": {"expires_in": 0}},
}


@router.post(
    "/{key_id}/roll",
    status_code=201,
    response_model=None,
    responses={201: {"model": ApiKeyOut, "description": "The new key, with its `secret` once."}},
    summary="Replace an API key; the old one keeps working for a grace period",
    openapi_extra=openapi.idempotency_key(required=False),
)
async def roll_key(
    key_id: str,
    request: Request,
    principal: Manager,
    body: Annotated[RollIn | None, Body(openapi_examples=ROLL_EXAMPLES)] = None,
) -> Response:
    rt = auth.runtime(request)
    grace = rt.settings.api_key_roll_grace_s
    if body is not None and body.expires_in is not None:
        grace = body.expires_in

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        old = await _owned(conn, principal, key_id)
        if old["revoked_at"] is not None:
            raise StateConflict("A revoked key cannot be rolled; create a new key.")
        expires_at = now_s() + grace
        if old["expires_at"] is not None:
            expires_at = min(expires_at, old["expires_at"])
        await conn.execute(
            api_keys.update().where(api_keys.c.id == key_id).values(expires_at=expires_at)
        )
        row, secret = await insert_key(
            conn,
            rt.hmac_key,
            merchant_id=old["merchant_id"],
            kind=old["kind"],
            livemode=old["livemode"],
            name=old["name"],
            permissions=old["permissions"],
        )
        await audit.record(
            conn,
            principal,
            "api_key.rolled",
            merchant_id=old["merchant_id"],
            object_id=key_id,
            details={"new_key": row["id"], "expires_at": expires_at},
        )
        return 201, render(row, secret)

    try:
        return await idempotency.execute(request, principal, work)
    finally:
        edge_of(request).keys.forget(key_id)


REVOKE_EXAMPLES = {
    "revoke": {"summary": "Revoke a key", "value": {}},
    "compromised": {"summary": "Revoke a leaked key", "value": {"reason": "compromised"}},
}


@router.post(
    "/{key_id}/revoke",
    response_model=None,
    responses={200: {"model": ApiKeyOut, "description": "The key, revoked."}},
    summary="Revoke an API key at once",
    openapi_extra=openapi.idempotency_key(required=False),
)
async def revoke_key(
    key_id: str,
    request: Request,
    principal: Manager,
    body: Annotated[RevokeIn | None, Body(openapi_examples=REVOKE_EXAMPLES)] = None,
) -> Response:
    reason = body.reason if body else None

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        row = await _owned(conn, principal, key_id)
        if row["revoked_at"] is None:
            await conn.execute(
                api_keys.update().where(api_keys.c.id == key_id).values(revoked_at=now_s())
            )
            row = (
                (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)))
                .mappings()
                .one()
            )
            await audit.record(
                conn,
                principal,
                "api_key.revoked",
                merchant_id=row["merchant_id"],
                object_id=key_id,
                details={"reason": reason},
            )
        return 200, render(row)

    try:
        return await idempotency.execute(request, principal, work)
    finally:
        edge_of(request).keys.forget(key_id)
