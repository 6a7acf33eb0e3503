"""`/v1/merchants`: platform operations with the admin key."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr
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
from paygate.ledger.models import Pricing
from paygate.merchants import profile, repository, service

router = APIRouter(prefix="/v1/merchants", tags=["merchants"])

Tier = Annotated[StrictStr, Field(max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]


class BankAccountIn(Strict):
    # An IBAN is digits and letters: not a card number, and checked by its own rules.
    _card_fields: ClassVar[frozenset[str]] = frozenset({"iban"})

    iban: Annotated[StrictStr, Field(min_length=1, max_length=64)] = Field(
        examples=["DE89370400440532013000"]
    )
    bic: Annotated[StrictStr, Field(min_length=1, max_length=20)] | None = None
    account_holder: Annotated[StrictStr, Field(min_length=1, max_length=140)]


class PricingIn(Strict):
    percent_bps: StrictInt | None = Field(None, description="Basis points of each capture.")
    fixed: dict[StrictStr, StrictInt] | None = Field(
        None, description="A fixed fee per capture, per currency, in minor units."
    )
    refund_fees: StrictBool | None = Field(
        None, description="Whether a refund returns its share of the fee."
    )


class MerchantTerms(Strict):
    bank_account: BankAccountIn | None = Field(
        None, description="Where payouts go; `null` on update removes it."
    )
    pricing: PricingIn | None = None
    payout_delay_days: StrictInt | None = Field(
        None, description="Days before captured funds are available; default the platform's."
    )


class MerchantCreate(MerchantTerms):
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)] = Field(examples=["Acme"])
    email: Annotated[StrictStr, Field(max_length=320)] | None = None
    tier: Tier | None = None
    api_version: Literal[VERSIONS] | None = Field(  # type: ignore[valid-type]
        None, description="The API version of its requests; default `PAYGATE_DEFAULT_API_VERSION`."
    )

    model_config = {
        "json_schema_extra": {
            "examples": [{"name": "Acme", "email": "billing@acme.example", "tier": "standard"}]
        }
    }


class MerchantUpdate(MerchantTerms):
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    email: Annotated[StrictStr, Field(max_length=320)] | None = None
    tier: Tier | None = None
    api_version: Literal[VERSIONS] | None = None  # type: ignore[valid-type]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "tier": "premium",
                    "bank_account": {
                        "iban": "DE89370400440532013000",
                        "bic": "COBADEFFXXX",
                        "account_holder": "Acme GmbH",
                    },
                    "pricing": {"percent_bps": 250, "fixed": {"eur": 25}, "refund_fees": True},
                    "payout_delay_days": 2,
                }
            ]
        }
    }


class BankAccountOut(BaseModel):
    object: str = "bank_account"
    iban_last4: str
    country: str
    bic: str | None
    account_holder: str


class PricingOut(BaseModel):
    percent_bps: int
    fixed: dict[str, int]
    refund_fees: bool


class MerchantOut(BaseModel):
    id: str
    object: str = "merchant"
    name: str
    email: str | None
    tier: str
    api_version: str
    created: int
    bank_account: BankAccountOut | None = None
    pricing: PricingOut | None = None
    payout_delay_days: int | None = None
    api_key: str | None = Field(None, description="Shown once, at creation.")
    publishable_key: str | None = Field(None, description="Shown once, at creation.")


class MerchantList(ListOut):
    data: list[MerchantOut]


Admin = Annotated[auth.Principal, Depends(auth.admin)]


def _check_tier(request: Request, tier: str) -> None:
    if tier not in edge_of(request).tiers:
        raise InvalidRequest(
            f"Unknown tier; the tiers are {', '.join(edge_of(request).tiers.names)}.",
            param="tier",
        )


def _changes(body: MerchantTerms, fields: dict[str, Any]) -> service.Changes:
    """The update a request asks for, its values checked before any work starts (a refusal
    then writes nothing, not even an idempotency record)."""
    account = body.bank_account
    pricing = body.pricing.model_dump(exclude_none=True) if body.pricing else None
    if pricing is not None:
        profile.pricing(pricing, Pricing())  # each given field checked on its own
    if body.payout_delay_days is not None:
        profile.payout_delay_days(body.payout_delay_days)
    return service.Changes(
        fields=fields,
        bank_account=(
            profile.bank_account(account.iban, account.bic, account.account_holder)
            if account is not None
            else None
        ),
        remove_bank_account="bank_account" in body.model_fields_set and account is None,
        pricing=pricing,
        payout_delay_days=body.payout_delay_days,
    )


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
    _check_tier(request, tier)
    api_version = body.api_version or rt.settings.default_api_version
    changes = _changes(body, {})
    delay = rt.settings.payout_delay_days

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        merchant = await service.create_merchant(
            conn, rt.hmac_key, name=body.name, email=body.email, tier=tier, api_version=api_version
        )
        terms = await service.apply_changes(conn, rt.keyring, merchant["id"], changes, delay)
        await audit.record(
            conn,
            principal,
            "merchant.created",
            merchant_id=merchant["id"],
            object_id=merchant["id"],
            details={"tier": tier, "api_version": api_version, **terms},
        )
        row = await service.get_row(conn, merchant["id"])
        full = await service.render_full(conn, row, delay)
        return 201, {
            **full,
            "api_key": merchant["api_key"],
            "publishable_key": merchant["publishable_key"],
        }

    return await idempotency.execute(request, principal, work)


@router.post(
    "/{merchant_id}",
    response_model=None,
    responses={200: {"model": MerchantOut}},
    summary="Update a merchant: tier, API version, bank account, pricing, payout delay",
    openapi_extra=openapi.idempotency_key(required=False),
)
async def update_merchant(
    merchant_id: str, body: MerchantUpdate, request: Request, principal: Admin
) -> Response:
    rt = auth.runtime(request)
    if body.tier is not None:
        _check_tier(request, body.tier)
    fields = {
        name: getattr(body, name)
        for name in service.OWN_FIELDS
        if name in body.model_fields_set and getattr(body, name) is not None
    }
    if "email" in body.model_fields_set:
        fields["email"] = body.email
    changes = _changes(body, fields)
    delay = rt.settings.payout_delay_days

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        await service.get_row(conn, merchant_id)
        done = await service.apply_changes(conn, rt.keyring, merchant_id, changes, delay)
        if done:
            await audit.record(
                conn,
                principal,
                "merchant.updated",
                merchant_id=merchant_id,
                object_id=merchant_id,
                details=done,
            )
        return 200, await service.get_merchant(conn, merchant_id, delay)

    return await idempotency.execute(request, principal, work)


@router.get(
    "/{merchant_id}",
    response_model=None,
    responses={200: {"model": MerchantOut}},
    summary="Retrieve a merchant",
)
async def get_merchant(merchant_id: str, request: Request, _: Admin) -> Response:
    rt = auth.runtime(request)
    async with rt.db.read() as conn:
        return json_response(
            await service.get_merchant(conn, merchant_id, rt.settings.payout_delay_days)
        )


@router.get(
    "",
    response_model=None,
    responses={200: {"model": MerchantList}},
    summary="List merchants, newest first",
)
async def list_merchants(
    request: Request, _: Admin, p: Annotated[Page, Depends(page_params)]
) -> Response:
    rt = auth.runtime(request)
    async with rt.db.read() as conn:
        rows = await repository.list_merchants(conn, p)
        data = [await service.render_full(conn, r, rt.settings.payout_delay_days) for r in rows]
    return json_response(page(data, p.limit, backwards=bool(p.ending_before)))
