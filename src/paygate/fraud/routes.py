"""Fraud HTTP endpoints: settings (`/v1/fraud/settings`), reports (`/v1/fraud_reports`) and the
review queue (`/v1/reviews`, `POST /v1/payments/{id}/review`). Thin: the work is in
`policy`, `reports` and `reviews`, the unit of work in `paygate.api.idempotency`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, StrictInt, StrictStr
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth, idempotency, prefer
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import ListOut, Strict, page
from paygate.edge import reads
from paygate.errors import InvalidRequest, NotFound
from paygate.fraud import policy, reports, reviews
from paygate.fraud.decide import FailMode
from paygate.payments.routes import IDEMPOTENCY_DOC
from paygate.payments.schemas import PaymentOut
from paygate.platform.db.tables import merchants

router = APIRouter(tags=["fraud"])
Merchant = Annotated[auth.Principal, Depends(auth.merchant)]
Manager = Annotated[auth.Principal, Depends(auth.key_manager)]
Threshold = Annotated[StrictInt, Field(ge=1, le=100)]
MerchantId = Annotated[StrictStr, Field(max_length=40)]


class SettingsIn(Strict):
    fail_mode: FailMode | None = Field(
        None, description="When scoring fails: `open` approves, `closed` sends to review."
    )
    review_threshold: Threshold | None = Field(None, description="Review from this score.")
    decline_threshold: Threshold | None = Field(None, description="Decline from this score.")
    merchant: MerchantId | None = Field(None, description="With the admin key: whose settings.")

    model_config = {
        "json_schema_extra": {
            "examples": [{"fail_mode": "closed"}, {"review_threshold": 60, "decline_threshold": 80}]
        }
    }


class SettingsOut(BaseModel):
    object: Literal["fraud_settings"] = "fraud_settings"
    merchant: str
    fail_mode: FailMode
    review_threshold: int
    decline_threshold: int
    updated: int | None


class ReportIn(Strict):
    payment: MerchantId = Field(examples=["pay_01JD4Q6Z8V3N2M5K7H9G1F0E2D"])
    type: Literal["chargeback", "card_network_notice"]
    reason: Annotated[StrictStr, Field(max_length=500)] | None = None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "payment": "pay_01JD4Q6Z8V3N2M5K7H9G1F0E2D",
                    "type": "chargeback",
                    "reason": "10.4 other fraud, card absent",
                }
            ]
        }
    }


class ReportOut(BaseModel):
    id: str = Field(examples=["frp_01JD4Q6Z8V3N2M5K7H9G1F0E2D"])
    object: Literal["fraud_report"] = "fraud_report"
    livemode: bool
    payment: str
    type: str
    reason: str | None
    created: int


class ReportList(ListOut):
    data: list[ReportOut]


class ReviewIn(Strict):
    decision: Literal["approve", "reject"]

    model_config = {"json_schema_extra": {"examples": [{"decision": "approve"}]}}


class ReviewOut(BaseModel):
    object: Literal["review"] = "review"
    payment: str
    livemode: bool
    amount: int
    currency: str
    score: int | None
    level: str | None
    reasons: list[str]
    opened_at: int


class ReviewList(ListOut):
    data: list[ReviewOut]


async def _merchant_of(conn: AsyncConnection, p: auth.Principal, given: str | None) -> str:
    """The merchant a settings call is about: the key's own, or (admin) the one named."""
    if p.kind != "admin":
        if given is not None and given != p.merchant_id:
            raise NotFound("No such merchant.", param="merchant")
        return p.merchant_id
    if given is None:
        raise InvalidRequest("The admin key must name the merchant.", param="merchant")
    found = await conn.scalar(sa.select(merchants.c.id).where(merchants.c.id == given))
    if found is None:
        raise NotFound("No such merchant.", param="merchant")
    return given


@router.get(
    "/v1/fraud/settings",
    response_model=None,
    responses={200: {"model": SettingsOut, "description": "The settings."}},
    summary="A merchant's fraud settings",
)
async def get_settings(
    request: Request, p: Manager, merchant: str | None = Query(None, max_length=40)
) -> Response:
    async with auth.runtime(request).db.read() as conn:
        merchant_id = await _merchant_of(conn, p, merchant)
        settings = await policy.get(conn, merchant_id)
    return json_response(policy.render(merchant_id, settings))


@router.post(
    "/v1/fraud/settings",
    response_model=None,
    responses={200: {"model": SettingsOut, "description": "The settings as changed."}},
    summary="Change a merchant's fraud settings: fail mode and score thresholds",
    openapi_extra=IDEMPOTENCY_DOC,
)
async def update_settings(body: SettingsIn, request: Request, p: Manager) -> Response:
    changes = body.model_dump(exclude_unset=True, exclude={"merchant"})
    changes = {k: v for k, v in changes.items() if v is not None}

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        merchant_id = await _merchant_of(conn, p, body.merchant)
        return 200, await policy.update(conn, merchant_id, changes)

    return await idempotency.execute(request, p, work)


@router.post(
    "/v1/fraud_reports",
    response_model=None,
    responses={200: {"model": ReportOut, "description": "The report, appended."}},
    summary="Report a payment as fraud (a chargeback or a card network's notice)",
    openapi_extra=IDEMPOTENCY_DOC,
)
async def create_report(body: ReportIn, request: Request, m: Merchant) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        report = await reports.create(
            conn,
            m.merchant_id,
            m.livemode,
            payment_id=body.payment,
            type=body.type,
            reason=body.reason,
        )
        return 200, report

    return await idempotency.execute(request, m, work)


@router.get(
    "/v1/fraud_reports",
    response_model=None,
    responses={200: {"model": ReportList}},
    summary="List fraud reports, newest first",
)
async def list_reports(
    request: Request,
    m: Merchant,
    p: Annotated[Page, Depends(page_params)],
    payment: str | None = Query(None, max_length=40),
) -> Response:
    async with auth.runtime(request).db.read() as conn:
        rows = await reports.list_page(conn, m.merchant_id, m.livemode, p, payment=payment)
    return json_response(page(rows, p.limit, backwards=bool(p.ending_before)))


@router.get(
    "/v1/reviews",
    response_model=None,
    responses={200: {"model": ReviewList}},
    summary="List open reviews, newest first",
)
async def list_reviews(
    request: Request, m: Merchant, p: Annotated[Page, Depends(page_params)]
) -> Response:
    async with auth.runtime(request).db.read() as conn:
        rows = await reviews.list_open(conn, m.merchant_id, m.livemode, p)
    return json_response(page(rows, p.limit, backwards=bool(p.ending_before)))


@router.post(
    "/v1/payments/{payment_id}/review",
    response_model=None,
    responses={
        200: {
            "model": PaymentOut,
            "description": "Decided (`requires_capture`), or as it rests after `Prefer: wait`.",
        },
        202: {"model": PaymentOut, "description": "Accepted: the capture or void is under way."},
    },
    summary="Decide a review: approve (capture) or reject (void, then failed)",
    openapi_extra=IDEMPOTENCY_DOC,
)
async def decide_review(payment_id: str, body: ReviewIn, request: Request, m: Merchant) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return await reviews.decide(conn, m.merchant_id, m.livemode, payment_id, body.decision)

    rt = auth.runtime(request)
    settle = prefer.payment_waiter(request, rt, m.merchant_id, m.livemode)
    settle = reads.invalidating(rt, [payment_id], settle)
    return await idempotency.execute(request, m, work, settle=settle)
