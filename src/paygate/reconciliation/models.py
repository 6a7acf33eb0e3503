"""Reconciliation rules, pure: the bank's report parsed, and one day's movements matched.

A movement is money crossing the bank-clearing account: a `sale` or `capture` pays in, a
`refund` pays out. Both sides are keyed by the bank reference (DESIGN.md section 4:
`<payment id>:<operation>[:<refund id>]`), which the gateway sends with every call and the bank
prints on every report line, so matching is exact, never heuristic.

For the day D, each reference seen on D on either side gives at most one break per fault:

- on both sides: `currency_mismatch` (currencies differ), else `amount_mismatch`, else matched;
- ours only: `timing` if the bank reported it on D-1 or D+1 (the two sides put the movement on
  either side of midnight), else `missing_at_bank`;
- the bank's only: `timing` if we booked it on D-1 or D+1, else `missing_in_ledger`;
- and `duplicate` beside the above when a side has the reference more than once on D (the bank
  reported it twice, or we booked it twice): the extra lines are the break.

The day's totals per currency are net (refunds negative), over every line of the day on each
side, duplicates included: they are what each side says moved. Amounts are integer minor units.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

BreakKind = Literal[
    "missing_at_bank",
    "missing_in_ledger",
    "amount_mismatch",
    "currency_mismatch",
    "duplicate",
    "timing",
]
BREAK_KINDS: tuple[BreakKind, ...] = (
    "missing_at_bank",
    "missing_in_ledger",
    "amount_mismatch",
    "currency_mismatch",
    "duplicate",
    "timing",
)
OPERATIONS = frozenset({"sale", "capture", "refund"})
REPORT_COLUMNS = ("reference", "operation", "amount", "currency", "time")
MAX_REFERENCE = 200
_CURRENCY = re.compile(r"^[a-z]{3}$")


class ReportInvalid(ValueError):
    """The bank's report cannot be read: nothing is reconciled from a report half understood."""


@dataclass(frozen=True, slots=True)
class Movement:
    """One line of either side. `amount` is positive; `operation` gives the direction. `at` is
    Unix seconds; `source` names our ledger entry or attempt (empty for the bank)."""

    reference: str
    operation: str
    amount: int
    currency: str
    at: int
    source: str = ""

    @property
    def signed(self) -> int:
        return -self.amount if self.operation == "refund" else self.amount

    @property
    def day(self) -> dt.date:
        return utc_day(self.at)


@dataclass(frozen=True, slots=True)
class Break:
    kind: BreakKind
    reference: str
    operation: str
    ours: Movement | None
    bank: Movement | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def payment_id(self) -> str:
        return self.reference.split(":", 1)[0]

    @property
    def refund_id(self) -> str | None:
        """The refund's id for `<payment>:refund:<re_…>`; a reversal of a late sale has none."""
        parts = self.reference.split(":")
        return parts[2] if len(parts) == 3 and parts[2].startswith("re_") else None


@dataclass(frozen=True, slots=True)
class Total:
    currency: str
    ours: int
    bank: int


@dataclass(frozen=True, slots=True)
class Result:
    day: dt.date
    matched: int
    breaks: list[Break]
    totals: list[Total]
    bank_rows: int
    ledger_rows: int

    @property
    def status(self) -> str:
        even = all(t.ours == t.bank for t in self.totals)
        return "balanced" if not self.breaks and even else "breaks"

    def by_kind(self) -> dict[str, int]:
        counts = Counter(b.kind for b in self.breaks)
        return {kind: counts[kind] for kind in BREAK_KINDS}


def utc_day(unix_s: int) -> dt.date:
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).date()


def day_bounds(day: dt.date) -> tuple[int, int]:
    """The UTC day as a half-open range of Unix seconds."""
    start = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp())
    return start, start + 86_400


def parse_report(text: str) -> list[Movement]:
    """The lines of the bank's settlement CSV. Columns are found by name in the header, so that
    columns the bank adds later are ignored; a line that cannot be read refuses the report."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REPORT_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ReportInvalid(f"the report has no {', '.join(missing)} column")
    lines = []
    for number, row in enumerate(reader, start=2):
        try:
            lines.append(_line(row))
        except (ValueError, TypeError) as exc:
            raise ReportInvalid(f"line {number}: {exc}") from None
    return lines


def _line(row: dict[str, Any]) -> Movement:
    reference, operation = row["reference"], row["operation"]
    amount, currency, time = row["amount"], row["currency"], row["time"]
    if not reference or len(reference) > MAX_REFERENCE:
        raise ValueError("bad reference")
    if operation not in OPERATIONS:
        raise ValueError("unknown operation")
    if not amount.isdigit():
        raise ValueError("amount is not a whole number of minor units")
    if not _CURRENCY.match(currency or ""):
        raise ValueError("currency is not an ISO 4217 code in lower case")
    if not isinstance(time, str):
        raise ValueError("no time")
    moment = dt.datetime.fromisoformat(time.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("time has no time zone")
    return Movement(reference, operation, int(amount), currency, int(moment.timestamp()))


def reconcile(day: dt.date, ours: Iterable[Movement], bank: Iterable[Movement]) -> Result:
    """Match the day's movements; `ours` and `bank` may (and should) include the neighbouring
    days, which tell a timing difference from a missing movement."""
    ours_on, ours_near = _split(day, ours)
    bank_on, bank_near = _split(day, bank)
    breaks: list[Break] = []
    matched = 0
    for ref in sorted(set(ours_on) | set(bank_on)):
        mine, theirs = ours_on.get(ref, []), bank_on.get(ref, [])
        breaks += _duplicates(ref, mine, "ours") + _duplicates(ref, theirs, "bank")
        if mine and theirs:
            found = _compare(ref, mine[0], theirs[0])
            if found is None:
                matched += 1
            else:
                breaks.append(found)
        elif mine:
            breaks.append(_one_sided(ref, mine[0], bank_near.get(ref), ours=True))
        else:
            breaks.append(_one_sided(ref, theirs[0], ours_near.get(ref), ours=False))
    return Result(
        day=day,
        matched=matched,
        breaks=breaks,
        totals=_totals(ours_on, bank_on),
        bank_rows=sum(len(v) for v in bank_on.values()),
        ledger_rows=sum(len(v) for v in ours_on.values()),
    )


def _split(
    day: dt.date, movements: Iterable[Movement]
) -> tuple[dict[str, list[Movement]], dict[str, list[Movement]]]:
    on: dict[str, list[Movement]] = defaultdict(list)
    near: dict[str, list[Movement]] = defaultdict(list)
    for m in sorted(movements, key=lambda m: (m.at, m.source)):
        if m.day == day:
            on[m.reference].append(m)
        elif abs((m.day - day).days) == 1:
            near[m.reference].append(m)
    return on, near


def _duplicates(ref: str, lines: Sequence[Movement], side: str) -> list[Break]:
    if len(lines) < 2:
        return []
    extra = lines[1:]
    total = sum(m.amount for m in extra)
    first = lines[0]
    copy = Movement(ref, first.operation, total, first.currency, extra[0].at)
    details = {"side": side, "count": len(lines), "sources": [m.source for m in lines if m.source]}
    if side == "ours":
        return [Break("duplicate", ref, first.operation, copy, None, details)]
    return [Break("duplicate", ref, first.operation, None, copy, details)]


def _compare(ref: str, mine: Movement, theirs: Movement) -> Break | None:
    details: dict[str, Any] = {"our_time": mine.at, "bank_time": theirs.at}
    if mine.source:
        details["source"] = mine.source
    if mine.currency != theirs.currency:
        return Break("currency_mismatch", ref, mine.operation, mine, theirs, details)
    if mine.amount != theirs.amount:
        details["difference"] = theirs.amount - mine.amount
        return Break("amount_mismatch", ref, mine.operation, mine, theirs, details)
    return None


def _one_sided(ref: str, line: Movement, near: list[Movement] | None, *, ours: bool) -> Break:
    details: dict[str, Any] = {"our_time" if ours else "bank_time": line.at}
    if line.source:
        details["source"] = line.source
    if near:
        other = near[0]
        details["other_day"] = other.day.isoformat()
        details["bank_time" if ours else "our_time"] = other.at
        mine, theirs = (line, other) if ours else (other, line)
        return Break("timing", ref, line.operation, mine, theirs, details)
    if ours:
        return Break("missing_at_bank", ref, line.operation, line, None, details)
    return Break("missing_in_ledger", ref, line.operation, None, line, details)


def _totals(ours: dict[str, list[Movement]], bank: dict[str, list[Movement]]) -> list[Total]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for side, lines in ((0, ours), (1, bank)):
        for group in lines.values():
            for m in group:
                sums[m.currency][side] += m.signed
    return [Total(cur, s[0], s[1]) for cur, s in sorted(sums.items())]
