"""An API process of the scale-out mode hears of the changes the workers commit in other
processes (over NATS), so that `Prefer: wait` answers once a payment rests without polling the
database for it."""

from __future__ import annotations

import time

import httpx
import pytest

from paygate.api import prefer
from paygate.api.app import create_app
from paygate.config import Settings
from paygate.pipeline import Pipeline
from paygate.runtime import Runtime
from tests.conftest import new_merchant
from tests.support import idem, payment_body


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
            assert api_rt.hears_other_processes
            merchant = await new_merchant(api)
            headers = {"Authorization": f"Bearer {merchant['api_key']}", "Prefer": "wait=20"}
            started = time.monotonic()
            r = await api.post("/v1/payments", json=payment_body(), headers={**headers, **idem()})
            waited = time.monotonic() - started
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "succeeded"
            assert waited < 15  # woken by the worker's event, not by the end of the wait
    finally:
        await api_rt.close()
