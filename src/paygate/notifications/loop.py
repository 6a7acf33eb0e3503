"""The delivery loop: claims due deliveries and messages under a lease (on PostgreSQL with
`FOR UPDATE SKIP LOCKED`, so several processes can share the work; SQLite has one process) and
sends them concurrently: at most `per_endpoint` in flight per endpoint and `max_in_flight` in
all, so one dead or slow endpoint holds some slots and no more. Each outcome is recorded, with
the next try (exponential back-off with jitter) or, after the retry window, `dead`; the outcomes
of sends that end together are recorded in one transaction (`Coalescer`). A delivery this
process makes while a slot is free is not claimed at all: it is inserted leased and handed over
as it commits (`reserve`, `hand_over`), a read and a write less a webhook.

How many are in flight to one endpoint bounds what it receives: by Little's law, a merchant
gets at most `per_endpoint` webhooks per round trip of a send, and in a busy process that round
trip is a tenth of a second or more (docs/performance.md). A send's slot is given back when the
endpoint has answered, before its outcome is committed. `PAYGATE_WEBHOOK_CONCURRENCY` sets the
bound per notifier process."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from paygate.edge import versions
from paygate.ids import new_id, now_s
from paygate.notifications import mail
from paygate.notifications import messages as store
from paygate.notifications import repository as repo
from paygate.notifications.models import next_try
from paygate.notifications.sending import MessageSender
from paygate.notifications.sms import SmsSender, masked
from paygate.notifications.webhooks import Job, WebhookClient, signing_secrets
from paygate.platform import metrics
from paygate.platform.coalesce import Coalescer, Submission
from paygate.platform.logging import log
from paygate.platform.tasks import reraise_if_cancelling
from paygate.runtime import Runtime

MIN_WAIT_S = 0.005


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A send's outcome, to be written on its delivery."""

    delivery_id: str
    status: str
    attempts: int
    next_attempt_at: float | None
    attempt: dict[str, Any]


class DeliveryLoop:
    def __init__(
        self,
        rt: Runtime,
        *,
        email: mail.EmailSender | None,
        sms: SmsSender,
        timeout_s: float,
        per_endpoint: int,
        max_in_flight: int,
        max_messages_in_flight: int,
        poll_s: float,
    ) -> None:
        self.rt = rt
        self.scale = rt.settings.webhook_backoff_scale
        self.timeout_s = timeout_s
        self.per_endpoint = per_endpoint
        self.max_in_flight = max_in_flight
        self.max_messages_in_flight = max_messages_in_flight
        self.poll_s = poll_s
        # A claimed row is ours until then; a crashed process's rows come back after it.
        self.lease_s = timeout_s + 30.0
        self._http: WebhookClient | None = None
        self._messages = MessageSender(rt.db, email, sms, self.scale)
        # Each send in flight, with the row it holds a lease on: ("delivery" | "message", id).
        self._sending: dict[asyncio.Task[None], tuple[str, str]] = {}
        # Slots held for deliveries being inserted by this process (`reserve`), each counted
        # in its endpoint's slots too.
        self._reserved = 0
        self._per_endpoint: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        # The last look left due deliveries for want of a slot: a slot set free looks again.
        # Otherwise a finished send needs no look, and new rows wake the loop themselves.
        self._starved = False
        # When messages are next looked for: once the next one falls due, at once when this
        # process adds some (`wake(messages=True)`) or one of its sends ends, and at least
        # every `poll_s` (another process may have left some behind).
        self._messages_at = 0.0
        self._outcomes: Coalescer[_Outcome, None] = Coalescer(
            self._record, key=lambda outcome: outcome.delivery_id
        )

    def wake(self, *, messages: bool = False) -> None:
        """New rows are due: look now rather than at the next poll. `messages`: among them
        messages (e-mail, SMS), not only deliveries."""
        if messages:
            self._messages_at = 0.0
        self._wake.set()

    async def run(self) -> None:
        """Send due deliveries and messages until cancelled (or `stop`)."""
        self._runner = asyncio.current_task()
        try:
            while True:
                self._wake.clear()
                try:
                    started, wait_s = await self.pump()
                except Exception as exc:  # the database may be restarting: keep the loop alive
                    reraise_if_cancelling(exc)
                    log.error("notifications.error", error=f"{type(exc).__name__}: {exc}"[:300])
                    started, wait_s = 0, max(self.poll_s, 1.0)
                if not (started and self._starved):  # else rows are still due: look again
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait_s):
                            await self._wake.wait()
        finally:
            await self._shutdown()

    async def stop(self) -> None:
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        else:
            await self._shutdown()

    async def pump(self) -> tuple[int, float]:
        """Claim and start what is due; returns how many sends started and how long the loop may
        sleep before something else falls due."""
        now = time.time()
        wait_s = self.poll_s
        started = 0
        free = self.max_in_flight - len(self._sending) - self._reserved
        if free > 0:
            jobs, next_at = await self._claim_deliveries(now, free)
            for job in jobs:
                self._start_delivery(job)
            started += len(jobs)
            if next_at is not None:
                wait_s = min(wait_s, next_at - now)
        sending = sum(1 for kind, _ in self._sending.values() if kind == "message")
        free = self.max_messages_in_flight - sending
        if free > 0 and now >= self._messages_at:
            due, next_at = await self._messages.claim(now, free, self.lease_s)
            for message in due:
                self._start(self._send_message(message), ("message", message["id"]))
            started += len(due)
            self._messages_at = min(next_at or math.inf, now + self.poll_s)
            if len(due) >= free:  # perhaps more are due than there were slots
                self._messages_at = now
        wait_s = min(wait_s, self._messages_at - now)
        return started, max(wait_s, MIN_WAIT_S)

    async def _claim_deliveries(self, now: float, limit: int) -> tuple[list[Job], float | None]:
        busy = [e for e, n in self._per_endpoint.items() if n >= self.per_endpoint]
        db = self.rt.db
        if db.is_sqlite:
            # One process: look without the write lock, take it only when something is due.
            async with db.read() as conn:
                rows = await repo.due_deliveries(conn, now, limit, busy)
            chosen, next_at = self._choose(rows, now)
            if chosen:
                async with db.transaction() as conn:
                    await repo.lease_deliveries(conn, [r["id"] for r in chosen], now + self.lease_s)
        else:
            async with db.transaction() as conn:
                rows = await repo.due_deliveries(conn, now, limit, busy)
                chosen, next_at = self._choose(rows, now)
                await repo.lease_deliveries(conn, [r["id"] for r in chosen], now + self.lease_s)
        due = sum(1 for r in rows if r["next_attempt_at"] <= now)
        self._starved = bool(busy) or len(rows) >= limit or len(chosen) < due
        return [self.job(r, now) for r in chosen], next_at

    def job(self, row: Mapping[Any, Any], now: float) -> Job:
        """A send of the delivery `row` describes: its own columns (`id`, `event_id`,
        `endpoint_id`, `attempts`, `give_up_at`), its event's stored JSON (`body`,
        `trace_context`) and its endpoint's (`url`, `api_version` and the secret columns)."""
        return Job(
            delivery_id=row["id"],
            event_id=row["event_id"],
            endpoint_id=row["endpoint_id"],
            attempts=row["attempts"],
            give_up_at=row["give_up_at"],
            url=row["url"],
            body=versions.render_json_for_version(row["body"], row["api_version"]),
            trace_context=row["trace_context"],
            secrets=signing_secrets(row["endpoint_id"], row, self.rt.keyring, now),
        )

    # Deliveries handed over as they are made: no claim, no lease of their own.

    @property
    def _running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    def reserve(self, endpoint_id: str) -> bool:
        """A slot for a delivery to `endpoint_id` that this process is about to insert, if the
        loop runs and has one free. The caller inserts it leased for `lease_s` and, once that
        commits, hands it over (`hand_over`) or gives the slot back (`unreserve`): the send
        starts without the loop's read and lease write, and no other process can claim it."""
        if not self._running:
            return False
        if len(self._sending) + self._reserved >= self.max_in_flight:
            return False
        if self._per_endpoint[endpoint_id] >= self.per_endpoint:
            return False
        self._reserved += 1
        self._per_endpoint[endpoint_id] += 1
        return True

    def unreserve(self, endpoint_id: str) -> None:
        """Give back a slot `reserve` held (the delivery was already there, or not inserted)."""
        self._reserved -= 1
        self._release_slot(endpoint_id)

    def hand_over(self, job: Job) -> bool:
        """Send a reserved delivery, inserted and committed with its lease. False if the loop
        has stopped meanwhile: the slot is given back and the row waits for its lease to
        end, unless the caller hands it back (`lease_deliveries(..., None)`)."""
        self._reserved -= 1
        if not self._running:
            self._release_slot(job.endpoint_id)
            return False
        self._start_delivery(job, reserved=True)
        return True

    def _release_slot(self, endpoint_id: str) -> None:
        self._per_endpoint[endpoint_id] -= 1
        if self._per_endpoint[endpoint_id] <= 0:
            del self._per_endpoint[endpoint_id]
        if self._starved:  # rows were left waiting for a slot: look again
            self.wake()

    def _choose(
        self, rows: list[sa.RowMapping], now: float
    ) -> tuple[list[sa.RowMapping], float | None]:
        """The due rows within each endpoint's free slots, and when the next row falls due."""
        taken = Counter(self._per_endpoint)
        chosen: list[sa.RowMapping] = []
        for r in rows:
            if r["next_attempt_at"] > now:
                return chosen, r["next_attempt_at"]
            if taken[r["endpoint_id"]] < self.per_endpoint:
                taken[r["endpoint_id"]] += 1
                chosen.append(r)
        return chosen, None

    def _start_delivery(self, job: Job, *, reserved: bool = False) -> None:
        """Send `job` in a slot of its endpoint (taken now, or by `reserve`), held until the
        endpoint has answered (or the send failed), not until the outcome is committed: the
        bound is on the requests the endpoint sees at once."""
        endpoint = job.endpoint_id
        if not reserved:
            self._per_endpoint[endpoint] += 1
        held = True

        def release() -> None:
            nonlocal held
            if not held:
                return
            held = False
            self._release_slot(endpoint)

        self._start(self._deliver(job, release), ("delivery", job.delivery_id), ended=release)

    def _start(
        self,
        work: Coroutine[Any, Any, None],
        lease: tuple[str, str],
        ended: Callable[[], None] | None = None,
    ) -> None:
        """Run `work` holding `lease`; `ended` runs when it is over (a message's end looks for
        more messages)."""
        task = asyncio.create_task(work)
        self._sending[task] = lease

        def done(t: asyncio.Task[None]) -> None:
            self._sending.pop(t, None)
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                log.error("notifications.send_error", error=f"{type(exc).__name__}: {exc}"[:300])
            if ended is not None:
                ended()
            else:
                self.wake(messages=True)

        task.add_done_callback(done)

    async def _deliver(self, job: Job, release: Callable[[], None]) -> None:
        if self._http is None:
            self._http = WebhookClient(
                allow_private=self.rt.settings.webhook_allow_private,
                timeout_s=self.timeout_s,
                max_connections=self.max_in_flight,
            )
        try:
            outcome = await self._http.send(job)
        finally:
            release()  # the endpoint has answered; the outcome's record needs no slot of it
        number = job.attempts + 1
        now = time.time()
        retry_at = None if outcome.ok else next_try(now, number, job.give_up_at, self.scale)
        if outcome.ok:
            status, attempt_status = "succeeded", "succeeded"
        elif retry_at is not None:
            status, attempt_status = "pending", "failed"
        else:
            status, attempt_status = "dead", "dead"
        attempt = {
            "id": new_id("whd"),
            "event_id": job.event_id,
            "endpoint_id": job.endpoint_id,
            "attempt": number,
            "status": attempt_status,
            "response_status": outcome.response_status,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
            "next_attempt_at": math.ceil(retry_at) if retry_at is not None else None,
            "created": now_s(),
        }
        await self._outcomes.submit(_Outcome(job.delivery_id, status, number, retry_at, attempt))
        metrics.webhook_attempt(status, outcome.duration_ms)  # committed: counted once
        fields = {
            "delivery_id": job.delivery_id,
            "event_id": job.event_id,
            "endpoint_id": job.endpoint_id,
            "attempt": number,
            "response_status": outcome.response_status,
            "duration_ms": outcome.duration_ms,
        }
        if outcome.ok:
            log.info("webhook.delivered", **fields)
        elif status == "dead":
            log.warning("webhook.dead_lettered", error=outcome.error, **fields)
        else:
            log.info("webhook.failed", error=outcome.error, **fields)

    async def _record(self, batch: list[Submission[_Outcome, None]]) -> list[BaseException | None]:
        """The outcomes of the sends that ended together, written at once (on PostgreSQL one
        statement, one round trip, whatever their number). If that fails, each send's task
        fails with its error, and the deliveries are tried again once their leases run out (a
        webhook may be sent more than once, never lost)."""
        outcomes = [
            {
                "delivery_id": o.delivery_id,
                "status": o.status,
                "attempts": o.attempts,
                "next_attempt_at": o.next_attempt_at,
                "attempt": o.attempt,
            }
            for o in (item.value for item in batch)
        ]
        async with self.rt.db.single_write() as conn:
            await repo.record_outcomes(conn, outcomes)
        return [None] * len(batch)

    async def _send_message(self, message: sa.RowMapping) -> None:
        ok, error = await self._messages.send(message)
        fields = {"message_id": message["id"], "channel": message["channel"]}
        if message["channel"] == "sms":
            fields["to"] = masked(message["recipient"])
        if ok:
            log.info("notification.sent", kind=message["kind"], **fields)
        else:
            log.info("notification.failed", kind=message["kind"], error=error, **fields)

    async def _shutdown(self) -> None:
        cut = dict(self._sending)
        for task in cut:
            task.cancel()
        await asyncio.gather(*cut, return_exceptions=True)
        # Outcomes already handed to the recorder are written (a send cut short while its
        # outcome waited would otherwise go out again after a restart).
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._outcomes.wait_idle()
        if cut:
            # Hand what was cut short back at once, not when its lease runs out.
            deliveries = [i for kind, i in cut.values() if kind == "delivery"]
            messages = [i for kind, i in cut.values() if kind == "message"]
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2), self.rt.db.transaction() as conn:
                    await repo.lease_deliveries(conn, deliveries, None)
                    await store.lease_messages(conn, messages, None)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
