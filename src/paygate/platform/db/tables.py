"""The schema as SQLAlchemy Core tables: the one source the migrations are generated from.

Times are Unix seconds (`BigInteger`); amounts are integers in the currency's minor unit; ids are
prefixed, time-ordered strings (`paygate.ids`), so `ORDER BY id` is creation order.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Json(TypeDecorator[Any]):
    """JSON kept as text, encoded with orjson: the same bytes on SQLite and PostgreSQL."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else orjson.dumps(value).decode()

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else orjson.loads(value)


Id = sa.String(40)
Time = sa.BigInteger()
Amount = sa.BigInteger()

merchants = sa.Table(
    "merchants",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320)),
    sa.Column("tier", sa.String(40), nullable=False),
    sa.Column("created", Time, nullable=False),
    # The dated API version the merchant's requests default to (paygate.edge.versions), fixed at
    # creation; merchants from before versions existed are on the first one.
    sa.Column("api_version", sa.String(10), nullable=False, server_default="2026-01-01"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),  # secret | publishable | restricted
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Column("revoked_at", Time),
    sa.Column("name", sa.String(100)),
    # Restricted keys: {resource: "read" | "write" | "none"} (paygate.edge.scopes).
    sa.Column("permissions", Json),
    # A rolled key keeps working until then.
    sa.Column("expires_at", Time),
    # Written at most once a minute per key and process, never once per request.
    sa.Column("last_used_at", Time),
)

# Append-only (the migration adds triggers that refuse UPDATE and DELETE): who did what to which
# merchant, keys and admin actions. Never a secret: key ids and last 4 characters only.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id),
    sa.Column("actor", sa.String(60), nullable=False),
    sa.Column("actor_type", sa.String(20), nullable=False),
    sa.Column("action", sa.String(60), nullable=False),
    sa.Column("object_id", Id),
    sa.Column("details", Json, nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Index("ix_audit_log_merchant", "merchant_id", "id"),
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("email", sa.String(320)),
    sa.Column("name", sa.String(200)),
    sa.Column("created", Time, nullable=False),
    sa.Index("ix_customers_merchant_email", "merchant_id", "livemode", "email"),
    sa.Index("ix_customers_merchant_id", "merchant_id", "livemode", "id"),
)

# The vault: the card number encrypted (AES-GCM) under a key id, never in plain text.
vault_cards = sa.Table(
    "vault_cards",
    metadata,
    sa.Column("token", Id, primary_key=True),
    sa.Column("key_id", sa.String(40), nullable=False),
    sa.Column("pan_sealed", sa.LargeBinary, nullable=False),
    sa.Column("fingerprint", sa.String(40), nullable=False, index=True),
    sa.Column("created", Time, nullable=False),
)

# The CVC, sealed under a per-payment data key (itself sealed by the vault key). Deleting the row
# destroys the key: the CVC can never be read again.
vault_cvcs = sa.Table(
    "vault_cvcs",
    metadata,
    sa.Column("payment_id", Id, primary_key=True),
    sa.Column("key_id", sa.String(40), nullable=False),
    sa.Column("data_key_sealed", sa.LargeBinary, nullable=False),
    sa.Column("cvc_sealed", sa.LargeBinary, nullable=False),
    sa.Column("expires_at", Time, nullable=False, index=True),
)

# Single-use card tokens made in the browser with a publishable key (paygate.vault.tokens): the
# card sealed in the vault, the CVC sealed in `vault_cvcs` under the token's id until it expires.
card_tokens = sa.Table(
    "card_tokens",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("card_token", Id, sa.ForeignKey("vault_cards.token"), nullable=False),
    sa.Column("brand", sa.String(20), nullable=False),
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("exp_month", sa.Integer, nullable=False),
    sa.Column("exp_year", sa.Integer, nullable=False),
    sa.Column("fingerprint", sa.String(40), nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("used_at", Time),
    sa.Column("payment_id", Id),
)

payment_methods = sa.Table(
    "payment_methods",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("customer_id", Id, sa.ForeignKey("customers.id")),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("card_token", Id, sa.ForeignKey("vault_cards.token"), nullable=False),
    sa.Column("brand", sa.String(20), nullable=False),
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("exp_month", sa.Integer, nullable=False),
    sa.Column("exp_year", sa.Integer, nullable=False),
    sa.Column("fingerprint", sa.String(40), nullable=False),
    sa.Column("created", Time, nullable=False),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("amount_capturable", Amount, nullable=False),
    sa.Column("amount_captured", Amount, nullable=False),
    sa.Column("amount_refunded", Amount, nullable=False),
    # Refunds created but not yet answered by the bank: reserved against the captured amount.
    sa.Column("amount_refund_pending", Amount, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("capture", sa.Boolean, nullable=False),
    sa.Column("failure_code", sa.String(40)),
    sa.Column("failure_message", sa.String(300)),
    sa.Column("payment_method_id", Id, sa.ForeignKey("payment_methods.id"), nullable=False),
    # The public payment_method object as it was at creation: reads need no join.
    sa.Column("payment_method", Json, nullable=False),
    sa.Column("customer_id", Id, sa.ForeignKey("customers.id")),
    sa.Column("description", sa.String(1000)),
    sa.Column("metadata", Json, nullable=False),
    sa.Column("risk", Json),
    # For fraud rules (paygate.fraud.attributes): the card's first 6 digits (not sensitive on
    # their own) and the client's IP address from the request; internal, not in the object.
    sa.Column("card_bin", sa.String(6)),
    sa.Column("ip_address", sa.String(45)),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Column("updated", Time, nullable=False),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.CheckConstraint(
        "amount_refunded + amount_refund_pending <= amount_captured", name="refunds_within_captured"
    ),
    sa.CheckConstraint("amount_captured <= amount", name="captured_within_amount"),
    sa.Index("ix_payments_merchant_id", "merchant_id", "livemode", "id"),
    sa.Index("ix_payments_merchant_status", "merchant_id", "livemode", "status", "id"),
    sa.Index("ix_payments_merchant_created", "merchant_id", "livemode", "created"),
    # The scheduler's sweep of held authorizations past their time (status, then age).
    sa.Index("ix_payments_held", "status", "updated"),
)

transaction_log = sa.Table(
    "transaction_log",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("payment_id", Id, sa.ForeignKey("payments.id"), nullable=False),
    sa.Column("type", sa.String(60), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("details", Json, nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Index("ix_transaction_log_payment", "payment_id", "id"),
)

refunds = sa.Table(
    "refunds",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("payment_id", Id, sa.ForeignKey("payments.id"), nullable=False, index=True),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("reason", sa.String(40)),
    sa.Column("failure_code", sa.String(40)),
    sa.Column("metadata", Json, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Column("updated", Time, nullable=False),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.Index("ix_refunds_merchant_id", "merchant_id", "livemode", "id"),
)

# The recorded response of every write that carried an Idempotency-Key, written in the same
# transaction as the write's effects. The fingerprint is an HMAC of the canonical request: the raw
# body holds card data and is never kept.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("merchant_id", Id, primary_key=True),
    sa.Column("endpoint", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("response_status", sa.Integer, nullable=False),
    # Sealed with the vault key `body_key_id`: a response may carry a one-time secret (a new
    # merchant's API key), and secrets are never kept in plain text.
    sa.Column("response_body", sa.LargeBinary, nullable=False),
    sa.Column("body_key_id", sa.String(40)),
    sa.Column("created", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False, index=True),
)

# The transactional outbox: every event is written with the state change that caused it, then
# relayed to the bus. `position` orders the relay; `sequence` orders one object's events.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column(
        "position",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("id", Id, nullable=False, unique=True),
    sa.Column("merchant_id", Id, nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("type", sa.String(60), nullable=False),
    sa.Column("object_id", Id, nullable=False),
    sa.Column("sequence", sa.Integer, nullable=False),
    sa.Column("public", sa.Boolean, nullable=False),
    sa.Column("payload", Json, nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Column("published_at", Time),
    # The W3C trace context (`traceparent`, `tracestate`) of the span that wrote the event, so
    # that the relay and the consumers continue its trace (paygate.platform.tracing); null when
    # nothing was traced.
    sa.Column("trace_context", Json),
    sa.Index("ix_outbox_merchant_position", "merchant_id", "position"),
    sa.Index("ix_outbox_unpublished", "published_at", "position"),
)

# In-flight bank operations beside the payment (DESIGN.md section 2, never charge twice). The
# reference is the one the bank is called with; an attempt's payment moves only once the bank's
# answer is known. `unknown` attempts are resolved by looking the reference up at the bank.
bank_attempts = sa.Table(
    "bank_attempts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("payment_id", Id, sa.ForeignKey("payments.id"), nullable=False, index=True),
    sa.Column("refund_id", Id, sa.ForeignKey("refunds.id")),
    sa.Column("operation", sa.String(20), nullable=False),
    sa.Column("reference", sa.String(120), nullable=False, unique=True),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # pending | unknown | succeeded | failed
    sa.Column("failure_code", sa.String(40)),
    sa.Column("tries", sa.Integer, nullable=False),
    sa.Column("next_check_at", sa.Float, nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Column("updated", Time, nullable=False),
    sa.Index("ix_bank_attempts_open", "status", "next_check_at"),
)

# Events a consumer could not apply after its retries: kept for inspection and replay.
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("consumer", sa.String(60), nullable=False),
    sa.Column("event_id", Id, nullable=False),
    sa.Column("event_type", sa.String(60), nullable=False),
    sa.Column("payload", Json, nullable=False),
    sa.Column("error", sa.String(500), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Column("replayed_at", Time),
)
