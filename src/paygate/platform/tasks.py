"""Long-running loops and their cancellation."""

from __future__ import annotations

import asyncio


def reraise_if_cancelling(exc: BaseException) -> None:
    """A loop that logs its errors and goes on must still end when its task is cancelled. A
    cancel that lands inside a database call comes out as the driver's own error
    (PendingRollbackError, …): when the task is being cancelled, raise it as the cancel it is."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc
