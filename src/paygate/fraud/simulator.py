"""The benchmark's transaction simulator, re-implemented from the open handbook *Reproducible
Machine Learning for Credit Card Fraud Detection* (Le Borgne et al.), chapter 3, "Simulated
dataset" (section "Transaction data simulator").

Customers and terminals live on a 100 x 100 grid; a customer pays only at terminals within
`radius` of home, a Poisson number of times a day, around noon, amounts normal around the
customer's mean. Three fraud scenarios label the result (chapter 3, "Fraud scenarios generation"):

1. every payment above 220 is a fraud;
2. each day two terminals are compromised: every payment there in the next 28 days is a fraud;
3. each day three cards are compromised: a third of their payments in the next 14 days are
   frauds, their amounts multiplied by 5.

With `seed=0` and the default configuration this reproduces the handbook's published data set
(1,754,155 payments, 14,681 frauds). That requires the same random draws in the same order: the
profile tables from numpy's legacy generator (seeds 0 and 1), one generator per customer seeded
with the customer's id (numpy's for counts, times and amounts, Python's `random` for the
terminal), and per day one generator seeded with the day for each fraud scenario. A customer's
draws are conditional on the previous ones (a time outside the day skips the amount, a negative
amount draws a uniform), so each customer is one tight scalar loop; everything else is
vectorized.

    >>> data = simulate(SimulationConfig(n_customers=50, n_terminals=100, n_days=30))
    >>> list(data.transactions.columns)[:4]
    ['transaction_id', 'time', 'datetime', 'customer_id']
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

# Another seed shifts every per-customer and per-day seed by this stride, so that seed 0 keeps the
# handbook's seeds (the customer id, the day) and other seeds never reuse them.
_SEED_STRIDE = 1_000_003
_MAX_SEED = (2**32 - 1) // _SEED_STRIDE - 1

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    n_customers: int = 5_000
    n_terminals: int = 10_000
    n_days: int = 183
    start_date: str = "2018-04-01"
    radius: float = 5.0
    seed: int = 0
    # Chapter 3, "Fraud scenarios generation": the three scenarios' parameters.
    fraud_amount_threshold: float = 220.0
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    compromised_customers_per_day: int = 3
    customer_compromise_days: int = 14

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= _MAX_SEED:
            raise ValueError(f"seed must be between 0 and {_MAX_SEED}")
        if self.n_customers < self.compromised_customers_per_day:
            raise ValueError("too few customers for the compromised-card scenario")
        if self.n_terminals < self.compromised_terminals_per_day:
            raise ValueError("too few terminals for the compromised-terminal scenario")
        if self.n_days < 1:
            raise ValueError("n_days must be positive")

    @property
    def start_unix(self) -> int:
        start = datetime.strptime(self.start_date, "%Y-%m-%d").replace(tzinfo=UTC)
        return int(start.timestamp())

    def stream_seed(self, index: int) -> int:
        """The seed of customer `index`'s generator, or of day `index`'s fraud draws."""
        return index + self.seed * _SEED_STRIDE


@dataclass(frozen=True)
class SimulatedData:
    config: SimulationConfig
    customers: pd.DataFrame  # customer_id, x, y, mean_amount, std_amount, mean_nb_tx_per_day
    terminals: pd.DataFrame  # terminal_id, x, y
    available_terminals: list[np.ndarray]  # per customer, the terminal ids within the radius
    transactions: pd.DataFrame  # in time order; transaction_id is the row number


def customer_profiles(config: SimulationConfig) -> pd.DataFrame:
    rs = np.random.RandomState(2 * config.seed)
    # Per customer, in this order: x, y, mean amount U(5, 100), mean transactions a day U(0, 4);
    # the vectorized form consumes the same stream as one scalar uniform draw at a time.
    u = rs.random_sample((config.n_customers, 4))
    mean_amount = 5.0 + 95.0 * u[:, 2]
    return pd.DataFrame(
        {
            "customer_id": np.arange(config.n_customers),
            "x": 0.0 + 100.0 * u[:, 0],
            "y": 0.0 + 100.0 * u[:, 1],
            "mean_amount": mean_amount,
            "std_amount": mean_amount / 2,
            "mean_nb_tx_per_day": 0.0 + 4.0 * u[:, 3],
        }
    )


def terminal_profiles(config: SimulationConfig) -> pd.DataFrame:
    rs = np.random.RandomState(2 * config.seed + 1)
    u = rs.random_sample((config.n_terminals, 2))
    return pd.DataFrame(
        {"terminal_id": np.arange(config.n_terminals), "x": 100.0 * u[:, 0], "y": 100.0 * u[:, 1]}
    )


def terminals_within_radius(
    customers: pd.DataFrame, terminals: pd.DataFrame, radius: float
) -> list[np.ndarray]:
    xy_t = terminals[["x", "y"]].to_numpy(dtype=float)
    xy_c = customers[["x", "y"]].to_numpy(dtype=float)
    out: list[np.ndarray] = []
    chunk = max(1, 2_000_000 // max(1, len(xy_t)))
    for start in range(0, len(xy_c), chunk):
        diff = np.square(xy_c[start : start + chunk, None, :] - xy_t[None, :, :])
        # sqrt of the summed squares compared with the radius, not squares with radius²: the
        # rounding differs at the border, and the handbook compares distances.
        dist = np.sqrt(diff[..., 0] + diff[..., 1])
        out.extend(np.flatnonzero(row < radius) for row in dist)
    return out


def _customer_transactions(
    config: SimulationConfig,
    customer_id: int,
    lam: float,
    mean: float,
    std: float,
    terminals: list[int],
    out: tuple[list[int], list[int], list[int], list[float]],
) -> None:
    seed = config.stream_seed(customer_id)
    nrs = np.random.RandomState(seed)
    pick = random.Random(seed).choice
    poisson, normal, uniform = nrs.poisson, nrs.normal, nrs.uniform
    days, secs, terms, amounts = out
    for day in range(config.n_days):
        for _ in range(poisson(lam)):
            # Around noon, standard deviation 20,000 s; a draw outside the day is dropped.
            t = int(normal(SECONDS_PER_DAY / 2, 20_000))
            if 0 < t < SECONDS_PER_DAY:
                amount = normal(mean, std)
                if amount < 0:
                    amount = uniform(0, mean * 2)
                if terminals:
                    days.append(day)
                    secs.append(t + day * SECONDS_PER_DAY)
                    terms.append(pick(terminals))
                    amounts.append(float(amount))


def _generate(
    config: SimulationConfig, customers: pd.DataFrame, available: list[np.ndarray]
) -> pd.DataFrame:
    cols: tuple[list[int], list[int], list[int], list[float]] = ([], [], [], [])
    cust: list[int] = []
    lams = customers["mean_nb_tx_per_day"].tolist()
    means = customers["mean_amount"].tolist()
    stds = customers["std_amount"].tolist()
    for c in range(config.n_customers):
        before = len(cols[0])
        _customer_transactions(config, c, lams[c], means[c], stds[c], available[c].tolist(), cols)
        cust.extend([c] * (len(cols[0]) - before))
    days, secs, terms, amounts = cols
    seconds = np.asarray(secs, dtype=np.int64)
    # Stable sort by time: payments in the same second keep the generation order (customer, day),
    # so ids are the same on every platform.
    order = np.argsort(seconds, kind="stable")
    seconds = seconds[order]
    start = config.start_unix
    return pd.DataFrame(
        {
            "transaction_id": np.arange(len(order), dtype=np.int64),
            "time": seconds + start,
            "datetime": pd.to_datetime(seconds + start, unit="s"),
            "customer_id": np.asarray(cust, dtype=np.int64)[order],
            "terminal_id": np.asarray(terms, dtype=np.int64)[order],
            # numpy's rounding (x·100, rint, ÷100), as the handbook rounds each draw.
            "amount": np.round(np.asarray(amounts, dtype=float), 2)[order],
            "seconds": seconds,
            "day": np.asarray(days, dtype=np.int64)[order],
        }
    )


def _sample_ids(population: int, n: int, seed: int) -> np.ndarray:
    # What pandas' `Series.sample(n, random_state=seed)` draws: the legacy generator's choice
    # without replacement, i.e. the first n of a permutation.
    return np.random.RandomState(seed).choice(population, size=n, replace=False)


def add_frauds(config: SimulationConfig, tx: pd.DataFrame) -> pd.DataFrame:
    """Label `tx` (in time order) with the three scenarios, in the handbook's order."""
    amount = tx["amount"].to_numpy(dtype=float).copy()
    day = tx["day"].to_numpy()
    terminal = tx["terminal_id"].to_numpy()
    customer = tx["customer_id"].to_numpy()
    scenario = np.zeros(len(tx), dtype=np.int8)
    scenario[amount > config.fraud_amount_threshold] = 1
    # The scenarios draw for each day before the last day seen, as the handbook loops.
    last_day = int(day.max()) if len(day) else 0

    span = config.terminal_compromise_days
    compromised = np.zeros((config.n_terminals, last_day + span + 1), dtype=bool)
    for d in range(last_day):
        ids = _sample_ids(
            config.n_terminals, config.compromised_terminals_per_day, config.stream_seed(d)
        )
        compromised[ids, d : d + span] = True
    scenario[compromised[terminal, day]] = 2

    # Each card's payments by row (time order), to gather a compromised card's next days fast.
    by_customer = np.argsort(customer, kind="stable")
    bounds = np.searchsorted(customer[by_customer], np.arange(config.n_customers + 1))
    for d in range(last_day):
        seed = config.stream_seed(d)
        cards = _sample_ids(config.n_customers, config.compromised_customers_per_day, seed)
        rows = np.sort(np.concatenate([by_customer[bounds[c] : bounds[c + 1]] for c in cards]))
        rows = rows[(day[rows] >= d) & (day[rows] < d + config.customer_compromise_days)]
        picked = random.Random(seed).sample(rows.tolist(), k=len(rows) // 3)
        if picked:
            amount[picked] *= 5
            scenario[picked] = 3
    out = tx.copy()
    out["amount"] = amount
    out["is_fraud"] = (scenario > 0).astype(np.int8)
    out["fraud_scenario"] = scenario
    return out


def simulate(config: SimulationConfig | None = None) -> SimulatedData:
    config = config or SimulationConfig()
    customers = customer_profiles(config)
    terminals = terminal_profiles(config)
    available = terminals_within_radius(customers, terminals, config.radius)
    tx = add_frauds(config, _generate(config, customers, available))
    return SimulatedData(config, customers, terminals, available, tx)
