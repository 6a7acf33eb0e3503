"""The fraud consumer: screens each `payment.created` and emits the internal
`payment.fraud_assessed` that the processor acts on. A redelivery may emit the decision twice;
the processor applies only the first (the payment has left `pending`)."""

from __future__ import annotations

from typing import Any

from paygate.fraud.screening import DECLINE_TEST_CARD, REVIEW_TEST_CARD, assess
from paygate.payments import repository as payments
from paygate.platform import outbox
from paygate.platform.bus import Bus, Event
from paygate.runtime import Runtime


class FraudWorker:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._test_cards = {
            rt.keyring.fingerprint(number, "card"): number
            for number in (DECLINE_TEST_CARD, REVIEW_TEST_CARD)
        }

    def register(self, bus: Bus) -> None:
        bus.subscribe("fraud", ["payment.created"], self.on_payment_created)

    async def on_payment_created(self, event: Event) -> None:
        payment: dict[str, Any] = event["data"]["object"]
        fingerprint = payment["payment_method"]["card"]["fingerprint"]
        assessment = assess(
            livemode=payment["livemode"], test_card=self._test_cards.get(fingerprint)
        )
        decision = {
            "id": payment["id"],
            "livemode": payment["livemode"],
            "risk": assessment.as_risk(),
        }
        async with self.rt.db.transaction() as conn:
            row = await payments.get_by_id(conn, payment["id"])
            if row is None or row["status"] != "pending":
                return  # already decided: nothing to screen
            await outbox.emit(
                conn,
                type="payment.fraud_assessed",
                obj=decision,
                merchant_id=row["merchant_id"],
                sequence=event["sequence"],
            )
        self.rt.changed(payment["id"])
