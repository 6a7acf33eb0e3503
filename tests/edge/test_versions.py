"""Dated API versions: pinned per request or per merchant, echoed on every response, and the one
change of 2026-11-01 (a payment's failure fields become `last_error`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from paygate.api.app import create_app
from paygate.edge.versions import BASE, LATEST, VERSIONS, render_for_version
from paygate.runtime import Runtime
from tests.conftest import make_settings
from tests.edge.conftest import ADMIN, Serve
from tests.support import idem, payment_body

FAILED = {
    "id": "pay_1",
    "object": "payment",
    "status": "failed",
    "failure_code": "card_declined",
    "failure_message": "The card was declined.",
    "amount": 1999,
}


def test_payments_gain_last_error_in_2026_11_01() -> None:
    assert VERSIONS == ("2026-01-01", "2026-11-01") and (BASE, LATEST) == VERSIONS
    assert render_for_version(FAILED, "2026-01-01") == FAILED
    newer = render_for_version(FAILED, "2026-11-01")
    assert list(newer) == ["id", "object", "status", "last_error", "amount"]
    assert newer["last_error"] == {"code": "card_declined", "message": "The card was declined."}
    pending = {**FAILED, "failure_code": None, "failure_message": None}
    assert render_for_version(pending, "2026-11-01")["last_error"] is None
    assert FAILED["failure_code"] == "card_declined"  # the input is left alone


def test_lists_and_events_are_rendered_inside_and_other_objects_pass() -> None:
    event = {"id": "evt_1", "object": "event", "type": "payment.failed", "data": {"object": FAILED}}
    listed = {"object": "list", "data": [FAILED, event], "has_more": False}
    out = render_for_version(listed, "2026-11-01")
    assert "last_error" in out["data"][0] and "failure_code" not in out["data"][0]
    assert out["data"][1]["data"]["object"]["last_error"]["code"] == "card_declined"
    refund = {"id": "re_1", "object": "refund", "failure_code": "card_declined"}
    assert render_for_version(refund, "2026-11-01") == refund


async def test_requests_are_answered_in_the_merchants_version_unless_pinned(
    serve_sqlite: Serve,
) -> None:
    async with serve_sqlite() as api:
        old, old_auth = await api.merchant()
        new, new_auth = await api.merchant(name="New", api_version="2026-11-01")
        assert (old["api_version"], new["api_version"]) == ("2026-01-01", "2026-11-01")
        c = api.client

        def shape(body: dict[str, Any]) -> str:
            return "new" if "last_error" in body and "failure_code" not in body else "old"

        created = await c.post("/v1/payments", json=payment_body(), headers={**new_auth, **idem()})
        assert created.headers["paygate-version"] == "2026-11-01" and shape(created.json()) == "new"
        url = f"/v1/payments/{created.json()['id']}"
        for headers, version in (
            (new_auth, "2026-11-01"),
            ({**new_auth, "Paygate-Version": "2026-01-01"}, "2026-01-01"),
        ):
            for r in (
                await c.get(url, headers=headers),
                await c.get("/v1/payments", headers=headers),
            ):
                assert r.headers["paygate-version"] == version
                body = r.json()["data"][0] if r.json()["object"] == "list" else r.json()
                assert shape(body) == ("new" if version == "2026-11-01" else "old")
        pinned = await c.get("/v1/payments", headers={**old_auth, "Paygate-Version": "2026-11-01"})
        assert pinned.headers["paygate-version"] == "2026-11-01"
        assert (await c.get("/v1/payments", headers=old_auth)).headers["paygate-version"] == BASE


async def test_a_replay_is_rendered_in_the_version_of_the_retry(serve_sqlite: Serve) -> None:
    async with serve_sqlite() as api:
        _, auth = await api.merchant()
        keyed = {**auth, **idem()}
        first = await api.client.post("/v1/payments", json=payment_body(), headers=keyed)
        again = await api.client.post(
            "/v1/payments", json=payment_body(), headers={**keyed, "Paygate-Version": LATEST}
        )
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        assert "last_error" in again.json() and "failure_code" in first.json()
        same = await api.client.post("/v1/payments", json=payment_body(), headers=keyed)
        assert same.content == first.content


async def test_every_response_names_its_version_and_unknown_ones_are_refused(
    serve_sqlite: Serve,
) -> None:
    async with serve_sqlite() as api:
        _, auth = await api.merchant()
        c = api.client
        for r in (
            await c.get("/v1/payments"),  # 401
            await c.get("/v1/payments/pay_missing", headers=auth),  # 404
            await c.get("/healthz"),
            await c.get("/v1/merchants", headers=ADMIN),
        ):
            assert r.headers["paygate-version"] == "2026-01-01", r.url
        bad = await c.get("/v1/payments", headers={**auth, "Paygate-Version": "2025-13-01"})
        assert bad.status_code == 400
        error = bad.json()["error"]
        assert (error["code"], error["param"]) == ("api_version_invalid", "Paygate-Version")
        assert "2026-11-01" in error["message"]
        refused = await c.post(
            "/v1/merchants", json={"name": "X", "api_version": "2020-01-01"}, headers=ADMIN
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "api_version"


async def test_the_default_for_new_merchants_is_a_setting(serve_sqlite: Serve) -> None:
    async with serve_sqlite(default_api_version="2026-11-01") as api:
        merchant, auth = await api.merchant()
        assert merchant["api_version"] == "2026-11-01"
        r = await api.client.get("/v1/payments", headers=auth)
        assert r.headers["paygate-version"] == "2026-11-01"


def test_the_default_must_be_a_version(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url, default_api_version="2027-01-01")
    with pytest.raises(ValueError, match="PAYGATE_DEFAULT_API_VERSION"):
        create_app(settings, Runtime.from_settings(settings))
