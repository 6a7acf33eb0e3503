"""The notification service's tables, on the shared metadata (the migrations are generated from
it; `migrations/env.py` imports this module).

A delivery is one event for one endpoint (unique): its retry state lives on that row, and every
attempt is kept beside it. E-mail and SMS wait in `notification_messages`, rendered when queued,
so that a retry sends exactly what was first meant to be sent.
"""

from __future__ import annotations

import sqlalchemy as sa

from paygate.platform.db.tables import Id, Json, Time, metadata

# Webhook signing secrets are sealed with the vault keyring (they must sign, so they cannot be
# hashed). During a rotation the previous secret keeps signing until `previous_expires_at`.
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("description", sa.String(1000)),
    sa.Column("enabled_events", Json, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    # Deliveries are rendered at this API version (fixed at creation, like the merchant's).
    sa.Column("api_version", sa.String(10), nullable=False, server_default="2026-01-01"),
    sa.Column("secret_key_id", sa.String(40), nullable=False),
    sa.Column("secret_sealed", sa.LargeBinary, nullable=False),
    sa.Column("previous_key_id", sa.String(40)),
    sa.Column("previous_sealed", sa.LargeBinary),
    sa.Column("previous_expires_at", Time),
    sa.Column("created", Time, nullable=False),
    sa.Column("updated", Time, nullable=False),
    sa.Index("ix_webhook_endpoints_merchant", "merchant_id", "livemode", "id"),
)

# status: pending | succeeded | dead. `locked_until` is the lease of the process sending it.
# Deleting an endpoint deletes its deliveries and their attempts (cascades, so that an attempt
# recorded while the endpoint is being deleted goes with it rather than blocking the delete).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("event_id", Id, nullable=False),
    sa.Column(
        "endpoint_id", Id, sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("event_type", sa.String(60), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("give_up_at", sa.Float, nullable=False),
    sa.Column("locked_until", sa.Float),
    sa.Column("created", Time, nullable=False),
    sa.Column("updated", Time, nullable=False),
    sa.UniqueConstraint("event_id", "endpoint_id"),
    sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_endpoint", "endpoint_id", "status"),
)

# One row per attempt: the public webhook delivery object (DESIGN.md section 4).
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column(
        "delivery_id",
        Id,
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("event_id", Id, nullable=False),
    sa.Column("endpoint_id", Id, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # succeeded | failed | dead
    sa.Column("response_status", sa.Integer),
    sa.Column("error", sa.String(300)),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", Time),
    sa.Column("created", Time, nullable=False),
    sa.Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),
    sa.Index("ix_webhook_attempts_delivery", "delivery_id"),
)

# channel: email | sms; status: pending | sent | dead. `dedupe_key` makes queuing idempotent
# (an event redelivered by the bus, a daily summary asked for twice).
notification_messages = sa.Table(
    "notification_messages",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, nullable=False),
    sa.Column("channel", sa.String(10), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("dedupe_key", sa.String(200), nullable=False, unique=True),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("sender_name", sa.String(200)),
    sa.Column("subject", sa.String(300)),
    sa.Column("body_text", sa.Text, nullable=False),
    sa.Column("body_html", sa.Text),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.String(300)),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("give_up_at", sa.Float, nullable=False),
    sa.Column("locked_until", sa.Float),
    sa.Column("created", Time, nullable=False),
    sa.Column("updated", Time, nullable=False),
    sa.Column("sent_at", Time),
    sa.Index("ix_notification_messages_due", "status", "next_attempt_at"),
)
