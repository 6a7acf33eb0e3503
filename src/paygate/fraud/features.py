"""Online fraud features, computed from what was known before the payment: the same code scores
live payments and replays the benchmark.

Per payment (a `Txn`), `OnlineFeatures.observe` reads the counters, computes the feature vector,
then adds the payment to the counters; `report_fraud` feeds a fraud label when it becomes known.
The features follow the handbook's chapter 3, "Baseline feature transformation", made online:

- the amount, and whether the payment is at night (hour ≤ 6, UTC) or on a weekend;
- per card: the number of earlier payments and their average amount over the last 1, 7 and 30
  days (hour buckets: the window is the current hour and the 24w - 1 before it), and the
  amount over those averages;
- per terminal (merchant): the number of payments and the share reported as fraud over 1, 7 and
  30 days, seen through the label delay (7 days): only payments old enough that their label is
  due count, so a label reported early changes nothing until then, and a terminal that
  nobody has labelled yet is not mistaken for a clean one.

Counting is idempotent: a redelivered payment (same id) is never counted twice, and its features
still exclude the payment itself. Counters live behind `CounterStore` (memory or Redis); amounts
are counted in integers (1/10,000 of the major unit), so every backend adds exactly.

    >>> import asyncio
    >>> from paygate.fraud.counters import MemoryCounterStore
    >>> online = OnlineFeatures(MemoryCounterStore())
    >>> txn = Txn(id="pay_1", card="fp_1", terminal="mer_1", time=1_700_000_000, amount_minor=1999)
    >>> vector = asyncio.run(online.observe(txn))
    >>> float(vector[FEATURE_NAMES.index("amount")])
    19.99
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from paygate.fraud.counters import CounterStore, bucket_keys, window_keys

SECONDS_PER_HOUR = 3_600
HOURS_PER_DAY = 24
# Counter amounts are integers in 1/10,000 of the major unit: exact for every ISO 4217 exponent
# (at most 4) and on every backend.
AMOUNT_SCALE = 10_000
MAX_EXPONENT = 4


@dataclass(frozen=True, slots=True)
class Txn:
    """One payment as the fraud features see it. `card` is the card's keyed fingerprint (or a
    customer id), `terminal` the merchant or terminal, `time` Unix seconds, the amount in the
    currency's minor unit with its ISO 4217 exponent. Amounts of different currencies are counted
    together unconverted."""

    id: str
    card: str
    terminal: str
    time: float
    amount_minor: int
    exponent: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.exponent <= MAX_EXPONENT:
            raise ValueError("exponent must be between 0 and 4")

    @property
    def amount(self) -> float:
        return self.amount_minor / float(10**self.exponent)

    @property
    def amount_units(self) -> int:
        return int(self.amount_minor * 10 ** (MAX_EXPONENT - self.exponent))

    @property
    def hour(self) -> int:
        return int(self.time // SECONDS_PER_HOUR)


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    card_windows_days: tuple[int, ...] = (1, 7, 30)
    terminal_windows_days: tuple[int, ...] = (1, 7, 30)
    # Labels become known this long after the payment (handbook, chapter 3, "Baseline feature
    # transformation": a 7-day delay for terminal risk).
    label_delay_days: int = 7
    night_until_hour: int = 6  # hour ≤ 6 is night (same section)
    namespace: str = "fraud"
    # How long the mark that a payment was counted lives: longer than any redelivery of its
    # event (minutes on the bus; days for a dead letter an operator replays), not as long as
    # the windows. One mark per payment, it would otherwise be most of what Redis holds.
    redelivery_days: int = 2

    @property
    def ttl_s(self) -> int:
        # The oldest bucket a read can touch, plus a day of margin.
        longest = max(*self.card_windows_days, *self.terminal_windows_days)
        days = longest + self.label_delay_days + 2
        return days * HOURS_PER_DAY * SECONDS_PER_HOUR

    def feature_names(self) -> list[str]:
        names = ["amount", "is_weekend", "is_night"]
        for w in self.card_windows_days:
            names += [f"card_tx_{w}d", f"card_avg_amount_{w}d", f"amount_over_card_avg_{w}d"]
        for w in self.terminal_windows_days:
            names += [f"terminal_tx_{w}d", f"terminal_fraud_share_{w}d"]
        return names

    def card_window(self, hour: int, days: int) -> tuple[int, int]:
        return hour - HOURS_PER_DAY * days + 1, hour

    def terminal_window(self, hour: int, days: int) -> tuple[int, int]:
        # The last hour all of whose payments are older than the delay.
        last = hour - HOURS_PER_DAY * self.label_delay_days - 1
        return last - HOURS_PER_DAY * days + 1, last


DEFAULT_CONFIG = FeatureConfig()
FEATURE_NAMES = DEFAULT_CONFIG.feature_names()


def assemble(
    config: FeatureConfig,
    time: np.ndarray,
    amount_units: np.ndarray,
    card_n: Sequence[np.ndarray],
    card_sum: Sequence[np.ndarray],
    term_n: Sequence[np.ndarray],
    term_fraud: Sequence[np.ndarray],
) -> np.ndarray:
    """The feature matrix (one row per payment, columns `config.feature_names()`) from the window
    counts, one array per window. Both the online and the batch path end here, so they agree."""
    seconds = np.asarray(time, dtype=np.int64)
    hour_of_day = (seconds // SECONDS_PER_HOUR) % HOURS_PER_DAY
    weekday = (seconds // (SECONDS_PER_HOUR * HOURS_PER_DAY) + 3) % 7  # 1970-01-01 was a Thursday
    amount = np.asarray(amount_units, dtype=float) / AMOUNT_SCALE
    cols: list[np.ndarray] = [
        amount,
        (weekday >= 5).astype(float),
        (hour_of_day <= config.night_until_hour).astype(float),
    ]
    with np.errstate(divide="ignore", invalid="ignore"):
        for n, total in zip(card_n, card_sum, strict=True):
            count = np.asarray(n, dtype=float)
            # No earlier payment: the average is unknown (NaN), which the model handles natively.
            avg = np.where(count > 0, np.asarray(total, dtype=float) / AMOUNT_SCALE / count, np.nan)
            cols += [count, avg, np.where(avg > 0, amount / avg, np.nan)]
        for n, frauds in zip(term_n, term_fraud, strict=True):
            count = np.asarray(n, dtype=float)
            share = np.where(count > 0, np.asarray(frauds, dtype=float) / count, np.nan)
            cols += [count, share]
    return np.column_stack(cols)


class OnlineFeatures:
    """Features one payment at a time over a `CounterStore`. Async because the scale-out store
    is a network cache."""

    def __init__(self, store: CounterStore, config: FeatureConfig = DEFAULT_CONFIG) -> None:
        self.store = store
        self.config = config
        self.feature_names = config.feature_names()

    def _series(self, kind: str, entity: str, field: str) -> str:
        return f"{self.config.namespace}:{kind}:{entity}:{field}"

    async def observe(self, txn: Txn) -> np.ndarray:
        """The payment's feature vector from the counters as they were before it, then count it
        (once per payment id, however often it is redelivered)."""
        row: np.ndarray = (await self.observe_many([txn]))[0]
        return row

    async def observe_many(self, txns: Sequence[Txn]) -> np.ndarray:
        """`observe` of each payment in order (one row each), in one call of the store for all
        of them (`CounterStore.read_and_count`: the read, then each payment's mark and, where
        the mark is new, its increments). Each row is what `observe` one payment after the
        other gives: the batch's earlier payments are added to what the later ones read."""
        cfg = self.config
        if not txns:
            return np.empty((0, len(self.feature_names)))
        plans = [self._windows(txn) for txn in txns]
        unique = list(dict.fromkeys(k for plan in plans for keys in plan for k in keys))
        counts = [self._counts(txn) for txn in txns]
        found, firsts = await self.store.read_and_count(
            unique,
            [(f"{cfg.namespace}:seen:{txn.id}", c) for txn, c in zip(txns, counts, strict=True)],
            cfg.ttl_s,
            cfg.redelivery_days * HOURS_PER_DAY * SECONDS_PER_HOUR,
        )
        values = dict(zip(unique, found, strict=True))
        rows: list[list[int]] = []
        for txn, plan, first, added in zip(txns, plans, firsts, counts, strict=True):
            sums = [sum(values[k] for k in keys) for keys in plan]
            if first:
                for key, amount in added:
                    if key in values:  # a later payment of the batch reads it
                        values[key] += amount
            else:
                # A redelivery: the payment is already in its own card windows (its hour is in
                # each of them; never in the terminal's, which end before the delay). Take it
                # out again.
                for i in range(len(cfg.card_windows_days)):
                    if sums[2 * i] > 0:
                        sums[2 * i] -= 1
                        sums[2 * i + 1] -= txn.amount_units
            rows.append(sums)
        cols = [np.array(col) for col in zip(*rows, strict=True)]
        n_w = len(cfg.card_windows_days)
        matrix: np.ndarray = assemble(
            cfg,
            np.array([txn.time for txn in txns]),
            np.array([txn.amount_units for txn in txns]),
            card_n=cols[0 : 2 * n_w : 2],
            card_sum=cols[1 : 2 * n_w : 2],
            term_n=cols[2 * n_w :: 2],
            term_fraud=cols[2 * n_w + 1 :: 2],
        )
        return matrix

    def _windows(self, txn: Txn) -> list[list[str]]:
        """The keys of each window a payment's features read: per card window its count and
        amount, then per terminal window its count and frauds."""
        cfg = self.config
        card_n, card_s = self._series("card", txn.card, "n"), self._series("card", txn.card, "s")
        term_n = self._series("term", txn.terminal, "n")
        term_f = self._series("term", txn.terminal, "f")
        plan: list[list[str]] = []
        for w in cfg.card_windows_days:
            first, last = cfg.card_window(txn.hour, w)
            plan += [window_keys(card_n, first, last), window_keys(card_s, first, last)]
        for w in cfg.terminal_windows_days:
            first, last = cfg.terminal_window(txn.hour, w)
            plan += [window_keys(term_n, first, last), window_keys(term_f, first, last)]
        return plan

    def _counts(self, txn: Txn) -> list[tuple[str, int]]:
        """What counting a payment adds: to its card's count and amount, and its terminal's
        count, in the buckets of its hour."""
        hour = txn.hour
        counts = [(k, 1) for k in bucket_keys(self._series("card", txn.card, "n"), hour)]
        counts += [
            (k, txn.amount_units) for k in bucket_keys(self._series("card", txn.card, "s"), hour)
        ]
        counts += [(k, 1) for k in bucket_keys(self._series("term", txn.terminal, "n"), hour)]
        return counts

    async def report_fraud(self, txn_id: str, terminal: str, time: float) -> bool:
        """Count a fraud label for the payment `txn_id` made at `time` at `terminal`. Returns
        False when that payment's fraud was already counted."""
        cfg = self.config
        if not await self.store.add_once(f"{cfg.namespace}:fraud:{txn_id}", cfg.ttl_s):
            return False
        hour = int(time // SECONDS_PER_HOUR)
        series = self._series("term", terminal, "f")
        await self.store.incr_many([(k, 1) for k in bucket_keys(series, hour)], cfg.ttl_s)
        return True
