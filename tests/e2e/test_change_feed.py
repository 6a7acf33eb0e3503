"""An API process hears of the changes the workers commit, so that `Prefer: wait` answers once
a payment rests without polling the database for it: in the scale-out mode from other processes
(over NATS), on the embedded default from the pipeline in its own process."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from paygate.api import prefer
from paygate.api.app import create_app
from paygate.config import Settings
from paygate.pipeline import Pipeline
from paygate.runtime import Runtime
from tests.conftest import make_settings, new_merchant
from tests.support import idem, payment_body


async def _pay_and_wait(api: httpx.AsyncClient) -> float:
    """Seconds a `Prefer: wait` payment took to answer `succeeded`."""
    merchant = await new_merchant(api)
    headers = {"Authorization": f"Bearer {merchant['api_key']}", "Prefer": "wait=20"}
    started = time.monotonic()
    r = await api.post("/v1/payments", json=payment_body(), headers={**headers, **idem()})
    waited = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    return waited


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_an_api_process_hears_the_workers_commit(
    settings: Settings, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Longer than the wait: only word from the workers can wake the waiter before it ends.
    monkeypatch.setattr(prefer, "HEARD_POLL_S", 60.0)
    api_rt = Runtime.from_settings(settings)  # an API process of its own, beside the workers
    app = create_app(settings, api_rt)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://paygate.test"
            ) as api,
        ):
            assert api_rt.hears_every_change
            # Woken by the worker's event, not by the end of the wait.
            assert await _pay_and_wait(api) < 15
    finally:
        await api_rt.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_embedded_gateway_hears_its_own_pipeline(
    tmp_path: Path, database_url: str, bank_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both longer than the wait: only the workers' word can wake the waiter before it ends.
    monkeypatch.setattr(prefer, "POLL_S", 60.0)
    monkeypatch.setattr(prefer, "HEARD_POLL_S", 60.0)
    settings = make_settings(tmp_path, database_url, bank_url=bank_url)
    app = create_app(settings, embedded=True)  # `paygate serve`: API and pipeline in one
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://paygate.test"
        ) as api,
    ):
        assert app.state.runtime.hears_every_change
        assert await _pay_and_wait(api) < 15
