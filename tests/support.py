"""Test helpers: request bodies and keys."""

from __future__ import annotations

import uuid
from typing import Any

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
