"""The daily settlement report: what money moved at the bank on one UTC day, as CSV.

The gateway reconciles its ledger against it. Amounts are positive minor units; the operation
says the direction (`sale` and `capture` pay the merchant, `refund` pays the cardholder back).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable

from paygate.banksim.models import MONEY_MOVING, Operation

HEADER = ("reference", "operation", "amount", "currency", "time")


def day_bounds_ms(day: dt.date) -> tuple[int, int]:
    """The UTC day as a half-open range of Unix milliseconds."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def iso_utc(ms: int) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. `2025-01-31T23:59:59.123Z`."""
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def settlement_csv(operations: Iterable[Operation]) -> str:
    """The CSV body: a header line, then one line per approved sale, capture or refund."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for op in operations:
        if op.approved and op.operation in MONEY_MOVING:
            writer.writerow(
                [op.reference, op.operation, op.amount, op.currency, iso_utc(op.created_ms)]
            )
    return out.getvalue()
