"""`/v1/merchants`: platform operations with the admin key."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, StrictStr
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth, idempotency, openapi
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import ListOut, Strict, page
from paygate.edge import audit
from paygate.edge.state import edge_of
from paygate.edge.versions import VERSIONS
from paygate.errors import InvalidRequest
from paygate.merchants import repository, service

router = APIRouter(prefix="/v1/merchants", tags=["merchants"])


class MerchantCreate(Strict):
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)] = Field(examples=["Acme"])
    email: Annotated[StrictStr, Field(max_length=320)] | None = None
    tier: Annotated[StrictStr, Field(max_length=40, pattern=r"^[a-z][a-z0-9_]*$")] | None = None
    api_version: Literal[VERSIONS] | None = Field(  # type: ignore[valid-type]
        None, description="The API version of its requests; default `PAYGATE_DEFAULT_API_VERSION`."
    )

    model_config = {
        "json_schema_extra": {
            "examples": [{"name": "Acme", "email": "billing@acme.example", "tier": "standard"}]
        }
    }


class MerchantOut(BaseModel):
    id: str
    object: str = "merchant"
    name: str
    email: str | None
    tier: str
    api_version: str
    created: int
    api_key: str | None = Field(None, description="Shown once, at creation.")
    publishable_key: str | None = Field(None, description="Shown once, at creation.")


class MerchantList(ListOut):
    data: list[MerchantOut]


Admin = Annotated[auth.Principal, Depends(auth.admin)]


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={201: {"model": MerchantOut}},
    summary="Create a merchant and its first test-mode keys",
    openapi_extra=openapi.idempotency_key(required=False),
)
async def create_merchant(body: MerchantCreate, request: Request, principal: Admin) -> Response:
    rt = auth.runtime(request)
    tier = body.tier or rt.settings.default_tier
    if tier not in edge_of(request).tiers:
        raise InvalidRequest(
            f"Unknown tier; the tiers are {', '.join(edge_of(request).tiers.names)}.",
            param="tier",
        )
    api_version = body.api_version or rt.settings.default_api_version

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        merchant = await service.create_merchant(
            conn, rt.hmac_key, name=body.name, email=body.email, tier=tier, api_version=api_version
        )
        await audit.record(
            conn,
            principal,
            "merchant.created",
            merchant_id=merchant["id"],
            object_id=merchant["id"],
            details={"tier": tier, "api_version": api_version},
        )
        return 201, merchant

    return await idempotency.execute(request, principal, work)


@router.get(
    "/{merchant_id}",
    response_model=None,
    responses={200: {"model": MerchantOut}},
    summary="Retrieve a merchant",
)
async def get_merchant(merchant_id: str, request: Request, _: Admin) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return json_response(await service.get_merchant(conn, merchant_id))


@router.get(
    "",
    response_model=None,
    responses={200: {"model": MerchantList}},
    summary="List merchants, newest first",
)
async def list_merchants(
    request: Request, _: Admin, p: Annotated[Page, Depends(page_params)]
) -> Response:
    async with auth.runtime(request).db.read() as conn:
        rows = await repository.list_merchants(conn, p)
    return json_response(
        page([service.render(r) for r in rows], p.limit, backwards=bool(p.ending_before))
    )
