"""The outbox relay: reads committed, unpublished events in outbox order, publishes them, and
marks them sent. Several batches can be in flight at once; a row is marked only after `publish`
returned, so a crash leaves it to be published again (consumers are idempotent).

Tracing: a batch has a span of its own (its own trace); each event in it gets a `publish` span,
a child of the trace context stored with the event and linked to the batch's span, so the event
stays in its payment's trace. The bus carries the `publish` span's context to the consumers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa

from paygate.ids import now_s
from paygate.platform import tracing
from paygate.platform.bus import Bus
from paygate.platform.db import Database
from paygate.platform.db.tables import outbox
from paygate.platform.logging import log
from paygate.platform.tasks import reraise_if_cancelling

# The relay's two statements, built once (docs/performance.md). The JSON columns are read as
# text, and only the rows of the relay's own batch are decoded (`_next_batch`).
_UNSENT = (
    sa.select(
        outbox.c.position,
        sa.type_coerce(outbox.c.payload, sa.Text).label("payload"),
        outbox.c.merchant_id,
        sa.type_coerce(outbox.c.trace_context, sa.Text).label("trace_context"),
    )
    .where(outbox.c.published_at.is_(None))
    .order_by(outbox.c.position)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
# How often the relay reads the outbox when nothing wakes it, unwoken and woken (`Relay`).
POLL_S = 0.05
WOKEN_POLL_S = 1.0
_MARK_SENT = outbox.update().where(outbox.c.position.in_(sa.bindparam("positions", expanding=True)))


class _Pending(NamedTuple):
    position: int
    payload: dict[str, Any]
    merchant_id: str
    trace_context: dict[str, str] | None


def _json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


class Relay:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        batch_size: int = 200,
        max_in_flight: int = 4,
        idle_s: float | None = None,
        woken: bool = False,
    ) -> None:
        self.db = db
        self.bus = bus
        self.batch_size = batch_size
        # True where every commit that writes events wakes the relay (`paygate serve`, whose
        # writers all run in this process): after a batch that took every unsent event, it
        # waits for the next wake instead of reading once more to find nothing. Elsewhere that
        # read is what finds the events of other processes' commits without waiting `idle_s`.
        self.woken = woken
        # How long it waits unwoken before it reads again. Woken, the poll only finds what
        # another process committed to the same database (`paygate settle` beside `paygate
        # serve`), and a second will do: 50 ms polls were most of an idle gateway's statements
        # (docs/performance.md, "The woken relay polls once a second").
        self.idle_s = idle_s if idle_s is not None else (WOKEN_POLL_S if woken else POLL_S)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._in_flight: set[int] = set()
        self._publishing: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A commit wrote events: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            if self.woken:
                # Cleared before the read: a commit the read may not see wakes the wait below.
                self._wake.clear()
            try:
                found = await self.pump()
            except Exception as exc:  # the database may be restarting: keep the loop alive
                reraise_if_cancelling(exc)
                log.error("relay.error", error=f"{type(exc).__name__}: {exc}"[:300])
                found = 0
            # A batch smaller than `batch_size` took every unsent event the read saw.
            if not found or (self.woken and found < self.batch_size):
                if not self.woken:
                    self._wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle_s):
                        await self._wake.wait()

    async def pump(self) -> int:
        """Start publishing the next batch; returns how many events it took."""
        await self._slots.acquire()
        try:
            rows = await self._next_batch()
        except BaseException:
            self._slots.release()
            raise
        if not rows:
            self._slots.release()
            return 0
        positions = [r.position for r in rows]
        self._in_flight.update(positions)
        task = asyncio.create_task(self._publish(rows, positions))
        self._publishing.add(task)
        task.add_done_callback(self._done)
        return len(rows)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._publishing.discard(task)
        self._slots.release()

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Let batches in flight finish (graceful shutdown); an unfinished one is published
        again by the next relay, since its rows stay unmarked."""
        if self._publishing:
            await asyncio.wait(set(self._publishing), timeout=timeout_s)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Publish until nothing is left (tests and shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if not await self.pump() and not self._in_flight:
                return
            await asyncio.sleep(0.01)

    async def _next_batch(self) -> list[_Pending]:
        # Taken before the read: a batch that is marked sent and leaves `_in_flight` while the
        # read runs may still be unmarked in what the read sees, and must not go out again.
        # The rows in flight come back too (they are still unmarked): only the batch's own rows
        # are decoded.
        taken = set(self._in_flight)
        async with self.db.read() as conn:
            rows = (await conn.execute(_UNSENT, {"limit": self.batch_size + len(taken)})).all()
        taken |= self._in_flight
        mine = [r for r in rows if r.position not in taken][: self.batch_size]
        return [
            _Pending(r.position, orjson.loads(r.payload), r.merchant_id, _json(r.trace_context))
            for r in mine
        ]

    async def _publish(self, rows: list[_Pending], positions: list[int]) -> None:
        batch = tracing.start_batch("relay publish", len(rows))
        events, spans = [], []
        for row in rows:
            event: dict[str, Any] = row.payload
            span = tracing.start_publish(event, row.trace_context, batch)
            # Not traced here (no SDK, or not sampled): pass the stored context on as it is.
            carrier = (
                tracing.headers_of(span)
                if span.get_span_context().is_valid
                else dict(row.trace_context or {})
            )
            carrier[tracing.MERCHANT_HEADER] = row.merchant_id
            event[tracing.CARRIER_KEY] = carrier
            events.append(event)
            spans.append(span)
        failed: Exception | None = None
        try:
            await self.bus.publish(events)
            # Marked here, in the batch's slot, not later and together: over NATS the mark's
            # round trip is what paces the relay, and so sizes every consumer's batches. With
            # marks deferred, the relay published nearly event by event and the scale-out
            # pipeline spent 1.34 times the CPU a payment (docs/performance.md).
            async with self.db.single_write() as conn:
                await conn.execute(_MARK_SENT, {"positions": positions, "published_at": now_s()})
        except Exception as exc:
            failed = exc
            log.error(
                "relay.publish_failed",
                error=f"{type(exc).__name__}: {exc}"[:300],
                events=len(events),
            )
        finally:
            self._in_flight.difference_update(positions)
            for span in spans:
                tracing.finish(span, failed)
            tracing.finish(batch, failed)
