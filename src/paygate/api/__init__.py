"""The HTTP service: routers per resource, auth, idempotency, errors."""
