"""`/v1/customers`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, StrictStr
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth, idempotency, openapi
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import ListOut, Strict, page
from paygate.customers import service

router = APIRouter(prefix="/v1/customers", tags=["customers"])
Merchant = Annotated[auth.Principal, Depends(auth.merchant)]


class CustomerCreate(Strict):
    email: (
        Annotated[StrictStr, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None
    ) = None
    name: Annotated[StrictStr, Field(max_length=200)] | None = None

    model_config = {
        "json_schema_extra": {"examples": [{"email": "jenny@example.com", "name": "Jenny Rosen"}]}
    }


class CustomerOut(BaseModel):
    id: str
    object: str = "customer"
    livemode: bool
    email: str | None
    name: str | None
    created: int


class CustomerList(ListOut):
    data: list[CustomerOut]


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={201: {"model": CustomerOut}},
    summary="Create a customer",
    openapi_extra=openapi.idempotency_key(required=False),
)
async def create_customer(body: CustomerCreate, request: Request, m: Merchant) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 201, await service.create(
            conn, m.merchant_id, m.livemode, email=body.email, name=body.name
        )

    return await idempotency.execute(request, m, work)


@router.get(
    "/{customer_id}",
    response_model=None,
    responses={200: {"model": CustomerOut}},
    summary="Retrieve a customer",
)
async def get_customer(customer_id: str, request: Request, m: Merchant) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return json_response(await service.get(conn, m.merchant_id, m.livemode, customer_id))


@router.get(
    "",
    response_model=None,
    responses={200: {"model": CustomerList}},
    summary="List customers, newest first",
)
async def list_customers(
    request: Request,
    m: Merchant,
    p: Annotated[Page, Depends(page_params)],
    email: str | None = Query(None, max_length=320),
) -> Response:
    async with auth.runtime(request).db.read() as conn:
        rows = await service.list_page(conn, m.merchant_id, m.livemode, p, email=email)
    return json_response(page(rows, p.limit, backwards=bool(p.ending_before)))
