"""`/v1/settlements`: the daily run (admin), and settlements and their payout files (merchants
see their own, in their key's mode; the admin key sees all)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, StrictStr
from starlette.responses import Response

from paygate.api import auth
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import ListOut, Strict, page
from paygate.edge import scopes
from paygate.errors import PermissionDenied
from paygate.ids import now_s
from paygate.settlements import repository, service
from paygate.settlements.store import object_store

router = APIRouter(prefix="/v1/settlements", tags=["settlements"])


class XmlResponse(Response):
    media_type = "application/xml"


class SettlementRun(Strict):
    date: StrictStr = Field(
        max_length=10, description="The day to settle, YYYY-MM-DD (UTC).", examples=["2026-11-24"]
    )

    model_config = {"json_schema_extra": {"examples": [{"date": "2026-11-24"}]}}


class SettlementOut(BaseModel):
    id: str
    object: str = "settlement"
    livemode: bool
    merchant: str
    currency: str
    date: str
    cutoff: int = Field(description="Transactions available by this time (Unix s) are covered.")
    gross: int
    refunds: int
    fees: int
    net: int
    status: Literal["paid", "carried_forward", "payout_blocked"]
    payout_amount: int
    payout_file: str | None = Field(description="Where to download the pain.001 file.")
    balance_transactions: list[str]
    created: int


class SettlementList(ListOut):
    data: list[SettlementOut]


class SettlementRunOut(BaseModel):
    object: str = "settlement_run"
    date: str
    settlements: list[SettlementOut]


async def reader(request: Request) -> auth.Principal:
    """The admin key, or a merchant's secret key (restricted keys have no settlements
    permission: deny by default)."""
    principal = await auth.authenticate(request)
    if principal.kind == "admin":
        return principal
    if principal.kind == "publishable":
        raise PermissionDenied("A publishable key cannot call this endpoint; use a secret key.")
    scopes.require(principal, request.method, request.url.path)
    return principal


Admin = Annotated[auth.Principal, Depends(auth.admin)]
Reader = Annotated[auth.Principal, Depends(reader)]


def _scope(p: auth.Principal) -> tuple[str | None, bool | None]:
    return (None, None) if p.kind == "admin" else (p.merchant_id, p.livemode)


@router.post(
    "/run",
    response_model=None,
    responses={200: {"model": SettlementRunOut}},
    summary="Settle a day for every merchant (idempotent: a day is settled once)",
    openapi_extra={
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
                "description": "Accepted, not needed: a day is settled once, so a retry answers "
                "the day's settlements again.",
            }
        ]
    },
)
async def run(body: SettlementRun, request: Request, _: Admin) -> Response:
    rt = auth.runtime(request)
    now = now_s()
    day = service.parse_date(body.date, now)
    made = await service.run_day(rt, day, store=object_store(rt.settings), now=now)
    return json_response({"object": "settlement_run", "date": day.isoformat(), "settlements": made})


@router.get(
    "",
    response_model=None,
    responses={200: {"model": SettlementList}},
    summary="List settlements, newest first",
)
async def list_settlements(
    request: Request,
    principal: Reader,
    p: Annotated[Page, Depends(page_params)],
    date: str | None = Query(None, max_length=10, description="Only this day's (YYYY-MM-DD)."),
    status: Literal["paid", "carried_forward", "payout_blocked"] | None = Query(None),
    merchant: str | None = Query(None, max_length=40, description="Admin only: one merchant's."),
) -> Response:
    merchant_id, livemode = _scope(principal)
    if merchant_id is None:
        merchant_id = merchant
    async with auth.runtime(request).db.read() as conn:
        rows = await repository.page(
            conn, p, merchant_id=merchant_id, livemode=livemode, date=date, status=status
        )
        data = [await service.render_row(conn, r) for r in rows]
    return json_response(page(data, p.limit, backwards=bool(p.ending_before)))


@router.get(
    "/{settlement_id}",
    response_model=None,
    responses={200: {"model": SettlementOut}},
    summary="Retrieve a settlement",
)
async def get_settlement(settlement_id: str, request: Request, principal: Reader) -> Response:
    merchant_id, livemode = _scope(principal)
    async with auth.runtime(request).db.read() as conn:
        row = await service.get(conn, settlement_id, merchant_id=merchant_id, livemode=livemode)
        return json_response(await service.render_row(conn, row))


@router.get(
    "/{settlement_id}/payout_file",
    response_model=None,
    response_class=XmlResponse,
    responses={
        200: {
            "content": {"application/xml": {"schema": {"type": "string"}}},
            "description": "An ISO 20022 pain.001.001.03 document.",
        }
    },
    summary="Download a settlement's payout file (ISO 20022 pain.001.001.03)",
)
async def get_payout_file(settlement_id: str, request: Request, principal: Reader) -> Response:
    rt = auth.runtime(request)
    merchant_id, livemode = _scope(principal)
    async with rt.db.read() as conn:
        row = await service.get(conn, settlement_id, merchant_id=merchant_id, livemode=livemode)
    data = await service.payout_file(object_store(rt.settings), row)
    return XmlResponse(
        data,
        headers={"Content-Disposition": f'attachment; filename="{settlement_id}.xml"'},
    )
