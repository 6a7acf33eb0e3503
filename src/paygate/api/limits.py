"""Request body cap, enforced while reading (a missing or false Content-Length cannot get
around it)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paygate.api.responses import encode


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
        body = encode(
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": "body_too_large",
                    "message": self.message,
                    "param": None,
                }
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
