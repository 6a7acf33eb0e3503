"""The coalescer (`paygate.platform.coalesce`): items that arrive while a batch runs are done
together in the next one, one per key, each in its caller's context, each caller getting its own
outcome."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from paygate.platform.coalesce import Coalescer, Submission

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="none")


class Recorder:
    """A runner that records each batch's values, and the caller each item's work ran for; it
    fails the values named in `failing`, and holds every batch until `gate` opens."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.seen: list[tuple[str, str]] = []
        self.failing: set[str] = set()
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self, batch: list[Submission[str, str]]) -> list[str | BaseException]:
        self.batches.append([item.value for item in batch])
        await self.gate.wait()
        outcomes: list[str | BaseException] = []
        for item in batch:
            try:
                outcomes.append(await item.within(self.work(item.value)))
            except ValueError as exc:
                outcomes.append(exc)
        return outcomes

    async def work(self, value: str) -> str:
        self.seen.append((value, CALLER.get()))
        if value in self.failing:
            raise ValueError(f"{value} failed")
        return value.upper()


def key(value: str) -> str:
    return value.split(":")[0]


async def submit(coalescer: Coalescer[str, str], value: str) -> str:
    CALLER.set(value)  # this task's own context
    return await coalescer.submit(value)


async def test_items_that_arrive_during_a_batch_share_the_next_one() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.run, key=key)
    recorder.gate.clear()
    first = asyncio.create_task(submit(coalescer, "a"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert recorder.batches == [["a"]]  # alone, it waits for nobody
    rest = [asyncio.create_task(submit(coalescer, v)) for v in ("b", "c", "d")]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await first == "A"
    assert await asyncio.gather(*rest) == ["B", "C", "D"]
    assert recorder.batches == [["a"], ["b", "c", "d"]]
    # Each item's work ran in its own caller's context, not in the first caller's.
    assert sorted(recorder.seen) == [("a", "a"), ("b", "b"), ("c", "c"), ("d", "d")]


async def test_one_key_at_a_time_and_no_more_than_the_batch_holds() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.run, key=key, max_batch=3)
    recorder.gate.clear()
    values = ["p1:1", "p2:1", "p1:2", "p3:1", "p4:1", "p1:3"]
    tasks = [asyncio.create_task(submit(coalescer, v)) for v in values]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await asyncio.gather(*tasks) == [v.upper() for v in values]
    assert recorder.batches == [["p1:1", "p2:1", "p3:1"], ["p1:2", "p4:1"], ["p1:3"]]


async def test_each_caller_gets_its_own_outcome() -> None:
    recorder = Recorder()
    recorder.failing = {"b"}
    coalescer = Coalescer(recorder.run, key=key)
    outcomes = await asyncio.gather(
        *(submit(coalescer, v) for v in ("a", "b", "c")), return_exceptions=True
    )
    assert outcomes[0] == "A" and outcomes[2] == "C"
    assert isinstance(outcomes[1], ValueError)


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    batches: list[list[str]] = []

    async def run(batch: list[Submission[str, str]]) -> list[str | BaseException]:
        batches.append([item.value for item in batch])
        if len(batches) == 1:
            raise RuntimeError("the batch failed")
        return [item.value for item in batch]

    coalescer: Coalescer[str, str] = Coalescer(run, key=key)
    first = asyncio.create_task(coalescer.submit("a"))
    await asyncio.sleep(0)
    second = asyncio.create_task(coalescer.submit("b"))
    with pytest.raises(RuntimeError, match="the batch failed"):
        await first
    assert await second == "b"
    assert batches == [["a"], ["b"]]


async def test_a_cancelled_caller_stops_waiting_and_its_item_is_still_done() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.run, key=key)
    recorder.gate.clear()
    waiting = asyncio.create_task(submit(coalescer, "a"))
    other = asyncio.create_task(submit(coalescer, "b"))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    recorder.gate.set()
    assert await other == "B"
    await coalescer.wait_idle()
    assert {value for value, _ in recorder.seen} == {"a", "b"}


@pytest.mark.parametrize("began", [False, True])
async def test_work_stopped_part_way_is_an_error_to_its_callers(began: bool) -> None:
    """The batch's task cancelled (the loop closing) before it began, or during a batch."""
    recorder = Recorder()
    coalescer = Coalescer(recorder.run, key=key)
    recorder.gate.clear()
    tasks = [asyncio.create_task(submit(coalescer, v)) for v in ("a", "b")]
    await asyncio.sleep(0)
    if began:
        await asyncio.sleep(0)
        later = asyncio.create_task(submit(coalescer, "c"))
        tasks.append(later)
        await asyncio.sleep(0)
    assert recorder.batches == ([["a", "b"]] if began else [])
    assert coalescer._drainer is not None
    coalescer._drainer.cancel()
    for task in tasks:
        with pytest.raises(RuntimeError, match="stopped before"):
            await task
