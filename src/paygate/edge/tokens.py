"""`POST /v1/tokens`: card details from a browser, with the merchant's publishable key, turned
into a single-use token (`tok_…`, 15 minutes) that `POST /v1/payments` takes as
`"payment_method": {"token": "tok_…"}`: the merchant's server never handles a card number.
Cross-origin requests are allowed here only (paygate.edge.security); the card number goes
straight into the vault (paygate.vault.tokens)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth, idempotency, openapi
from paygate.api.schemas import Strict
from paygate.edge.principal import Principal
from paygate.payments.schemas import CardIn, CardOut
from paygate.vault import tokens

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


class TokenCreate(Strict):
    card: CardIn

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "card": {
                        "number": "4242424242424242",
                        "exp_month": 12,
                        "exp_year": 2030,
                        "cvc": "123",
                    }
                }
            ]
        }
    }


class TokenOut(BaseModel):
    id: str
    object: Literal["token"] = "token"
    livemode: bool
    type: Literal["card"] = "card"
    card: CardOut
    created: int
    expires_at: int
    used: bool


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={201: {"model": TokenOut, "description": "The token; it can pay once."}},
    summary="Tokenize a card (publishable key, callable from browsers)",
    openapi_extra=openapi.idempotency_key(required=False),
)
async def create_token(
    body: TokenCreate,
    request: Request,
    principal: Annotated[Principal, Depends(auth.card_intake)],
) -> Response:
    rt = auth.runtime(request)
    card = body.card

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 201, await tokens.create(
            conn,
            rt.keyring,
            merchant_id=principal.merchant_id,
            livemode=principal.livemode,
            number=card.number,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            cvc=card.cvc,
            ttl_s=rt.settings.token_ttl_s,
        )

    return await idempotency.execute(request, principal, work)
