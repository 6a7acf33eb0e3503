"""The OpenAPI document, corrected to what the API answers.

The framework documents a `422` with its own validation-error shape on every operation that takes
parameters; this API answers invalid requests with `400` and every error with the contract shape
`{"error": {"type", "code", "message", "param"}}` (DESIGN.md section 4, Errors). The document is
rewritten once, when first asked for, so that clients generated from it parse real errors.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

_FRAMEWORK_SCHEMAS = ("HTTPValidationError", "ValidationError")


class ErrorDetail(BaseModel):
    type: str = Field(
        examples=["invalid_request_error"],
        description="invalid_request_error, authentication_error, permission_error, "
        "idempotency_error, rate_limit_error, card_error or api_error.",
    )
    code: str | None = Field(examples=["parameter_missing"])
    message: str = Field(examples=["Missing required parameter: amount."])
    param: str | None = Field(examples=["amount"], description="The field at fault, if any.")


class ErrorOut(BaseModel):
    error: ErrorDetail


def install(app: FastAPI) -> None:
    """Serve the document with errors in the contract shape."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(generate())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def document_errors(doc: dict[str, Any]) -> None:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorOut"] = error_schema
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for name in _FRAMEWORK_SCHEMAS:
        schemas.pop(name, None)
    for path, item in doc.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            if responses.pop("422", None) is not None:
                responses["400"] = {"description": "Invalid request.", "content": error}
            if path.startswith("/v1/"):
                responses["default"] = {
                    "description": "An error: authentication, not found (another merchant's "
                    "objects too), a state that forbids the operation, idempotency, rate limit.",
                    "content": error,
                }


def idempotency_key(*, required: bool) -> dict[str, Any]:
    """`openapi_extra` documenting the Idempotency-Key header of a write."""
    return {
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": required,
                "schema": {"type": "string", "maxLength": 255},
                "description": "A unique value per operation; a retry with the same key and "
                "request replays the first response.",
            }
        ]
    }
