"""The HTTP application: `create_app()` wires routers, errors and limits around a `Runtime`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from paygate import __version__
from paygate.api import errors, health, openapi
from paygate.api.limits import BodyLimit, NoNul
from paygate.api.metering import MetricsMiddleware
from paygate.api.prefer import SETTLING_EVENTS
from paygate.config import Settings, get_settings
from paygate.customers.routes import router as customers_router
from paygate.edge import apikeys, audit, tokens
from paygate.edge.http import EdgeMiddleware
from paygate.edge.state import Edge
from paygate.fraud.routes import router as fraud_router
from paygate.fraud.rules_routes import router as fraud_rules_router
from paygate.ledger.routes import router as ledger_router
from paygate.merchants.routes import router as merchants_router
from paygate.notifications.routes import router as notifications_router
from paygate.payments.routes import router as payments_router
from paygate.platform import heap
from paygate.platform.tracing import instrument_app
from paygate.reconciliation.routes import router as reconciliation_router
from paygate.refunds.routes import router as refunds_router
from paygate.runtime import Runtime, read_cache_enabled
from paygate.settlements.routes import router as settlements_router

DESCRIPTION = """
Card payments, refunds and customers over a versioned JSON API.

Authenticate with `Authorization: Bearer <key>`: a merchant's secret key (`sk_test_…`) for its
own objects, the admin key for platform operations (`/v1/merchants`). Every write takes an
`Idempotency-Key` header (required on payment and refund creation): a retry with the same key
and request replays the first response. Amounts are integers in the currency's minor unit.
Errors answer `{"error": {"type", "code", "message", "param"}}`.

Keys: secret (`sk_`), restricted (`rk_`, per-resource permissions), publishable (`pk_`, only
`POST /v1/tokens`, callable from browsers). Rate limits per key and tier answer `429` with
`Retry-After`; every limited response carries `RateLimit-Policy` and `RateLimit`. Pin a dated
API version with `Paygate-Version` (default: the merchant's); every response names the version
it was answered in. `GET /v1/payments/{id}` and `GET /v1/refunds/{id}` answer an `ETag`: send it
back in `If-None-Match` to get `304` until the object changes.
"""


class PaygateAPI(FastAPI):
    """The API with the edge (paygate.edge.http) outside everything else, the framework's own
    error handling included, so that even its answers carry the edge's headers; the HTTP metrics
    outside the edge, so that its answers are counted too.

    A request under a mounted bank simulator (`paygate serve`) goes to it first, past all of
    that: the bank is another service sharing the port, not a part of the API, and its requests
    are as many as the payments."""

    bank: Mount | None = None

    def build_middleware_stack(self) -> ASGIApp:
        edge = EdgeMiddleware(super().build_middleware_stack(), self.state.runtime.settings)
        api = MetricsMiddleware(edge)
        return api if self.bank is None else _BankFirst(self.bank, api)


class _BankFirst:
    def __init__(self, bank: Mount, api: ASGIApp) -> None:
        self.bank, self.api = bank, api
        self.prefix = bank.path + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            match, child = self.bank.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                return await self.bank.handle(scope, receive, send)
        await self.api(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    *,
    embedded: bool = False,
    settle_heap: bool = False,
) -> FastAPI:
    """The API. `embedded` runs the whole gateway in this process: the bank simulator mounted
    under `/bank` (still called over HTTP) and the pipeline (relay, fraud, processor, recovery)
    as background tasks. `settle_heap`: the app of a server process, which freezes what it built
    once started (`paygate.platform.heap`); never for an app a test starts and drops."""
    settings = settings or get_settings()
    rt = runtime or Runtime.from_settings(settings)
    if embedded:
        # One process: the pipeline invalidates the same memory cache the API reads from.
        rt.read_cache = rt.read_cache or read_cache_enabled(settings, embedded=True)
    bank_app = None
    if embedded:
        from paygate.banksim.app import create_app as create_bank_app

        bank_app = create_bank_app()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pipeline = None
        if embedded:
            from paygate.pipeline import Pipeline

            bank_url = settings.bank_url or f"http://127.0.0.1:{settings.port}/bank"
            pipeline = Pipeline.over_http(rt, bank_url)
            pipeline.start()
            rt.hears_every_change = True  # its workers call rt.changed after each commit
        elif settings.bus_url and rt.bus is None:
            # The API writes events to the outbox only; the broker connection is for /readyz,
            # and so that `Prefer: wait` hears of the workers' changes instead of polling.
            from paygate.platform.nats_bus import connect_bus

            bus = await connect_bus(settings.bus_url, settings.namespace)
            await bus.watch(rt.changed_elsewhere, types=SETTLING_EVENTS)
            rt.bus, rt.hears_every_change = bus, True
        if settle_heap:
            heap.settle()
        yield
        if pipeline is not None:
            await pipeline.stop()
        if bank_app is not None:
            await bank_app.state.bank.aclose()
        if runtime is None:
            await rt.close()

    # No trailing-slash redirects: an API answers the contract's JSON 404, not a 307.
    app = PaygateAPI(
        title="Paygate",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.runtime = rt
    app.state.edge = Edge.build(rt)
    errors.install(app)
    openapi.install(app)
    for router in (
        health.router,
        merchants_router,
        payments_router,
        refunds_router,
        customers_router,
        notifications_router,
        ledger_router,
        settlements_router,
        reconciliation_router,
        fraud_router,
        fraud_rules_router,
        apikeys.router,
        audit.router,
        tokens.router,
    ):
        app.include_router(router)
    if bank_app is not None:
        app.bank = Mount("/bank", app=bank_app)
        app.router.routes.append(app.bank)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(NoNul)
    # A server span per request (its trace continues through the outbox) and a log scope; the
    # mounted bank simulator traces its own requests.
    instrument_app(app, excluded_urls="/healthz$,/readyz$,/metrics$,/bank/")
    return app
