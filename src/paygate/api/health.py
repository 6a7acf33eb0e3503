"""Operational endpoints: liveness and readiness (DESIGN.md section 4)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from paygate.api.auth import runtime
from paygate.api.responses import json_response

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="The process can serve: database, bus and cache reachable")
async def readyz(request: Request) -> Response:
    rt = runtime(request)
    checks = {
        "database": {"ok": await rt.db.ping(), "backend": rt.db.backend},
        "bus": {"ok": True, "backend": "local"},
        "cache": {"ok": True, "backend": "memory"},
    }
    ready = all(c["ok"] for c in checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return json_response(body, 200 if ready else 503)
