"""The transactional outbox: an event is written in the same transaction as the state change
that caused it, so that either both happen or neither does (DESIGN.md section 2, no dual writes).
The relay later hands unpublished rows to the bus.

Each row also keeps the trace context of the span that wrote it (the API request, or the consumer
handling an earlier event), so that the payment's trace continues through the relay and the
consumers (paygate.platform.tracing)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import new_id, now_s
from paygate.platform import tracing
from paygate.platform.db import deferred
from paygate.platform.db.tables import outbox

# Event types merchants see on webhooks and at /v1/events; every other type stays internal.
PUBLIC_TYPES = frozenset(
    {
        "payment.created",
        "payment.processing",
        "payment.requires_review",
        "payment.requires_capture",
        "payment.succeeded",
        "payment.failed",
        "payment.canceled",
        "refund.created",
        "refund.succeeded",
        "refund.failed",
        "settlement.created",
    }
)


async def emit(
    conn: AsyncConnection,
    *,
    type: str,
    obj: dict[str, Any],
    merchant_id: str,
    sequence: int,
) -> dict[str, Any]:
    """Write one event carrying `obj` as it is now; returns the event."""
    payment_id = obj["id"] if str(obj["id"]).startswith("pay_") else obj.get("payment")
    tracing.annotate(payment_id=payment_id, merchant_id=merchant_id)
    event = {
        "id": new_id("evt"),
        "object": "event",
        "type": type,
        "created": now_s(),
        "sequence": sequence,
        "livemode": obj.get("livemode", False),
        "data": {"object": obj},
    }
    await deferred.insert(
        conn,
        outbox,
        dict(
            id=event["id"],
            merchant_id=merchant_id,
            livemode=event["livemode"],
            type=type,
            object_id=obj["id"],
            sequence=sequence,
            public=type in PUBLIC_TYPES,
            payload=event,
            created=event["created"],
            trace_context=tracing.current_carrier(),
        ),
    )
    return event
