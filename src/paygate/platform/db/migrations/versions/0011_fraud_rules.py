"""fraud rules and lists; payments keep the card's BIN and the client's IP address

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A rule's history is append-only in the database itself.
_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER fraud_rule_versions_append_only_{verb.lower()} BEFORE {verb} "
    "ON fraud_rule_versions BEGIN SELECT RAISE(ABORT, 'fraud_rule_versions is append-only'); END"
    for verb in ("UPDATE", "DELETE")
]
_POSTGRES_TRIGGERS = [
    "CREATE FUNCTION fraud_rule_versions_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'fraud_rule_versions is append-only'; END $$",
    "CREATE TRIGGER fraud_rule_versions_append_only BEFORE UPDATE OR DELETE "
    "ON fraud_rule_versions FOR EACH ROW EXECUTE FUNCTION fraud_rule_versions_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "fraud_lists",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_fraud_lists_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_lists")),
        sa.UniqueConstraint(
            "merchant_id",
            "livemode",
            "name",
            name=op.f("uq_fraud_lists_merchant_id_livemode_name"),
        ),
    )
    op.create_table(
        "fraud_rule_sets",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.String(length=40), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_fraud_rule_sets_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("merchant_id", "livemode", name=op.f("pk_fraud_rule_sets")),
    )
    op.create_table(
        "fraud_rules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_fraud_rules_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_rules")),
    )
    with op.batch_alter_table("fraud_rules", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fraud_rules_merchant", ["merchant_id", "livemode", "id"], unique=False
        )
    op.create_table(
        "fraud_list_items",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("list_id", sa.String(length=40), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"], ["fraud_lists.id"], name=op.f("fk_fraud_list_items_list_id_fraud_lists")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_list_items")),
        sa.UniqueConstraint("list_id", "value", name=op.f("uq_fraud_list_items_list_id_value")),
    )
    with op.batch_alter_table("fraud_list_items", schema=None) as batch_op:
        batch_op.create_index("ix_fraud_list_items_list", ["list_id", "id"], unique=False)
    op.create_table(
        "fraud_rule_versions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("rule_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(length=60), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["fraud_rules.id"], name=op.f("fk_fraud_rule_versions_rule_id_fraud_rules")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_rule_versions")),
        sa.UniqueConstraint(
            "rule_id", "version", name=op.f("uq_fraud_rule_versions_rule_id_version")
        ),
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in _SQLITE_TRIGGERS if sqlite else _POSTGRES_TRIGGERS:
        op.execute(statement)
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("card_bin", sa.String(length=6), nullable=True))
        batch_op.add_column(sa.Column("ip_address", sa.String(length=45), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("ip_address")
        batch_op.drop_column("card_bin")
    op.drop_table("fraud_rule_versions")  # its triggers go with it
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION fraud_rule_versions_append_only()")
    with op.batch_alter_table("fraud_list_items", schema=None) as batch_op:
        batch_op.drop_index("ix_fraud_list_items_list")
    op.drop_table("fraud_list_items")
    with op.batch_alter_table("fraud_rules", schema=None) as batch_op:
        batch_op.drop_index("ix_fraud_rules_merchant")
    op.drop_table("fraud_rules")
    op.drop_table("fraud_rule_sets")
    op.drop_table("fraud_lists")
