"""Apps for the edge tests: one or more API instances over one database, with the read cache on,
optionally over a shared Redis (each test under a key prefix of its own)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from paygate.api.app import create_app
from paygate.config import Settings
from paygate.edge.state import Edge
from paygate.platform.cache import RedisCache
from paygate.runtime import Runtime
from tests.conftest import make_settings
from tests.support import ADMIN_KEY, idem, payment_body

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    app: FastAPI

    @property
    def edge(self) -> Edge:
        edge: Edge = self.app.state.edge
        return edge

    async def merchant(self, **body: Any) -> tuple[dict[str, Any], dict[str, str]]:
        r = await self.client.post("/v1/merchants", json={"name": "Acme", **body}, headers=ADMIN)
        assert r.status_code == 201, r.text
        merchant: dict[str, Any] = r.json()
        return merchant, {"Authorization": f"Bearer {merchant['api_key']}"}

    async def payment(self, auth: dict[str, str], **body: Any) -> dict[str, Any]:
        r = await self.client.post(
            "/v1/payments", json=payment_body(**body), headers={**auth, **idem()}
        )
        assert r.status_code == 202, r.text
        payment: dict[str, Any] = r.json()
        return payment


@asynccontextmanager
async def serve(settings: Settings, prefix: str | None = None) -> AsyncIterator[Api]:
    """An API instance with its own runtime; over Redis, keys under `prefix`."""
    rt = Runtime.from_settings(settings)
    if settings.redis_url and prefix is not None:
        await rt.cache.close()
        rt.cache = RedisCache(settings.redis_url, prefix=prefix)
    app = create_app(settings, rt)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://paygate.test") as c:
            yield Api(c, rt, app)
    finally:
        await rt.close()


Serve = Callable[..., AbstractAsyncContextManager[Api]]


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def serve_with(tmp_path: Path, database_url: str, prefix: str) -> Serve:
    """`serve_with(**settings)`: an instance over this test's database (both backends)."""

    def start(**extra: Any) -> AbstractAsyncContextManager[Api]:
        return serve(make_settings(tmp_path, database_url, **extra), prefix)

    return start


@pytest.fixture
def serve_sqlite(tmp_path: Path, sqlite_url: str, prefix: str) -> Serve:
    """`serve_sqlite(**settings)`: for what does not depend on the database."""

    def start(**extra: Any) -> AbstractAsyncContextManager[Api]:
        return serve(make_settings(tmp_path, sqlite_url, **extra), prefix)

    return start


@pytest.fixture
async def api(serve_with: Serve) -> AsyncIterator[Api]:
    async with serve_with(read_cache="on") as instance:
        yield instance


@pytest.fixture
async def sqlite_api(serve_sqlite: Serve) -> AsyncIterator[Api]:
    """`api` for what does not depend on the database: SQLite only, for speed."""
    async with serve_sqlite(read_cache="on") as instance:
        yield instance
