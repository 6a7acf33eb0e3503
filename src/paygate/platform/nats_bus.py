"""The event bus on NATS JetStream (scale-out mode).

- One stream per domain (`PAYGATE_PAYMENT` holds `paygate.payment.>`, and so on), file storage.
  Durability of an acknowledged publish depends on the server syncing its store: run JetStream
  with `sync_interval: always` (docs/scaling.md), as `make cluster` does; the default syncs
  every two minutes, which a payment system cannot accept.
- The relay publishes with `Nats-Msg-Id` = the event id, so a re-published outbox row within
  the stream's duplicate window is dropped by the server; consumers stay idempotent regardless.
- Each service is a durable pull consumer per stream, shared by all its processes (work-queue
  semantics: one process gets each message). A message is acknowledged only after the handler
  returned, that is after its transaction committed; a failure is redelivered with back-off, and
  after `max_deliver` tries it is dead-lettered (`paygate.deadletter.<consumer>`, plus the
  gateway's `dead_letters` table) and terminated.
- Tracing: the event's trace context (`traceparent`, `tracestate`) and merchant travel as message
  headers. A fetch is a batch: it has a span of its own, and each message is handled in a
  consumer span whose parent is the message's context, linked to the batch's span, so each
  event stays in its payment's trace (paygate.platform.tracing).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from opentelemetry.trace import Span

from paygate.platform import tracing
from paygate.platform.bus import BatchHandler, DeadLetter, Event, Handler, apply_batch
from paygate.platform.logging import log

PREFIX = "paygate"
DOMAINS = ("payment", "refund", "settlement")
REDELIVERY_BACKOFF_S = (0.5, 2.0, 10.0, 30.0, 120.0)
DUPLICATE_WINDOW_S = 120.0


def subject(event_type: str, prefix: str = PREFIX) -> str:
    return f"{prefix}.{event_type}"


def stream_of(event_type: str, prefix: str = PREFIX) -> str:
    return f"{prefix.upper()}_{event_type.split('.', 1)[0].upper()}"


@dataclass
class _Subscription:
    consumer: str
    stream: str
    types: frozenset[str]
    handler: Handler
    batch: BatchHandler | None = None


class NatsBus:
    backend = "nats"

    def __init__(
        self,
        url: str,
        *,
        dead_letter: DeadLetter | None = None,
        batch: int = 64,
        max_deliver: int = 6,
        ack_wait_s: float = 60.0,
        replicas: int = 1,
        prefix: str = PREFIX,
    ) -> None:
        """`prefix` names the subjects and streams: one NATS account can host several
        gateways (or test runs) side by side."""
        self.url = url
        self.prefix = prefix
        self.dead_letter = dead_letter
        self.batch = batch
        self.max_deliver = max_deliver
        self.ack_wait_s = ack_wait_s
        self.replicas = replicas
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._subs: list[_Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("NatsBus.connect() first")
        return self._js

    async def connect(self) -> None:
        """Connect and make sure every stream exists (idempotent across processes)."""
        self._nc = await nats.connect(
            self.url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            name="paygate",
            # One log line per event: the client's defaults print a traceback for every failed
            # reconnect, twice a second for as long as the server is away.
            error_cb=_on_error,
            disconnected_cb=_on_disconnected,
            reconnected_cb=_on_reconnected,
        )
        self._js = self._nc.jetstream(timeout=10)
        for domain in DOMAINS:
            await self._ensure_stream(stream_of(domain, self.prefix), [f"{self.prefix}.{domain}.>"])
        await self._ensure_stream(
            stream_of("deadletter", self.prefix), [f"{self.prefix}.deadletter.>"]
        )

    async def _ensure_stream(self, name: str, subjects: list[str]) -> None:
        config = StreamConfig(
            name=name,
            subjects=subjects,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        try:
            await self.js.stream_info(name)
        except NotFoundError:
            with contextlib.suppress(Exception):  # another process may have created it meanwhile
                await self.js.add_stream(config)

    # Publishing

    async def publish(self, events: list[Event]) -> None:
        """Publish a batch, pipelined: every publish is in flight at once, and this returns once
        JetStream acknowledged each one (stored in its stream)."""
        acks = [
            self.js.publish(subject(e["type"], self.prefix), _body(e), headers=_headers(e))
            for e in events
        ]
        await asyncio.gather(*acks)

    async def ping(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def watch(self, changed: Callable[[str], None], *, types: Iterable[str]) -> None:
        """Call `changed(object_id)` for every event of `types` the relays publish from now on:
        a plain (at-most-once) subscription beside the streams, which is how an API process
        hears of the changes the workers commit. Only those types reach this process (one
        subject each), so that it does not read every event of the pipeline to find the few it
        wants. Nothing depends on hearing all of them."""
        if self._nc is None:
            raise RuntimeError("NatsBus.connect() first")

        async def heard(msg: Msg) -> None:
            try:
                changed(str(orjson.loads(msg.data)["data"]["object"]["id"]))
            except (ValueError, KeyError, TypeError):
                return  # not an event of ours: nothing to wake

        for event_type in sorted(set(types)):
            await self._nc.subscribe(subject(event_type, self.prefix), cb=heard)
        # "From now on" is from this return: a flush's PING/PONG round trip comes back once the
        # server has the subscriptions. nats-py writes a flush's PING at once, ahead of commands
        # still queued for its flusher task (the SUBs), so the first flush only lets the flusher
        # write them; the second one's round trip follows them.
        await self._nc.flush()
        await self._nc.flush()

    # Consuming

    def subscribe(
        self,
        consumer: str,
        types: Iterable[str],
        handler: Handler,
        *,
        batch: BatchHandler | None = None,
    ) -> None:
        by_stream: dict[str, set[str]] = {}
        for event_type in types:
            by_stream.setdefault(stream_of(event_type, self.prefix), set()).add(event_type)
        for stream, stream_types in by_stream.items():
            self._subs.append(
                _Subscription(consumer, stream, frozenset(stream_types), handler, batch)
            )

    async def start(self) -> None:
        for sub in self._subs:
            psub = await self.js.pull_subscribe_bind(
                durable=await self._ensure_consumer(sub), stream=sub.stream
            )
            self._tasks.append(
                asyncio.create_task(
                    self._consume(sub, psub), name=f"nats:{sub.consumer}:{sub.stream}"
                )
            )

    async def _ensure_consumer(self, sub: _Subscription) -> str:
        durable = f"{sub.consumer}"
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver + 1,
            filter_subjects=sorted(subject(t, self.prefix) for t in sub.types),
            max_ack_pending=10_000,
        )
        with contextlib.suppress(Exception):  # exists already, with this configuration
            await self.js.add_consumer(sub.stream, config)
        return durable

    async def _consume(self, sub: _Subscription, psub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await psub.fetch(self.batch, timeout=0.5)
            except (NatsTimeout, TimeoutError):
                continue  # nothing to fetch this time
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server restarting: the client reconnects by itself
                log.warning("bus.fetch_failed", consumer=sub.consumer, error=str(exc)[:200])
                await asyncio.sleep(0.5)
                continue
            batch = tracing.start_batch(
                f"{sub.consumer} fetch", len(msgs), **{"messaging.system": "nats"}
            )
            try:
                if not (len(msgs) > 1 and await self._apply_batch(sub, msgs)):
                    await asyncio.gather(*(self._handle(sub, m, batch) for m in msgs))
            finally:
                batch.end()

    async def _apply_batch(self, sub: _Subscription, msgs: list[Msg]) -> bool:
        """The fetched messages in one call of the consumer's batch handler, then acknowledged;
        False when there is none or it raised: the caller then handles them one by one."""
        if sub.batch is None:
            return False
        try:
            events = [orjson.loads(m.data) for m in msgs]
        except ValueError:
            return False  # one of them is not an event: each gets its own handling
        carriers = [m.headers for m in msgs]
        if not await apply_batch(sub.consumer, sub.batch, events, carriers, system="nats"):
            return False
        # Applied and committed: an acknowledgement lost now only brings a redelivery, which
        # the consumer's idempotence absorbs.
        await asyncio.gather(*(m.ack() for m in msgs), return_exceptions=True)
        return True

    async def _handle(self, sub: _Subscription, msg: Msg, batch: Span | None) -> None:
        event: dict[str, Any] = orjson.loads(msg.data)
        tries = msg.metadata.num_delivered
        try:
            with tracing.consuming(
                sub.consumer, event, msg.headers, system="nats", batch=batch, attempt=tries
            ):
                await sub.handler(event)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning(
                "bus.delivery_failed",
                consumer=sub.consumer,
                event_id=event.get("id"),
                event_type=event.get("type"),
                attempt=tries,
                error=error,
            )
            if tries >= self.max_deliver:
                await self._dead(sub.consumer, event, error, tries)
                await msg.term()
            else:
                delay = REDELIVERY_BACKOFF_S[min(tries - 1, len(REDELIVERY_BACKOFF_S) - 1)]
                await msg.nak(delay=delay)
            return
        await msg.ack()

    async def _dead(self, consumer: str, event: Event, error: str, tries: int) -> None:
        await self.js.publish(
            f"{self.prefix}.deadletter.{consumer}",
            orjson.dumps(event),
            headers={"Paygate-Error": error[:200]},
        )
        if self.dead_letter is not None:
            await self.dead_letter(consumer, event, error, tries)

    async def close(self, grace_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM): fetch nothing new, let handlers in flight finish and
        acknowledge (up to `grace_s`), then disconnect. Whatever was cut short is redelivered
        after its ack wait: nothing is lost."""
        self._stopping.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
            self._js = None


async def connect_bus(url: str, namespace: str = PREFIX) -> NatsBus:
    """The bus of a scale-out process (`PAYGATE_BUS_URL`, `PAYGATE_NAMESPACE`), connected and
    its streams in place."""
    bus = NatsBus(url, prefix=namespace)
    await bus.connect()
    return bus


def _body(event: Event) -> bytes:
    """The event as stored in the outbox: its trace context travels in the headers."""
    if tracing.CARRIER_KEY in event:
        event = {k: v for k, v in event.items() if k != tracing.CARRIER_KEY}
    return orjson.dumps(event)


def _headers(event: Event) -> dict[str, str]:
    headers = {"Nats-Msg-Id": event["id"]}
    trace = event.get(tracing.CARRIER_KEY)
    if isinstance(trace, dict):
        headers.update({k: str(v) for k, v in trace.items() if v is not None})
    return headers


async def _on_error(exc: Exception) -> None:
    log.warning("bus.connection_error", error=f"{type(exc).__name__}: {exc}"[:200])


async def _on_disconnected() -> None:
    log.warning("bus.disconnected")


async def _on_reconnected() -> None:
    log.info("bus.reconnected")
