"""The processor's janitor: re-checks open bank attempts when their back-off comes due (all of
them at once after a restart), ends reviews nobody decided in time (by the merchant's fail
mode), voids authorizations nobody captured in time, and drops idempotency records and CVCs
past their keep-by time."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from paygate.errors import StateConflict
from paygate.fraud import policy, reviews
from paygate.ids import now_s
from paygate.ledger.service import release_due
from paygate.payments import attempts
from paygate.payments.models import Status
from paygate.platform.db.housekeeping import prune_idempotency_records
from paygate.platform.db.tables import payments
from paygate.platform.logging import log
from paygate.platform.tasks import reraise_if_cancelling
from paygate.processor.service import Processor
from paygate.vault.repository import destroy_expired_cvcs


class Recovery:
    def __init__(self, processor: Processor, *, interval_s: float = 1.0, batch: int = 100) -> None:
        self.processor = processor
        self.db = processor.rt.db
        self.interval_s = interval_s
        self.batch = batch

    async def run(self) -> None:
        first = True
        while True:
            try:
                await self.tick(all_open=first)
                first = False
            except Exception as exc:  # a database restart must not end the loop
                reraise_if_cancelling(exc)
                log.error("recovery.error", error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(self.interval_s)

    async def tick(self, *, all_open: bool = False) -> int:
        """One pass; returns how many attempts it drove."""
        async with self.db.read() as conn:
            due = await attempts.due(conn, now=time.time(), limit=self.batch, all_open=all_open)
        await asyncio.gather(*(self.processor.drive(a, fresh=False) for a in due))
        await self.expire_reviews()
        await self.expire_authorizations()
        async with self.db.transaction() as conn:
            await prune_idempotency_records(conn)
            await destroy_expired_cvcs(conn)
            await release_due(conn)  # funds past their payout delay become available
        return len(due)

    async def expire_reviews(self) -> int:
        """End reviews older than `PAYGATE_REVIEW_EXPIRY_S` as the merchant's fail mode says:
        open approves (capture, or `requires_capture`), closed rejects (void, then `failed`
        with `fraud_suspected`). The processor applies them from their events."""
        expiry_s = self.processor.settings.review_expiry_s
        async with self.db.read() as conn:
            due = await reviews.expired(conn, expiry_s=expiry_s, limit=self.batch)
        ended = 0
        for item in due:
            try:
                async with self.db.transaction() as conn:
                    mode = (await policy.get(conn, item["merchant_id"])).fail_mode
                    decision: reviews.Decision = "approve" if mode == "open" else "reject"
                    await reviews.decide(
                        conn,
                        item["merchant_id"],
                        item["livemode"],
                        item["id"],
                        decision,
                        source="expiry",
                    )
            except StateConflict:
                continue  # decided meanwhile, or its capture or void is under way
            ended += 1
            log.info("review.expired", payment_id=item["id"], decision=decision)
            self.processor.rt.changed(item["id"])
        return ended

    async def expire_authorizations(self) -> int:
        """Void authorizations older than the setting (DESIGN.md: → `canceled`, voided)."""
        cutoff = now_s() - self.processor.settings.authorization_ttl_s
        held = (Status.REQUIRES_CAPTURE.value, Status.REQUIRES_REVIEW.value)
        async with self.db.read() as conn:
            ids = (
                (
                    await conn.execute(
                        sa.select(payments.c.id)
                        .where(payments.c.status.in_(held), payments.c.updated < cutoff)
                        .limit(self.batch)
                    )
                )
                .scalars()
                .all()
            )
        voids = []
        for payment_id in ids:
            async with self.db.transaction() as conn:
                row = (
                    (
                        await conn.execute(
                            sa.select(payments).where(payments.c.id == payment_id).with_for_update()
                        )
                    )
                    .mappings()
                    .one()
                )
                if row["status"] not in held or await attempts.open_for_payment(conn, payment_id):
                    continue
                voids.append(
                    await attempts.ensure(
                        conn,
                        payment_id=payment_id,
                        operation="void",
                        amount=row["amount_capturable"],
                        currency=row["currency"],
                    )
                )
        for attempt_id in voids:
            await self.processor.drive(attempt_id, fresh=True)
        return len(voids)
