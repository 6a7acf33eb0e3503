"""A reduced benchmark (seconds, not minutes), shared by the fraud tests."""

from __future__ import annotations

import pytest

from paygate.fraud.simulator import SimulatedData, SimulationConfig, simulate

REDUCED = SimulationConfig(n_customers=150, n_terminals=400, n_days=60)


@pytest.fixture(scope="session")
def reduced() -> SimulatedData:
    return simulate(REDUCED)


# The real pipeline and bank simulator of tests/e2e, for the live service's tests here.
from tests.e2e.conftest import bank, bank_url, pipeline  # noqa: E402, F401
