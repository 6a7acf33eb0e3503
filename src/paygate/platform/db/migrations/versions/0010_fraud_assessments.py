"""fraud assessments, reports and reviews

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Assessments, reports and review decisions are append-only in the database itself.
APPEND_ONLY = ("fraud_assessments", "fraud_reports", "fraud_review_decisions")


def _sqlite_triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_append_only_{verb.lower()} BEFORE {verb} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        for verb in ("UPDATE", "DELETE")
    ]


def _postgres_triggers(table: str) -> list[str]:
    return [
        f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{table} is append-only'; END $$",
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()",
    ]


def upgrade() -> None:
    op.create_table(
        "fraud_assessments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("model_version", sa.String(length=60), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_assessments")),
    )
    with op.batch_alter_table("fraud_assessments", schema=None) as batch_op:
        batch_op.create_index("ix_fraud_assessments_payment", ["payment_id", "id"], unique=False)

    op.create_table(
        "fraud_settings",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("fail_mode", sa.String(length=10), nullable=False),
        sa.Column("review_threshold", sa.Integer(), nullable=True),
        sa.Column("decline_threshold", sa.Integer(), nullable=True),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_fraud_settings_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_fraud_settings")),
    )

    op.create_table(
        "fraud_reports",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("type", sa.String(length=30), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_fraud_reports_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_reports")),
    )
    with op.batch_alter_table("fraud_reports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fraud_reports_merchant", ["merchant_id", "livemode", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fraud_reports_payment_id"), ["payment_id"], unique=False
        )

    op.create_table(
        "fraud_review_decisions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("decision", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_fraud_review_decisions_payment_id_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_review_decisions")),
    )
    with op.batch_alter_table("fraud_review_decisions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fraud_review_decisions_payment_id"), ["payment_id"], unique=False
        )

    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in APPEND_ONLY:
        for statement in _sqlite_triggers(table) if sqlite else _postgres_triggers(table):
            op.execute(statement)


def downgrade() -> None:
    with op.batch_alter_table("fraud_review_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fraud_review_decisions_payment_id"))
    op.drop_table("fraud_review_decisions")
    with op.batch_alter_table("fraud_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fraud_reports_payment_id"))
        batch_op.drop_index("ix_fraud_reports_merchant")
    op.drop_table("fraud_reports")
    op.drop_table("fraud_settings")
    with op.batch_alter_table("fraud_assessments", schema=None) as batch_op:
        batch_op.drop_index("ix_fraud_assessments_payment")
    op.drop_table("fraud_assessments")  # triggers go with their tables
    if op.get_bind().dialect.name != "sqlite":
        for table in APPEND_ONLY:
            op.execute(f"DROP FUNCTION {table}_append_only()")
