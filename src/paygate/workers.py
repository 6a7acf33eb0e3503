"""`paygate worker NAME`: one role of the pipeline in its own process, over NATS JetStream, with
`/healthz`, `/readyz` and `/metrics` on a small HTTP port of its own. Start as many of each as
the load needs; SIGTERM lets work in flight finish and acknowledges only what committed."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paygate.config import Settings
from paygate.pipeline import ROLES, Pipeline
from paygate.platform import exposition, heap, metrics
from paygate.platform.logging import log
from paygate.platform.nats_bus import connect_bus
from paygate.runtime import Runtime

WORKERS = ROLES


def health_app(rt: Runtime, role: str) -> Starlette:
    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "role": role})

    async def readyz(_request: Request) -> JSONResponse:
        bus_ok = rt.bus is not None and await rt.bus.ping()
        checks = {
            "database": {"ok": await rt.db.ping(), "backend": rt.db.backend},
            "bus": {"ok": bus_ok, "backend": "nats"},
            "cache": {"ok": await rt.cache.ping(), "backend": rt.cache.backend},
        }
        ready = all(c["ok"] for c in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def prometheus(_request: Request) -> Response:
        body = await exposition.metrics_text(rt.db, rt.bus)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", prometheus)]
    return Starlette(routes=routes)


async def run_worker(role: str, settings: Settings, *, health_port: int | None = None) -> None:
    if role not in WORKERS:
        raise ValueError(f"unknown worker {role!r}: one of {', '.join(WORKERS)}")
    if not settings.bus_url:
        raise ValueError("PAYGATE_BUS_URL must name a NATS server for `paygate worker`")
    rt = Runtime.from_settings(settings)
    bus = rt.bus = await connect_bus(settings.bus_url, settings.namespace)
    bank_url = settings.bank_url or f"http://127.0.0.1:{settings.bank_port}"
    pipeline = Pipeline.over_http(rt, bank_url, bus=bus, roles=[role])
    bus.dead_letter = pipeline.dead_letter
    pipeline.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = None
    if health_port is not None:
        # Started by hand rather than with `serve()`, which would take over SIGTERM.
        config = uvicorn.Config(
            health_app(rt, role),
            host=settings.host,
            port=health_port,
            log_config=None,
            lifespan="off",
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup()
    heap.settle()
    log.info("worker.started", role=role, health_port=health_port)
    await stop.wait()
    log.info("worker.stopping", role=role)
    await pipeline.stop()
    if server is not None:
        with contextlib.suppress(Exception):
            await server.shutdown()
    rt.bus = None  # closed by the pipeline
    await rt.close()
    log.info("worker.stopped", role=role)
