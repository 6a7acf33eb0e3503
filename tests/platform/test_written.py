"""The versions a block's writes set (paygate.platform.db.written): recorded per task, the last
write of an object kept, nothing recorded outside a block."""

from __future__ import annotations

import asyncio
import contextvars

from paygate.platform.db import written


async def test_each_task_records_its_own_writes_only() -> None:
    both_inside = asyncio.Event()
    entered = 0

    async def writer(object_id: str, versions_written: list[int]) -> dict[str, int]:
        nonlocal entered
        with written.versions() as versions:
            entered += 1
            if entered == 2:
                both_inside.set()
            await both_inside.wait()  # the two blocks are open at once
            for version in versions_written:
                written.record(object_id, version)
                await asyncio.sleep(0)
        return versions

    first, second = await asyncio.gather(writer("pay_a", [2, 3]), writer("pay_b", [7]))
    assert first == {"pay_a": 3} and second == {"pay_b": 7}


async def test_tasks_started_inside_a_block_record_into_it() -> None:
    with written.versions() as versions:
        await asyncio.gather(
            asyncio.create_task(_record("pay_a", 2)), asyncio.create_task(_record("re_b", 5))
        )
    assert versions == {"pay_a": 2, "re_b": 5}


async def _record(object_id: str, version: int) -> None:
    written.record(object_id, version)


def test_outside_a_block_nothing_is_recorded() -> None:
    written.record("pay_a", 2)
    with written.versions() as versions:
        pass
    written.record("pay_a", 3)
    assert versions == {}


async def test_work_run_in_another_tasks_context_records_where_it_is_told() -> None:
    # As a batch runs each item in its submitter's context (`Submission.within`).
    submitters = contextvars.copy_context()  # taken outside any block
    loop = asyncio.get_running_loop()
    with written.versions() as versions:
        await loop.create_task(_record("pay_lost", 2), context=submitters.copy())
        await loop.create_task(
            written.recorded(versions, _record("pay_a", 3)), context=submitters.copy()
        )
    assert versions == {"pay_a": 3}
