"""Request limits: the body cap, enforced while reading (a missing or false Content-Length cannot
get around it), and no NUL character in the path or the query string."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paygate.api.responses import encode

# Only a name shaped like one of ours is echoed as `param`: a client may put anything (a card
# number, say) where a name goes.
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}(?:\[[a-z]{1,8}\])?")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Rendered by the app's error handler as the contract's 413 body.
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited, send)

    @property
    def message(self) -> str:
        return f"The request body exceeds {self.max_bytes} bytes."

    async def _refuse(self, send: Send) -> None:
        await _refuse(send, 413, "body_too_large", self.message, None)


class NoNul:
    """PostgreSQL text cannot hold U+0000 (SQLite can), and path ids and query values reach the
    database as text: a NUL there is refused before the app runs, the same 400 on both backends,
    instead of failing inside a query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if "\x00" in scope["path"]:
                message = "The request path must not contain NUL characters."
                await _refuse(send, 400, "parameter_invalid", message, None)
                return
            # Decoded as Starlette decodes it for the endpoints.
            query = scope.get("query_string", b"").decode("latin-1")
            for name, value in parse_qsl(query, keep_blank_values=True):
                if "\x00" in name or "\x00" in value:
                    param = name if _PARAM_NAME.fullmatch(name) else None
                    message = "Query parameters must not contain NUL characters."
                    await _refuse(send, 400, "parameter_invalid", message, param)
                    return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, code: str, message: str, param: str | None) -> None:
    """Answer with the contract's error body before the app runs."""
    error = {"type": "invalid_request_error", "code": code, "message": message, "param": param}
    body = encode({"error": error})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
