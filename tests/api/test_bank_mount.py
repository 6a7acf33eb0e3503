"""`paygate serve` mounts the bank simulator under /bank, on the API's port. Its requests go
straight to it, past the API's layers (edge headers and limits, HTTP metrics, the route table):
the bank is another service sharing the port. The API's own requests still pass them all."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from paygate.api.app import create_app
from tests.conftest import make_settings


def served(route: str) -> float:
    labels = {"method": "GET", "route": route, "status": "200"}
    return REGISTRY.get_sample_value("paygate_http_requests_total", labels) or 0.0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_mounted_bank_is_answered_past_the_api_layers(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url)
    app = create_app(settings, embedded=True)
    bank_key = {"Authorization": f"Bearer {settings.bank_api_key}"}
    before = served("/bank/v1/operations"), served("/healthz")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://paygate.test"
        ) as client:
            ops = await client.get(
                "/bank/v1/operations", params={"payment": "pay_x"}, headers=bank_key
            )
            assert ops.status_code == 200 and ops.json()["data"] == []
            assert "paygate-version" not in ops.headers
            assert (await client.get("/bank/v1/nothing", headers=bank_key)).status_code == 404
            health = await client.get("/healthz")
            assert health.status_code == 200 and "paygate-version" in health.headers
    finally:
        await app.state.runtime.close()
        assert app.bank is not None
        await app.bank.app.state.bank.aclose()
    assert (served("/bank/v1/operations"), served("/healthz")) == (before[0], before[1] + 1)
