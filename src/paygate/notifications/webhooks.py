"""Sending one webhook attempt: the event's stored JSON, signed, POSTed through the SSRF guard
with a pooled client (aiohttp's, as the bank connector's: a send costs a fraction of httpx's
CPU; docs/performance.md), a total time limit and no redirects. The outcome is classified in fixed
words: an error text never quotes the URL (it may carry credentials) or the response.

Each attempt is a client span in the event's trace (the payment's): the context stored with the
event when the job has it, else the one the event was delivered with in this process
(paygate.platform.tracing). The merchant's endpoint is not sent `traceparent`: the gateway's
trace ids stay inside it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opentelemetry.trace import SpanKind, Status, StatusCode

from paygate import __version__
from paygate.notifications.guard import GuardedResolver, literal_refused, refused_by_guard
from paygate.notifications.models import SIGNATURE_HEADER, signature_header
from paygate.platform import tracing
from paygate.vault.crypto import Keyring

# Enough of a response to keep the connection reusable; the rest is not read.
MAX_RESPONSE_BYTES = 64 * 1024


def secret_aad(endpoint_id: str) -> bytes:
    """Binds a sealed secret to its endpoint: a sealed value copied to another row won't open."""
    return f"webhook_endpoint:{endpoint_id}".encode()


def signing_secrets(
    endpoint_id: str, row: Mapping[Any, Any], keyring: Keyring, now: float
) -> tuple[str, ...]:
    """The secrets that sign for an endpoint now: the current one, and the previous one while
    its rotation window lasts (`row` holds the endpoint's secret columns)."""
    aad = secret_aad(endpoint_id)
    found = [keyring.open(row["secret_key_id"], bytes(row["secret_sealed"]), aad).decode()]
    expires = row["previous_expires_at"]
    if row["previous_sealed"] is not None and expires is not None and expires > now:
        previous = keyring.open(row["previous_key_id"], bytes(row["previous_sealed"]), aad)
        found.append(previous.decode())
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Job:
    delivery_id: str
    event_id: str
    endpoint_id: str
    attempts: int  # failed or succeeded tries so far
    give_up_at: float
    url: str = field(repr=False)
    body: bytes = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)
    # The W3C trace context stored with the event (outbox `trace_context`), when known.
    trace_context: Mapping[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    response_status: int | None
    error: str | None
    duration_ms: int


class WebhookClient:
    """One pooled HTTP client for every endpoint; the pool's size is the global cap on open
    connections. Made in the event loop that sends (aiohttp's session belongs to one)."""

    def __init__(
        self, *, allow_private: bool, timeout_s: float = 10.0, max_connections: int = 64
    ) -> None:
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            resolver=None if allow_private else GuardedResolver(),
            ttl_dns_cache=10,  # a cached look-up was checked when it was made
            # Below the 5 s after which common servers (uvicorn among them) close an idle
            # connection: a webhook sent as the endpoint closes it would fail and wait for its
            # retry (the bank connector's `keepalive_s`, for the same reason).
            keepalive_timeout=4.0,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            trust_env=False,
            headers={"User-Agent": f"Paygate-Webhooks/{__version__}"},
            auto_decompress=False,  # the answer is not read past MAX_RESPONSE_BYTES
        )

    async def send(self, job: Job) -> Outcome:
        carrier = job.trace_context or tracing.recall(job.event_id)
        with tracing.TRACER.start_as_current_span(
            "webhook POST",
            context=tracing.context_of(carrier),
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "messaging.message.id": job.event_id,
                "paygate.webhook.delivery_id": job.delivery_id,
                "paygate.webhook.endpoint_id": job.endpoint_id,
                "paygate.webhook.attempt": job.attempts + 1,
            },
        ) as span:
            outcome = await self._send(job)
            if span.is_recording():
                if outcome.response_status is not None:
                    span.set_attribute("http.response.status_code", outcome.response_status)
                if outcome.error is not None:
                    span.set_status(Status(StatusCode.ERROR, outcome.error))
            return outcome

    async def _send(self, job: Job) -> Outcome:
        started = time.monotonic()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(job.secrets, timestamp, job.body),
        }
        refused = None if self.allow_private else _address_refused(job.url)
        if refused is not None:
            return Outcome(False, None, refused, 0)
        status: int | None = None
        error: str | None = None
        try:
            # One limit for the whole exchange, besides aiohttp's own: a receiver trickling
            # bytes must not hold the slot for ever.
            async with (
                asyncio.timeout(self.timeout_s),
                self._session.post(
                    job.url, data=job.body, headers=headers, allow_redirects=False
                ) as response,
            ):
                status = response.status
                read = 0
                async for chunk in response.content.iter_any():
                    read += len(chunk)
                    if read > MAX_RESPONSE_BYTES:
                        break
        except TimeoutError:  # aiohttp's timeouts are TimeoutErrors too
            error = f"timed out after {self.timeout_s:g} s"
        except (aiohttp.ClientError, ValueError) as exc:
            refused = refused_by_guard(exc)
            if refused is not None:
                error = f"refused: {refused}"
            elif isinstance(exc, aiohttp.InvalidURL | ValueError):
                error = "invalid URL"
            elif isinstance(exc, aiohttp.ClientConnectorError):
                error = "could not connect"
            else:
                error = "the connection failed during the exchange"
        if error is None and status is not None and not 200 <= status < 300:
            error = f"HTTP {status}" + (" (redirects are not followed)" if status < 400 else "")
        duration_ms = int((time.monotonic() - started) * 1000)
        return Outcome(error is None, status, error, duration_ms)

    async def aclose(self) -> None:
        await self._session.close()


def _address_refused(url: str) -> str | None:
    """The outcome's error when `url` names a non-public IP address itself (`literal_refused`):
    no resolver is asked about those."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None  # aiohttp refuses it as an invalid URL
    refused = literal_refused(host) if host else None
    return f"refused: {refused}" if refused else None
