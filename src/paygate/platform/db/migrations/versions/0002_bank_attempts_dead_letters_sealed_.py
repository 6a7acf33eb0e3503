"""bank attempts, dead letters, sealed idempotent responses

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 22:35:04.044970
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("consumer", sa.String(length=60), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=60), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("replayed_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_table(
        "bank_attempts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("refund_id", sa.String(length=40), nullable=True),
        sa.Column("operation", sa.String(length=20), nullable=False),
        sa.Column("reference", sa.String(length=120), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("failure_code", sa.String(length=40), nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("next_check_at", sa.Float(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_bank_attempts_payment_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["refund_id"], ["refunds.id"], name=op.f("fk_bank_attempts_refund_id_refunds")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_attempts")),
        sa.UniqueConstraint("reference", name=op.f("uq_bank_attempts_reference")),
    )
    with op.batch_alter_table("bank_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_bank_attempts_open", ["status", "next_check_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_bank_attempts_payment_id"), ["payment_id"], unique=False
        )

    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body_key_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("body_key_id")

    with op.batch_alter_table("bank_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bank_attempts_payment_id"))
        batch_op.drop_index("ix_bank_attempts_open")

    op.drop_table("bank_attempts")
    op.drop_table("dead_letters")
