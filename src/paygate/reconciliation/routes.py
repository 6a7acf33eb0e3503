"""`/v1/reconciliation` (admin): run a UTC day against the bank's report, read a day's result."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, StrictStr
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth, idempotency, openapi
from paygate.api.responses import json_response
from paygate.api.schemas import Strict
from paygate.reconciliation import service
from paygate.reconciliation.fetch import HttpReportFetcher

router = APIRouter(prefix="/v1/reconciliation", tags=["reconciliation"])
Admin = Annotated[auth.Principal, Depends(auth.admin)]


class RunCreate(Strict):
    date: Annotated[StrictStr, Field(max_length=10)] = Field(
        description="The UTC day to reconcile, YYYY-MM-DD (today at the latest)."
    )

    model_config = {"json_schema_extra": {"examples": [{"date": "2026-11-24"}]}}


class TotalOut(BaseModel):
    currency: str
    ours: int = Field(description="Net minor units the ledger moved through the bank.")
    bank: int = Field(description="Net minor units the bank's report moved.")
    difference: int = Field(description="bank - ours.")


class BreakOut(BaseModel):
    id: str
    object: str = "reconciliation_break"
    kind: str = Field(
        examples=["missing_at_bank"],
        description="missing_at_bank, missing_in_ledger, amount_mismatch, currency_mismatch, "
        "duplicate or timing.",
    )
    reference: str = Field(examples=["pay_01JD4Q6Z8V3N2M5K7H9G1F0E2D:sale"])
    payment: str | None
    refund: str | None
    operation: str
    our_amount: int | None
    our_currency: str | None
    bank_amount: int | None
    bank_currency: str | None
    details: dict[str, Any]


class ReconciliationOut(BaseModel):
    id: str
    object: str = "reconciliation"
    date: str
    status: str = Field(examples=["balanced"], description="balanced or breaks.")
    matched: int
    bank_rows: int
    ledger_rows: int
    totals: list[TotalOut]
    breaks_by_kind: dict[str, int]
    breaks: list[BreakOut]
    created: int


@router.post(
    "/run",
    response_model=None,
    responses={200: {"model": ReconciliationOut}},
    summary="Reconcile a day's ledger against the bank's settlement report",
    openapi_extra=openapi.idempotency_key(required=False),
)
async def run_reconciliation(body: RunCreate, request: Request, principal: Admin) -> Response:
    rt = auth.runtime(request)
    day = service.parse_day(body.date)
    fetch = HttpReportFetcher.from_settings(rt.settings)
    try:
        bank = await service.fetch_bank(day, fetch)
    finally:
        await fetch.aclose()

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 200, await service.reconcile_in(conn, day, bank)

    return await idempotency.execute(request, principal, work)


@router.get(
    "/{date}",
    response_model=None,
    responses={200: {"model": ReconciliationOut}},
    summary="A day's reconciliation: totals, matched count and every break",
)
async def get_reconciliation(date: str, request: Request, _: Admin) -> Response:
    day = service.parse_day(date)
    async with auth.runtime(request).db.read() as conn:
        return json_response(await service.get(conn, day))
