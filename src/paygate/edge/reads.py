"""Status reads over HTTP: served from the read cache (paygate.edge.cache) when it holds the
object, with an `ETag` from the object's version and the API version answered, so that a client
polling with `If-None-Match` gets `304 Not Modified` (RFC 9110 sections 8.8.3 and 13.1.2) until
the object changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from paygate.api.prefer import Settle
from paygate.api.responses import JSONBytes, encode
from paygate.edge import cache
from paygate.edge.principal import Principal
from paygate.platform import metrics
from paygate.runtime import Runtime

Load = Callable[[AsyncConnection], Awaitable[tuple[dict[str, Any], int]]]
# Revalidated on every use, by the client only: the answer depends on the key and the version.
CACHE_CONTROL = "private, no-cache"
VARY = "Authorization, Paygate-Version"


async def serve(
    request: Request, rt: Runtime, principal: Principal, object_id: str, load: Load
) -> Response:
    """Answer the object `object_id`: from the cache, else from `load` (which raises `NotFound`
    for objects that are not the principal's), filling the cache."""
    found = None
    if rt.read_cache:
        found = await cache.lookup(rt, principal.merchant_id, principal.livemode, object_id)
        counter = metrics.CACHE_HITS if found is not None else metrics.CACHE_MISSES
        counter.labels(metrics.object_kind(object_id)).inc()
    if found is not None:
        version, body = found
    else:
        async with rt.db.read() as conn:
            obj, version = await load(conn)
        body = encode(obj)
        if rt.read_cache:
            owner = (principal.merchant_id, principal.livemode)
            await cache.fill(rt, *owner, obj["id"], version, body)
    etag = f'"{version}.{principal.api_version}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": VARY}
    if not_modified(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return JSONBytes(body, headers=headers)


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """`If-None-Match` with the weak comparison RFC 9110 section 13.1.2 prescribes."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def invalidating(rt: Runtime, object_ids: Sequence[str], settle: Settle | None) -> Settle:
    """A settle step for `idempotency.execute` that first invalidates the cached reads of the
    objects a write changed: it runs after the commit and before the answer (and before any
    `Prefer: wait`), and only for a write that went through."""

    async def run(status: int, body: Any) -> tuple[int, Any, dict[str, str]] | None:
        if status < 400:
            await cache.invalidate(rt, *object_ids)
        return await settle(status, body) if settle is not None else None

    return run
