"""The outermost layer of the API, around everything else (the framework's error handling too,
so that its answers get the same headers):

- request limits: at most `PAYGATE_MAX_HEADER_COUNT` header fields and `PAYGATE_MAX_HEADER_BYTES`
  of them (`431`, RFC 6585 section 5); `/v1` handlers get `PAYGATE_REQUEST_TIMEOUT_S`, plus the
  wait a request asked for with `Prefer: wait`, then `503 api_error` with `Retry-After`;
- `Paygate-Version`: refused when it names no version, echoed on every response, and payment
  objects rendered in the version answered (paygate.edge.versions);
- the rate-limit fields the auth dependency left in the exchange (paygate.edge.ratelimit);
- security headers on every response, and CORS on `/v1/tokens` only (paygate.edge.security).
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paygate.api.prefer import wait_of
from paygate.api.responses import encode
from paygate.config import Settings
from paygate.edge import ratelimit, security, versions
from paygate.edge.state import SCOPE_KEY, Exchange
from paygate.platform.logging import log


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path: str = scope["path"]
        xch = Exchange()
        scope[SCOPE_KEY] = xch
        secure = scope.get("scheme") == "https" or headers.get(b"x-forwarded-proto") == b"https"
        cors = security.cors_applies(path, headers)
        started = False
        held: list[Message] = []
        answered_in = self.settings.default_api_version

        async def respond(message: Message) -> None:
            nonlocal started, answered_in
            if message["type"] == "http.response.start":
                started = True
                version = xch.api_version or xch.requested_version or answered_in
                answered_in = version
                extra = [(b"paygate-version", version.encode())]
                extra += versions.deprecation_headers(version)
                extra += ratelimit.headers(xch.limits)
                message["headers"] = security.apply(
                    list(message.get("headers", [])), extra, secure=secure, cors=cors
                )
                if _renders(path, version, message):
                    held.append(message)
                    return
            elif held:
                held.append(message)
                if not message.get("more_body", False):
                    await _send_rendered(send, held, answered_in)
                return
            await send(message)

        refusal = self._refusal(scope, headers, xch)
        if refusal is not None:
            await _answer(respond, *refusal)
            return
        if security.is_preflight(scope, headers):
            await security.preflight(respond)
            return
        if not path.startswith("/v1/"):
            await self.app(scope, receive, respond)
            return
        wait = wait_of(headers.get(b"prefer", b"").decode("latin-1")) or 0.0
        limit = self.settings.request_timeout_s + wait
        try:
            async with asyncio.timeout(limit) as timer:
                await self.app(scope, receive, respond)
        except TimeoutError:
            if not timer.expired():
                raise
            log.warning("http.timeout", path=path, seconds=limit)
            if not started:
                message = (
                    "The request took too long and was stopped; retry it (a write with the "
                    "same Idempotency-Key)."
                )
                await _answer(respond, 503, "api_error", "timeout", message, None)

    def _refusal(
        self, scope: Scope, headers: dict[bytes, bytes], xch: Exchange
    ) -> tuple[int, str, str, str, str | None] | None:
        """An answer for a request refused before the app runs, or None."""
        fields = scope["headers"]
        count, size = self.settings.max_header_count, self.settings.max_header_bytes
        if len(fields) > count or sum(len(n) + len(v) for n, v in fields) > size:
            message = f"The request's header fields exceed {count} fields or {size} bytes."
            return 431, "invalid_request_error", "headers_too_large", message, None
        requested = headers.get(b"paygate-version")
        if requested is not None and scope["path"].startswith("/v1/"):
            version = requested.decode("latin-1").strip()
            if not versions.is_version(version):
                message = f"Unknown API version; the versions are {', '.join(versions.VERSIONS)}."
                code = "api_version_invalid"
                return 400, "invalid_request_error", code, message, versions.HEADER
            xch.requested_version = version
        return None


def _renders(path: str, version: str, start: Message) -> bool:
    """Whether a response's body may need rendering in a newer version than it was made in."""
    if version == versions.BASE or not path.startswith("/v1/"):
        return False
    content_type: bytes = dict(start.get("headers", [])).get(b"content-type", b"")
    return content_type.startswith(b"application/json")


async def _send_rendered(send: Send, held: list[Message], version: str) -> None:
    start, body = held[0], b"".join(m.get("body", b"") for m in held[1:])
    # Objects are made at the first version; orjson writes `"object":"payment"` exactly so, and
    # bodies without one (most) are sent as they are, unparsed.
    if b'"object":"payment"' in body:
        try:
            rendered = encode(versions.render_for_version(orjson.loads(body), version))
        except orjson.JSONDecodeError:
            rendered = body
        if rendered != body:
            body = rendered
            start["headers"] = [
                (n, str(len(body)).encode() if n == b"content-length" else v)
                for n, v in start["headers"]
            ]
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def _answer(
    send: Send, status: int, kind: str, code: str, message: str, param: str | None
) -> None:
    """The contract's error body, answered by the edge itself."""
    body = encode({"error": {"type": kind, "code": code, "message": message, "param": param}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
