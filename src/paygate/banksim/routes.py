"""The bank's HTTP API.

Every operation is a `POST` answered `200` whether approved or declined: a refusal is a business
answer, not an HTTP error. `400` is a malformed request, `401` a missing or wrong key, `409` a
reference reused for a different request, `503` the bank unavailable (nothing applied).

A call passes, in order: the key, the outage switch, the body, latency, injected errors, the
operation (committed), and last an injected hang before the answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from paygate.banksim.faults import CallFaults
from paygate.banksim.report import day_bounds_ms, settlement_csv
from paygate.banksim.runtime import BankSim
from paygate.banksim.schemas import CaptureIn, PaymentIn, RefundIn, VoidIn
from paygate.banksim.service import Applied, BankService
from paygate.banksim.settings import FaultConfig
from paygate.banksim.store import ReferenceConflict

log = structlog.get_logger("paygate.banksim")

M = TypeVar("M", bound=BaseModel)

router = APIRouter()


class BankError(Exception):
    """An HTTP error of the bank, rendered as `{"error": {"type", "code", "message", "param"}}`.
    Messages never quote request values: they may hold card data."""

    def __init__(
        self, status: int, type_: str, code: str, message: str, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message
        self.param = param

    def response(self) -> JSONResponse:
        body = {"type": self.type, "code": self.code, "message": self.message, "param": self.param}
        headers = {"Retry-After": "1"} if self.status == 503 else None
        return JSONResponse({"error": body}, status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None) -> BankError:
    return BankError(400, "invalid_request_error", "parameter_invalid", message, param)


def _unavailable() -> BankError:
    return BankError(503, "api_error", "service_unavailable", "the bank is unavailable")


def _sim(request: Request) -> BankSim:
    return cast(BankSim, request.app.state.bank)


def _check_key(request: Request, sim: BankSim) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = sim.settings.api_key.encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise BankError(
            401, "authentication_error", "invalid_api_key", "a valid bearer API key is required"
        )


def _check_up(sim: BankSim) -> None:
    if sim.faults.down:
        raise _unavailable()


async def _suffer(sim: BankSim, *, can_hang: bool) -> CallFaults:
    """Wait out the drawn latency and fail if an error is drawn; return the faults still due."""
    faults = sim.faults.draw(can_hang=can_hang)
    if faults.delay_s > 0:
        await asyncio.sleep(faults.delay_s)
    if faults.error:
        raise _unavailable()
    return faults


async def parse_body(request: Request, model: type[M]) -> M:
    """The body as `model`, or a 400 naming the first bad field (never its value)."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        if first["type"] == "json_invalid":
            raise bad_request("the body is not valid JSON") from None
        raise bad_request(f"{param or 'body'}: {first['msg']}", param) from None


async def _operate(
    request: Request, model: type[M], run: Callable[[BankService, M], Awaitable[Applied]]
) -> JSONResponse:
    sim = _sim(request)
    _check_key(request, sim)
    _check_up(sim)
    body = await parse_body(request, model)
    faults = await _suffer(sim, can_hang=True)
    try:
        op, replayed = await run(sim.service, body)
    except ReferenceConflict:
        raise BankError(
            409,
            "invalid_request_error",
            "reference_conflict",
            "this reference was used for a different request",
            "reference",
        ) from None
    log.info(
        "bank.operation",
        reference=op.reference,
        operation=op.operation,
        status=op.status,
        decline_code=op.decline_code,
        amount=op.amount,
        currency=op.currency,
        replayed=replayed,
        hang_s=faults.hang_s or None,
    )
    if faults.hang_s > 0:
        # Applied and committed; the answer comes too late for the caller (a lost answer).
        await asyncio.sleep(faults.hang_s)
    headers = {"Bank-Replayed": "true"} if replayed else None
    return JSONResponse(op.answer(), headers=headers)


@router.post("/v1/authorize")
async def authorize(request: Request) -> JSONResponse:
    """Hold `amount` on the card."""
    return await _operate(request, PaymentIn, lambda svc, body: svc.pay("authorize", body))


@router.post("/v1/sale")
async def sale(request: Request) -> JSONResponse:
    """Authorize and capture in one step."""
    return await _operate(request, PaymentIn, lambda svc, body: svc.pay("sale", body))


@router.post("/v1/capture")
async def capture(request: Request) -> JSONResponse:
    """Capture all or part of an authorization, once; the rest is released."""
    return await _operate(request, CaptureIn, lambda svc, body: svc.capture(body))


@router.post("/v1/void")
async def void(request: Request) -> JSONResponse:
    """Release an uncaptured authorization."""
    return await _operate(request, VoidIn, lambda svc, body: svc.void(body))


@router.post("/v1/refund")
async def refund(request: Request) -> JSONResponse:
    """Refund part or all of a sale or capture."""
    return await _operate(request, RefundIn, lambda svc, body: svc.refund(body))


@router.get("/v1/operations")
async def list_operations(request: Request, payment: str | None = None) -> JSONResponse:
    """The audit listing of one payment's operations, in the order applied. Needs no key and
    answers even while the bank is down, so that tests and operators can always audit it."""
    if not payment:
        raise bad_request("the payment query parameter is required", "payment")
    ops = await _sim(request).service.operations_of(payment)
    return JSONResponse({"data": [op.audit_line() for op in ops]})


@router.get("/v1/operations/{reference}")
async def lookup(request: Request, reference: str) -> JSONResponse:
    """The answer the bank gave under `reference` (how the gateway resolves a timeout), or 404
    if it never applied it."""
    sim = _sim(request)
    _check_key(request, sim)
    _check_up(sim)
    await _suffer(sim, can_hang=False)
    op = await sim.service.lookup(reference)
    if op is None:
        raise BankError(
            404,
            "invalid_request_error",
            "resource_missing",
            "no operation was applied under this reference",
            "reference",
        )
    return JSONResponse(op.answer())


@router.get("/v1/reports/settlement")
async def settlement(request: Request, date: str | None = None) -> Response:
    """CSV of the approved sales, captures and refunds of one UTC day."""
    sim = _sim(request)
    _check_key(request, sim)
    _check_up(sim)
    try:
        day = dt.date.fromisoformat(date or "")
    except ValueError:
        raise bad_request("date must be YYYY-MM-DD", "date") from None
    start, end = day_bounds_ms(day)
    ops = await sim.store.settled_between(start, end)
    return Response(
        settlement_csv(ops),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="settlement-{day}.csv"'},
    )


def _faults_body(sim: BankSim) -> dict[str, Any]:
    return sim.faults.config.model_dump()


@router.get("/v1/admin/faults")
async def get_faults(request: Request) -> JSONResponse:
    """The fault settings in force."""
    sim = _sim(request)
    _check_key(request, sim)
    return JSONResponse(_faults_body(sim))


async def _set_faults(request: Request, start: FaultConfig) -> JSONResponse:
    sim = _sim(request)
    _check_key(request, sim)
    try:
        given = await request.json()
    except ValueError:
        raise bad_request("the body is not valid JSON") from None
    if not isinstance(given, dict):
        raise bad_request("the body must be a JSON object")
    try:
        config = FaultConfig.model_validate({**start.model_dump(), **given})
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise bad_request(f"{param}: {first['msg']}", param) from None
    sim.faults.config = config
    log.info("bank.faults_changed", **config.model_dump())
    return JSONResponse(_faults_body(sim))


@router.put("/v1/admin/faults")
async def put_faults(request: Request) -> JSONResponse:
    """Replace the fault settings; fields left out take their start-up values."""
    return await _set_faults(request, _sim(request).baseline)


@router.patch("/v1/admin/faults")
async def patch_faults(request: Request) -> JSONResponse:
    """Change only the fault settings given."""
    return await _set_faults(request, _sim(request).faults.config)


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Liveness for orchestrators; 503 while the outage switch is on."""
    _check_up(_sim(request))
    return JSONResponse({"status": "ok"})
