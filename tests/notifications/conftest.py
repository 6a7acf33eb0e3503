"""Fixtures: the API with webhooks allowed to reach loopback receivers and the retry schedule
shrunk (`backoff_scale`: 3 days → 26 s, first retries in milliseconds; a test that waits for
the dead letter parametrizes it smaller), the notification service running its delivery loop,
and events relayed from the real outbox over the in-process bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from paygate.config import Settings
from paygate.notifications.worker import NotificationService
from paygate.platform import outbox
from paygate.platform.bus import LocalBus
from paygate.platform.relay import Relay
from paygate.runtime import Runtime
from tests.conftest import make_settings
from tests.notifications.support import Receiver, SmtpServer


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def backoff_scale() -> float:
    return 1e-4


@pytest.fixture
def settings(tmp_path: Path, database_url: str, smtp: SmtpServer, backoff_scale: float) -> Settings:
    return make_settings(
        tmp_path,
        database_url,
        webhook_allow_private=True,
        webhook_backoff_scale=backoff_scale,
        smtp_url=f"smtp://127.0.0.1:{smtp.controller.port}?from=receipts@shop.example",
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
async def notifier(runtime: Runtime) -> AsyncIterator[NotificationService]:
    """The service with its delivery loop running."""
    service = NotificationService(runtime, timeout_s=3.0, poll_s=0.05)
    task = asyncio.create_task(service.run())
    yield service
    await service.stop()
    assert task.done()


class Events:
    """The real relay and in-process bus, with the service as the only consumer."""

    def __init__(self, runtime: Runtime, service: NotificationService) -> None:
        self.runtime = runtime
        self.bus = LocalBus()
        service.register(self.bus)
        self.relay = Relay(runtime.db, self.bus)

    async def emit(
        self, type: str, obj: dict[str, Any], merchant_id: str, sequence: int = 2
    ) -> dict[str, Any]:
        """Commit an event to the outbox, as a state change would."""
        async with self.runtime.db.transaction() as conn:
            return await outbox.emit(
                conn, type=type, obj=obj, merchant_id=merchant_id, sequence=sequence
            )

    async def relay_all(self) -> None:
        await self.relay.drain(10)


@pytest.fixture
async def events(runtime: Runtime, notifier: NotificationService) -> Events:
    return Events(runtime, notifier)
