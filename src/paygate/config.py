"""Settings, read once from the environment (`PAYGATE_` prefix).

The names are a contract (DESIGN.md section 4): `make run`, `make cluster` and the deployment files
rely on them. Secrets that are unset in development are generated and kept in the data folder;
outside development they must be given.
"""

from __future__ import annotations

import base64
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYGATE_", extra="ignore")

    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./var")
    admin_key: str | None = None
    database_url: str | None = None
    bus_url: str | None = None
    redis_url: str | None = None
    # Names this gateway's NATS subjects and streams and prefixes its Redis keys, so that
    # several gateways (staging beside production, or test runs) can share one broker and one
    # Redis. NATS takes it in subject tokens and stream names: lowercase letters, digits, `_`.
    namespace: str = Field(default="paygate", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    bank_url: str | None = None
    bank_port: int = 8090
    bank_api_key: str = "bank_sk_dev"
    bank_read_timeout_s: float = 10.0
    default_tier: str = "standard"
    log_format: Literal["json", "console"] | None = None
    log_level: str = "info"
    webhook_allow_private: bool = False
    webhook_backoff_scale: float = 1.0
    # Webhooks in flight to one endpoint at once, per notifier process (paygate.notifications.loop).
    webhook_concurrency: int = Field(default=16, ge=1, le=256)
    # `paygate api --workers N`: a server process whose event loop has not turned for this long
    # is killed and replaced (paygate.api.processes).
    api_stall_s: float = Field(default=30.0, gt=0)
    # `paygate cluster`: the pipeline's workers run this much nicer than the API processes, so
    # that on a machine short of CPU a client's call goes first and the pipeline catches up.
    worker_nice: int = Field(default=5, ge=0, le=19)
    recovery_backoff_scale: float = 1.0
    auth_deadline_s: float = 60.0
    smtp_url: str | None = None
    payout_delay_days: int = 2
    # Settlements (paygate.settlements): the daily cut-off, "HH:MM" UTC ("24:00" is the end of
    # the day), and the platform's own account, the debtor of every pain.001 payout file (the
    # development defaults are the published example IBAN and its bank's BIC).
    settlement_cutoff: str = Field(default="24:00", pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")
    platform_name: str = "Paygate Development"
    platform_iban: str = "DE89370400440532013000"
    platform_bic: str = "COBADEFFXXX"
    # Uncaptured authorizations are voided after this long (card networks hold them ~7 days).
    authorization_ttl_s: int = 7 * 86400
    # Fraud screening: past this the merchant's fail mode decides (paygate.fraud.worker); a
    # review nobody decides within `review_expiry_s` ends by that mode too.
    fraud_timeout_ms: float = Field(default=250.0, gt=0)
    review_expiry_s: int = Field(default=3 * 86400, gt=0)

    # Secrets. `vault_keys` is "id:base64key,id:base64key"; the first is the active key.
    vault_keys: str | None = None
    hmac_secret: str | None = None

    max_body_bytes: int = 64 * 1024
    # The edge (paygate.edge). Rate-limit tiers: JSON merged field by field over the built-in
    # ones (`standard`, `premium`, `unlimited`, `admin`), e.g. '{"standard": {"burst": 200}}'.
    tiers: dict[str, dict[str, float | int | None]] = Field(default_factory=dict)
    # The API version of new merchants: the contract's until an operator moves it.
    default_api_version: str = "2026-01-01"
    # Cached status reads: `auto` caches when every writer can invalidate the cache (Redis, or
    # the one-process `paygate serve`).
    read_cache: Literal["auto", "on", "off"] = "auto"
    read_cache_ttl_s: float = 300.0
    # How long a process trusts a key it looked up: a revocation elsewhere is seen within this.
    key_cache_ttl_s: float = 1.0
    api_key_roll_grace_s: int = 24 * 3600
    # Failed authentications per minute from one client address before it gets 429s for a
    # while (key guessing); None turns the throttle off.
    auth_failures_per_min: int | None = 30
    token_ttl_s: int = 15 * 60
    request_timeout_s: float = 30.0
    max_header_count: int = 100
    max_header_bytes: int = 16 * 1024
    idempotency_ttl_s: int = 24 * 3600
    db_pool_size: int = 10
    # SQLite: write transactions that may share one commit (group commit); 1 commits each alone.
    db_group_commit_max: int = Field(default=64, ge=1)
    fault_points: str = Field(default="", description="test-only crash points, comma separated")

    @model_validator(mode="after")
    def _secrets_outside_development(self) -> Settings:
        if self.env != "development":
            missing = [
                name
                for name in ("admin_key", "vault_keys", "hmac_secret", "database_url")
                if not getattr(self, name)
            ]
            if missing:
                names = ", ".join(f"PAYGATE_{n.upper()}" for n in missing)
                raise ValueError(f"{names} must be set outside development")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'paygate.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def vault_keyring(self) -> dict[str, bytes]:
        """Key id → 256-bit key; the first entry is the active key."""
        raw = self.vault_keys or _dev_secret(self.data_dir, "vault.key", _new_vault_key)
        ring: dict[str, bytes] = {}
        for part in raw.split(","):
            key_id, _, b64 = part.strip().partition(":")
            key = base64.b64decode(b64)
            if len(key) != 32:
                raise ValueError(f"vault key {key_id!r} must be 32 bytes")
            ring[key_id] = key
        return ring

    def hmac_key(self) -> bytes:
        raw = self.hmac_secret or _dev_secret(
            self.data_dir, "hmac.key", lambda: secrets.token_hex(32)
        )
        return raw.encode()


def _new_vault_key() -> str:
    return "k1:" + base64.b64encode(secrets.token_bytes(32)).decode()


def _dev_secret(data_dir: Path, name: str, make: object) -> str:
    """A development secret, generated once and kept (mode 0600) in the data folder."""
    path = data_dir / "secrets" / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()  # type: ignore[operator]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(str(value))
    return str(value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
