"""The load generator's HTTP client: aiohttp's, the gateway's own choice for its bank calls.

A generator that spends more CPU per request than the server measures itself: with httpx, the
bare endpoint's limit was the generator's (17.4 s of its CPU against the server's 2.5 s in a
10 s run, its busiest process at 96 %; docs/performance.md). aiohttp's compiled parser and
unpolled pool cost a fraction of that. This wraps a `ClientSession` in the few calls the
scenarios make, and reads each answer whole, so that a scenario sees a plain `Reply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import orjson

# What a scenario counts as the gateway's failure to answer (a closed or refused connection, a
# timeout), rather than an answer: bench/scenarios.py backs off on these.
ERRORS = (aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Reply:
    status_code: int
    content: bytes

    def json(self) -> Any:
        return orjson.loads(self.content)


class Client:
    """Keep-alive connections to one server, at most `connections` open."""

    def __init__(
        self, base_url: str, *, connections: int, timeout_s: float = 30.0, connect_s: float = 5.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
            timeout=aiohttp.ClientTimeout(total=timeout_s, connect=connect_s),
            # The scenarios send their own headers; none of aiohttp's defaults are needed.
            skip_auto_headers=("User-Agent",),
        )

    async def get(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        query = {k: str(v) for k, v in params.items()} if params else None
        return await self._send("GET", path, headers, params=query)

    async def post(
        self,
        path: str,
        *,
        json: Any = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if json is not None:
            sent = {"Content-Type": "application/json", **(headers or {})}
            return await self._send("POST", path, sent, data=orjson.dumps(json))
        return await self._send("POST", path, headers, data=data)

    async def _send(
        self, method: str, path: str, headers: dict[str, str] | None, **kwargs: Any
    ) -> Reply:
        async with self._session.request(
            method, self.base_url + path, headers=headers, **kwargs
        ) as r:
            return Reply(r.status, await r.read())

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        await self._session.close()
