"""Idempotency keys across a server crash: a real `paygate serve` process dies hard (as `kill -9`
would) just before or just after the commit of a keyed payment; a retry with the same key after
the restart replays the committed answer, or runs the request fresh, and never charges twice.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.serve import CRASH_EXIT, Gateway, gateway
from tests.support import ADMIN_KEY, payment_body

__all__ = ["gateway"]

pytestmark = pytest.mark.slow

REPLAYED = "Idempotent-Replayed"


def _crash_on_keyed_payment(gw: Gateway, fault: str) -> tuple[dict[str, str], str]:
    """Start with `fault` armed, create a merchant, send a keyed payment: the process dies."""
    proc = gw.start(fault)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    merchant = gw.request("POST", "/v1/merchants", json={"name": "Acme"}, headers=admin)
    assert merchant.status_code == 201, merchant.text  # no key: no crash point on this path
    auth = {"Authorization": f"Bearer {merchant.json()['api_key']}"}
    key = str(uuid.uuid4())
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        gw.request(
            "POST", "/v1/payments", json=payment_body(), headers={**auth, "Idempotency-Key": key}
        )
    assert proc.wait(timeout=10) == CRASH_EXIT, gw.log_text()
    return auth, key


def _payments(gw: Gateway, auth: dict[str, str]) -> list[dict[str, Any]]:
    r = gw.request("GET", "/v1/payments", headers=auth)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_crash_after_commit_then_retry_replays(gateway: Gateway) -> None:
    auth, key = _crash_on_keyed_payment(gateway, "idempotency.after_commit")
    gateway.start()
    [committed] = _payments(gateway, auth)  # the payment committed before the process died

    # The very first retry after the restart: no key is left in flight, the answer is replayed.
    retry = gateway.request(
        "POST", "/v1/payments", json=payment_body(), headers={**auth, "Idempotency-Key": key}
    )
    assert retry.status_code == 202, retry.text
    assert retry.headers[REPLAYED] == "true"
    # The answer as it was first sent (the payment may have moved on since, in a full pipeline).
    assert retry.json()["id"] == committed["id"] and retry.json()["status"] == "pending"
    assert [p["id"] for p in _payments(gateway, auth)] == [committed["id"]]


def test_crash_before_commit_then_retry_executes_once(gateway: Gateway) -> None:
    auth, key = _crash_on_keyed_payment(gateway, "idempotency.before_commit")
    gateway.start()
    assert _payments(gateway, auth) == []  # the transaction died with the process

    headers = {**auth, "Idempotency-Key": key}
    retry = gateway.request("POST", "/v1/payments", json=payment_body(), headers=headers)
    assert retry.status_code == 202, retry.text
    assert REPLAYED not in retry.headers
    assert [p["id"] for p in _payments(gateway, auth)] == [retry.json()["id"]]
    again = gateway.request("POST", "/v1/payments", json=payment_body(), headers=headers)
    assert again.headers[REPLAYED] == "true" and again.content == retry.content
    assert len(_payments(gateway, auth)) == 1
