"""`/v1/balance`, `/v1/balance_transactions` (merchants) and `/v1/ledger/trial_balance` (admin)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from paygate.api import auth
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import page
from paygate.ledger import service
from paygate.ledger.tables import balance_transactions
from paygate.platform.db.pagination import fetch_page

router = APIRouter(tags=["balance"])
Merchant = Annotated[auth.Principal, Depends(auth.merchant)]
Admin = Annotated[auth.Principal, Depends(auth.admin)]


def render(b: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": b["id"],
        "object": "balance_transaction",
        "livemode": b["livemode"],
        "type": b["type"],
        "source": b["source"],
        "amount": b["amount"],
        "fee": b["fee"],
        "net": b["net"],
        "currency": b["currency"],
        "status": b["status"],
        "available_on": b["available_on"],
        "settlement": b["settlement_id"],
        "created": b["created"],
    }


@router.get("/v1/balance", summary="What the gateway holds for you, by state and currency")
async def get_balance(request: Request, m: Merchant) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return json_response(await service.balance(conn, m.merchant_id))


@router.get("/v1/balance_transactions", summary="Every charge, refund and payout, newest first")
async def list_balance_transactions(
    request: Request,
    m: Merchant,
    p: Annotated[Page, Depends(page_params)],
    type: str | None = Query(None, max_length=20),
    source: str | None = Query(None, max_length=40),
) -> Response:
    b = balance_transactions.c
    query = sa.select(balance_transactions).where(
        b.merchant_id == m.merchant_id, b.livemode == m.livemode
    )
    if type:
        query = query.where(b.type == type)
    if source:
        query = query.where(b.source == source)
    async with auth.runtime(request).db.read() as conn:
        rows = await fetch_page(conn, query, b.id, p)
    return json_response(page([render(r) for r in rows], p.limit, backwards=bool(p.ending_before)))


@router.get("/v1/ledger/trial_balance", summary="Every account's balance; totals are zero")
async def trial_balance(request: Request, _: Admin) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return json_response(await service.trial_balance(conn))
