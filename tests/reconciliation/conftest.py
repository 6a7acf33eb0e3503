"""Fixtures: the real bank simulator over HTTP and the real pipeline (tests/e2e), a fetcher of
the bank's reports, and direct access to the simulator's store to inject faults."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from paygate.reconciliation.fetch import HttpReportFetcher
from tests.e2e.conftest import BANK_KEY, bank, bank_url, pipeline  # noqa: F401  (fixtures)


class BankStore:
    """The simulator's SQLite file, edited behind its back as a faulty bank would."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def execute(self, sql: str, *params: Any) -> int:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            return conn.execute(sql, params).rowcount
        finally:
            conn.close()

    def row(self, reference: str) -> dict[str, Any]:
        conn = sqlite3.connect(self.path, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            found = conn.execute("SELECT * FROM operations WHERE reference = ?", (reference,))
            return dict(found.fetchone())
        finally:
            conn.close()


@pytest.fixture
def bank_store(tmp_path: Path, bank_url: str) -> Iterator[BankStore]:  # noqa: F811
    yield BankStore(tmp_path / "bank" / "bank.db")


@pytest.fixture
async def fetch(bank_url: str) -> AsyncIterator[HttpReportFetcher]:  # noqa: F811
    fetcher = HttpReportFetcher(bank_url, BANK_KEY)
    yield fetcher
    await fetcher.aclose()
