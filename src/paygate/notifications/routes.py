"""`/v1/webhook_endpoints` and `/v1/events`: thin handlers; the work is in `service`, the unit of
work in `idempotency`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth, idempotency, openapi
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import page
from paygate.errors import InvalidRequest
from paygate.notifications import service
from paygate.notifications.guard import url_refused
from paygate.notifications.schemas import (
    DeliveryList,
    EndpointCreate,
    EndpointDeleted,
    EndpointList,
    EndpointOut,
    EndpointUpdate,
    EventList,
    EventOut,
    RedeliverIn,
    RedeliveryOut,
    RotateIn,
)

endpoints = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhooks"])
events = APIRouter(prefix="/v1/events", tags=["webhooks"])
router = APIRouter()
Merchant = Annotated[auth.Principal, Depends(auth.merchant)]
OPTIONAL_KEY = openapi.idempotency_key(required=False)
ROTATE_EXAMPLES = {
    "roll": {"summary": "Roll over: the old secret signs for 24 more hours", "value": {}},
    "leaked": {
        "summary": "Replace a leaked secret at once",
        "value": {"previous_secret_expires_in": 0},
    },
}
REDELIVER_EXAMPLES = {
    "all": {"summary": "Every endpoint that takes the event", "value": {}},
    "one": {
        "summary": "One endpoint",
        "value": {"endpoint": "we_01JD4Q6Z8V3N2M5K7H9G1F0E2D"},
    },
}


async def _check_url(request: Request, url: str | None) -> None:
    # Before the unit of work starts: a refused URL is a validation error, not recorded.
    if url is None:
        return
    allow_private = auth.runtime(request).settings.webhook_allow_private
    reason = await url_refused(url, allow_private=allow_private)
    if reason is not None:
        raise InvalidRequest(f"Invalid url: {reason}.", param="url", code="url_invalid")


@endpoints.post(
    "",
    status_code=201,
    response_model=None,
    responses={201: {"model": EndpointOut, "description": "The endpoint with its `secret`."}},
    summary="Create a webhook endpoint",
    openapi_extra=OPTIONAL_KEY,
)
async def create_endpoint(body: EndpointCreate, request: Request, m: Merchant) -> Response:
    await _check_url(request, body.url)
    rt = auth.runtime(request)

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        version = m.api_version or rt.settings.default_api_version
        return 201, await service.create_endpoint(
            conn, rt.keyring, m.merchant_id, m.livemode, body, version
        )

    return await idempotency.execute(request, m, work)


@endpoints.get(
    "",
    response_model=None,
    responses={200: {"model": EndpointList}},
    summary="List webhook endpoints, newest first",
)
async def list_endpoints(
    request: Request, m: Merchant, p: Annotated[Page, Depends(page_params)]
) -> Response:
    async with auth.runtime(request).db.read() as conn:
        rows = await service.list_endpoints(conn, m.merchant_id, m.livemode, p)
    return json_response(page(rows, p.limit, backwards=bool(p.ending_before)))


@endpoints.get(
    "/{endpoint_id}",
    response_model=None,
    responses={200: {"model": EndpointOut}},
    summary="Retrieve a webhook endpoint",
)
async def get_endpoint(endpoint_id: str, request: Request, m: Merchant) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return json_response(
            await service.get_endpoint(conn, m.merchant_id, m.livemode, endpoint_id)
        )


@endpoints.post(
    "/{endpoint_id}",
    response_model=None,
    responses={200: {"model": EndpointOut}},
    summary="Update a webhook endpoint: url, enabled events, enabled, description",
    openapi_extra=OPTIONAL_KEY,
)
async def update_endpoint(
    endpoint_id: str, body: EndpointUpdate, request: Request, m: Merchant
) -> Response:
    await _check_url(request, body.url)

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 200, await service.update_endpoint(
            conn, m.merchant_id, m.livemode, endpoint_id, body
        )

    return await idempotency.execute(request, m, work)


@endpoints.delete(
    "/{endpoint_id}",
    response_model=None,
    responses={200: {"model": EndpointDeleted}},
    summary="Delete a webhook endpoint and its delivery history",
    openapi_extra=OPTIONAL_KEY,
)
async def delete_endpoint(endpoint_id: str, request: Request, m: Merchant) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 200, await service.delete_endpoint(conn, m.merchant_id, m.livemode, endpoint_id)

    return await idempotency.execute(request, m, work)


@endpoints.post(
    "/{endpoint_id}/rotate_secret",
    response_model=None,
    responses={200: {"model": EndpointOut, "description": "The endpoint with its new `secret`."}},
    summary="Roll a webhook endpoint's signing secret",
    openapi_extra=OPTIONAL_KEY,
)
async def rotate_secret(
    endpoint_id: str,
    request: Request,
    m: Merchant,
    body: Annotated[RotateIn | None, Body(openapi_examples=ROTATE_EXAMPLES)] = None,
) -> Response:
    rt = auth.runtime(request)
    keep = (body or RotateIn()).previous_secret_expires_in

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 200, await service.rotate_secret(
            conn, rt.keyring, m.merchant_id, m.livemode, endpoint_id, keep
        )

    return await idempotency.execute(request, m, work)


@endpoints.get(
    "/{endpoint_id}/deliveries",
    response_model=None,
    responses={200: {"model": DeliveryList}},
    summary="List the delivery attempts of a webhook endpoint, newest first",
)
async def list_deliveries(
    endpoint_id: str,
    request: Request,
    m: Merchant,
    p: Annotated[Page, Depends(page_params)],
    event: str | None = Query(None, max_length=40, description="Only attempts of this event."),
) -> Response:
    async with auth.runtime(request).db.read() as conn:
        rows = await service.list_attempts(
            conn, m.merchant_id, m.livemode, endpoint_id, p, event=event
        )
    return json_response(page(rows, p.limit, backwards=bool(p.ending_before)))


@events.get(
    "",
    response_model=None,
    responses={200: {"model": EventList}},
    summary="List events, newest first",
)
async def list_events(
    request: Request,
    m: Merchant,
    p: Annotated[Page, Depends(page_params)],
    type: str | None = Query(None, max_length=60, description="Only events of this type."),
) -> Response:
    async with auth.runtime(request).db.read() as conn:
        rows = await service.list_events(conn, m.merchant_id, m.livemode, p, type=type)
    return json_response(page(rows, p.limit, backwards=bool(p.ending_before)))


@events.get(
    "/{event_id}",
    response_model=None,
    responses={200: {"model": EventOut}},
    summary="Retrieve an event",
)
async def get_event(event_id: str, request: Request, m: Merchant) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return json_response(await service.get_event(conn, m.merchant_id, m.livemode, event_id))


@events.post(
    "/{event_id}/redeliver",
    status_code=202,
    response_model=None,
    responses={202: {"model": RedeliveryOut, "description": "Accepted: due again at once."}},
    summary="Send an event again, dead-lettered deliveries included",
    openapi_extra=OPTIONAL_KEY,
)
async def redeliver_event(
    event_id: str,
    request: Request,
    m: Merchant,
    body: Annotated[RedeliverIn | None, Body(openapi_examples=REDELIVER_EXAMPLES)] = None,
) -> Response:
    rt = auth.runtime(request)
    endpoint = body.endpoint if body else None

    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 202, await service.redeliver(
            conn,
            m.merchant_id,
            m.livemode,
            event_id,
            endpoint,
            backoff_scale=rt.settings.webhook_backoff_scale,
        )

    return await idempotency.execute(request, m, work)


router.include_router(endpoints)
router.include_router(events)
