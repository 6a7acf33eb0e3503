"""The bank simulator as an ASGI app, and `run` to serve it alone (`paygate bank-sim`).

Inside `paygate serve` the same app is mounted under `/bank` and the gateway still reaches it over
HTTP. A mounted app's lifespan does not run, so the store opens on first use and the host app
closes it with `app.state.bank.aclose()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from paygate.banksim.routes import BankError, bad_request, router
from paygate.banksim.runtime import BankSim
from paygate.banksim.settings import BankSimSettings
from paygate.platform.tracing import configure_tracing, instrument_app

log = structlog.get_logger("paygate.banksim")


def create_app(
    settings: BankSimSettings | None = None, *, clock: Callable[[], float] | None = None
) -> FastAPI:
    """A simulated acquiring bank. `clock` (Unix seconds) is for tests of dated behaviour."""
    sim = BankSim(settings or BankSimSettings(), clock=clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sim.aclose()

    app = FastAPI(
        title="Paygate bank simulator",
        summary="A simulated acquiring bank, faults included, for the gateway to call over HTTP.",
        version="1",
        lifespan=lifespan,
    )
    app.state.bank = sim
    app.include_router(router)
    # The gateway's calls carry `traceparent`: the bank's side joins the payment's trace.
    instrument_app(app)

    @app.exception_handler(BankError)
    async def bank_error(_: Request, exc: BankError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer echoes the input; the input may be card data.
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        return bad_request(f"{param or 'request'} is invalid", param).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "resource_missing" if exc.status_code == 404 else "http_error"
        return BankError(exc.status_code, "invalid_request_error", code, str(exc.detail)).response()

    return app


def run(host: str = "127.0.0.1", port: int | None = None) -> None:
    """Serve the simulator alone with uvicorn (blocks). Logging is left as the caller set it up."""
    settings = BankSimSettings()
    bound = port if port is not None else settings.port
    configure_tracing("paygate-bank-sim")
    log.info("banksim.starting", host=host, port=bound, data_dir=str(settings.data_dir))
    uvicorn.run(create_app(settings), host=host, port=bound, log_config=None)
