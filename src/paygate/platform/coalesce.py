"""Work that arrives while a batch is being done waits, and is done together in the next batch.

A caller `submit`s one item and awaits its own result. When nothing is in progress, a batch starts
at once with whatever has arrived (alone, an item waits for nobody); while a batch runs, new items
queue, and the next batch takes them all. Under load batches therefore grow by themselves, as the
group commit's do, with no timer. The processor uses it to apply the bank's answers that come back
together in one transaction (`Processor.apply`).

- Items of the same key (a payment) never share a batch: the later one waits for the next, in
  the order they came.
- Each item's work runs in its caller's context (`Submission.within`): its trace and log fields
  are its own payment's, not those of whichever caller happened to start the batch.
- A caller that is cancelled stops waiting; its item is still done with the batch it is in.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V")


@dataclass(eq=False)
class Submission(Generic[T, R]):
    value: T
    key: Hashable
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    done: asyncio.Future[R] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def within(self, work: Coroutine[Any, Any, V]) -> asyncio.Task[V]:
        """Run `work` in the submitter's context (its own task: awaiting it runs it)."""
        return asyncio.get_running_loop().create_task(work, context=self.context)

    def settle(self, outcome: R | BaseException) -> None:
        if self.done.done():  # its caller was cancelled
            return
        if isinstance(outcome, BaseException):
            self.done.set_exception(outcome)
        else:
            self.done.set_result(outcome)


# A batch's outcomes, one per submission and in their order: a result or the error of that item.
Runner = Callable[[list[Submission[T, R]]], Awaitable[list[R | BaseException]]]


class Coalescer(Generic[T, R]):
    def __init__(
        self, run: Runner[T, R], *, key: Callable[[T], Hashable], max_batch: int = 64
    ) -> None:
        self._run = run
        self._key = key
        self.max_batch = max_batch
        self._queue: list[Submission[T, R]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, value: T) -> R:
        item: Submission[T, R] = Submission(value, self._key(value))
        self._queue.append(item)
        if self._drainer is None or self._drainer.done():
            # A context of its own: the batch's own work belongs to no caller's trace.
            self._drainer = asyncio.get_running_loop().create_task(
                self._drain(), context=contextvars.Context()
            )
            self._drainer.add_done_callback(self._stopped)
        return await item.done

    async def wait_idle(self) -> None:
        """Return once every item submitted so far has been done."""
        while self._drainer is not None and not self._drainer.done():
            await asyncio.wait([self._drainer])

    async def _drain(self) -> None:
        while self._queue:
            batch = self._take()
            try:
                outcomes = await self._run(batch)
            except asyncio.CancelledError:
                for item in batch:
                    item.settle(_stop_error())
                raise
            except Exception as exc:
                for item in batch:
                    item.settle(exc)
                continue
            for item, outcome in zip(batch, outcomes, strict=True):
                item.settle(outcome)

    def _stopped(self, drainer: asyncio.Task[None]) -> None:
        """The drainer was cancelled (the loop is closing), perhaps before it began: what it
        left is an error to its callers, not a cancellation of callers that were not
        cancelled."""
        if drainer.cancelled() and drainer is self._drainer:
            for item in self._queue:
                item.settle(_stop_error())
            self._queue = []

    def _take(self) -> list[Submission[T, R]]:
        """The next batch: the oldest items, one per key, at most `max_batch`."""
        batch: list[Submission[T, R]] = []
        later: list[Submission[T, R]] = []
        keys: set[Hashable] = set()
        for item in self._queue:
            if len(batch) < self.max_batch and item.key not in keys:
                batch.append(item)
                keys.add(item.key)
            else:
                later.append(item)
        self._queue = later
        return batch


def _stop_error() -> RuntimeError:
    return RuntimeError("stopped before this item was done")
