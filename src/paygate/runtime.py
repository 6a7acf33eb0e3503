"""What every process shares: settings, the database, the vault keyring."""

from __future__ import annotations

from dataclasses import dataclass, field

from paygate.config import Settings
from paygate.platform import faults
from paygate.platform.db import Database
from paygate.vault.crypto import Keyring


@dataclass
class Runtime:
    settings: Settings
    db: Database
    keyring: Keyring
    hmac_key: bytes
    # Idempotency keys whose first request is executing in this process (see api/idempotency).
    inflight: set[tuple[str, str, str]] = field(default_factory=set)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        faults.arm(settings.fault_points)
        hmac_key = settings.hmac_key()
        return cls(
            settings=settings,
            db=Database(settings.resolved_database_url, pool_size=settings.db_pool_size),
            keyring=Keyring(settings.vault_keyring(), fingerprint_key=hmac_key),
            hmac_key=hmac_key,
        )

    async def close(self) -> None:
        await self.db.dispose()
