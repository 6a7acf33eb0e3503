"""The limits' server: the gateway's stack (FastAPI, uvicorn, the gateway's own `Database` with
its SQLite pragmas or PostgreSQL pool) doing as little as possible.

    BENCH_DB_URL=sqlite:////tmp/x.db uvicorn limits_app:create_app --factory

`GET /json` answers a small JSON object; `POST /insert` validates the JSON body and commits one
row (one durable transaction: WAL with synchronous=FULL on SQLite, a commit on PostgreSQL).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request

from paygate.platform.db.engine import Database

DDL = "CREATE TABLE IF NOT EXISTS bench_rows (id VARCHAR(40) PRIMARY KEY, body TEXT, created FLOAT)"


def create_app() -> FastAPI:
    db = Database(os.environ["BENCH_DB_URL"])

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with db.transaction() as conn:
            if not db.is_sqlite:
                # The server processes start together: two concurrent CREATE TABLE IF NOT EXISTS
                # can both try to create the table's type, and one then fails its start.
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7001)"))
            await conn.execute(sa.text(DDL))
        yield
        await db.dispose()

    app = FastAPI(lifespan=lifespan)
    insert = sa.text("INSERT INTO bench_rows (id, body, created) VALUES (:id, :body, :created)")

    @app.get("/json")
    async def bare() -> dict[str, Any]:
        return {"object": "ping", "id": uuid.uuid4().hex, "created": int(time.time())}

    @app.post("/insert")
    async def durable(request: Request) -> dict[str, Any]:
        body = await request.json()
        row = {"id": uuid.uuid4().hex, "body": json.dumps(body), "created": time.time()}
        async with db.transaction() as conn:
            await conn.execute(insert, row)
        return {"object": "row", "id": row["id"]}

    return app
