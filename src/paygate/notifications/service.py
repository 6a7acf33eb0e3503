"""Webhook endpoint and event use cases. Each runs inside the caller's transaction (the unit of
work); URLs are checked by the caller before it starts (a DNS look-up never holds it open)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.errors import InvalidRequest, NotFound, StateConflict
from paygate.ids import new_id, now_s
from paygate.notifications import repository as repo
from paygate.notifications.models import RETRY_WINDOW_S, new_secret, takes
from paygate.notifications.schemas import EndpointCreate, EndpointUpdate
from paygate.notifications.webhooks import secret_aad
from paygate.platform.db.pagination import Page
from paygate.vault.crypto import Keyring

MAX_ENDPOINTS = 16


def render_endpoint(row: Mapping[Any, Any], *, secret: str | None = None) -> dict[str, Any]:
    expires = row["previous_expires_at"]
    out = {
        "id": row["id"],
        "object": "webhook_endpoint",
        "livemode": row["livemode"],
        "url": row["url"],
        "description": row["description"],
        "enabled_events": row["enabled_events"],
        "enabled": row["enabled"],
        "api_version": row["api_version"],
        "previous_secret_expires_at": expires if expires and expires > now_s() else None,
        "created": row["created"],
        "updated": row["updated"],
    }
    if secret is not None:
        out["secret"] = secret
    return out


def render_attempt(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "webhook_delivery",
        "event": row["event_id"],
        "endpoint": row["endpoint_id"],
        "attempt": row["attempt"],
        "status": row["status"],
        "response_status": row["response_status"],
        "error": row["error"],
        "duration_ms": row["duration_ms"],
        "created": row["created"],
        "next_attempt_at": row["next_attempt_at"],
    }


async def create_endpoint(
    conn: AsyncConnection,
    keyring: Keyring,
    merchant_id: str,
    livemode: bool,
    body: EndpointCreate,
    api_version: str,
) -> dict[str, Any]:
    """A new endpoint and its signing secret, which this answer alone shows. Its events are
    rendered at `body.api_version`, else at `api_version` (the request's)."""
    if await repo.count_endpoints(conn, merchant_id, livemode) >= MAX_ENDPOINTS:
        raise InvalidRequest(
            f"A merchant can have at most {MAX_ENDPOINTS} webhook endpoints per mode.",
            code="too_many_endpoints",
        )
    endpoint_id = new_id("we")
    secret = new_secret()
    key_id, sealed = keyring.seal(secret.encode(), secret_aad(endpoint_id))
    now = now_s()
    row = {
        "id": endpoint_id,
        "merchant_id": merchant_id,
        "livemode": livemode,
        "url": body.url,
        "description": body.description,
        "enabled_events": body.enabled_events,
        "enabled": True,
        "api_version": body.api_version or api_version,
        "secret_key_id": key_id,
        "secret_sealed": sealed,
        "previous_key_id": None,
        "previous_sealed": None,
        "previous_expires_at": None,
        "created": now,
        "updated": now,
    }
    await repo.insert_endpoint(conn, row)
    return render_endpoint(row, secret=secret)


async def _load(
    conn: AsyncConnection, merchant_id: str, livemode: bool, endpoint_id: str, *, lock: bool
) -> Mapping[Any, Any]:
    row = await repo.get_endpoint(conn, merchant_id, livemode, endpoint_id, for_update=lock)
    if row is None:
        raise NotFound("No such webhook endpoint.", param="id")
    return row


async def get_endpoint(
    conn: AsyncConnection, merchant_id: str, livemode: bool, endpoint_id: str
) -> dict[str, Any]:
    return render_endpoint(await _load(conn, merchant_id, livemode, endpoint_id, lock=False))


async def list_endpoints(
    conn: AsyncConnection, merchant_id: str, livemode: bool, page: Page
) -> list[dict[str, Any]]:
    return [
        render_endpoint(r) for r in await repo.list_endpoints(conn, merchant_id, livemode, page)
    ]


async def update_endpoint(
    conn: AsyncConnection, merchant_id: str, livemode: bool, endpoint_id: str, body: EndpointUpdate
) -> dict[str, Any]:
    row = await _load(conn, merchant_id, livemode, endpoint_id, lock=True)
    values: dict[str, Any] = {
        name: getattr(body, name)
        for name in ("url", "enabled_events", "enabled", "description")
        if name in body.model_fields_set
        and (getattr(body, name) is not None or name == "description")
    }
    values["updated"] = now_s()
    await repo.update_endpoint(conn, endpoint_id, values)
    return render_endpoint({**row, **values})


async def rotate_secret(
    conn: AsyncConnection,
    keyring: Keyring,
    merchant_id: str,
    livemode: bool,
    endpoint_id: str,
    previous_expires_in: int,
) -> dict[str, Any]:
    """A new secret; the current one keeps signing beside it for `previous_expires_in` seconds
    (receivers accept either while they switch over)."""
    row = await _load(conn, merchant_id, livemode, endpoint_id, lock=True)
    secret = new_secret()
    key_id, sealed = keyring.seal(secret.encode(), secret_aad(endpoint_id))
    now = now_s()
    keep = previous_expires_in > 0
    values = {
        "secret_key_id": key_id,
        "secret_sealed": sealed,
        "previous_key_id": row["secret_key_id"] if keep else None,
        "previous_sealed": row["secret_sealed"] if keep else None,
        "previous_expires_at": now + previous_expires_in if keep else None,
        "updated": now,
    }
    await repo.update_endpoint(conn, endpoint_id, values)
    return render_endpoint({**row, **values}, secret=secret)


async def delete_endpoint(
    conn: AsyncConnection, merchant_id: str, livemode: bool, endpoint_id: str
) -> dict[str, Any]:
    await _load(conn, merchant_id, livemode, endpoint_id, lock=True)
    await repo.delete_endpoint(conn, endpoint_id)
    return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}


async def list_attempts(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    endpoint_id: str,
    page: Page,
    *,
    event: str | None,
) -> list[dict[str, Any]]:
    await _load(conn, merchant_id, livemode, endpoint_id, lock=False)
    rows = await repo.list_attempts(conn, endpoint_id, page, event=event)
    return [render_attempt(r) for r in rows]


# Events


async def get_event(
    conn: AsyncConnection, merchant_id: str, livemode: bool, event_id: str
) -> dict[str, Any]:
    row = await repo.get_event(conn, merchant_id, livemode, event_id)
    if row is None:
        raise NotFound("No such event.", param="id")
    payload: dict[str, Any] = row["payload"]
    return payload


async def list_events(
    conn: AsyncConnection, merchant_id: str, livemode: bool, page: Page, *, type: str | None
) -> list[dict[str, Any]]:
    rows = await repo.list_events(conn, merchant_id, livemode, page, type=type)
    return [r["payload"] for r in rows]


async def redeliver(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    event_id: str,
    endpoint_id: str | None,
    *,
    backoff_scale: float,
) -> dict[str, Any]:
    """Make the event due again at `endpoint_id`, or at every enabled endpoint that takes it or
    was sent it, dead-lettered deliveries included, with a fresh retry window."""
    event = await repo.get_event(conn, merchant_id, livemode, event_id)
    if event is None:
        raise NotFound("No such event.", param="id")
    if endpoint_id is not None:
        endpoint = await repo.get_endpoint(conn, merchant_id, livemode, endpoint_id)
        if endpoint is None:
            raise NotFound("No such webhook endpoint.", param="endpoint")
        if not endpoint["enabled"]:
            raise StateConflict("The webhook endpoint is disabled.", param="endpoint")
        targets = [endpoint_id]
    else:
        enabled = await repo.enabled_endpoints(conn, merchant_id, livemode)
        sent_to = {d["endpoint_id"] for d in await repo.deliveries_of(conn, event_id)}
        targets = [
            e["id"]
            for e in enabled
            if e["id"] in sent_to or takes(e["enabled_events"], event["type"])
        ]
        if not targets:
            raise StateConflict("No enabled webhook endpoint takes this event.")
    now = time.time()
    give_up_at = now + RETRY_WINDOW_S * backoff_scale
    await repo.add_deliveries(
        conn, event_id, event["type"], targets, due=now, give_up_at=give_up_at
    )
    await repo.reopen_deliveries(conn, event_id, targets, due=now, give_up_at=give_up_at)
    return {"object": "event_redelivery", "event": event_id, "endpoints": sorted(targets)}
