"""Tables of the fraud rules and lists (paygate.fraud.rules).

A rule's changes are never silent: every change writes a new row to `fraud_rule_versions`
(append-only) with the rule's version number. Every change of a merchant's rules or lists also
writes a new `revision` to `fraud_rule_sets`, one cheap read that tells the evaluators their
compiled rules are stale.
"""

from __future__ import annotations

import sqlalchemy as sa

from paygate.platform.db.tables import Id, Time, metadata

fraud_rules = sa.Table(
    "fraud_rules",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("action", sa.String(10), nullable=False),  # allow | block | review
    sa.Column("expression", sa.Text, nullable=False),  # canonical text (rules_lang.unparse)
    sa.Column("description", sa.String(500)),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Column("updated", Time, nullable=False),
    sa.Index("ix_fraud_rules_merchant", "merchant_id", "livemode", "id"),
)

fraud_rule_versions = sa.Table(
    "fraud_rule_versions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("rule_id", Id, sa.ForeignKey("fraud_rules.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("action", sa.String(10), nullable=False),
    sa.Column("expression", sa.Text, nullable=False),
    sa.Column("description", sa.String(500)),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("actor", sa.String(60), nullable=False),  # the key id that made the change
    sa.Column("created", Time, nullable=False),
    sa.UniqueConstraint("rule_id", "version"),
)

fraud_lists = sa.Table(
    "fraud_lists",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("name", sa.String(60), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # attributes.LIST_KINDS
    sa.Column("description", sa.String(500)),
    sa.Column("created", Time, nullable=False),
    sa.UniqueConstraint("merchant_id", "livemode", "name"),
)

fraud_list_items = sa.Table(
    "fraud_list_items",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("list_id", Id, sa.ForeignKey("fraud_lists.id"), nullable=False),
    sa.Column("value", sa.String(320), nullable=False),  # canonical (attributes.normalize_item)
    sa.Column("created", Time, nullable=False),
    sa.UniqueConstraint("list_id", "value"),
    sa.Index("ix_fraud_list_items_list", "list_id", "id"),
)

fraud_rule_sets = sa.Table(
    "fraud_rule_sets",
    metadata,
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), primary_key=True),
    sa.Column("livemode", sa.Boolean, primary_key=True),
    sa.Column("revision", Id, nullable=False),
    sa.Column("updated", Time, nullable=False),
)
