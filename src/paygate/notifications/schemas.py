"""Webhook endpoint, event and delivery shapes (DESIGN.md section 4, Objects)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, StrictBool, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

from paygate.api.schemas import ListOut, Strict
from paygate.edge import versions
from paygate.notifications.models import ALL_EVENTS, ROTATION_WINDOW_S
from paygate.platform.outbox import PUBLIC_TYPES


def _events(value: list[str]) -> list[str]:
    unknown = [v for v in value if v != ALL_EVENTS and v not in PUBLIC_TYPES]
    if unknown:
        raise PydanticCustomError(
            "invalid_event_type",
            'must list public event types (such as payment.succeeded) or "*" for all',
        )
    return list(dict.fromkeys(value))


Url = Annotated[StrictStr, Field(min_length=1, max_length=2048)]
EnabledEvents = Annotated[
    list[StrictStr], Field(min_length=1, max_length=20), AfterValidator(_events)
]
Description = Annotated[StrictStr, Field(max_length=1000)]


def _version(value: str) -> str:
    if not versions.is_version(value):
        raise PydanticCustomError(
            "invalid_api_version", f"must be one of {', '.join(versions.VERSIONS)}"
        )
    return value


ApiVersion = Annotated[StrictStr, AfterValidator(_version)]


class EndpointCreate(Strict):
    url: Url = Field(examples=["https://example.com/paygate/webhooks"])
    enabled_events: EnabledEvents = Field(examples=[["*"]])
    description: Description | None = None
    api_version: ApiVersion | None = Field(
        None,
        description="The API version the endpoint's events are rendered at: by default the "
        "version of the request that creates it (its `Paygate-Version`, else the merchant's).",
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "url": "https://example.com/paygate/webhooks",
                    "enabled_events": ["payment.succeeded", "payment.failed", "refund.succeeded"],
                    "description": "Order service",
                }
            ]
        }
    }


class EndpointUpdate(Strict):
    url: Url | None = None
    enabled_events: EnabledEvents | None = None
    enabled: StrictBool | None = None
    description: Description | None = None

    model_config = {
        "json_schema_extra": {"examples": [{"enabled": False}, {"enabled_events": ["*"]}]}
    }


class RotateIn(Strict):
    previous_secret_expires_in: Annotated[StrictInt, Field(ge=0, le=ROTATION_WINDOW_S)] = Field(
        ROTATION_WINDOW_S,
        description="Seconds the previous secret keeps signing beside the new one (0 ends it "
        "at once, for a leaked secret); at most 24 h.",
    )


class RedeliverIn(Strict):
    endpoint: Annotated[StrictStr, Field(max_length=40)] | None = Field(
        None, description="Only this endpoint; by default every endpoint that takes the event."
    )


class EndpointOut(BaseModel):
    id: str = Field(examples=["we_01JD4Q6Z8V3N2M5K7H9G1F0E2D"])
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    livemode: bool
    url: str
    description: str | None
    enabled_events: list[str]
    enabled: bool
    api_version: str
    previous_secret_expires_at: int | None = Field(
        description="While a rotated-out secret still signs: when it stops."
    )
    created: int
    updated: int
    secret: str | None = Field(
        None, description="The signing secret (`whsec_…`): shown once, at creation and rotation."
    )


class EndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    deleted: bool


class EventOut(BaseModel):
    id: str = Field(examples=["evt_01JD4Q6Z8V3N2M5K7H9G1F0E2D"])
    object: Literal["event"] = "event"
    type: str = Field(examples=["payment.succeeded"])
    created: int
    sequence: int
    livemode: bool
    data: dict[str, Any] = Field(description='`{"object": {...}}`: the object as it was then.')


class DeliveryOut(BaseModel):
    """One attempt to deliver an event to an endpoint."""

    id: str = Field(examples=["whd_01JD4Q6Z8V3N2M5K7H9G1F0E2D"])
    object: Literal["webhook_delivery"] = "webhook_delivery"
    event: str
    endpoint: str
    attempt: int
    status: Literal["succeeded", "failed", "dead"] = Field(
        description="`failed`: retried at `next_attempt_at`; `dead`: retries are over "
        "(redeliver the event to try again)."
    )
    response_status: int | None
    error: str | None
    duration_ms: int
    created: int
    next_attempt_at: int | None


class RedeliveryOut(BaseModel):
    object: Literal["event_redelivery"] = "event_redelivery"
    event: str
    endpoints: list[str] = Field(description="The endpoints the event is sent to again.")


class EndpointList(ListOut):
    data: list[EndpointOut]


class EventList(ListOut):
    data: list[EventOut]


class DeliveryList(ListOut):
    data: list[DeliveryOut]
