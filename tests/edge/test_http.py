"""Request limits (header count and size, handler time) and security headers on every
response."""

from __future__ import annotations

import asyncio

import httpx
from starlette.responses import Response

from paygate.api.responses import json_response
from tests.edge.conftest import ADMIN, Serve
from tests.support import idem, payment_body

CSP = "default-src 'none'; frame-ancestors 'none'"


async def test_security_headers_are_on_every_response(serve_sqlite: Serve) -> None:
    async with serve_sqlite() as api:
        _, auth = await api.merchant()
        payment = await api.payment(auth)
        c = api.client
        answers = {
            "ok": await c.get("/v1/payments", headers=auth),
            "created": await c.post(
                "/v1/payments", json=payment_body(), headers={**auth, **idem()}
            ),
            "unauthenticated": await c.get("/v1/payments"),
            "missing": await c.get("/v1/payments/pay_missing", headers=auth),
            "no route": await c.get("/v1/nothing", headers=auth),
            "invalid": await c.post("/v1/payments", json={}, headers={**auth, **idem()}),
            "health": await c.get("/healthz"),
            "cached read": await c.get(f"/v1/payments/{payment['id']}", headers=auth),
        }
        for name, r in answers.items():
            assert r.headers["x-content-type-options"] == "nosniff", name
            assert r.headers["referrer-policy"] == "no-referrer", name
            assert r.headers["content-security-policy"] == CSP, name
            assert "strict-transport-security" not in r.headers, name
            expected = "private, no-cache" if name == "cached read" else "no-store"
            assert r.headers["cache-control"] == expected, name
        docs = await c.get("/docs")
        assert docs.headers["content-type"].startswith("text/html")
        assert "content-security-policy" not in docs.headers  # its page loads scripts
        assert docs.headers["x-content-type-options"] == "nosniff"


async def test_hsts_only_behind_tls(serve_sqlite: Serve) -> None:
    async with serve_sqlite() as api:
        tls = await api.client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
        assert tls.headers["strict-transport-security"].startswith("max-age=")
        plain = await api.client.get("/healthz", headers={"X-Forwarded-Proto": "http"})
        assert "strict-transport-security" not in plain.headers


async def test_an_unexpected_error_still_gets_the_headers(serve_sqlite: Serve) -> None:
    async with serve_sqlite() as api:

        async def broken() -> Response:
            # Answered by the framework's outermost error handler (a backend gone: 503).
            raise ConnectionError("the database went away")

        api.app.add_api_route("/v1/broken", broken)
        # The error comes back as the answer a server sends, not as a raised exception.
        transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://paygate.test") as c:
            r = await c.get("/v1/broken", headers=ADMIN)
        assert r.status_code == 503 and r.json()["error"]["type"] == "api_error"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"


async def test_too_many_or_too_large_header_fields_are_431(serve_sqlite: Serve) -> None:
    async with serve_sqlite(max_header_count=20, max_header_bytes=2048) as api:
        c = api.client
        many = {f"X-Field-{i}": "1" for i in range(25)}
        large = {"X-Large": "x" * 3000}
        for headers in (many, large):
            r = await c.get("/v1/payments", headers={**ADMIN, **headers})
            assert r.status_code == 431
            error = r.json()["error"]
            assert (error["type"], error["code"]) == ("invalid_request_error", "headers_too_large")
            assert r.headers["x-content-type-options"] == "nosniff"
        assert (await c.get("/healthz", headers={"X-Small": "x" * 100})).status_code == 200


async def test_a_handler_past_the_timeout_answers_503(serve_sqlite: Serve) -> None:
    async with serve_sqlite(request_timeout_s=0.2) as api:

        async def slow() -> Response:
            await asyncio.sleep(0.5)
            return json_response({"object": "slow"})

        api.app.add_api_route("/v1/slow", slow)
        r = await api.client.get("/v1/slow")
        assert r.status_code == 503
        assert r.json()["error"] == {
            "type": "api_error",
            "code": "timeout",
            "message": r.json()["error"]["message"],
            "param": None,
        }
        assert r.headers["retry-after"] == "1"
        assert r.headers["x-content-type-options"] == "nosniff"
        # A request that asked to wait gets that long on top.
        waited = await api.client.get("/v1/slow", headers={"Prefer": "wait=1"})
        assert waited.status_code == 200
