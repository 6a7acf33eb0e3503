"""`/v1/refunds`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth, idempotency
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import ListOut, page
from paygate.payments.routes import IDEMPOTENCY_DOC
from paygate.refunds import service
from paygate.refunds.schemas import RefundCreate, RefundOut

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])
Merchant = Annotated[auth.Principal, Depends(auth.merchant)]


@router.post(
    "",
    status_code=202,
    response_model=None,
    responses={202: {"model": RefundOut, "description": "Accepted, `pending`."}},
    openapi_extra={"parameters": [{**IDEMPOTENCY_DOC["parameters"][0], "required": True}]},
    summary="Refund a payment, in full or in part",
)
async def create_refund(body: RefundCreate, request: Request, m: Merchant) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 202, await service.create(conn, m.merchant_id, m.livemode, body)

    return await idempotency.execute(request, m, work, required=True)


@router.get("", response_model=None, responses={200: {"model": ListOut}})
async def list_refunds(
    request: Request,
    m: Merchant,
    p: Annotated[Page, Depends(page_params)],
    payment: str | None = Query(None, max_length=40),
) -> Response:
    async with auth.runtime(request).db.read() as conn:
        rows = await service.list_page(conn, m.merchant_id, m.livemode, p, payment=payment)
    return json_response(page(rows, p.limit, backwards=bool(p.ending_before)))


@router.get("/{refund_id}", response_model=None, responses={200: {"model": RefundOut}})
async def get_refund(refund_id: str, request: Request, m: Merchant) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return json_response(await service.get(conn, m.merchant_id, m.livemode, refund_id))
