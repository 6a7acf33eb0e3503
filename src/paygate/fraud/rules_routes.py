"""`/v1/fraud/rules` and `/v1/fraud/lists`: thin handlers; the work is in `rules_service`, the
unit of work in `idempotency`. Merchant resources of the key's mode (secret keys; restricted
keys with a `fraud` permission)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import auth, idempotency, openapi
from paygate.api.params import Page, page_params
from paygate.api.responses import json_response
from paygate.api.schemas import page
from paygate.fraud import rules_service as service
from paygate.fraud.rules_dryrun import dry_run
from paygate.fraud.rules_schemas import (
    DryRunIn,
    DryRunOut,
    ItemCreate,
    ItemDeleted,
    ItemList,
    ItemOut,
    ListCreate,
    ListList,
    ListObjOut,
    RuleCreate,
    RuleDeleted,
    RuleList,
    RuleOut,
    RuleUpdate,
    RuleVersionList,
)

rules = APIRouter(prefix="/v1/fraud/rules", tags=["fraud"])
lists = APIRouter(prefix="/v1/fraud/lists", tags=["fraud"])
router = APIRouter()
Merchant = Annotated[auth.Principal, Depends(auth.merchant)]
Pages = Annotated[Page, Depends(page_params)]
ObjectId = Annotated[str, Path(max_length=40)]
OPTIONAL_KEY = openapi.idempotency_key(required=False)
# A dry run writes nothing: the header is accepted like on every POST, and there is nothing to
# replay, so no record is kept.
DRY_RUN_KEY = openapi.idempotency_key(required=False)
DRY_RUN_KEY["parameters"][0]["description"] = "Accepted; a dry run changes nothing to repeat."


def _list(rows: list[dict[str, Any]], p: Page) -> Response:
    return json_response(page(rows, p.limit, backwards=bool(p.ending_before)))


@rules.post(
    "",
    status_code=201,
    response_model=None,
    responses={201: {"model": RuleOut}},
    summary="Create a fraud rule",
    openapi_extra=OPTIONAL_KEY,
)
async def create_rule(body: RuleCreate, request: Request, m: Merchant) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 201, await service.create_rule(conn, m, m.merchant_id, m.livemode, body)

    return await idempotency.execute(request, m, work)


@rules.get(
    "",
    response_model=None,
    responses={200: {"model": RuleList}},
    summary="List fraud rules (not deleted), newest first",
)
async def list_rules(request: Request, m: Merchant, p: Pages) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return _list(await service.list_rules(conn, m.merchant_id, m.livemode, p), p)


@rules.post(
    "/dry_run",
    response_model=None,
    responses={200: {"model": DryRunOut}},
    summary="Evaluate a proposed rule against the payments of the last N days",
    openapi_extra=DRY_RUN_KEY,
)
async def dry_run_rule(body: DryRunIn, request: Request, m: Merchant) -> Response:
    async with auth.runtime(request).db.read(stream=True) as conn:
        return json_response(await dry_run(conn, m.merchant_id, m.livemode, body))


@rules.get(
    "/{rule_id}",
    response_model=None,
    responses={200: {"model": RuleOut}},
    summary="Retrieve a fraud rule",
)
async def get_rule(rule_id: ObjectId, request: Request, m: Merchant) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return json_response(await service.get_rule(conn, m.merchant_id, m.livemode, rule_id))


@rules.post(
    "/{rule_id}",
    response_model=None,
    responses={200: {"model": RuleOut}},
    summary="Update a fraud rule (enable, disable, change): each change is a new version",
    openapi_extra=OPTIONAL_KEY,
)
async def update_rule(
    rule_id: ObjectId, body: RuleUpdate, request: Request, m: Merchant
) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 200, await service.update_rule(conn, m, m.merchant_id, m.livemode, rule_id, body)

    return await idempotency.execute(request, m, work)


@rules.delete(
    "/{rule_id}",
    response_model=None,
    responses={200: {"model": RuleDeleted}},
    summary="Delete a fraud rule: it stops matching; its versions are kept",
    openapi_extra=OPTIONAL_KEY,
)
async def delete_rule(rule_id: ObjectId, request: Request, m: Merchant) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 200, await service.delete_rule(conn, m, m.merchant_id, m.livemode, rule_id)

    return await idempotency.execute(request, m, work)


@rules.get(
    "/{rule_id}/versions",
    response_model=None,
    responses={200: {"model": RuleVersionList}},
    summary="List every version of a fraud rule, newest first",
)
async def rule_versions(rule_id: ObjectId, request: Request, m: Merchant, p: Pages) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return _list(await service.rule_versions(conn, m.merchant_id, m.livemode, rule_id, p), p)


@lists.post(
    "",
    status_code=201,
    response_model=None,
    responses={201: {"model": ListObjOut}},
    summary="Create a fraud list (card fingerprints, e-mails, IP addresses or BINs)",
    openapi_extra=OPTIONAL_KEY,
)
async def create_list(body: ListCreate, request: Request, m: Merchant) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 201, await service.create_list(conn, m, m.merchant_id, m.livemode, body)

    return await idempotency.execute(request, m, work)


@lists.get(
    "",
    response_model=None,
    responses={200: {"model": ListList}},
    summary="List fraud lists, newest first",
)
async def list_lists(request: Request, m: Merchant, p: Pages) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return _list(await service.list_lists(conn, m.merchant_id, m.livemode, p), p)


@lists.get(
    "/{list_id}",
    response_model=None,
    responses={200: {"model": ListObjOut}},
    summary="Retrieve a fraud list",
)
async def get_list(list_id: ObjectId, request: Request, m: Merchant) -> Response:
    async with auth.runtime(request).db.read() as conn:
        return json_response(await service.get_list(conn, m.merchant_id, m.livemode, list_id))


@lists.post(
    "/{list_id}/items",
    status_code=201,
    response_model=None,
    responses={
        201: {"model": ItemOut, "description": "Added."},
        200: {"model": ItemOut, "description": "The list held this value already."},
    },
    summary="Add an item to a fraud list",
    openapi_extra=OPTIONAL_KEY,
)
async def add_item(list_id: ObjectId, body: ItemCreate, request: Request, m: Merchant) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return await service.add_item(conn, m, m.merchant_id, m.livemode, list_id, body)

    return await idempotency.execute(request, m, work)


@lists.get(
    "/{list_id}/items",
    response_model=None,
    responses={200: {"model": ItemList}},
    summary="List the items of a fraud list, newest first",
)
async def list_items(list_id: ObjectId, request: Request, m: Merchant, p: Pages) -> Response:
    async with auth.runtime(request).db.read() as conn:
        rows = await service.list_items_page(conn, m.merchant_id, m.livemode, list_id, p)
    return _list(rows, p)


@lists.delete(
    "/{list_id}/items/{item}",
    response_model=None,
    responses={200: {"model": ItemDeleted}},
    summary="Remove an item (by its id or its value) from a fraud list",
    openapi_extra=OPTIONAL_KEY,
)
async def remove_item(
    list_id: ObjectId,
    item: Annotated[str, Path(max_length=320)],
    request: Request,
    m: Merchant,
) -> Response:
    async def work(conn: AsyncConnection) -> tuple[int, Any]:
        return 200, await service.remove_item(conn, m, m.merchant_id, m.livemode, list_id, item)

    return await idempotency.execute(request, m, work)


router.include_router(rules)
router.include_router(lists)
