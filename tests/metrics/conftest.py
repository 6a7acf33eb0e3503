"""The e2e fixtures (the bank simulator on a real port, the in-process pipeline), with cached
status reads on, so that a second read of a payment is a cache hit."""

from __future__ import annotations

from pathlib import Path

import pytest

from paygate.config import Settings
from tests.conftest import make_settings
from tests.e2e.conftest import bank, bank_url, pipeline

__all__ = ["bank", "bank_url", "pipeline"]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url, read_cache="on")
