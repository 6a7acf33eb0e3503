"""The notification service: turns public events into deliveries and messages, and sends them.

Two halves, so that a slow merchant endpoint never slows the payment pipeline:

- `on_event` (a bus consumer) only writes rows: one delivery per (event, endpoint), unique, so
  a redelivered event adds nothing, and the e-mail or SMS the event calls for, keyed the same
  way. It reads the event from the outbox, as committed, never from the bus message alone.
- `run` (the delivery loop, `loop.py`) claims due rows and sends them, a bounded number per
  endpoint at a time. A new delivery the loop has a slot for skips the claim: `on_event`
  inserts it already leased and hands it to the loop once the insert has committed.

A failed try is retried with exponential back-off and jitter until three days after the first
(`PAYGATE_WEBHOOK_BACKOFF_SCALE` shrinks that schedule), then dead-lettered (`dead`); a
redelivery through the API makes it due again.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import new_id
from paygate.notifications import content, mail
from paygate.notifications import messages as store
from paygate.notifications import repository as repo
from paygate.notifications.loop import DeliveryLoop
from paygate.notifications.models import RETRY_WINDOW_S, takes
from paygate.notifications.sms import PHONE, SmsSender, sms_sender_from_url
from paygate.notifications.webhooks import Job
from paygate.platform.bus import Bus, Event
from paygate.platform.outbox import PUBLIC_TYPES
from paygate.runtime import Runtime


class NotificationService:
    """Webhooks, e-mail and SMS for every public event.

    service = NotificationService(rt)
    service.register(bus)                         # the consumer: writes rows only
    task = asyncio.create_task(service.run())     # the delivery loop
    ...
    await service.stop()                          # ends the loop, closes the senders
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        email: mail.EmailSender | None = None,
        sms: SmsSender | None = None,
        timeout_s: float = 10.0,
        per_endpoint: int | None = None,
        max_in_flight: int = 128,
        max_messages_in_flight: int = 8,
        poll_s: float = 0.25,
    ) -> None:
        self.rt = rt
        settings = rt.settings
        self.scale = settings.webhook_backoff_scale
        if email is None and settings.smtp_url:
            email = mail.SmtpSender.from_url(settings.smtp_url)
        self.email = email  # None: no e-mail is queued at all
        self.sms = sms or sms_sender_from_url(None, settings.data_dir)
        self.loop = DeliveryLoop(
            rt,
            email=email,
            sms=self.sms,
            timeout_s=timeout_s,
            per_endpoint=settings.webhook_concurrency if per_endpoint is None else per_endpoint,
            max_in_flight=max_in_flight,
            max_messages_in_flight=max_messages_in_flight,
            poll_s=poll_s,
        )

    def register(self, bus: Bus) -> None:
        bus.subscribe("notifications", sorted(PUBLIC_TYPES), self.on_event, batch=self.on_events)

    def wake(self, *, messages: bool = False) -> None:
        """New rows are due (`messages`: e-mail or SMS among them): the loop looks now rather
        than at its next poll."""
        self.loop.wake(messages=messages)

    async def run(self) -> None:
        """The delivery loop, until cancelled or `stop`ped."""
        await self.loop.run()

    async def pump(self) -> tuple[int, float]:
        """One pass of the loop (tests, tools): returns how many sends started."""
        return await self.loop.pump()

    async def stop(self) -> None:
        await self.loop.stop()
        close = getattr(self.sms, "aclose", None)
        if close is not None:
            await close()

    # The consumer: rows only, quickly.

    async def on_event(self, event: Event) -> None:
        await self.on_events([event])

    async def on_events(self, events: list[Event]) -> None:
        """The rows of several events: one read (each event with its merchant's endpoints), one
        write transaction with an insert per table. Idempotent: a row already there for an
        (event, endpoint) or a message key is left as it is."""
        planned: list[tuple[sa.RowMapping, list[sa.RowMapping], list[dict[str, Any]]]] = []
        async with self.rt.db.read() as conn:
            # Internal events never leave the gateway.
            public = [e["id"] for e in events if e.get("type") in PUBLIC_TYPES]
            found = await repo.events_with_endpoints(conn, public)
            for event_id in public:
                if event_id not in found:
                    continue
                row, enabled = found[event_id]
                if not row["public"]:
                    continue
                endpoints = [e for e in enabled if takes(e["enabled_events"], row["type"])]
                notices = await self._customer_notices(conn, row)
                if endpoints or notices:
                    planned.append((row, endpoints, notices))
        if not planned:
            return
        now = time.time()
        deliveries: list[dict[str, Any]] = []
        sends: dict[str, Job] = {}  # the deliveries the loop has slots for, by id
        try:
            for row, endpoints, _ in planned:
                made = repo.delivery_rows(
                    row["id"],
                    row["type"],
                    [e["endpoint_id"] for e in endpoints],
                    due=now,
                    give_up_at=self._give_up(now),
                )
                for delivery, endpoint in zip(made, endpoints, strict=True):
                    # Inserted leased, and sent as soon as it is committed.
                    if self.loop.reserve(endpoint["endpoint_id"]):
                        delivery["locked_until"] = now + self.loop.lease_s
                        sends[delivery["id"]] = self.loop.job({**endpoint, **delivery}, now)
                deliveries += made
            messages = [message for _, _, notices in planned for message in notices]
            async with self.rt.db.transaction() as conn:  # one insert per table for the batch
                inserted = await repo.insert_deliveries(conn, deliveries)
                await store.add_messages(conn, messages)
        except BaseException:
            for job in sends.values():
                self.loop.unreserve(job.endpoint_id)
            raise
        await self._hand_over(sends, inserted)
        if messages or len(sends) < len(deliveries):
            self.wake(messages=bool(messages))

    async def _hand_over(self, sends: dict[str, Job], inserted: set[str]) -> None:
        """Start the reserved deliveries that were inserted. A redelivered event's were there
        already: their slots are given back. If the loop stopped meanwhile, their leases are
        given back too, for the next loop to claim them at once."""
        back = []
        for delivery_id, job in sends.items():
            if delivery_id not in inserted:
                self.loop.unreserve(job.endpoint_id)
            elif not self.loop.hand_over(job):
                back.append(delivery_id)
        if back:
            async with self.rt.db.transaction() as conn:
                await repo.lease_deliveries(conn, back, None)

    async def _customer_notices(
        self, conn: AsyncConnection, row: sa.RowMapping
    ) -> list[dict[str, Any]]:
        kind = content.CUSTOMER_NOTICES.get(row["type"])
        if kind is None:
            return []
        obj = orjson.loads(row["body"])["data"]["object"]
        who = await store.contact(conn, row["merchant_id"], row["type"], obj)
        if who is None:
            return []
        context = content.customer_notice(
            kind, obj, merchant=who.merchant_name, name=who.name, payment=who.payment
        )
        now = time.time()
        common = {"merchant_id": row["merchant_id"], "kind": kind, "due": now}
        found = []
        if who.email and self.email is not None:
            rendered = mail.render(kind, context)
            found.append(
                store.message_row(
                    **common,
                    channel="email",
                    dedupe_key=f"{row['id']}:email",
                    recipient=who.email,
                    sender_name=who.merchant_name,
                    subject=rendered.subject,
                    body_text=rendered.text,
                    body_html=rendered.html,
                    give_up_at=self._give_up(now),
                )
            )
        if who.phone and PHONE.match(who.phone):
            found.append(
                store.message_row(
                    **common,
                    channel="sms",
                    dedupe_key=f"{row['id']}:sms",
                    recipient=who.phone,
                    body_text=content.sms_text(kind, context),
                    give_up_at=self._give_up(now),
                )
            )
        return found

    async def notify_sms(
        self, to: str, text: str, *, merchant_id: str = "", dedupe_key: str | None = None
    ) -> str:
        """Queue an SMS to `to` (E.164, e.g. `+15550123`); returns the message id. A second
        call with the same `dedupe_key` queues nothing more."""
        if not PHONE.match(to):
            raise ValueError("the phone number must be in E.164 form, e.g. +15550123")
        now = time.time()
        row = store.message_row(
            merchant_id=merchant_id,
            channel="sms",
            kind="sms",
            dedupe_key=dedupe_key or new_id("sms"),
            recipient=to,
            body_text=text[:1600],
            due=now,
            give_up_at=self._give_up(now),
        )
        async with self.rt.db.transaction() as conn:
            await store.add_messages(conn, [row])
            stored = await store.get_message(conn, row["dedupe_key"])
        self.wake(messages=True)
        return str(stored["id"]) if stored is not None else row["id"]

    async def send_daily_summaries(self, day: date) -> int:
        """Queue each merchant's summary of `day` (UTC) to its e-mail address; merchants with no
        payment or refund that day get none. Asking twice for a day queues nothing more.
        Returns how many summaries the day has."""
        if self.email is None:
            return 0
        start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        now = time.time()
        rows = []
        async with self.rt.db.read() as conn:
            for shop in await store.merchants_to_summarize(conn):
                figures = await store.day_figures(conn, shop["id"], start, start + 86400)
                if not figures:
                    continue
                rendered = mail.render(
                    "daily_summary", content.summary_context(shop["name"], day, figures)
                )
                rows.append(
                    store.message_row(
                        merchant_id=shop["id"],
                        channel="email",
                        kind="daily_summary",
                        dedupe_key=f"summary:{shop['id']}:{day.isoformat()}",
                        recipient=shop["email"],
                        subject=rendered.subject,
                        body_text=rendered.text,
                        body_html=rendered.html,
                        due=now,
                        give_up_at=self._give_up(now),
                    )
                )
        if rows:
            async with self.rt.db.transaction() as conn:
                await store.add_messages(conn, rows)
            self.wake(messages=True)
        return len(rows)

    def _give_up(self, now: float) -> float:
        return now + RETRY_WINDOW_S * self.scale
