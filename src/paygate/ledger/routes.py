"""`/v1/balance`, `/v1/balance_transactions` (merchants) and `/v1/ledger/trial_balance` (admin)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from paygate.api import auth
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import page
from paygate.ledger import service
from paygate.ledger.tables import balance_transactions
from paygate.platform.db.pagination import fetch_page

router = APIRouter(tags=["balance"])


class Money(BaseModel):
    amount: int
    currency: str


class BalanceOut(BaseModel):
    object: str = "balance"
    available: list[Money]
    pending: list[Money]
    reserved: list[Money]


class BalanceTransactionOut(BaseModel):
    id: str
    object: str = "balance_transaction"
    livemode: bool
    type: str
    source: str
    amount: int
    fee: int
    net: int
    currency: str
    status: str
    available_on: int
    settlement: str | None
    created: int


class BalanceTransactionList(BaseModel):
    object: str = "list"
    data: list[BalanceTransactionOut]
    has_more: bool


class AccountBalance(BaseModel):
    account: str
    currency: str
    balance: int


class TrialBalanceOut(BaseModel):
    object: str = "trial_balance"
    data: list[AccountBalance]
    totals: dict[str, int]


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


@router.get(
    "/v1/balance",
    summary="What the gateway holds for you, by state and currency",
    response_model=None,
    responses={200: {"model": BalanceOut}},
)
async def get_balance(request: Request, m: Merchant) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return json_response(await service.balance(conn, m.merchant_id, m.livemode))


@router.get(
    "/v1/balance_transactions",
    summary="Every charge, refund and payout, newest first",
    response_model=None,
    responses={200: {"model": BalanceTransactionList}},
)
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


@router.get(
    "/v1/ledger/trial_balance",
    summary="Every account's balance; totals are zero",
    response_model=None,
    responses={200: {"model": TrialBalanceOut}},
)
async def trial_balance(request: Request, _: Admin) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return json_response(await service.trial_balance(conn))
