"""A database that cannot be reached is a 503 with Retry-After, never a 500: nothing was
committed, and a retry with the same Idempotency-Key is safe."""

from __future__ import annotations

from pathlib import Path

import httpx

from paygate.api.app import create_app
from paygate.runtime import Runtime
from tests.conftest import make_settings
from tests.support import idem, payment_body


async def test_unreachable_database_answers_503_with_retry_after(tmp_path: Path) -> None:
    # Nothing listens on port 1: every connection is refused.
    settings = make_settings(tmp_path, "postgresql+asyncpg://paygate@127.0.0.1:1/paygate")
    rt = Runtime.from_settings(settings)
    app = create_app(settings, rt)
    headers = {"Authorization": "Bearer sk_test_" + "x" * 32}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://paygate.test"
        ) as client:
            for method, path, kwargs in (
                ("GET", "/v1/payments", {}),
                ("POST", "/v1/payments", {"json": payment_body(), "headers": idem()}),
            ):
                extra = kwargs.pop("headers", {})
                r = await client.request(method, path, headers={**headers, **extra}, **kwargs)
                assert r.status_code == 503, r.text
                assert r.headers["Retry-After"] == "1"
                assert r.json()["error"]["type"] == "api_error"
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] == {"ok": False, "backend": "postgresql"}
    finally:
        await rt.close()
