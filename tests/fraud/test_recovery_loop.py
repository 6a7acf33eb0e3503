"""The recovery loop (which also ends expired reviews) stops when canceled, even when the
cancel lands in a database call and comes out as the driver's own error."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from paygate.processor.recovery import Recovery


class DriverError(Exception):
    pass


class Stuck(Recovery):
    def __init__(self) -> None:
        rt = SimpleNamespace(db=None)
        super().__init__(SimpleNamespace(rt=rt), interval_s=0.01)  # type: ignore[arg-type]
        self.errors = 0

    async def tick(self, *, all_open: bool = False) -> int:
        try:
            await asyncio.sleep(10)  # a database call
        except asyncio.CancelledError:
            raise DriverError("can't reconnect until invalid transaction is rolled back") from None
        return 0


async def test_a_cancel_turned_into_a_driver_error_still_ends_the_loop() -> None:
    loop = Stuck()
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.wait({task}, timeout=2)  # bounded: a swallowed cancel would run forever
    assert task.cancelled()


async def test_other_errors_keep_the_loop_running() -> None:
    calls: list[Any] = []

    class Flaky(Stuck):
        async def tick(self, *, all_open: bool = False) -> int:
            calls.append(all_open)
            raise DriverError("database restarting")

    task = asyncio.create_task(Flaky().run())
    await asyncio.sleep(0.1)
    assert len(calls) >= 3 and calls[0] is True  # the first pass looks at every open attempt
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=2)
