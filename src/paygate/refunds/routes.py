"""`/v1/refunds`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth, idempotency, prefer
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import ListOut, page
from paygate.edge import reads
from paygate.payments.routes import IDEMPOTENCY_DOC
from paygate.refunds import service
from paygate.refunds.schemas import RefundCreate, RefundOut

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])
Merchant = Annotated[auth.Principal, Depends(auth.merchant)]
REFUND_EXAMPLES = {
    "full": {
        "summary": "Refund all that is refundable",
        "value": {"payment": "pay_01JD4Q6Z8V3N2M5K7H9G1F0E2D"},
    },
    "partial": {
        "summary": "Refund part of a payment",
        "value": {
            "payment": "pay_01JD4Q6Z8V3N2M5K7H9G1F0E2D",
            "amount": 500,
            "reason": "requested_by_customer",
            "metadata": {"ticket": "4711"},
        },
    },
}


class RefundList(ListOut):
    data: list[RefundOut]


@router.post(
    "",
    status_code=202,
    response_model=None,
    responses={
        202: {"model": RefundOut, "description": "Accepted, `pending`."},
        200: {"model": RefundOut, "description": "With `Prefer: wait`: the refund once answered."},
    },
    openapi_extra={"parameters": [{**IDEMPOTENCY_DOC["parameters"][0], "required": True}]},
    summary="Refund a payment, in full or in part",
)
async def create_refund(
    body: Annotated[RefundCreate, Body(openapi_examples=REFUND_EXAMPLES)],
    request: Request,
    m: Merchant,
) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 202, await service.create(conn, m.merchant_id, m.livemode, body)

    rt = auth.runtime(request)
    settle = prefer.refund_waiter(request, rt, m.merchant_id, m.livemode)
    # The refund reserves its amount on the payment: a new version of the payment.
    settle = reads.invalidating(rt, [body.payment], settle)
    return await idempotency.execute(request, m, work, required=True, settle=settle)


@router.get(
    "",
    response_model=None,
    responses={200: {"model": RefundList}},
    summary="List refunds, newest first",
)
async def list_refunds(
    request: Request,
    m: Merchant,
    p: Annotated[Page, Depends(page_params)],
    payment: str | None = Query(None, max_length=40),
) -> Response:
    async with auth.runtime(request).db.read() as conn:
        rows = await service.list_page(conn, m.merchant_id, m.livemode, p, payment=payment)
    return json_response(page(rows, p.limit, backwards=bool(p.ending_before)))


@router.get(
    "/{refund_id}",
    response_model=None,
    responses={
        200: {
            "model": RefundOut,
            "description": "The refund, with an `ETag`; with `If-None-Match` naming the current "
            "ETag, `304 Not Modified` and no body.",
        },
    },
    summary="Retrieve a refund",
)
async def get_refund(refund_id: str, request: Request, m: Merchant) -> Response:
    async def load(conn: AsyncConnection) -> tuple[dict[str, Any], int]:
        return await service.get_versioned(conn, m.merchant_id, m.livemode, refund_id)

    return await reads.serve(request, auth.runtime(request), m, refund_id, load)
