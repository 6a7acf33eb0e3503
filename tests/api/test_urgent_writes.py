"""On SQLite the API's writes take their turn before the pipeline's (the group commit's urgent
writers, docs/performance.md): a create call does not queue behind work no client waits for."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.platform.db import group_commit
from paygate.runtime import Runtime
from tests.support import payment_body


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_create_goes_before_the_pipelines_writes_queued_ahead_of_it(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # However slow the machine, the pipeline's writer does not wait long enough here to be let
    # through ahead of urgent ones.
    monkeypatch.setattr(group_commit, "MAX_BATCH_AGE_S", 60.0)
    order: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO payments "):
            order.append("api")
        elif "'pipeline'" in statement:
            order.append("pipeline")

    sa.event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", seen)
    gate = asyncio.Event()

    async def holder() -> None:  # a pipeline's writer in its block
        async with runtime.db.transaction() as conn:
            await conn.execute(sa.text("SELECT 1"))
            await gate.wait()

    async def queued() -> None:  # another, queued behind it
        async with runtime.db.transaction() as conn:
            await conn.execute(sa.text("SELECT 'pipeline'"))

    first = asyncio.create_task(holder())
    await asyncio.sleep(0.05)
    second = asyncio.create_task(queued())
    await asyncio.sleep(0.05)
    create = asyncio.create_task(
        client.post(
            "/v1/payments",
            json=payment_body(),
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
    )
    await asyncio.sleep(0.2)  # the create has queued for its write
    assert order == []
    gate.set()
    r = await create
    await asyncio.gather(first, second)
    assert r.status_code == 202, r.text
    assert order == ["api", "pipeline"]
