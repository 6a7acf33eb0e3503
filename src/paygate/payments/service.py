"""Payment use cases. Each runs inside the caller's transaction (the unit of work) and writes the
state change, its transaction-log entry and its outbox event together."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.customers import service as customers
from paygate.errors import InvalidRequest, NotFound, StateConflict
from paygate.ids import new_id, now_s
from paygate.payments import attempts, repository
from paygate.payments.models import FAILURE_MESSAGES, RESTING, PaymentState, Status
from paygate.payments.schemas import PaymentCreate, render
from paygate.platform import metrics, outbox
from paygate.platform.db import deferred
from paygate.platform.db.tables import payment_methods
from paygate.vault import cards, tokens
from paygate.vault import repository as vault
from paygate.vault.crypto import Keyring

_STATE_FIELDS = tuple(f.name for f in fields(PaymentState))


def state_of(row: sa.RowMapping | dict[str, Any]) -> PaymentState:
    values = {name: row[name] for name in _STATE_FIELDS}
    values["status"] = Status(values["status"])
    return PaymentState(**values)


async def create(
    conn: AsyncConnection,
    keyring: Keyring,
    *,
    merchant_id: str,
    livemode: bool,
    request: PaymentCreate,
    cvc_ttl_s: int,
) -> dict[str, Any]:
    """Accept a payment: vault the card (or use the token's, once), write the payment
    (`pending`), its first log entry and `payment.created`. The bank is not called here: the
    pipeline takes it from the outbox."""
    method_in = request.payment_method
    card_in = method_in.card
    if card_in is not None and cards.expired(card_in.exp_month, card_in.exp_year):
        raise InvalidRequest(
            "The card's expiry date is in the past.",
            param="payment_method.card.exp_year",
            code="invalid_expiry",
        )
    # Nothing in `_write` reads back what it writes: its inserts go together at the block's end
    # (on PostgreSQL as one statement).
    async with deferred.deferred(conn):
        return await _write(
            conn,
            keyring,
            merchant_id=merchant_id,
            livemode=livemode,
            request=request,
            cvc_ttl_s=cvc_ttl_s,
        )


async def _write(
    conn: AsyncConnection,
    keyring: Keyring,
    *,
    merchant_id: str,
    livemode: bool,
    request: PaymentCreate,
    cvc_ttl_s: int,
) -> dict[str, Any]:
    """The rows of an accepted payment (`create`, once its request is checked)."""
    payment_id = new_id("pay")
    method_in = request.payment_method
    card_in = method_in.card
    customer_id = None
    if request.customer is not None:
        spec = request.customer
        customer_id = await customers.resolve(
            conn, merchant_id, livemode, id=spec.id, email=spec.email, name=spec.name
        )
    now = now_s()
    if method_in.token is not None:
        card = await tokens.redeem(
            conn,
            keyring,
            method_in.token,
            merchant_id=merchant_id,
            livemode=livemode,
            payment_id=payment_id,
        )
        # The BIN for fraud rules (paygate.fraud.attributes); the token kept only the last 4.
        card_bin = (await vault.reveal_card(conn, keyring, card.token))[:6]
    else:
        assert card_in is not None  # the schema takes exactly one of card and token
        card_bin = card_in.number[:6]
        fingerprint = keyring.fingerprint(card_in.number, "card")
        card = tokens.VaultedCard(
            token=await vault.store_card(conn, keyring, card_in.number, fingerprint),
            brand=cards.brand(card_in.number),
            last4=card_in.number[-4:],
            exp_month=card_in.exp_month,
            exp_year=card_in.exp_year,
            fingerprint=fingerprint,
            cvc=card_in.cvc,
        )
    method = {
        "id": new_id("pm"),
        "merchant_id": merchant_id,
        "customer_id": customer_id,
        "livemode": livemode,
        "card_token": card.token,
        "brand": card.brand,
        "last4": card.last4,
        "exp_month": card.exp_month,
        "exp_year": card.exp_year,
        "fingerprint": card.fingerprint,
        "created": now,
    }
    await deferred.insert(conn, payment_methods, method)
    state = PaymentState(status=Status.PENDING, amount=request.amount, capture=request.capture)
    row = {
        "id": payment_id,
        "merchant_id": merchant_id,
        "livemode": livemode,
        **asdict(state),
        "currency": request.currency,
        "failure_message": None,
        "payment_method_id": method["id"],
        "payment_method": {
            "type": "card",
            "card": {
                k: method[k] for k in ("brand", "last4", "exp_month", "exp_year", "fingerprint")
            },
        },
        "customer_id": customer_id,
        "description": request.description,
        "metadata": request.metadata,
        "risk": None,
        "card_bin": card_bin,
        "ip_address": request.ip_address,
        "version": 1,
        "created": now,
        "updated": now,
    }
    await repository.insert(conn, row)
    if card.cvc is not None:
        await vault.store_cvc(conn, keyring, row["id"], card.cvc, expires_at=now + cvc_ttl_s)
    await repository.log(conn, row["id"], "payment.created", state.status, state.amount)
    metrics.payment_changed(conn, state.status, None, before=None, created=now)
    payment = render(row)
    await outbox.emit(
        conn, type="payment.created", obj=payment, merchant_id=merchant_id, sequence=1
    )
    return payment


async def get(
    conn: AsyncConnection, merchant_id: str, livemode: bool, payment_id: str
) -> dict[str, Any]:
    return render(await _load(conn, merchant_id, livemode, payment_id))


async def get_with_rest(
    conn: AsyncConnection, merchant_id: str, livemode: bool, payment_id: str
) -> tuple[dict[str, Any], bool]:
    """The payment, and whether it rests: a resting status and no bank attempt still open (a
    payment failed at its deadline moves again if its open attempt turns out to have charged)."""
    row = await repository.get_with_open_attempts(conn, merchant_id, livemode, payment_id)
    if row is None:
        raise NotFound("No such payment.", param="id")
    return render(row), row["status"] in RESTING and not row["has_open_attempt"]


async def get_versioned(
    conn: AsyncConnection, merchant_id: str, livemode: bool, payment_id: str
) -> tuple[dict[str, Any], int]:
    """The payment and its row version (for cached reads)."""
    row = await _load(conn, merchant_id, livemode, payment_id)
    return render(row), row["version"]


async def _load(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    payment_id: str,
    *,
    for_update: bool = False,
) -> sa.RowMapping:
    row = await repository.get(conn, merchant_id, livemode, payment_id, for_update=for_update)
    if row is None:
        raise NotFound("No such payment.", param="id")
    return row


async def transition(
    conn: AsyncConnection,
    row: sa.RowMapping,
    new: PaymentState,
    *,
    event: str | None,
    log_type: str | None = None,
    details: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `new` over `row` (version-checked), log it, and emit `event` with the new object."""
    values = {name: getattr(new, name) for name in _STATE_FIELDS}
    values["status"] = str(new.status)
    if new.failure_code and new.failure_code != row["failure_code"]:
        values["failure_message"] = FAILURE_MESSAGES.get(new.failure_code)
    values.update(extra or {})
    # One time for the row and the answer: they must not differ across a second's boundary.
    values["updated"] = now_s()
    if not await repository.update(conn, row["id"], row["version"], values):
        raise StateConflict("The payment changed while this request ran; retry it.")
    updated = {**row, **values, "version": row["version"] + 1}
    metrics.payment_changed(
        conn, values["status"], new.failure_code, before=row["status"], created=row["created"]
    )
    entry = log_type or event or "payment.updated"
    await repository.log(
        conn, row["id"], entry, values["status"], new.amount_captured or new.amount, details
    )
    payment = render(updated)
    if event:
        await outbox.emit(
            conn,
            type=event,
            obj=payment,
            merchant_id=row["merchant_id"],
            sequence=updated["version"],
        )
    return payment


async def cancel(
    conn: AsyncConnection, merchant_id: str, livemode: bool, payment_id: str, reason: str | None
) -> tuple[int, dict[str, Any]]:
    """Cancel a payment. Before the bank is involved (`pending`) it is canceled at once (200);
    an authorized payment is voided at the bank by the processor (202, then `canceled`)."""
    row = await _load(conn, merchant_id, livemode, payment_id, for_update=True)
    state = state_of(row)
    details = {"reason": reason} if reason else None
    if state.status == Status.PENDING:
        return 200, await transition(
            conn, row, state.cancel(), event="payment.canceled", details=details
        )
    if state.status not in (Status.REQUIRES_CAPTURE, Status.REQUIRES_REVIEW):
        raise StateConflict(f"A payment in status {state.status} cannot be canceled.")
    await _no_open_operation(conn, payment_id)
    await attempts.create(
        conn,
        payment_id=payment_id,
        operation="void",
        amount=row["amount_capturable"],
        currency=row["currency"],
    )
    payment = render(row)
    await outbox.emit(
        conn,
        type="payment.cancel_requested",
        obj=payment,
        merchant_id=merchant_id,
        sequence=row["version"],
    )
    return 202, payment


async def capture(
    conn: AsyncConnection, merchant_id: str, livemode: bool, payment_id: str, amount: int | None
) -> dict[str, Any]:
    """Ask the processor to capture `amount` (default: all) of an authorized payment; the rest
    of the authorization is released. Answers the payment as it is until the bank confirms."""
    row = await _load(conn, merchant_id, livemode, payment_id, for_update=True)
    amount = state_of(row).check_capture(amount)
    await _no_open_operation(conn, payment_id)
    await attempts.create(
        conn, payment_id=payment_id, operation="capture", amount=amount, currency=row["currency"]
    )
    payment = render(row)
    await outbox.emit(
        conn,
        type="payment.capture_requested",
        obj=payment,
        merchant_id=merchant_id,
        sequence=row["version"],
    )
    return payment


async def _no_open_operation(conn: AsyncConnection, payment_id: str) -> None:
    """Captures and voids of one payment run one at a time (the row lock serializes the check)."""
    for attempt in await attempts.open_for_payment(conn, payment_id):
        if attempt["operation"] in ("authorize", "sale", "capture", "void"):
            raise StateConflict(
                f"A {attempt['operation']} of this payment is in progress; retry when it is done."
            )


async def transaction_log(
    conn: AsyncConnection, merchant_id: str, livemode: bool, payment_id: str
) -> list[dict[str, Any]]:
    await _load(conn, merchant_id, livemode, payment_id)
    return [
        {
            "id": e["id"],
            "object": "transaction_log_entry",
            "type": e["type"],
            "status": e["status"],
            "amount": e["amount"],
            "created": e["created"],
            "details": e["details"],
        }
        for e in await repository.log_entries(conn, payment_id)
    ]
