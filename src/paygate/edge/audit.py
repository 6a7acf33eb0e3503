"""The audit log: an append-only record of admin actions and key changes (who, what, on which
object, when), written in the same transaction as the change itself. The database refuses to
update or delete its rows (triggers from migration 0004). Never a secret: keys appear by id.

`GET /v1/audit_log`: the admin key sees every entry (`merchant=` narrows it); a merchant's secret
key sees its own merchant's.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import ListOut, page
from paygate.edge.principal import Principal
from paygate.ids import new_id, now_s
from paygate.platform.db.pagination import fetch_page
from paygate.platform.db.tables import audit_log

router = APIRouter(prefix="/v1/audit_log", tags=["keys"])


async def record(
    conn: AsyncConnection,
    actor: Principal,
    action: str,
    *,
    merchant_id: str | None,
    object_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append an entry, in the caller's transaction (so it commits with the change or not at
    all). `details` must hold no secret."""
    await conn.execute(
        audit_log.insert(),
        dict(
            id=new_id("aud"),
            merchant_id=merchant_id,
            actor=actor.key_id or actor.kind,
            actor_type=actor.kind,
            action=action,
            object_id=object_id,
            details=details or {},
            created=now_s(),
        ),
    )


def render(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "audit_log_entry",
        "merchant": row["merchant_id"],
        "actor": {"type": row["actor_type"], "id": row["actor"]},
        "action": row["action"],
        "object_id": row["object_id"],
        "details": row["details"],
        "created": row["created"],
    }


class ActorOut(BaseModel):
    type: str
    id: str


class AuditEntryOut(BaseModel):
    id: str
    object: str = "audit_log_entry"
    merchant: str | None
    actor: ActorOut
    action: str
    object_id: str | None
    details: dict[str, Any]
    created: int


class AuditList(ListOut):
    data: list[AuditEntryOut]


Manager = Annotated[Principal, Depends(auth.key_manager)]


@router.get(
    "",
    response_model=None,
    responses={200: {"model": AuditList}},
    summary="List audit log entries, newest first",
)
async def list_audit_log(
    request: Request,
    principal: Manager,
    p: Annotated[Page, Depends(page_params)],
    merchant: str | None = Query(None, max_length=40, description="Admin key only."),
    action: str | None = Query(None, max_length=60),
) -> Response:
    query = sa.select(audit_log)
    if principal.kind != "admin":
        query = query.where(audit_log.c.merchant_id == principal.merchant_id)
    elif merchant:
        query = query.where(audit_log.c.merchant_id == merchant)
    if action:
        query = query.where(audit_log.c.action == action)
    async with auth.runtime(request).db.read() as conn:
        rows = await fetch_page(conn, query, audit_log.c.id, p)
    return json_response(page([render(r) for r in rows], p.limit, backwards=bool(p.ending_before)))
