"""`/v1/payments`: thin handlers; the work is in `service`, the unit of work in `idempotency`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth, idempotency, prefer
from paygate.api.params import Page, created_params, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import ListOut, page
from paygate.edge import reads
from paygate.payments import repository, service
from paygate.payments.models import Status
from paygate.payments.schemas import (
    CancelIn,
    CaptureIn,
    PaymentCreate,
    PaymentOut,
    TransactionLogEntryOut,
    render,
)

router = APIRouter(prefix="/v1/payments", tags=["payments"])
Merchant = Annotated[auth.Principal, Depends(auth.merchant)]
IDEMPOTENCY_DOC = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "schema": {"type": "string", "maxLength": 255},
            "description": "A unique value per operation; a retry with the same key and request "
            "replays the first response.",
        }
    ]
}
CAPTURE_EXAMPLES = {
    "full": {"summary": "Capture all that is capturable", "value": {}},
    "partial": {"summary": "Capture part; the rest is released", "value": {"amount": 1000}},
}
CANCEL_EXAMPLES = {
    "reason": {"summary": "Cancel with a reason", "value": {"cancellation_reason": "abandoned"}},
}
SETTLED = "With `Prefer: wait`: the payment once it rests, or when the wait ends."


class PaymentList(ListOut):
    data: list[PaymentOut]


class TransactionLog(ListOut):
    data: list[TransactionLogEntryOut]


@router.post(
    "",
    status_code=202,
    response_model=None,
    responses={
        202: {"model": PaymentOut, "description": "Accepted, `pending`."},
        200: {"model": PaymentOut, "description": SETTLED},
    },
    summary="Create a payment",
    openapi_extra={"parameters": [{**IDEMPOTENCY_DOC["parameters"][0], "required": True}]},
)
async def create_payment(body: PaymentCreate, request: Request, m: Merchant) -> Response:
    rt = auth.runtime(request)
    cvc_ttl = int(rt.settings.auth_deadline_s) + 300

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        payment = await service.create(
            conn,
            rt.keyring,
            merchant_id=m.merchant_id,
            livemode=m.livemode,
            request=body,
            cvc_ttl_s=cvc_ttl,
        )
        return 202, payment

    settle = prefer.payment_waiter(request, rt, m.merchant_id, m.livemode)
    return await idempotency.execute(request, m, work, required=True, settle=settle, deferring=True)


@router.get(
    "",
    response_model=None,
    responses={200: {"model": PaymentList}},
    summary="List payments, newest first",
)
async def list_payments(
    request: Request,
    m: Merchant,
    p: Annotated[Page, Depends(page_params)],
    created: Annotated[dict[str, int], Depends(created_params)],
    status: Status | None = Query(None),
    customer: str | None = Query(None, max_length=40),
) -> Response:
    async with auth.runtime(request).db.read() as conn:
        rows = await repository.list_page(
            conn, m.merchant_id, m.livemode, p, status=status, customer=customer, created=created
        )
    return json_response(page([render(r) for r in rows], p.limit, backwards=bool(p.ending_before)))


@router.get(
    "/{payment_id}",
    response_model=None,
    responses={
        200: {
            "model": PaymentOut,
            "description": "The payment, with an `ETag`; with `If-None-Match` naming the current "
            "ETag, `304 Not Modified` and no body.",
        },
    },
    summary="Retrieve a payment",
)
async def get_payment(payment_id: str, request: Request, m: Merchant) -> Response:
    async def load(conn: AsyncConnection) -> tuple[dict[str, Any], int]:
        return await service.get_versioned(conn, m.merchant_id, m.livemode, payment_id)

    return await reads.serve(request, auth.runtime(request), m, payment_id, load)


@router.post(
    "/{payment_id}/capture",
    response_model=None,
    responses={
        202: {"model": PaymentOut, "description": "Accepted: the bank capture is under way."},
        200: {"model": PaymentOut, "description": SETTLED},
    },
    summary="Capture an authorized payment, in full or in part",
    openapi_extra=IDEMPOTENCY_DOC,
)
async def capture_payment(
    payment_id: str,
    request: Request,
    m: Merchant,
    body: Annotated[CaptureIn | None, Body(openapi_examples=CAPTURE_EXAMPLES)] = None,
) -> Response:
    amount = body.amount if body else None

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 202, await service.capture(conn, m.merchant_id, m.livemode, payment_id, amount)

    settle = prefer.payment_waiter(request, auth.runtime(request), m.merchant_id, m.livemode)
    return await idempotency.execute(request, m, work, settle=settle)


@router.post(
    "/{payment_id}/cancel",
    response_model=None,
    responses={
        200: {"model": PaymentOut, "description": "Canceled, or as it rests after `Prefer: wait`."},
        202: {"model": PaymentOut, "description": "Accepted: the authorization is being voided."},
    },
    summary="Cancel a payment that is not captured",
    openapi_extra=IDEMPOTENCY_DOC,
)
async def cancel_payment(
    payment_id: str,
    request: Request,
    m: Merchant,
    body: Annotated[CancelIn | None, Body(openapi_examples=CANCEL_EXAMPLES)] = None,
) -> Response:
    reason = body.cancellation_reason if body else None

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return await service.cancel(conn, m.merchant_id, m.livemode, payment_id, reason)

    rt = auth.runtime(request)
    settle = prefer.payment_waiter(request, rt, m.merchant_id, m.livemode)
    settle = reads.invalidating(rt, [payment_id], settle)
    return await idempotency.execute(request, m, work, settle=settle)


@router.get(
    "/{payment_id}/transaction_log",
    response_model=None,
    responses={200: {"model": TransactionLog}},
    summary="List every state change and bank attempt of a payment, oldest first",
)
async def transaction_log(payment_id: str, request: Request, m: Merchant) -> Response:
    async with auth.runtime(request).db.read() as conn:
        entries = await service.transaction_log(conn, m.merchant_id, m.livemode, payment_id)
    return json_response({"object": "list", "data": entries, "has_more": False})
