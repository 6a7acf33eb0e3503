"""What customer notices and summaries say: template contexts and SMS texts, from the event's
object as it was when the event happened. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from paygate.money import format_amount

# Which public events tell the customer, and with which template.
CUSTOMER_NOTICES = {
    "payment.succeeded": "payment_receipt",
    "payment.failed": "payment_failed",
    "refund.succeeded": "refund_receipt",
}


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _card(payment_method: Mapping[str, Any] | None) -> str:
    card = (payment_method or {}).get("card") or {}
    brand = str(card.get("brand") or "card").replace("_", " ").title()
    last4 = card.get("last4")
    return f"{brand} ending in {last4}" if last4 else brand


def customer_notice(
    kind: str,
    obj: Mapping[str, Any],
    *,
    merchant: str,
    name: str | None,
    payment: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The template context of a customer notice about `obj` (a payment, or a refund with the
    `payment` it returns to)."""
    context: dict[str, Any] = {
        "merchant": merchant,
        "name": name,
        "reference": obj["id"],
        "date": _day(int(obj.get("updated") or obj["created"])),
    }
    if kind == "refund_receipt":
        context["amount"] = format_amount(obj["amount"], obj["currency"])
        context["card"] = _card((payment or {}).get("payment_method"))
        context["payment_reference"] = obj["payment"]
        return context
    amount = obj["amount_captured"] if kind == "payment_receipt" else obj["amount"]
    context["amount"] = format_amount(amount, obj["currency"])
    context["card"] = _card(obj.get("payment_method"))
    context["description"] = obj.get("description")
    if kind == "payment_failed":
        context["reason"] = obj.get("failure_message") or "the payment was declined."
    return context


def sms_text(kind: str, context: Mapping[str, Any]) -> str:
    merchant, amount = context["merchant"], context["amount"]
    if kind == "payment_receipt":
        return f"{merchant}: payment of {amount} received. Ref {context['reference']}"
    if kind == "refund_receipt":
        return f"{merchant}: refund of {amount} on its way to your card. Ref {context['reference']}"
    return f"{merchant}: your payment of {amount} did not go through. Ref {context['reference']}"


def summary_context(
    merchant: str, day: date, figures: Mapping[tuple[bool, str], Mapping[str, int]]
) -> dict[str, Any]:
    """The daily summary's context: one row per mode and currency, live mode first."""
    rows = []
    for (livemode, currency), f in sorted(figures.items(), key=lambda kv: (not kv[0][0], kv[0][1])):
        rows.append(
            {
                "mode": "Live" if livemode else "Test",
                "currency": currency.upper(),
                "succeeded_count": f["succeeded_count"],
                "succeeded": format_amount(f["succeeded"], currency),
                "failed_count": f["failed_count"],
                "refunded_count": f["refunded_count"],
                "refunded": format_amount(f["refunded"], currency),
            }
        )
    return {"merchant": merchant, "date": day.isoformat(), "rows": rows}
