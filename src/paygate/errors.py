"""The one error root and its conditions.

    PaygateError (status, type, code)
    ├── InvalidRequest            400 invalid_request_error
    │   └── InvalidCardNumber     400 invalid_request_error / invalid_number
    ├── AuthenticationFailed      401 authentication_error
    ├── PermissionDenied          403 permission_error
    ├── NotFound                  404 invalid_request_error / resource_missing
    ├── StateConflict             409 invalid_request_error (the object's state forbids it)
    ├── IdempotencyInFlight       409 idempotency_error
    ├── IdempotencyMismatch       422 idempotency_error
    ├── RateLimited               429 rate_limit_error
    └── ServiceUnavailable        503 api_error

Every error renders as `{"error": {"type", "code", "message", "param"}}` (DESIGN.md section 4).
Messages never quote request values: they may hold card data.
"""

from __future__ import annotations

from typing import Any


class PaygateError(Exception):
    status = 500
    type = "api_error"
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
            }
        }


class InvalidRequest(PaygateError):
    status = 400
    type = "invalid_request_error"
    code = "parameter_invalid"


class InvalidCardNumber(InvalidRequest):
    code = "invalid_number"


class AuthenticationFailed(PaygateError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(PaygateError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(PaygateError):
    status = 404
    type = "invalid_request_error"
    code = "resource_missing"


class StateConflict(PaygateError):
    status = 409
    type = "invalid_request_error"
    code = "invalid_state"


class IdempotencyInFlight(PaygateError):
    status = 409
    type = "idempotency_error"
    code = "idempotency_key_in_use"


class IdempotencyMismatch(PaygateError):
    status = 422
    type = "idempotency_error"
    code = "idempotency_key_reused"


class RateLimited(PaygateError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"


class ServiceUnavailable(PaygateError):
    status = 503
    type = "api_error"
    code = "service_unavailable"
