"""Every failure answers the contract shape `{"error": {"type", "code", "message", "param"}}`.

Framework validation errors quote the input by default; here only the field's path and a
message that quotes nothing are kept, so no card number or CVC is ever echoed.
"""

from __future__ import annotations

import errno
import re
import socket
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from paygate.api.responses import json_response
from paygate.errors import PaygateError, ServiceUnavailable, StateConflict
from paygate.payments.models import TransitionRefused
from paygate.platform.logging import log

_LONG_DIGITS = re.compile(r"\d[\d -]{10,}\d")

# Pydantic error types → our codes. Custom types raised by our validators pass through as codes.
_CODES = {
    "missing": "parameter_missing",
    "extra_forbidden": "parameter_unknown",
    "json_invalid": "invalid_json",
    "model_attributes_type": "parameter_invalid",
}
_OWN_CODES = {
    "invalid_number",
    "invalid_expiry",
    "invalid_cvc",
    "invalid_currency",
    "invalid_amount",
    "invalid_metadata",
    "invalid_string",
    "card_number_in_text",
}


_HTTP_CODES = {404: "resource_missing", 405: "method_not_allowed", 413: "body_too_large"}


def _param(loc: tuple[Any, ...]) -> str | None:
    # A field name comes from the client too (an unknown key may be a card number): long digit
    # runs are masked like values are.
    parts = [_LONG_DIGITS.sub("…", str(p)) for p in loc[1:] if isinstance(p, str | int)]
    if loc and loc[0] == "header":
        return {"idempotency-key": "Idempotency-Key"}.get(parts[0], parts[0]) if parts else None
    return ".".join(parts) or None


def _message(err: dict[str, Any], param: str | None) -> str:
    if err["type"] == "json_invalid":
        return "The request body is not valid JSON."
    if param is None and err["type"] == "missing":
        return "A JSON object is required as the request body."
    if param is None and err["type"] in ("model_attributes_type", "dict_type", "model_type"):
        return "The request body must be a JSON object."
    if err["type"] == "missing":
        return f"Missing required parameter: {param}."
    if err["type"] == "extra_forbidden":
        return f"Unknown parameter: {param}."
    msg = str(err.get("msg", "Invalid value."))
    msg = msg.removeprefix("Value error, ")
    msg = _LONG_DIGITS.sub("…", msg)
    return f"Invalid {param}: {msg}" if param else msg


def validation_error(err: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    param = _param(tuple(err.get("loc", ())))
    etype = err.get("type", "")
    code = etype if etype in _OWN_CODES else _CODES.get(etype, "parameter_invalid")
    if etype == "json_invalid":
        param = None
    return 400, {
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": _message(err, param),
            "param": param,
        }
    }


def error_reply(exc: PaygateError | TransitionRefused) -> tuple[int, dict[str, Any]]:
    """(status, body) of a refused request; a state the object is in refuses with `409`."""
    if isinstance(exc, TransitionRefused):
        exc = StateConflict(str(exc), param=exc.param)
    return exc.status, exc.body()


# A socket that cannot reach its server: refused, reset, unreachable, or (a Unix socket) no
# socket file while the server is down. A file the code opens carries its `filename`; these do not.
_UNREACHABLE = frozenset(
    {
        errno.ENOENT,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ETIMEDOUT,
        errno.EPIPE,
    }
)


def _unavailable(exc: BaseException, depth: int = 0) -> bool:
    """A connection-level failure of a backend, not a bug: lost or refused connections, a
    database shutting down, SQLite busy past its timeout (or anything they caused)."""
    if isinstance(exc, OperationalError | InterfaceError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, socket.gaierror) or (
        isinstance(exc, OSError) and exc.filename is None and exc.errno in _UNREACHABLE
    ):
        return True
    # SQLSTATE class 08 (connection exception) and 57 (operator intervention: the server is
    # shutting down, crashed, or is starting up and not yet accepting connections).
    if str(getattr(exc, "sqlstate", None) or "")[:2] in ("08", "57"):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and depth < 5 and _unavailable(cause, depth + 1)


def install(app: FastAPI) -> None:
    @app.exception_handler(PaygateError)
    async def _paygate(_request: Request, exc: PaygateError) -> Response:
        return json_response(exc.body(), exc.status, exc.headers)

    @app.exception_handler(TransitionRefused)
    async def _refused(_request: Request, exc: TransitionRefused) -> Response:
        status, body = error_reply(exc)
        return json_response(body, status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        status, body = validation_error(exc.errors()[0])
        return json_response(body, status)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> Response:
        kind = "invalid_request_error" if exc.status_code < 500 else "api_error"
        code = {404: "resource_missing", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "error"
        )
        body = {"error": {"type": kind, "code": code, "message": str(exc.detail), "param": None}}
        return json_response(body, exc.status_code, dict(exc.headers or {}))

    async def _backend(request: Request, exc: Exception) -> Response:
        if not _unavailable(exc):
            return await _fault(request, exc)
        # The database is restarting or unreachable: nothing was committed, so the caller may
        # retry (with the same Idempotency-Key) once it is back.
        log.warning("http.store_unavailable", path=request.url.path, error=type(exc).__name__)
        unavailable = ServiceUnavailable(
            "The service is briefly unavailable; retry the request.", headers={"Retry-After": "1"}
        )
        return json_response(unavailable.body(), unavailable.status, unavailable.headers)

    # Handlers for these classes run inside the app (an `Exception` handler would answer and
    # then re-raise to the server).
    for kind in (DBAPIError, OSError):  # ConnectionError and TimeoutError are OSErrors
        app.add_exception_handler(kind, _backend)

    @app.exception_handler(Exception)
    async def _fault(request: Request, exc: Exception) -> Response:
        log.error(
            "http.unhandled_error", path=request.url.path, error=type(exc).__name__, exc_info=exc
        )
        body = {
            "error": {
                "type": "api_error",
                "code": "internal_error",
                "message": "An internal error occurred; it has been logged.",
                "param": None,
            }
        }
        return json_response(body, 500)
