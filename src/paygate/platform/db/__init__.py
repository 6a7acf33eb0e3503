"""The relational store: tables, engine, unit of work, migrations."""

from paygate.platform.db.engine import Database

__all__ = ["Database"]
