"""Settings of the bank simulator, from the environment (`PAYGATE_BANK_` prefix).

The fault knobs exist twice on purpose: once here, read at start-up, and once as `FaultConfig`,
which the admin endpoint replaces at run time. `BankSimSettings.faults()` copies the former into
the latter, and a test keeps the two field lists equal.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FaultConfig(BaseModel):
    """How badly the bank behaves. Rates are shares of calls, from 0 to 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Log-normal latency: the median in milliseconds and the shape (sigma of the underlying normal).
    latency_median_ms: float = Field(default=5.0, ge=0)
    latency_sigma: float = Field(default=0.5, ge=0, le=5)
    # Share of operations applied and committed, then answered only after `hang_s` seconds.
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    hang_s: float = Field(default=30.0, ge=0, le=3600)
    # Share of calls answered 503 without applying anything.
    error_rate: float = Field(default=0.0, ge=0, le=1)
    # Share of calls delayed by a further `slow_ms`.
    slow_rate: float = Field(default=0.0, ge=0, le=1)
    slow_ms: float = Field(default=2000.0, ge=0, le=3_600_000)
    # Every call but the audit listing and the admin endpoint answers 503.
    down: bool = False


def _default_data_dir() -> Path:
    return Path(os.environ.get("PAYGATE_DATA_DIR", "./var"))


class BankSimSettings(BaseSettings):
    """Start-up settings. `data_dir` falls back to `PAYGATE_DATA_DIR`, then `./var`."""

    model_config = SettingsConfigDict(
        env_prefix="PAYGATE_BANK_", extra="ignore", populate_by_name=True
    )

    port: int = 8090
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        validation_alias=AliasChoices("PAYGATE_BANK_DATA_DIR", "PAYGATE_DATA_DIR"),
    )
    api_key: str = "bank_sk_dev"
    # Key of the HMAC card fingerprints; generated once and kept beside the store when unset.
    fingerprint_key: str | None = None
    # Seeds the fault draws, so that a failing run can be replayed.
    seed: int | None = None

    latency_median_ms: float = Field(default=5.0, ge=0)
    latency_sigma: float = Field(default=0.5, ge=0, le=5)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    hang_s: float = Field(default=30.0, ge=0, le=3600)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    slow_rate: float = Field(default=0.0, ge=0, le=1)
    slow_ms: float = Field(default=2000.0, ge=0, le=3_600_000)
    down: bool = False

    @property
    def db_path(self) -> Path:
        """The SQLite file of the bank's state."""
        return self.data_dir / "bank.db"

    def faults(self) -> FaultConfig:
        """The fault settings the simulator starts with."""
        return FaultConfig(**{name: getattr(self, name) for name in FaultConfig.model_fields})

    def fingerprint_secret(self) -> bytes:
        """The fingerprint key: the setting, or a random one generated once and kept (mode 0600)
        in the data folder, apart from the database, so that a copy of the database alone cannot
        be used to test guesses of card numbers against the fingerprints."""
        if self.fingerprint_key:
            return self.fingerprint_key.encode()
        path = self.data_dir / "bank_fingerprint.key"
        if path.exists():
            return path.read_text().strip().encode()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process wrote it first: use theirs.
            return path.read_text().strip().encode()
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value.encode()
