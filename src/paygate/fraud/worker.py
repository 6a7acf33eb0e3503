"""The fraud consumer: scores each `payment.created` and emits the internal
`payment.fraud_assessed` that the processor acts on, and feeds fraud reports
(`payment.fraud_reported`) into the features.

For the payments of the events that arrive together (a batch, or one event): read their rows
and their merchants' settings; compute each one's features over the counter store (each payment
counted once, keyed by its id, however often the event comes) and score them with the model,
within `PAYGATE_FRAUD_TIMEOUT_MS`; let a rule override; decide (`paygate.fraud.decide`); then,
in one transaction, append the assessments and emit the decisions.
Scoring raised or took too long: the merchant's fail mode decides. A redelivery finds the stored
assessment and emits that again (the processor applies only the first: the payment has left
`pending`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.fraud import assessments, policy, velocity
from paygate.fraud.attributes import SCREENING, attributes_of, facts_of
from paygate.fraud.counters import CounterStore, counter_store_from_url
from paygate.fraud.decide import Policy, RuleVerdict, Scored, decide
from paygate.fraud.features import DEFAULT_CONFIG, FeatureConfig, OnlineFeatures, Txn
from paygate.fraud.rules import CompiledRule, first_match, rules_at
from paygate.fraud.scoring import ModelScorer, Scorer
from paygate.fraud.screening import (
    DECLINE_TEST_CARD,
    ELEVATED_FROM,
    REVIEW_TEST_CARD,
    Assessment,
)
from paygate.money import exponent
from paygate.payments import repository as payments
from paygate.platform import outbox, tracing
from paygate.platform.bus import Bus, Event
from paygate.platform.db import deferred
from paygate.platform.logging import log
from paygate.runtime import Runtime

REPORTED = "payment.fraud_reported"


class FraudWorker:
    def __init__(
        self, rt: Runtime, *, store: CounterStore | None = None, scorer: Scorer | None = None
    ) -> None:
        self.rt = rt
        if store is None:
            store = counter_store_from_url(rt.settings.redis_url, rt.settings.namespace)
        self.store: CounterStore = store
        self._scorer = scorer
        self._test_cards = {
            rt.keyring.fingerprint(number, "card"): number
            for number in (DECLINE_TEST_CARD, REVIEW_TEST_CARD)
        }

    @property
    def scorer(self) -> Scorer:
        # The model loads on first use, not with every pipeline.
        if self._scorer is None:
            self._scorer = ModelScorer(self.store)
        return self._scorer

    @scorer.setter
    def scorer(self, scorer: Scorer) -> None:
        self._scorer = scorer

    def register(self, bus: Bus) -> None:
        bus.subscribe("fraud", ["payment.created", REPORTED], self.on_event, batch=self.on_events)

    async def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()

    async def on_event(self, event: Event) -> None:
        await self.on_events([event])

    async def on_events(self, events: list[Event]) -> None:
        """Count the reports, then screen the created payments together (`screen`)."""
        created: dict[str, Event] = {}
        for event in events:
            if event["type"] == REPORTED:
                await self.on_reported(event["data"]["object"])
            elif event["type"] == "payment.created":
                created.setdefault(event["data"]["object"]["id"], event)
        if created:
            await self.screen(list(created.values()))

    async def on_payment_created(self, event: Event) -> None:
        await self.screen([event])

    async def screen(self, events: list[Event]) -> None:
        """Screen the payments of `payment.created` events: one read connection for their rows
        with their facts (`SCREENING`), then their merchants' settings and rule-set revisions
        (`policy.setups`), and rules only where a revision is new to this process; the counters
        of all of them (rules' velocities, then the model's features) read and counted in event
        order in a few calls of the store; the model per payment; then one write transaction
        that appends every assessment and emits every decision."""
        ids = [event["data"]["object"]["id"] for event in events]
        async with self.rt.db.read() as conn:
            found = {
                row["id"]: row
                for row in (await conn.execute(SCREENING, {"match_ids": ids})).mappings()
            }
            pending = [found[i] for i in ids if i in found and found[i]["status"] == "pending"]
            if not pending:
                return  # already decided: nothing to screen
            unscreened = [row for row in pending if not row["screened"]]
            setups = await policy.setups(conn, (row["merchant_id"] for row in unscreened))
            settings = {merchant_id: setup.policy for merchant_id, setup in setups.items()}
            rules = await self.match_rules(conn, unscreened, setups)
        decided: dict[str, Assessment] = {}
        for row, scored in zip(unscreened, await self._score(unscreened, settings), strict=True):
            fingerprint = row["payment_method"]["card"]["fingerprint"]
            decided[row["id"]] = decide(
                scored,
                settings[row["merchant_id"]],
                rule=rules.get(row["id"]),
                livemode=row["livemode"],
                test_card=self._test_cards.get(fingerprint),
            )
        sequences = {event["data"]["object"]["id"]: event["sequence"] for event in events}
        emitted: list[tuple[sa.RowMapping, Assessment]] = []
        # The assessments and decisions go as one insert each (`deferred`).
        async with self.rt.db.transaction() as conn, deferred.deferred(conn):
            locked = await payments.get_many(conn, [row["id"] for row in pending], for_update=True)
            # A delivery that ran beside this one may have stored its assessment first.
            stored = await assessments.latest_of(conn, list(locked))
            for payment_id in ids:
                current = locked.get(payment_id)
                if current is None or current["status"] != "pending":
                    continue
                if payment_id in stored:
                    assessment_id, assessment = stored[payment_id]
                else:  # unscreened when read, since assessments are never deleted
                    assessment = decided[payment_id]
                    assessment_id = await assessments.insert(
                        conn,
                        payment_id=payment_id,
                        merchant_id=current["merchant_id"],
                        livemode=current["livemode"],
                        assessment=assessment,
                    )
                decision = {
                    "id": payment_id,
                    "livemode": current["livemode"],
                    "risk": assessment.as_risk(),
                    "assessment": assessment_id,
                    "source": assessment.source,
                    "model_version": assessment.model_version,
                }
                with tracing.payment_scope(payment_id):  # the decision stays in its trace
                    await outbox.emit(
                        conn,
                        type="payment.fraud_assessed",
                        obj=decision,
                        merchant_id=current["merchant_id"],
                        sequence=sequences[payment_id],
                    )
                emitted.append((current, assessment))
        for row, assessment in emitted:
            log.info(
                "fraud.assessed",
                payment_id=row["id"],
                merchant_id=row["merchant_id"],
                score=assessment.score,
                decision=assessment.decision,
                source=assessment.source,
            )
        if emitted:
            # The payments' rows are as they were (a decision is an internal event, which the
            # processor applies), so no cached read is stale and no waiter has news: only the
            # relay has work.
            self.rt.wake_relay()

    # ---- Rules plug in here: the one call site of the rules engine (paygate.fraud.rules). ----
    async def match_rules(
        self, conn: AsyncConnection, rows: list[sa.RowMapping], setups: dict[str, policy.Setup]
    ) -> dict[str, RuleVerdict | None]:
        """Each payment's matching rule of its merchant, if any (`allow`, `block` or `review`);
        `decide` lets it override the score. `rows` are read with their facts (`SCREENING`),
        `setups` with each merchant's rule-set revisions. The velocity attributes are counted
        here for every payment, in order, so that a rule added later sees the history."""
        if not rows:
            return {}
        facts_by_id = {row["id"]: facts_of(row) for row in rows}
        verdicts: dict[str, RuleVerdict | None] = {}
        rule_sets: dict[tuple[str, bool], tuple[CompiledRule, ...]] = {}
        try:
            velocities = await velocity.observe_many(
                self.store,
                [(r["id"], r["merchant_id"], r["livemode"], facts_by_id[r["id"]]) for r in rows],
            )
        except Exception as exc:  # rules still run; a velocity they test reads as unknown
            for row in rows:
                log.error("fraud.velocity_failed", payment_id=row["id"], error=str(exc)[:300])
            velocities = [{} for _ in rows]
        for row, counted in zip(rows, velocities, strict=True):
            facts = facts_by_id[row["id"]]
            owner = (row["merchant_id"], row["livemode"])
            if owner not in rule_sets:  # each merchant's rules once per batch
                revision = setups[row["merchant_id"]].revisions[row["livemode"]]
                rule_sets[owner] = await rules_at(conn, *owner, revision)
            verdicts[row["id"]] = first_match(rule_sets[owner], attributes_of(facts, counted))
        return verdicts

    async def _score(
        self, rows: list[sa.RowMapping], settings: dict[str, Policy]
    ) -> list[Scored | None]:
        """The model's view of each payment, scored together (`Scorer.score_many`: one read of
        the counters for all), or None for every one of them when scoring raised or the batch
        overran the timeout."""
        if not rows:
            return []
        txns = [
            Txn(
                id=row["id"],
                card=row["payment_method"]["card"]["fingerprint"],
                terminal=row["merchant_id"],
                time=float(row["created"]),
                amount_minor=int(row["amount"]),
                exponent=exponent(row["currency"]) or 0,
            )
            for row in rows
        ]
        explain_from = [
            min(settings[row["merchant_id"]].review_threshold, ELEVATED_FROM) for row in rows
        ]
        timeout_s = self.rt.settings.fraud_timeout_ms / 1000.0
        start = time.perf_counter()
        try:
            # A deadline on this task (`wait_for` would run the scoring in a task of its own, a
            # turn of the event loop).
            async with asyncio.timeout(timeout_s):
                found = await self.scorer.score_many(txns, explain_from=explain_from)
            return list(found)
        except TimeoutError:
            for row in rows:
                log.warning("fraud.timeout", payment_id=row["id"], timeout_ms=timeout_s * 1000)
        except Exception as exc:
            for row in rows:
                log.error(
                    "fraud.scoring_failed",
                    payment_id=row["id"],
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    elapsed_ms=round((time.perf_counter() - start) * 1000, 3),
                )
        return [None] * len(rows)

    async def on_reported(self, report: dict[str, Any]) -> None:
        """Count a reported fraud in the merchant's fraud share (once per payment; the share
        shows it only after the label delay, as the model was trained)."""
        online = OnlineFeatures(self.store, _feature_config(self.scorer))
        await online.report_fraud(
            report["payment"], report["merchant_id"], float(report["payment_created"])
        )


def _feature_config(scorer: Scorer) -> FeatureConfig:
    # The model's windows and delay; a scorer without features counts with the defaults.
    online = getattr(scorer, "online", None)
    return online.config if isinstance(online, OnlineFeatures) else DEFAULT_CONFIG
