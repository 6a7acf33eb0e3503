"""JSON responses encoded once, with orjson: the bytes sent are the bytes an idempotent replay
sends again."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


def encode(body: Any) -> bytes:
    return orjson.dumps(body)


class JSONBytes(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else encode(content)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONBytes(body, status_code=status, headers=headers)
