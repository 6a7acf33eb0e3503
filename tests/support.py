"""Test helpers: request bodies and keys, and the statements a database is sent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import sqlalchemy as sa

if TYPE_CHECKING:
    from paygate.platform.db import Database

ADMIN_KEY = "sk_admin_test_0123456789"
VAULT_KEYS = "k1:" + "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # 32 fixed bytes, tests only
HMAC_SECRET = "test-hmac-secret"

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def payment_body(**overrides: Any) -> dict[str, Any]:
    card = {**CARD, **overrides.pop("card", {})}
    body: dict[str, Any] = {"amount": 1999, "currency": "usd", "payment_method": {"card": card}}
    body.update(overrides)
    return body


def idem() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements sent to `db` inside the block, as SQLAlchemy sends them (leading
    blanks stripped)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.lstrip())

    engine = db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def healthy(url: str, timeout_s: float) -> bool:
    """Whether a gateway process at `url` answers its health check (not yet listening: no)."""
    try:
        return httpx.get(f"{url}/healthz", timeout=timeout_s).status_code == 200
    except httpx.TransportError:
        return False
