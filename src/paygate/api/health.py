"""Operational endpoints: liveness, readiness and metrics (DESIGN.md section 4)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from paygate.api.auth import runtime
from paygate.api.responses import json_response
from paygate.platform import exposition, metrics

router = APIRouter(tags=["operations"])


class HealthOut(BaseModel):
    status: Literal["ok"]


class CheckOut(BaseModel):
    ok: bool
    backend: str


class ChecksOut(BaseModel):
    database: CheckOut
    bus: CheckOut
    cache: CheckOut


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: ChecksOut


@router.get(
    "/healthz",
    summary="The process is alive",
    response_model=None,
    responses={200: {"model": HealthOut}},
)
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    summary="The process can serve: database, bus and cache reachable",
    response_model=None,
    responses={
        200: {"model": ReadyOut, "description": "Ready."},
        503: {"model": ReadyOut, "description": "Not ready: a check failed."},
    },
)
async def readyz(request: Request) -> Response:
    rt = runtime(request)
    checks = {
        "database": {"ok": await rt.db.ping(), "backend": rt.db.backend},
        "bus": (
            {"ok": await rt.bus.ping(), "backend": rt.bus.backend}
            if rt.bus is not None
            else {"ok": True, "backend": "local"}
        ),
        "cache": {"ok": await rt.cache.ping(), "backend": rt.cache.backend},
    }
    ready = all(c["ok"] for c in checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return json_response(body, 200 if ready else 503)


# Not in the OpenAPI document, which describes the JSON API: the answer is Prometheus's text
# exposition format (version 0.0.4).
@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    rt = runtime(request)
    body = await exposition.metrics_text(rt.db, rt.bus)
    return Response(body, media_type=metrics.CONTENT_TYPE)
